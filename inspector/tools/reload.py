"""`inspector reload` and `inspector promote`: ask the running daemon, over its control socket, to load another
model beside the running one and swap it in between two batches (docs/lifecycle.md "Reload (hot swap)").

Exit codes: 0 swapped; 1 refused (the running model keeps deciding; also busy, or no outcome in time);
2 bad input or the daemon unreachable, with a one-line message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.config import DEFAULT_CONFIG, InspectorConfig, load_config
from inspector.errors import InspectorError
from inspector.models.control import ControlError, request
from inspector.network.security import SecurityError

PROBE_S = 5.0  # the daemon answers a status request at once: longer means it is not there


@dataclass(frozen=True)
class ReloadOptions:
    command: str  # "reload" | "promote"
    path: Path | None = None  # reload: the model on the station (default: the configured [engine] path)
    config: Path | None = None  # the daemon's TOML file (default: /etc/inspector/inspector.toml if it exists)
    endpoint: str | None = None  # default: [control] bind
    timeout_s: float | None = None  # default: [control] reply_timeout_s
    key: Path | None = None  # CURVE: this client's .key_secret
    server_key: Path | None = None  # CURVE: the station's .key


def run_reload(opts: ReloadOptions) -> int:
    if opts.timeout_s is not None and not opts.timeout_s > 0:
        raise InspectorError(f"{opts.command}: --timeout must be > 0, got {opts.timeout_s}")
    if (opts.key is None) != (opts.server_key is None):
        raise InspectorError(f"{opts.command}: CURVE needs both --key (this client's secret) and --server-key")
    config = opts.config if opts.config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    cfg = load_config(config)
    endpoint = opts.endpoint or connect_endpoint(cfg.control.bind)
    if not endpoint:
        raise InspectorError(f"{opts.command}: the control socket is off ([control] bind is empty in "
                             f"{config or 'the configuration'}); set it, restart, or pass --endpoint")
    timeout_s = opts.timeout_s or cfg.control.reply_timeout_s
    body: dict[str, Any] = {"command": opts.command, "timeout_s": timeout_s}
    path = opts.path if opts.command == "reload" else cfg.shadow.model
    if path is not None:
        body["path"] = str(_checked_path(path, endpoint, opts.command))
    keys = _keys(opts, cfg)
    try:
        request(endpoint, {"command": "status"}, min(PROBE_S, timeout_s), **keys)
        reply = request(endpoint, body, timeout_s + PROBE_S, **keys)
    except ControlError as e:
        raise InspectorError(f"{opts.command}: {e}: is the daemon running with [control] bind = {endpoint}"
                             f"{' and these CURVE keys' if keys else ''}?") from None
    except SecurityError as e:
        raise InspectorError(f"{opts.command}: {e}") from None
    print(describe(reply, opts.command, config))
    return 0 if reply.get("ok") is True else 1


def connect_endpoint(bind: str | None) -> str | None:
    """Where a client on the same box connects to a bind endpoint (a wildcard address becomes 127.0.0.1)."""
    if not bind:
        return None
    return re.sub(r"^tcp://(\*|0\.0\.0\.0):", "tcp://127.0.0.1:", bind)


def _checked_path(path: Path, endpoint: str, command: str) -> Path:
    """An absolute path (the daemon's working folder is not this one); one that is missing on this box is
    bad input when the daemon runs here too."""
    path = path.expanduser().resolve()
    local = endpoint.startswith(("ipc://", "tcp://127.", "tcp://localhost:", "tcp://[::1]:"))
    if local and not path.is_file():
        what = "--path" if command == "reload" else "[shadow] model"
        raise InspectorError(f"{command}: {what} {path} does not exist (export it with `trainer export`, or fix "
                             "the path)")
    return path


def _keys(opts: ReloadOptions, cfg: InspectorConfig) -> dict[str, Path]:
    """CURVE keys: --key/--server-key, else with [security] on the station's own pair (this box, as the
    service user; in ironhouse its public key must be in allow_dir too), else none."""
    if opts.key is not None and opts.server_key is not None:
        return {"client_secret": opts.key, "server_public": opts.server_key}
    if cfg.security.mode == "off":
        return {}
    key_dir = cfg.security.key_dir
    return {"client_secret": key_dir / "station.key_secret", "server_public": key_dir / "station.key"}


def describe(reply: dict[str, Any], command: str, config: Path | None) -> str:
    """What to print for a control reply."""
    if reply.get("ok") is not True:
        lines = [f"{command} refused: {reply.get('error')}"]
        if reply.get("model_id"):
            lines.append(f"the running model {reply['model_id']} keeps deciding")
        return "\n".join(lines)
    lines = [f"{'promoted' if reply.get('promoted') else 'reloaded'}: {reply.get('model_id')} (was "
             f"{reply.get('previous')}) from {reply.get('path')}, backend {reply.get('backend')}, "
             f"loaded and checked in {reply.get('load_s')} s; verdicts after sequence {reply.get('last_seq')} "
             "carry the new model_id"]
    lines.append(_agreement(reply.get("agreement") or {}))
    if reply.get("promoted"):
        where = config or "the configuration"
        lines.append("the shadow slot is empty now: the candidate is the production model")
        lines.append(f"so that a restart keeps it: set [engine] path = \"{reply.get('path')}\" in {where} "
                     "(and remove [shadow] model)")
    if reply.get("restart_needed"):
        lines.append(f"note: changes to {', '.join(reply['restart_needed'])} apply only after a restart")
    return "\n".join(lines)


def _agreement(a: dict[str, Any]) -> str:
    if not a.get("n"):
        return f"agreement: not measured ({a.get('note', 'no journaled crops')})"
    old, new = a.get("old", {}), a.get("new", {})
    return (f"agreement with the previous model on the newest {a['n']} journaled parts with stored crops: "
            f"{a['fraction']} ({a['agree']}/{a['n']}; previous pass {old.get('pass')} fail {old.get('fail')}, "
            f"new pass {new.get('pass')} fail {new.get('fail')} error {new.get('error')})")
