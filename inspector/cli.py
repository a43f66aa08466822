"""`inspector` command line: run (the daemon), replay (a recorded video), collect (training crops from a
video or camera), listen (a subscriber), history (the journal), label and dataset (operator review into
training data), reload and promote (swap the running daemon's model), compare (a shadow model against
production), keygen (CURVE keys), check-config,
gateway (OPC UA / Modbus / web / MQTT for the plant) and gateway-passwd (its users' password hashes).

Arguments become typed options (dataclasses) here; the commands never see the argparse Namespace.
User errors (common.errors.UserError: InspectorError, a bad ground-truth file, ...) end with their
message on stderr, no traceback, and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import run_command
from inspector.config import DEFAULT_CONFIG
from inspector.errors import InspectorError
from inspector.state.history import DEFAULT_JOURNAL, HistoryOptions, run_history
from inspector.state.journal_reader import VERDICTS


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
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
    v.add_argument("--state", type=Path, default=None, metavar="DIR",
                   help="journal every verdict (and failed parts' images) in DIR; default: no journal")
    v.add_argument("--backfill", default=None, metavar="ENDPOINT", help="with --state: serve backfill requests")
    v.add_argument("--frames", type=int, default=None, metavar="N",
                   help="loop the video until N frames were read (soak tests)")
    v.add_argument("--shadow", type=Path, default=None, metavar="MODEL",
                   help="a candidate model scoring the same crops ([shadow] model): shadow topic and journal only")

    co = sub.add_parser("collect", help="training images as the station sees them: triggered crops as PNG files")
    co.add_argument("source", help="a recorded video of good parts, a camera index or a stream URL")
    co.add_argument("--out", type=Path, required=True, metavar="DIR", help="data set folder (trainer fit DIR)")
    co.add_argument("--config", type=Path, default=None, help="the station's TOML file (ROIs, trigger)")
    co.add_argument("--into", default="train/good", help="sub-folder of DIR (default train/good)")
    co.add_argument("--count", type=int, default=None, metavar="N", help="stop after N parts")
    co.add_argument("--ground-truth", type=Path, default=None, metavar="CSV",
                    help="a labelled recording: crops go to DIR/test/<label> (an evaluation set)")

    li = sub.add_parser("listen", help="the reference subscriber: print results, detect gaps, save failed parts")
    li.add_argument("endpoint", help="e.g. tcp://127.0.0.1:5556")
    li.add_argument("--save", type=Path, default=None, metavar="DIR", help="save images of failed and error parts")
    li.add_argument("--count", type=int, default=None, metavar="N", help="exit after N results")
    li.add_argument("--status", action="store_true", help="also print the status topic")
    li.add_argument("--json", action="store_true", help="print each header as one JSON line")
    li.add_argument("--timeout", type=float, default=None, metavar="S", help="exit 1 after S seconds without a message")
    li.add_argument("--backfill", default=None, metavar="ENDPOINT",
                    help="the station's backfill endpoint: fill gaps from the journal (e.g. tcp://127.0.0.1:5558)")
    li.add_argument("--since", type=int, default=None, metavar="N",
                    help="with --backfill: first every journaled result after sequence N, then the live ones")
    li.add_argument("--key", type=Path, default=None, metavar="SECRET",
                    help="CURVE: this client's .key_secret file (with --server-key)")
    li.add_argument("--server-key", type=Path, default=None, metavar="PUBLIC", help="CURVE: the station's .key file")

    k = sub.add_parser("keygen", help="write a CURVE key pair: NAME.key (public) and NAME.key_secret (0600)")
    k.add_argument("directory", type=Path)
    k.add_argument("--name", default="station", help="station (default) on the box, or a client's name")
    k.add_argument("--force", action="store_true", help="replace an existing pair (clients must get the new key)")

    h = sub.add_parser("history", help="query the result journal", description="Print journaled verdicts, oldest first.")
    h.add_argument("--journal", type=Path, default=DEFAULT_JOURNAL, help="journal file (default: %(default)s)")
    h.add_argument("--since", type=_non_negative, default=None, metavar="SEQ",
                   help="verdicts after this sequence number (default: the newest --limit)")
    h.add_argument("--verdict", choices=VERDICTS, default=None, help="only this verdict")
    h.add_argument("--limit", type=_positive, default=100, help="at most this many (default: %(default)s)")
    h.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    h.add_argument("--config", type=Path, default=None,
                   help=f"read state.dir from this TOML file (e.g. {DEFAULT_CONFIG}) instead of --journal")

    la = sub.add_parser("label", help="record an operator's judgement of journaled parts (good or a defect)",
                        description="Label journaled parts in the station's journal, all in one transaction: "
                                    "a bad sequence or label writes nothing. A later label replaces an earlier one.")
    la.add_argument("sequences", nargs="+", metavar="SEQ", help="sequence numbers (inspector history)")
    la.add_argument("--as", dest="label", required=True, metavar="good|DEFECT",
                    help="good, or a defect name (letters, digits, _ -, at most 32)")
    la.add_argument("--by", default=None, metavar="NAME", help="who judged them")
    la.add_argument("--note", default=None, metavar="TEXT")
    _state_args(la)

    ds = sub.add_parser("dataset", help="labelled parts' stored crops as an MVTec-layout data set (trainer fit)",
                        description="train/good: 80 % of the parts labelled good; test/good: the other 20 % "
                                    "(sequence a multiple of 5); test/<defect>: every part labelled with a defect.")
    ds.add_argument("--out", type=Path, required=True, metavar="DIR")
    ds.add_argument("--since", type=_non_negative, default=None, metavar="SEQ", help="only parts after SEQ")
    ds.add_argument("--force", action="store_true", help="replace a non-empty DIR")
    _state_args(ds)

    cm = sub.add_parser("compare", help="shadow model against production: agreement, disagreements, scores",
                        description="Over the journaled parts that have a shadow verdict ([shadow] model): the "
                                    "2x2 agreement table, the parts where the models disagree, both score "
                                    "distributions against their thresholds, and which model operator labels "
                                    "side with. Exit 2 when there are no shadow results.")
    cm_where = cm.add_mutually_exclusive_group()
    cm_where.add_argument("--journal", type=Path, default=None,
                          help=f"journal file (default: {DEFAULT_JOURNAL}); images from images/ beside it")
    cm_where.add_argument("--config", type=Path, default=None, help="take state.dir from this TOML file")
    cm.add_argument("--since", type=_non_negative, default=None, metavar="SEQ", help="only parts after SEQ")
    cm.add_argument("--out", type=Path, default=None, metavar="DIR",
                    help="copy the disagreeing parts' stored images here, with index.csv (and a histogram PNG "
                         "when matplotlib is installed)")
    cm.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the report as JSON")

    _reload_parsers(sub)

    c = sub.add_parser("check-config", help="print the effective configuration or every invalid field")
    c.add_argument("file", type=Path, nargs="?", default=DEFAULT_CONFIG)

    g = sub.add_parser("gateway", help="serve a station to the plant: OPC UA, Modbus TCP, web page + /metrics, MQTT",
                       description="Subscribe to a station (PUB + backfill) and serve it; an empty value turns a "
                                   "server off (--opcua \"\"). Flags override the [gateway] section.")
    g.add_argument("--connect", default=None, metavar="ENDPOINT", help="the station's PUB endpoint (gateway.connect)")
    g.add_argument("--backfill", default=None, metavar="ENDPOINT", help="its backfill endpoint (gateway.backfill)")
    g.add_argument("--trigger", default=None, metavar="ENDPOINT", help="its external trigger endpoint (gateway.trigger)")
    g.add_argument("--opcua", default=None, metavar="ENDPOINT", help="opc.tcp://HOST:PORT/PATH (gateway.opcua.endpoint)")
    g.add_argument("--modbus", default=None, metavar="HOST:PORT", help="gateway.modbus.bind")
    g.add_argument("--http", default=None, metavar="HOST:PORT", help="web page and /metrics (gateway.http.bind)")
    g.add_argument("--mqtt", default=None, metavar="HOST:PORT", help="the plant's broker (gateway.mqtt.broker)")
    g.add_argument("--state", type=Path, default=None, metavar="DIR", help="gateway.state_dir (its SQLite file)")
    g.add_argument("--config", type=Path, default=None, help="TOML file with a [gateway] section (default: defaults)")

    gp = sub.add_parser("gateway-passwd", help="a password hash for [gateway.opcua.users] / [gateway.http.users]",
                        description="Reads the password from stdin (asked twice, not echoed, on a terminal) and "
                                    "prints the TOML line USER = \"scrypt$...\".")
    gp.add_argument("user")

    gc = sub.add_parser("gateway-cert", help="the OPC UA server's self-signed certificate and key",
                        description="Writes DIR/gateway-cert.der and DIR/gateway-key.pem (0600) for "
                                    "[gateway.opcua] certificate / private_key; never overwrites.")
    gc.add_argument("--out", type=Path, required=True, metavar="DIR")
    gc.add_argument("--host", action="append", default=[], metavar="NAME",
                    help="a host name or IP address clients use (repeat; default: this machine's name)")
    gc.add_argument("--days", type=int, default=730, help="validity (default: %(default)s)")
    return p


def _reload_parsers(sub: argparse._SubParsersAction) -> None:
    """`reload` and `promote`: the running daemon's control socket (docs/lifecycle.md "Reload (hot swap)")."""
    rl = sub.add_parser("reload", help="load another model into the running daemon, swapped in between two batches",
                        description="Ask the running daemon to load a model beside the running one (checked, warmed "
                                    "up, tried on the newest journaled crops) and swap it in without stopping the "
                                    "line. Exit 0 swapped, 1 refused (the running model keeps deciding), 2 bad "
                                    "input or daemon unreachable.")
    rl.add_argument("--path", type=Path, default=None, metavar="MODEL",
                    help="MODEL.onnx or MODEL.engine on the station (default: the configuration's [engine] path, "
                         "read again)")
    pr = sub.add_parser("promote", help="make the shadow model the production model (reload with [shadow] model)",
                        description="Reload with the configured [shadow] model (else the running shadow's); the "
                                    "shadow slot is empty afterwards. Exit codes as reload.")
    for parser in (rl, pr):
        parser.add_argument("--config", type=Path, default=None,
                            help=f"the daemon's TOML file: [control] bind, [security] (default {DEFAULT_CONFIG} "
                                 "when it exists)")
        parser.add_argument("--endpoint", default=None, metavar="EP", help="the control endpoint (default: [control] bind)")
        parser.add_argument("--timeout", type=float, default=None, metavar="S",
                            help="wait at most S seconds for the outcome (default: [control] reply_timeout_s)")
        parser.add_argument("--key", type=Path, default=None, metavar="SECRET",
                            help="CURVE: this client's .key_secret (default with [security] on: the station's pair)")
        parser.add_argument("--server-key", type=Path, default=None, metavar="PUBLIC", help="CURVE: the station's .key")


