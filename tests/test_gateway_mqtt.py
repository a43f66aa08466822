"""The MQTT bridge against a real mosquitto started here: the bridge runs in another process (this file run
as a script, fed made-up results through a Hub), a paho subscriber in the test process checks what the
broker delivers: every result once and in order at QoS 1, the retained status and `online` for a late
subscriber, the last will when the bridge is SIGKILLed, nothing lost across a broker restart or a broker
that is not there at start (within the queue bound, the oldest dropped and counted), user/password auth.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MOSQUITTO = "/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else shutil.which("mosquitto")
ROOT = Path(__file__).resolve().parent.parent
STATION = "line-a"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Broker:
    """A mosquitto on 127.0.0.1:port in a subprocess; persistence (in `folder`) keeps sessions across a restart."""

    def __init__(self, folder: Path, *, persistence: bool = False, passwords: Path | None = None) -> None:
        self.folder, self.port = folder, free_port()
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {'false' if passwords else 'true'}",
                 f"user {getpass.getuser()}",      # as root, mosquitto would switch to a user that cannot write here
                 f"persistence {'true' if persistence else 'false'}", f"persistence_location {folder}/",
                 "max_queued_messages 100000", "log_dest stderr", "log_type error", "log_type warning"]
        if passwords:
            lines.append(f"password_file {passwords}")
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        assert MOSQUITTO
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.folder / "broker.log", "ab"))  # noqa: SIM115
        def listening() -> bool:
            assert self.proc is not None and self.proc.poll() is None, (self.folder / "broker.log").read_text()
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_until(listening, 10, "mosquitto to listen")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()        # SIGTERM: mosquitto saves its persistence file and exits
            self.proc.wait(10)
        self.proc = None


class Subscriber:
    """A paho client in this process keeping every message it receives: (topic, payload dict, qos, retain)."""

    def __init__(self, port: int, topic: str = "inspector/#", *, client_id: str = "",
                 persistent: bool = False, auth: tuple[str, str] | None = None) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.topic, self.messages, self.subscribed = topic, [], threading.Event()
        self.lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent)
        if auth:
            self.client.username_pw_set(*auth)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1) if not rc.is_failure else None
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._message
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.subscribed.wait(10), "the test's subscriber could not subscribe"

    def _message(self, client: Any, userdata: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, json.loads(msg.payload), msg.qos, bool(msg.retain)))

    def on(self, kind: str) -> list[tuple[dict[str, Any], int, bool]]:
        with self.lock:
            return [(p, q, r) for t, p, q, r in self.messages if t == f"inspector/{STATION}/{kind}"]

    def sequences(self) -> list[int]:
        return [p["sequence"] for p, _, _ in self.on("result")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Bridge:
    """This file run as a script: serve_mqtt in its own process, fed made-up results on command."""

    def __init__(self, tmp: Path, port: int, **mqtt: Any) -> None:
        cfg = {"broker": f"127.0.0.1:{port}", **mqtt}
        self.stderr_path = tmp / f"bridge-{time.monotonic_ns()}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([sys.executable, __file__, json.dumps(cfg), STATION], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(self.stderr_path, "wb"), text=True)  # noqa: SIM115
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ready(self, timeout: float = 20) -> str:
        return wait_until(lambda: next((x for x in self.lines if x.startswith("READY ")), None), timeout,
                          f"the bridge's ready line; its log:\n{self.log()}")

    def fed(self, last: int, timeout: float = 60) -> None:
        wait_until(lambda: f"FED {last}" in self.lines, timeout, f"the bridge to be fed up to {last}")

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def stop(self) -> int:
        self.send("stop")
        return self.proc.wait(20)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


need_mosquitto = pytest.mark.skipif(MOSQUITTO is None, reason="mosquitto (Debian package `mosquitto`) is not installed")


@pytest.fixture
def cleanup() -> Any:
    things: list[Any] = []
    yield things.append
    for thing in reversed(things):
        (thing.kill if isinstance(thing, Bridge) else thing.stop if isinstance(thing, Broker) else thing.close)()


@need_mosquitto
def test_every_result_once_in_order_retained_status_and_clean_stop(tmp_path: Path, cleanup: Any) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup(broker)
    sub = Subscriber(broker.port)
    cleanup(sub)
    bridge = Bridge(tmp_path, broker.port)
    cleanup(bridge)
    line = bridge.ready()
    assert f"mqtt://127.0.0.1:{broker.port}" in line and "inspector-gateway-line-a" in line
    bridge.send("status")
    bridge.send("feed 300 0")
    bridge.fed(300)
    wait_until(lambda: len(sub.sequences()) >= 300, 30, "300 results at the subscriber")
    time.sleep(0.3)
    assert sub.sequences() == list(range(1, 301))       # once each, in order
    results = sub.on("result")
    assert all(q == 1 and not r for _, q, r in results)   # QoS 1, not retained
    first = results[0][0]
    assert first["part_id"] == "P-1" and first["verdict"] == "fail" and first["rois"][0]["score"] == 0.5
    assert first["images"][0]["kind"] == "input" and "PNGDATA" not in json.dumps(first)   # no image bytes

    t0 = time.monotonic()
    bridge.send("feed 100 0.02")        # 2 s of results: the status follows at most once a second
    bridge.fed(400)
    elapsed = time.monotonic() - t0
    wait_until(lambda: any(p["parts"] == 400 for p, _, _ in sub.on("status")), 10, "a status with 400 parts")
    statuses = [p for p, _, _ in sub.on("status")]
    assert len(statuses) <= 3 + elapsed * 1.0 + 2, f"{len(statuses)} status messages in {elapsed:.1f} s"
    last = statuses[-1]
    assert last["state"] == "running" and last["last_sequence"] == 400 and last["failed"] == 200
    assert last["model_id"] == "m-1" and last["camera"] == "open"

    late = Subscriber(broker.port)      # retained: the status and `online`, never results
    cleanup(late)
    wait_until(lambda: late.on("status") and late.on("gateway"), 5, "the retained messages")
    time.sleep(0.3)
    (status, q, retained), = late.on("status")[:1]
    assert retained and q == 1 and status["parts"] == 400
    gateway, _, retained = late.on("gateway")[0]
    assert retained and gateway["online"] is True and gateway["results_dropped"] == 0
    assert late.on("result") == []

    assert bridge.stop() == 0
    wait_until(lambda: any(p["online"] is False for p, _, _ in sub.on("gateway")), 5, "online: false")
    offline = [p for p, _, _ in sub.on("gateway") if p["online"] is False]
    assert offline[-1]["reason"] == "stopped" and offline[-1]["results_published"] == 400
    third = Subscriber(broker.port, f"inspector/{STATION}/gateway")
    cleanup(third)
    wait_until(lambda: third.on("gateway"), 5, "the retained offline message")
    assert third.on("gateway")[0][0]["online"] is False and third.on("gateway")[0][2]
    assert sub.sequences() == list(range(1, 401))


@need_mosquitto
def test_sigkilled_bridge_leaves_its_last_will(tmp_path: Path, cleanup: Any) -> None:
    broker = Broker(tmp_path / "broker").start()
    cleanup(broker)
    bridge = Bridge(tmp_path, broker.port, topic_prefix="inspector", client_id="gw-will")
    cleanup(bridge)
    bridge.ready()
    sub = Subscriber(broker.port, f"inspector/{STATION}/gateway")
    cleanup(sub)
    wait_until(lambda: sub.on("gateway"), 5, "the retained online message")
    assert sub.on("gateway")[0][0]["online"] is True and sub.on("gateway")[0][0]["client_id"] == "gw-will"
    bridge.kill()
    wait_until(lambda: any(p["online"] is False for p, _, _ in sub.on("gateway")), 10, "the last will")
    will = [p for p, _, _ in sub.on("gateway") if p["online"] is False][0]
    assert will["reason"] == "connection lost" and will["station_id"] == STATION
    late = Subscriber(broker.port, f"inspector/{STATION}/gateway")
    cleanup(late)
    wait_until(lambda: late.on("gateway"), 5, "the retained will")
    assert late.on("gateway")[0][0]["online"] is False and late.on("gateway")[0][2]


def _in_order_without_loss(seqs: list[int], expected: list[int]) -> int:
    """QoS 1 is at-least-once: a result in flight when the broker died may come twice. First occurrences
    must be exactly `expected`, in order; returns the number of repeats."""
    seen: set[int] = set()
    firsts = [s for s in seqs if not (s in seen or seen.add(s))]  # type: ignore[func-returns-value]
    assert firsts == expected, f"missing {sorted(set(expected) - seen)[:20]}, order {firsts[:50]}"
    return len(seqs) - len(firsts)


@need_mosquitto
def test_broker_restart_mid_feed_loses_nothing(tmp_path: Path, cleanup: Any) -> None:
    broker = Broker(tmp_path / "broker", persistence=True).start()
    cleanup(broker)
    sub = Subscriber(broker.port, client_id="plant-mes", persistent=True)   # its session survives the restart
    cleanup(sub)
    bridge = Bridge(tmp_path, broker.port)
    cleanup(bridge)
    bridge.ready()
    bridge.send("feed 500 0.01")
    wait_until(lambda: len(sub.sequences()) >= 80, 30, "the first results")
    broker.stop()
    down_at = len(sub.sequences())
    time.sleep(3)
    broker.start()
    bridge.fed(500)
    wait_until(lambda: set(sub.sequences()) >= set(range(1, 501)), 60,
               f"every result after the restart; bridge log:\n{bridge.log()}")
    time.sleep(0.5)
    repeats = _in_order_without_loss(sub.sequences(), list(range(1, 501)))
    assert repeats <= 200 and down_at < 500
    assert "lost the connection to mqtt://" in bridge.log()
    wait_until(lambda: any(p.get("connects") == 2 and p["online"] for p, _, _ in sub.on("gateway")), 10,
               "online again after the restart")
    assert bridge.stop() == 0


@need_mosquitto
def test_broker_away_at_start_bounded_queue_drops_the_oldest(tmp_path: Path, cleanup: Any) -> None:
    broker = Broker(tmp_path / "broker", persistence=True).start()
    cleanup(broker)
    sub = Subscriber(broker.port, client_id="plant-mes", persistent=True)
    sub.close()             # its session (and subscription) stays at the broker, and in its file
    broker.stop()
    bridge = Bridge(tmp_path, broker.port, queue_limit=50)
    cleanup(bridge)
    bridge.send("feed 120 0")
    bridge.fed(120)
    wait_until(lambda: "not reachable" in bridge.log(), 10, "the bridge saying the broker is away")
    assert not any(x.startswith("READY") for x in bridge.lines)
    broker.start()
    bridge.ready(30)        # printed once connected
    sub = Subscriber(broker.port, client_id="plant-mes", persistent=True)
    cleanup(sub)
    wait_until(lambda: len(sub.sequences()) >= 50, 30, "the queued results")
    time.sleep(0.5)
    assert sub.sequences() == list(range(71, 121))      # the newest 50, once each, in order
    wait_until(lambda: any(p.get("results_dropped") == 70 for p, _, _ in sub.on("gateway")), 5,
               "the drops in the gateway topic")
    assert sum(x.startswith("READY") for x in bridge.lines) == 1


@need_mosquitto
@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_user_and_password(tmp_path: Path, cleanup: Any) -> None:
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(passwords), "gateway", "s3cret"], check=True,
                   capture_output=True)
    broker = Broker(tmp_path / "broker", passwords=passwords).start()
    cleanup(broker)
    (tmp_path / "good").write_text("s3cret\n")
    (tmp_path / "bad").write_text("wrong\n")
    sub = Subscriber(broker.port, auth=("gateway", "s3cret"))
    cleanup(sub)
    bridge = Bridge(tmp_path, broker.port, username="gateway", password_file=str(tmp_path / "good"))
    cleanup(bridge)
    bridge.ready()
    bridge.send("feed 5 0")
    wait_until(lambda: sub.sequences() == [1, 2, 3, 4, 5], 10, "5 results")
    refused = Bridge(tmp_path, broker.port, username="gateway", password_file=str(tmp_path / "bad"),
                     client_id="gw-refused")
    cleanup(refused)
    wait_until(lambda: "refused the connection" in refused.log(), 10, "the refusal in the log")
    assert "not authorized" in refused.log().lower() and not refused.lines
    missing = Bridge(tmp_path, broker.port, username="gateway", password_file=str(tmp_path / "nope"))
    assert missing.proc.wait(20) == 2
    (error,) = [x for x in missing.lines if x.startswith("ERROR")]
    assert "password_file" in error and "nope" in error


@need_mosquitto
def test_results_lost_from_a_full_event_queue_are_taken_from_the_hub(tmp_path: Path, cleanup: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from inspector.gateway import hub as hub_module
    from inspector.gateway.config import MqttConfig
    from inspector.gateway.hub import Hub, PartResult
    from inspector.gateway.mqtt_bridge import MqttStats, serve_mqtt

    broker = Broker(tmp_path / "broker").start()
    cleanup(broker)
    sub = Subscriber(broker.port)
    cleanup(sub)
    monkeypatch.setattr(hub_module, "QUEUE", 5)     # the bridge's queue of hub events overflows at once

    async def main() -> MqttStats:
        hub, stats, ready = Hub(), MqttStats(), asyncio.Event()
        task = asyncio.create_task(serve_mqtt(hub, MqttConfig(broker=f"127.0.0.1:{broker.port}"),
                                              lambda line: ready.set(), STATION, stats=stats))
        await asyncio.wait_for(ready.wait(), 20)
        for seq in range(1, 51):        # without yielding to the bridge: 45 events dropped from its queue
            hub.on_result(PartResult.from_message(_header(seq)))
        assert hub.dropped >= 45
        await asyncio.to_thread(wait_until, lambda: len(sub.sequences()) >= 50, 20, "50 results")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return stats

    stats = asyncio.run(main())
    time.sleep(0.3)
    assert sub.sequences() == list(range(1, 51))
    assert stats.published == stats.delivered == 50 and stats.dropped == 0


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost signed by it: (ca, cert, key)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test plant CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(ca_key, hashes.SHA256()))
    paths = folder / "ca.pem", folder / "broker.pem", folder / "broker.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@need_mosquitto
def test_tls_with_the_plant_ca(tmp_path: Path, cleanup: Any) -> None:
    pytest.importorskip("cryptography")
    ca, cert, key = make_tls(tmp_path)
    plain = Broker(tmp_path / "broker")       # its plain listener for the test's subscriber, a TLS one for the bridge
    tls_port = free_port()
    with plain.conf.open("a") as f:
        f.write(f"listener {tls_port} 127.0.0.1\ncafile {ca}\ncertfile {cert}\nkeyfile {key}\n")
    plain.start()
    cleanup(plain)
    sub = Subscriber(plain.port)
    cleanup(sub)
    bridge = Bridge(tmp_path, tls_port, tls=True, ca_file=str(ca))
    cleanup(bridge)
    assert f"mqtts://127.0.0.1:{tls_port}" in bridge.ready()
    bridge.send("feed 3 0")
    wait_until(lambda: sub.sequences() == [1, 2, 3], 10, "3 results over TLS")
    (tmp_path / "other").mkdir()
    other_ca = make_tls(tmp_path / "other")[0]
    untrusted = Bridge(tmp_path, tls_port, tls=True, ca_file=str(other_ca), client_id="gw-untrusted")
    cleanup(untrusted)
    time.sleep(3)       # a broker whose certificate the plant CA did not sign: never connected
    assert not untrusted.lines and untrusted.proc.poll() is None and "TLS certificate" in untrusted.log()


def test_bad_names_and_files_are_one_line_errors(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from inspector.errors import InspectorError
    from inspector.gateway.config import MqttConfig
    from inspector.gateway.hub import Hub
    from inspector.gateway.mqtt_bridge import serve_mqtt

    for prefix in ("a/+", "plant/#", "", "$SYS/x", "a\0b"):
        with pytest.raises(ValidationError):
            MqttConfig(broker="127.0.0.1:1", topic_prefix=prefix)
    cfg = MqttConfig(broker="127.0.0.1:1")
    for station in ("a/b", "a+", "x#", ""):
        with pytest.raises(InspectorError, match="station id"):
            asyncio.run(serve_mqtt(Hub(), cfg, print, station))
    with pytest.raises(InspectorError, match="cannot read it"):
        asyncio.run(serve_mqtt(Hub(), MqttConfig(broker="127.0.0.1:1", username="u",
                                                 password_file=tmp_path / "missing"), print, STATION))
    with pytest.raises(InspectorError, match="username is empty"):
        asyncio.run(serve_mqtt(Hub(), MqttConfig(broker="127.0.0.1:1", password_file=tmp_path / "x"), print, STATION))
    with pytest.raises(InspectorError, match="ca_file"):
        asyncio.run(serve_mqtt(Hub(), MqttConfig(broker="127.0.0.1:1", tls=True, ca_file=tmp_path / "ca.pem"),
                               print, STATION))
    asyncio.run(serve_mqtt(Hub(), MqttConfig(), print, STATION))       # no broker: nothing to do


# -- the bridge's process ----------------------------------------------------------------------------------
def _header(seq: int) -> dict[str, Any]:
    verdict = "fail" if seq % 2 else "pass"
    return {"schema_version": 1, "type": "result", "sequence": seq, "station_id": STATION, "run_id": "0000abcd",
            "part_id": f"P-{seq}", "frame": seq, "trigger": "external", "captured_at": time.time(),
            "published_at": time.time(), "latency_ms": 12.5, "verdict": verdict, "error": None, "model_id": "m-1",
            "rois": [{"name": "center", "x": 0, "y": 0, "width": 8, "height": 8,
                      "score": 0.5 if verdict == "fail" else 0.1, "threshold": 0.25, "verdict": verdict}],
            "images": [{"roi": "center", "kind": "input", "format": "png", "width": 8, "height": 8, "channels": 1}]}


async def _child(cfg_json: str, station: str) -> int:
    from inspector.errors import InspectorError
    from inspector.gateway.config import MqttConfig
    from inspector.gateway.hub import Hub, PartResult
    from inspector.gateway.mqtt_bridge import serve_mqtt

    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "stop")

    threading.Thread(target=read_stdin, daemon=True).start()
    hub = Hub()
    task = asyncio.create_task(serve_mqtt(hub, MqttConfig(**json.loads(cfg_json)),
                                          lambda line: print("READY", line, flush=True), station))
    seq = 0
    while True:
        get = asyncio.create_task(commands.get())
        await asyncio.wait({get, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            get.cancel()
            try:
                task.result()
            except InspectorError as e:
                print("ERROR", e, flush=True)
                return 2
            return 1
        words = get.result().split()
        if words[0] == "feed":
            for _ in range(int(words[1])):
                seq += 1
                hub.on_result(PartResult.from_message(_header(seq), [b"PNGDATA"]))
                await asyncio.sleep(float(words[2]))
            print("FED", seq, flush=True)
        elif words[0] == "status":
            hub.on_status({"type": "status", "station_id": station, "model_id": "m-1", "run_id": "0000abcd",
                           "camera": {"state": "open"}, "journal": {"state": "ok"}, "fps": 30.0})
        elif words[0] == "stop":
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                return 0
            except Exception as e:  # noqa: BLE001 - the test reads it
                print("ERROR", repr(e), flush=True)
                return 1
            return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(_child(sys.argv[1], sys.argv[2])))
