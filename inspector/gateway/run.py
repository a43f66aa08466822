"""`inspector gateway`: the feed and every enabled server on one asyncio loop, until SIGTERM/SIGINT.

Start-up checks everything a user can get wrong before anything serves, each as one line and exit 2
(systemd does not restart on it): the configuration, the endpoints, a port in use, the state folder, the
password hashes, the CURVE keys, a server whose module or library is missing. Then the feed subscribes,
the PLC handshakes are opened from the store, and each server's coroutine runs as a task; each prints
its line once it serves (`ready`), and systemd hears READY=1 once all of them do. A server that fails
before it serves ends the gateway with exit 2 (its one line); one that fails later, or the feed, with
exit 1 (systemd restarts it). SIGTERM/SIGINT: every server cancelled, the feed stopped, its last
acknowledgements written, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import structlog
import zmq

from inspector.config import InspectorConfig, load_config
from inspector.errors import InspectorError
from inspector.gateway.config import GatewayConfig, split_host_port
from inspector.gateway.feed import Feed, FeedError, FeedOptions, image_fetcher
from inspector.gateway.hub import RECENT, Counters, Hub, PartResult
from inspector.gateway.opcua_check import opcua_problems
from inspector.gateway.passwords import is_hash
from inspector.gateway.store import Store, StoreError
from inspector.gateway.trigger import TriggerForwarder
from inspector.logs import setup_logging
from inspector.network import security
from inspector.notify import Notifier

log = structlog.get_logger("inspector.gateway")

STOP_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class GatewayOptions:
    """The command line; None = what the configuration says."""

    config: Path | None = None
    connect: str | None = None
    backfill: str | None = None
    trigger: str | None = None
    opcua: str | None = None
    modbus: str | None = None
    http: str | None = None
    mqtt: str | None = None
    state: Path | None = None


@dataclass(frozen=True)
class Server:
    key: str            # the GatewayConfig section
    title: str
    module: str
    function: str
    flag: str           # the command-line flag that turns it off with ""
    plc: bool           # has a PLC handshake (opened from the store before it starts)


SERVERS = (
    Server("opcua", "OPC UA server", "inspector.gateway.opcua_server", "serve_opcua", "--opcua", True),
    Server("modbus", "Modbus server", "inspector.gateway.modbus_server", "serve_modbus", "--modbus", True),
    Server("http", "web page and /metrics", "inspector.gateway.web", "serve_http", "--http", False),
    Server("mqtt", "MQTT bridge", "inspector.gateway.mqtt_bridge", "serve_mqtt", "--mqtt", False),
)


def gateway_config(opts: GatewayOptions) -> InspectorConfig:
    """The configuration file (None: defaults), INSPECTOR_* variables, and the flags over both."""
    gw: dict[str, Any] = {}
    for name in ("connect", "backfill", "trigger"):
        if getattr(opts, name) is not None:
            gw[name] = getattr(opts, name)
    if opts.state is not None:
        gw["state_dir"] = str(opts.state)
    for key, field, value in (("opcua", "endpoint", opts.opcua), ("modbus", "bind", opts.modbus),
                              ("http", "bind", opts.http), ("mqtt", "broker", opts.mqtt)):
        if value is not None:
            gw[key] = {field: value}
    return load_config(opts.config, {"gateway": gw} if gw else None)


def enabled(gw: GatewayConfig, server: Server) -> bool:
    """Whether its endpoint is set ("" turns a server off)."""
    return bool({"opcua": gw.opcua.endpoint, "modbus": gw.modbus.bind, "http": gw.http.bind,
                 "mqtt": gw.mqtt.broker}[server.key])


def check_gateway(cfg: InspectorConfig) -> list[str]:
    """What `inspector check-config` and the gateway refuse beyond the schema: unusable password hashes,
    missing or unsafe CURVE keys. One line each (empty: fine)."""
    gw = cfg.gateway
    problems = [f"gateway.{where}.users.{user}: not a password hash (make one with `inspector gateway-passwd {user}`)"
                for where, users in (("opcua", gw.opcua.users), ("http", gw.http.users))
                for user, stored in users.items() if not is_hash(stored)]
    if gw.client_key is not None and gw.server_key is not None:
        try:
            security.load_keypair(gw.client_key)
            security.load_public(gw.server_key)
        except security.SecurityError as e:
            problems.append(f"gateway.client_key/server_key: {e}")
    return problems + opcua_problems(gw.opcua)


def run_gateway(opts: GatewayOptions, out: Callable[[str], None] | None = None) -> int:
    """The whole `inspector gateway`: checks, then the loop until a signal; the exit code."""
    cfg = gateway_config(opts)
    problems = check_gateway(cfg)
    if problems:
        raise InspectorError("; ".join(problems))
    setup_logging(cfg.logging.level, cfg.logging.format, cfg.station_id, stream=sys.stderr)
    gw = cfg.gateway
    servers = [s for s in SERVERS if enabled(gw, s)]
    functions = {s.key: import_server(s) for s in servers}
    _check_endpoints(gw, servers)
    check_state_dir(gw.state_dir)
    try:
        store = Store(gw.state_dir, retention=gw.history_rows, synchronous=gw.synchronous)
    except StoreError as e:
        raise InspectorError(str(e)) from None
    try:
        return asyncio.run(_serve(cfg, store, servers, functions, out or _print))
    finally:
        store.close()


def _print(line: str) -> None:
    print(line, flush=True)


def import_server(server: Server) -> Callable[..., Any]:
    """The server's coroutine function; InspectorError naming the fix when its module or library is missing."""
    try:
        module = importlib.import_module(server.module)
    except ModuleNotFoundError as e:
        missing = e.name or "?"
        if missing.startswith("inspector"):
            raise InspectorError(f"gateway: the {server.title} is not part of this installation ({missing} is "
                                 f"missing): update bigan-inspect, or turn it off with {server.flag} \"\"") from None
        raise InspectorError(f"gateway: the {server.title} needs the Python package {missing!r}: "
                             f"pip install 'bigan-inspect[gateway]', or turn it off with {server.flag} \"\"") from None
    function = getattr(module, server.function, None)
    if function is None:
        raise InspectorError(f"gateway: {server.module} has no {server.function}(): update bigan-inspect, "
                             f"or turn it off with {server.flag} \"\"")
    return function


