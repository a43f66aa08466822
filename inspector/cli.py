"""`inspector` command line: run (the daemon), replay (a recorded video), listen (a subscriber), check-config.

User errors end with their message on stderr, no traceback, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.config import DEFAULT_CONFIG
from inspector.errors import InspectorError


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inspector", description="Inspect parts on a conveyor and publish verdicts over ZeroMQ.")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="the daemon: watch the camera, inspect, publish")
    r.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"TOML file (default {DEFAULT_CONFIG})")

    v = sub.add_parser("replay", help="the same pipeline over a recorded video, with a summary")
    v.add_argument("video", type=Path)
    v.add_argument("--model", type=Path, required=True, help="MODEL.onnx or MODEL.engine (manifest beside it)")
    v.add_argument("--config", type=Path, default=None, help="TOML file (ROIs, trigger, ...); default: defaults")
    v.add_argument("--realtime", action="store_true", help="pace frames at the recorded rate")
    v.add_argument("--ground-truth", type=Path, default=None, help="CSV part_id,first_frame,last_frame,center_frame,label")
    v.add_argument("--publish", default=None, metavar="ENDPOINT", help="also publish over ZeroMQ, e.g. tcp://127.0.0.1:5556")
    v.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the summary as JSON")

    li = sub.add_parser("listen", help="the reference subscriber: print results, detect gaps, save failed parts")
    li.add_argument("endpoint", help="e.g. tcp://127.0.0.1:5556")
    li.add_argument("--save", type=Path, default=None, metavar="DIR", help="save images of failed and error parts")
    li.add_argument("--count", type=int, default=None, metavar="N", help="exit after N results")
    li.add_argument("--status", action="store_true", help="also print the status topic")
    li.add_argument("--json", action="store_true", help="print each header as one JSON line")
    li.add_argument("--timeout", type=float, default=None, metavar="S", help="exit 1 after S seconds without a message")

    c = sub.add_parser("check-config", help="print the effective configuration or every invalid field")
    c.add_argument("file", type=Path, nargs="?", default=DEFAULT_CONFIG)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return _run(args.config)
        if args.command == "replay":
            from inspector.replay import run_replay

            return run_replay(args.video, args.model, args.config, args.realtime, args.ground_truth,
                              args.publish, args.json)
        if args.command == "listen":
            from inspector.listen import listen

            return listen(args.endpoint, count=args.count, save=args.save, show_status=args.status,
                          as_json=args.json, timeout_s=args.timeout)
        if args.command == "check-config":
            return _check_config(args.file)
    except InspectorError as e:
        print(f"inspector: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _check_config(path: Path) -> int:
    from inspector.config import effective_toml, load_config

    cfg = load_config(path)
    if cfg.engine.path is not None and not cfg.engine.path.exists():
        raise InspectorError(f"{path}: engine.path {cfg.engine.path} does not exist (build it with `engines build`)")
    print(f"# effective configuration: {path} + INSPECTOR_* environment + defaults")
    print(effective_toml(cfg), end="")
    if cfg.engine.path is None:
        print("note: engine.path is not set; `inspector run` needs it (replay takes --model)", file=sys.stderr)
    return 0


def _run(config: Path) -> int:
    from inspector.config import load_config
    from inspector.logs import setup_logging
    from inspector.notify import Notifier
    from inspector.pipeline import Pipeline
    from inspector.scoring import open_engine

    cfg = load_config(config)
    setup_logging(cfg.logging.level, cfg.logging.format, cfg.station_id)
    notifier = Notifier()
    engine = open_engine(cfg.engine)
    try:
        pipeline = Pipeline(cfg, engine, notifier=notifier, realtime=True)  # a file plays like a camera
        code = pipeline.run(handle_signals=True)
    finally:
        engine.close()
        notifier.close()
    if isinstance(pipeline.fatal, InspectorError):
        raise pipeline.fatal
    return code


if __name__ == "__main__":
    sys.exit(main())