def _state_args(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--state", type=Path, default=None, metavar="DIR",
                       help=f"the station's state folder (journal.db, images/; default {DEFAULT_JOURNAL.parent})")
    where.add_argument("--config", type=Path, default=None, help="take state.dir from this TOML file")


def _state_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """(journal.db, images/) of --state DIR, of --config FILE's state.dir, or of the default state folder."""
    if args.config is not None:
        from inspector.config import load_config

        state = load_config(args.config).state
        return state.journal_file, state.images_dir
    folder = args.state if args.state is not None else DEFAULT_JOURNAL.parent
    return folder / "journal.db", folder / "images"


def _compare_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """(journal.db, images/) for `compare`: --config FILE's state.dir, or --journal FILE and images/ beside it."""
    if args.config is not None:
        from inspector.config import load_config

        state = load_config(args.config).state
        return state.journal_file, state.images_dir
    journal = args.journal if args.journal is not None else DEFAULT_JOURNAL
    return journal, journal.parent / "images"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _dispatch(args), name="inspector", tag_errors=False)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        return _run(args.config)
    if args.command == "collect":
        from inspector.tools.collect import CollectOptions, run_collect

        return run_collect(CollectOptions(args.source, args.out, args.config, args.into, args.count,
                                          args.ground_truth))
    if args.command == "replay":
        from inspector.tools.replay import ReplayOptions, run_replay

        return run_replay(ReplayOptions(args.video, args.model, args.config, args.realtime, args.ground_truth,
                                        args.publish, args.json, state=args.state, backfill=args.backfill,
                                        frames=args.frames, shadow=args.shadow))
    if args.command == "listen":
        from inspector.tools.listen import listen

        if args.since is not None and args.backfill is None:
            raise InspectorError("listen: --since needs --backfill ENDPOINT (the station's backfill endpoint)")
        if (args.key is None) != (args.server_key is None):
            raise InspectorError("listen: CURVE needs both --key (this client's secret) and --server-key")
        return listen(args.endpoint, count=args.count, save=args.save, show_status=args.status,
                      as_json=args.json, timeout_s=args.timeout, backfill_endpoint=args.backfill,
                      since=args.since, client_secret=args.key, server_public=args.server_key)
    if args.command == "keygen":
        return _keygen(args.directory, args.name, args.force)
    if args.command == "history":
        return run_history(history_options(args))
    if args.command == "label":
        from inspector.state.labels import LabelOptions, run_label

        journal, _ = _state_paths(args)
        return run_label(LabelOptions(journal, tuple(args.sequences), args.label, args.by, args.note))
    if args.command == "dataset":
        from inspector.tools.dataset import DatasetOptions, run_dataset

        journal, images = _state_paths(args)
        return run_dataset(DatasetOptions(journal, images, args.out, args.since, args.force))
    if args.command == "compare":
        from inspector.tools.compare import CompareOptions, run_compare

        journal, images = _compare_paths(args)
        return run_compare(CompareOptions(journal, images, args.since, args.out, args.json))
    if args.command in ("reload", "promote"):
        from inspector.tools.reload import ReloadOptions, run_reload

        return run_reload(ReloadOptions(args.command, getattr(args, "path", None), args.config, args.endpoint,
                                        args.timeout, args.key, args.server_key))
    if args.command == "check-config":
        return _check_config(args.file)
    if args.command == "gateway":
        from inspector.gateway.run import GatewayOptions, run_gateway

        return run_gateway(GatewayOptions(args.config, args.connect, args.backfill, args.trigger, args.opcua,
                                          args.modbus, args.http, args.mqtt, args.state))
    if args.command == "gateway-passwd":
        from inspector.gateway.passwords import passwd_line, read_password

        print(passwd_line(args.user, read_password()))
        return 0
    if args.command == "gateway-cert":
        return _gateway_cert(args.out, args.host, args.days)
    return 2