def _check_endpoints(gw: GatewayConfig, servers: list[Server]) -> None:
    """ZeroMQ endpoints that libzmq refuses, and server ports already in use: one line, exit 2."""
    if not gw.connect:
        raise InspectorError("gateway.connect is empty: pass --connect tcp://STATION:5556 (its publish.bind)")
    ctx = zmq.Context()
    try:
        for name in ("connect", "backfill", "trigger"):
            endpoint = getattr(gw, name)
            if not endpoint:
                continue
            sock = ctx.socket(zmq.SUB if name == "connect" else zmq.DEALER)
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as e:
                raise InspectorError(f"gateway.{name} {endpoint!r}: not a ZeroMQ endpoint ({e}); "
                                     "e.g. tcp://127.0.0.1:5556") from None
            finally:
                sock.close(0)
    finally:
        ctx.term()
    for server in servers:
        if server.key == "mqtt":
            continue        # a client: the broker's address is checked when it connects
        where, host, port = _listen_address(gw, server)
        _check_port(where, host, port)


def _listen_address(gw: GatewayConfig, server: Server) -> tuple[str, str, int]:
    if server.key == "opcua":
        url = urlparse(gw.opcua.endpoint)
        try:
            port = url.port or 4840
        except ValueError:
            raise InspectorError(f"gateway.opcua.endpoint {gw.opcua.endpoint!r}: the port is not a number") from None
        return f"gateway.opcua.endpoint {gw.opcua.endpoint}", url.hostname or "0.0.0.0", port
    bind = getattr(gw, server.key).bind
    host, port = split_host_port(bind, f"gateway.{server.key}.bind")
    return f"gateway.{server.key}.bind {bind}", host.strip("[]"), port


