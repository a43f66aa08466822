"""`trainer` command line: synth, fit, evaluate, export, bench, bench-eager.

Each subcommand imports its module lazily so `trainer --help` is fast and an error in one
path cannot break the others; it hands the module typed options (a dataclass), never the
argparse Namespace. User errors end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import run_command
from trainer.config import SIZES


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trainer", description="Train, evaluate and export the BiGAN detector.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="render a synthetic production line (MVTec layout, optional video)")
    s.add_argument("out_dir", type=Path)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=int, default=128, help="part image size in pixels")
    s.add_argument("--n-train", type=int, default=400, help="good training images")
    s.add_argument("--n-test", type=int, default=200, help="test images (good and defective)")
    s.add_argument("--video", type=Path, default=None, help="also write a conveyor video (.mp4 or .avi)")
    s.add_argument("--parts", type=int, default=40, help="parts passing the camera in the video")
    s.add_argument("--defect-rate", type=float, default=0.3,
                   help="share of defective parts in the video (0 = a recording of good parts to collect from)")
    s.add_argument("--first-part", type=int, default=0,
                   help="number of the video's first part: another range shows other parts of the same line")
    s.add_argument("--rotation", type=float, default=15.0,
                   help="pose jitter in degrees about the nominal orientation (180 = any orientation)")
    s.add_argument("--surface", default=None, metavar="PHOTO",
                   help="parts are tiles cut from this photograph (an image file, or skimage:NAME for a "
                        "scikit-image sample such as skimage:moon) with surface defects: scratch, hole, "
                        "stain, crack, contamination")

    f = sub.add_parser("fit", help="train a detector on normal images")
    f.add_argument("data_dir", type=Path)
    f.add_argument("--out", type=Path, required=True, help="run directory to write")
    f.add_argument("--model", default="ours-proj", help="variant: ours-proj, ours-concat, bigan-proj, egbad, ae, anogan")
    f.add_argument("--epochs", type=int, default=None)
    f.add_argument("--image-size", type=int, default=None, choices=SIZES,
                   help="default 128; 32 for an MNIST folder. 64 trains ≈ 4.5x faster on a CPU and misses "
                        "more of the smallest defects (docs/research/findings.md F22)")
    f.add_argument("--channels", type=int, default=None, choices=[1, 3], help="default: the data's own")
    f.add_argument("--mnist-digit", type=int, default=None, help="normal digit for an MNIST IDX folder")
    f.add_argument("--batch-size", type=int, default=None)
    f.add_argument("--z-dim", type=int, default=None, help="latent code size; default 100, 16 for an MNIST folder")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="auto", help="auto, cpu or cuda")
    f.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    f.add_argument("--init", type=Path, default=None, metavar="OLD_RUN",
                   help="fine-tune: start from OLD_RUN's model.pt weights and options (e.g. with fewer --epochs)")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any training option, e.g. --set alpha=0.9 --set loss=bce")

    e = sub.add_parser("evaluate", help="score the test split, calibrate the threshold, write metrics and plots")
    e.add_argument("run_dir", type=Path)
    e.add_argument("--data", type=Path, default=None, help="data set (default: the one the run trained on)")

    x = sub.add_parser("export", help="export the scoring path E->G->D to ONNX with a manifest")
    x.add_argument("run_dir", type=Path)
    x.add_argument("--out", type=Path, required=True, help="MODEL.onnx (MODEL.json is written beside it)")

    b = sub.add_parser("bench", help="rebuild the paper's comparison table on a data set")
    b.add_argument("data_dir", type=Path)
    b.add_argument("--out", type=Path, required=True)
    b.add_argument("--models", default="ours-proj,ours-concat,bigan-proj,egbad,ae,anogan,pca,knn")
    b.add_argument("--epochs", type=int, default=None)
    b.add_argument("--image-size", type=int, default=None)
    b.add_argument("--mnist-digits", default=None, help="e.g. 0-9 or 1,3,7 for an MNIST IDX folder")
    b.add_argument("--seeds", type=int, default=1, help="how many seeds per method (default 1)")
    b.add_argument("--first-seed", type=int, default=0,
                   help="seeds run from this one on (default 0), e.g. --first-seed 2 --seeds 1 runs seed 2 alone, "
                        "so the seeds of one row can run as parallel benches and be --merge'd")
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="training option for the trained methods; the rows are labelled with it (ablations)")
    b.add_argument("--merge", type=Path, nargs="+", default=None, metavar="OTHER",
                   help="instead of running: add the records of other bench folders (or their results.json), "
                        "e.g. benches run in parallel on other digits, to --out and rewrite its report")

    q = sub.add_parser("bench-eager", help="images/s of the engines beside torch eager of the same graph")
    q.add_argument("run_dir", type=Path, help="the run the model was exported from")
    q.add_argument("--model", type=Path, required=True, help="its MODEL.onnx (or MODEL.engine)")
    q.add_argument("--batch", default="1,8,32", help="comma-separated batch sizes")
    q.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    q.add_argument("--seconds", type=float, default=1.0, help="minimum timed seconds per measurement")
    q.add_argument("--json", type=Path, default=None, help="write records {backend, batch, images_per_s, ...}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    return run_command(lambda: _dispatch(args), name=f"trainer {args.command}")


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "synth":
        from synth.run import SynthOptions, run_synth

        return run_synth(SynthOptions(
            out_dir=args.out_dir, seed=args.seed, size=args.size, n_train=args.n_train, n_test=args.n_test,
            video=args.video, parts=args.parts, defect_rate=args.defect_rate, first_part=args.first_part,
            rotation=args.rotation, surface=args.surface,
        ))
    if args.command == "fit":
        from trainer.fit import FitOptions, run_fit

        run_fit(FitOptions(
            data_dir=args.data_dir, out=args.out, variant=args.model, epochs=args.epochs,
            image_size=args.image_size, channels=args.channels, mnist_digit=args.mnist_digit,
            batch_size=args.batch_size, z_dim=args.z_dim, seed=args.seed, device=args.device,
            resume=args.resume, sets=tuple(args.set), init=args.init,
        ))
        return 0
    if args.command == "evaluate":
        from trainer.evaluate import EvaluateOptions, run_evaluate

        run_evaluate(EvaluateOptions(run_dir=args.run_dir, data=args.data))
        return 0
    if args.command == "export":
        from trainer.export import ExportOptions, run_export

        run_export(ExportOptions(run_dir=args.run_dir, out=args.out))
        return 0
    if args.command == "bench":
        from trainer.bench import BenchOptions, parse_digits, parse_methods, run_bench

        return run_bench(BenchOptions(
            data_dir=args.data_dir, out=args.out, methods=tuple(parse_methods(args.models)),
            epochs=args.epochs, image_size=args.image_size,
            digits=None if args.mnist_digits is None else tuple(parse_digits(args.mnist_digits)),
            seeds=args.seeds, first_seed=args.first_seed, sets=tuple(args.set), merge=tuple(args.merge or ()),
        ))
    if args.command == "bench-eager":
        from engines.bench import parse_batches
        from trainer.bench_eager import BenchEagerOptions, run_bench_eager

        return run_bench_eager(BenchEagerOptions(
            run_dir=args.run_dir, model=args.model, batches=parse_batches(args.batch), threads=args.threads,
            seconds=args.seconds, json=args.json,
        ))
    return 2


if __name__ == "__main__":
    sys.exit(main())