def _gateway_cert(out: Path, hosts: list[str], days: int) -> int:
    try:
        from inspector.gateway.opcua_cert import make_certificate
    except ModuleNotFoundError as e:
        raise InspectorError(f"gateway-cert needs the Python package {e.name!r}: pip install "
                             "'bigan-inspect[gateway]'") from None
    cert, key = make_certificate(out, hosts, days)
    print(f"certificate (give it to the OPC UA clients): {cert}\nprivate key (keep it here, mode 0600): {key}")
    return 0


def _check_config(path: Path) -> int:
    from inspector.config import effective_toml, load_config
    from inspector.gateway.run import check_gateway

    cfg = load_config(path)
    problems = check_gateway(cfg)
    if problems:
        raise InspectorError(f"{path}: " + "; ".join(problems))
    if cfg.engine.path is not None and not cfg.engine.path.exists():
        raise InspectorError(f"{path}: engine.path {cfg.engine.path} does not exist (build it with `engines build`)")
    if cfg.shadow.model is not None and not cfg.shadow.model.exists():
        raise InspectorError(f"{path}: [shadow] model {cfg.shadow.model} does not exist; fix the path, or remove "
                             "`model` from [shadow] to run without a shadow")
    print(f"# effective configuration: {path} + INSPECTOR_* environment + defaults")
    print(effective_toml(cfg), end="")
    if cfg.engine.path is None:
        print("note: engine.path is not set; `inspector run` needs it (replay takes --model)", file=sys.stderr)
    return 0