def _check_port(where: str, host: str, port: int) -> None:
    """Bind and release HOST:PORT as the servers will (SO_REUSEADDR, as asyncio does)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise InspectorError(f"{where}: cannot resolve {host!r} ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            why = "the port is in use" if e.errno == 98 else (e.strerror or str(e))
            raise InspectorError(f"{where}: cannot listen there: {why}") from None


def _feed_options(gw: GatewayConfig) -> FeedOptions:
    return FeedOptions(gw.connect, gw.backfill, client_secret=gw.client_key, server_public=gw.server_key)


def new_hub(store: Store) -> Hub:
    """The hub as the store left it: counters, last sequence, the newest results (headers only)."""
    hub = Hub(Counters(**vars(store.counters)), store.last_sequence)
    for header in store.newest(RECENT):
        hub.recent.append(PartResult.from_message(header))
    hub.last_result = hub.recent[-1] if hub.recent else None
    hub.history = store
    store.hub = hub
    return hub


async def _serve(cfg: InspectorConfig, store: Store, servers: list[Server],
                 functions: dict[str, Callable[..., Any]], out: Callable[[str], None]) -> int:
    gw = cfg.gateway
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ctx = zmq.Context()
    notifier = Notifier()
    hub = new_hub(store)
    opts = _feed_options(gw)
    store.fetch_images = image_fetcher(opts, ctx)
    trigger = TriggerForwarder(gw.trigger, context=ctx, client_secret=gw.client_key, server_public=gw.server_key)
    feed = Feed(opts, store, hub, ctx)
    tasks: dict[asyncio.Task[Any], Server] = {}
    ready: set[str] = set()
    # systemd hears READY=1 once every server on this box serves; the MQTT bridge is not waited for:
    # the plant's broker may be down at start (the bridge retries, queues, and prints its line later).
    required = {s.key for s in servers if s.key != "mqtt"}
    told: list[bool] = []
    try:
        try:
            feed.start(loop)
        except FeedError as e:
            raise InspectorError(str(e)) from None
        out(f"feed: {gw.connect} (backfill {gw.backfill or 'none'}; state {store.path}; "
            f"last sequence {store.last_sequence})")
        for server in servers:
            if server.plc:
                store.open_handshake(hub, server.key)
        for server in servers:
            def on_ready(line: str, key: str = server.key) -> None:
                ready.add(key)
                out(line)
                if not told and ready >= required:
                    told.append(True)
                    notifier.ready(f"serving {', '.join(sorted(ready))}")
            task = asyncio.create_task(_call(functions[server.key], server, gw, hub, trigger, on_ready,
                                             cfg.station_id, store, station_journal(cfg)), name=server.key)
            tasks[task] = server
        if not required:
            told.append(True)
            notifier.ready("feed only" if not servers else "feed; mqtt connecting")
        return await _supervise(stop, tasks, ready, feed, notifier)
    finally:
        notifier.stopping()
        await _cancel(list(tasks))
        await asyncio.to_thread(feed.stop)
        trigger.close()
        ctx.destroy(linger=0)
        notifier.close()


def station_journal(cfg: InspectorConfig) -> Path | None:
    """The station's journal file (its [state]) that the web page's label action writes to; None: no journal."""
    return cfg.state.journal_file if cfg.state.journal else None


def _call(function: Callable[..., Any], server: Server, gw: GatewayConfig, hub: Hub, trigger: TriggerForwarder,
          ready: Callable[[str], None], station_id: str, store: Store, journal: Path | None = None) -> Any:
    section = getattr(gw, server.key)
    if server.key == "opcua":
        args: tuple[Any, ...] = (hub, section, trigger, ready, station_id)
    elif server.key == "modbus":
        args = (hub, section, trigger, ready)
    else:
        args = (hub, section, ready, station_id)
    kwargs: dict[str, Any] = {"acked": store.acked(server.key), "persist": store.set_acked} if server.plc else {}
    if server.key == "http":
        kwargs["journal"] = journal  # the label action (web/labels.py)
    return function(*args, **kwargs)


async def _supervise(stop: asyncio.Event, tasks: dict[asyncio.Task[Any], Server], ready: set[str], feed: Feed,
                     notifier: Notifier) -> int:
    """Wait for a signal (exit 0), a server failing (2 before it served, else 1) or the feed dying (1)."""
    stopper = asyncio.create_task(stop.wait())
    interval = notifier.watchdog_interval_s or 1.0
    pending: set[asyncio.Task[Any]] = set(tasks)
    try:
        while True:
            done, _ = await asyncio.wait({stopper, *pending}, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                log.info("stopping: signal received")
                return 0
            for task in done:
                pending.discard(task)
                server = tasks[task]
                error = task.exception()
                if error is None:
                    continue            # a server with nothing to do (e.g. no broker) ended by itself
                if server.key not in ready:
                    message = str(error) if isinstance(error, InspectorError) else f"{type(error).__name__}: {error}"
                    raise InspectorError(f"gateway: the {server.title} could not start: {message}")
                log.error("server failed", server=server.key, error=repr(error))
                print(f"gateway: the {server.title} failed: {type(error).__name__}: {error}", file=sys.stderr)
                return 1
            if not feed.alive:
                print("gateway: the feed stopped unexpectedly (see the log)", file=sys.stderr)
                return 1
            notifier.watchdog()     # the loop is alive and the feed is running
    finally:
        stopper.cancel()


async def _cancel(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait(tasks, timeout=STOP_TIMEOUT_S)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("server ended with an error while stopping", server=task.get_name(),
                        error=repr(task.exception()))


def check_state_dir(path: Path) -> None:
    """InspectorError unless PATH is (or can be made) a folder this process can write in."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InspectorError(f"gateway.state_dir {path}: cannot create it ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise InspectorError(f"gateway.state_dir {path}: not writable by this user; pass --state DIR")
