"""`engines` command line: build (TensorRT, on the target), verify (against ONNX FP32), bench.

User errors end with one line on stderr and exit code 2; a failed verification exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from common.cli import run_command


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="engines", description="Build, verify and benchmark inference engines of the detector.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    b = sub.add_parser("build", help="build a TensorRT engine from MODEL.onnx on this GPU")
    b.add_argument("onnx", type=Path)
    b.add_argument("--out", type=Path, required=True, help="MODEL.engine (its MODEL.json is written beside it)")
    b.add_argument("--max-batch", type=int, default=32, help="largest batch the engine takes (default 32)")
    b.add_argument("--opt-batch", type=int, default=None,
                   help="batch TensorRT tunes its kernels for (default: min(8, --max-batch): the daemon sends "
                        "1-8 crops per call)")
    b.add_argument("--fp16", action="store_true", help="half precision (FP16 flag on TRT 10, FP16 graph on 11)")

    v = sub.add_parser("verify", help="compare an engine (or the FP16 graph) with the ONNX FP32 reference")
    v.add_argument("model", type=Path, help="MODEL.onnx or MODEL.engine")
    v.add_argument("--data", type=Path, default=None, help="MVTec-layout folder (test/good, test/<defect>)")
    v.add_argument("--limit", type=int, default=None, help="at most this many images")
    v.add_argument("--auroc-tol", type=float, default=0.002, help="largest |ΔAUROC| (with labels)")
    v.add_argument("--score-tol", "--score-rtol", dest="score_tol", type=float, default=0.05,
                   help="largest |Δscore| as a share of the threshold's distance from the good scores' median")
    v.add_argument("--no-emulate-fp16", dest="emulate_fp16", action="store_false",
                   help="skip the FP16-storage emulation (what a strongly typed TensorRT computes)")
    v.add_argument("--json", type=Path, default=None, help="also write the comparison as JSON")

    s = sub.add_parser("bench", help="images/s and latency per batch size and backend")
    s.add_argument("model", type=Path, help="MODEL.onnx or MODEL.engine")
    s.add_argument("--batch", default="1,8,32", help="comma-separated batch sizes")
    s.add_argument("--json", type=Path, default=None, help="write records {backend, batch, images_per_s, ...}")
    s.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")
    s.add_argument("--seconds", type=float, default=1.0, help="minimum timed seconds per measurement")
    return p


def _build(args: argparse.Namespace) -> int:
    from engines.build import build_engine

    m = build_engine(args.onnx, args.out, args.max_batch, args.opt_batch, args.fp16)
    assert m.tensorrt is not None
    t = m.tensorrt
    print(f"wrote {args.out}: TensorRT {t.version}, {t.gpu_name} (sm {t.compute_capability}, {t.sm_count} SMs), "
          f"{t.precision}, batch 1..{t.max_batch} (opt {t.opt_batch})")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from engines.verify import as_records, format_table, verify

    notes: list[str] = []
    results = verify(args.model, args.data, args.limit, args.auroc_tol, args.score_tol, notes, args.emulate_fp16)
    print(format_table(results, args.score_tol, args.auroc_tol))
    for note in notes:
        print(f"note: {note}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(as_records(results), indent=2) + "\n")
    return 0 if all(r.ok for r in results) else 1


def _bench(args: argparse.Namespace) -> int:
    from engines.bench import bench, format_table, parse_batches, write_json

    records, notes = bench(args.model, parse_batches(args.batch), args.threads, args.seconds)
    print(format_table(records))
    for note in notes:
        print(f"note: {note}")
    if args.json:
        write_json(records, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    command = {"build": _build, "verify": _verify, "bench": _bench}[args.command]
    return run_command(lambda: command(args), name=f"engines {args.command}")


if __name__ == "__main__":
    sys.exit(main())