def _keygen(directory: Path, name: str, force: bool) -> int:
    from inspector.network.security import SecurityError, keygen

    try:
        public, secret = keygen(directory, name, force=force)
    except (SecurityError, OSError) as e:
        raise InspectorError(f"keygen: {e}") from None
    print(f"public key (give it to the other side): {public}\nsecret key (keep it here, mode 0600): {secret}")
    return 0


def history_options(args: argparse.Namespace) -> HistoryOptions:
    """The `history` arguments as options; with --config the journal is the one under its state.dir."""
    journal = args.journal
    if args.config is not None:
        from inspector.config import load_config

        journal = load_config(args.config).state.journal_file
    return HistoryOptions(journal, since=args.since, verdict=args.verdict, limit=args.limit, as_json=args.json)


def _run(config: Path) -> int:
    from inspector.config import load_config
    from inspector.logs import setup_logging
    from inspector.notify import Notifier
    from inspector.station import run_station

    cfg = load_config(config)
    setup_logging(cfg.logging.level, cfg.logging.format, cfg.station_id)
    notifier = Notifier()
    try:
        code, _ = run_station(cfg, realtime=True, notifier=notifier,  # a file plays like a camera
                              read_config=lambda: load_config(config))  # SIGHUP: the same file and environment
    finally:
        notifier.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
