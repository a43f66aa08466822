"""The gateway's OPC UA server (inspector/gateway/opcua_server.py) against a REAL asyncua client.

The server runs in a subprocess (this file, `python tests/test_gateway_opcua.py serve SPEC`) on a Hub
fed with made-up result headers on command (stdin: `feed N INTERVAL_S`, `status STATE`); the client
runs here. The Inspect() trigger goes through the gateway's TriggerForwarder to a ZeroMQ PULL socket this
test binds, as it would to the station's external-trigger socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from test_inspector_support import close_stdin_and_wait

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

NS = "urn:bigan-inspect:station"
VERDICTS = ("pass", "pass", "fail", "error")


def header(seq: int) -> dict[str, Any]:
    """A made-up result whose every field can be checked against its sequence."""
    verdict = VERDICTS[seq % 4]
    now = time.time()
    return {"schema_version": 1, "type": "result", "sequence": seq, "station_id": "line-t", "run_id": "0badc0de",
            "part_id": f"P{seq:06d}", "frame": seq, "trigger": "continuous", "captured_at": now - 0.01,
            "published_at": now, "latency_ms": 0.5 + seq % 50, "verdict": verdict,
            "error": "engine" if verdict == "error" else None, "model_id": "ours-test-123",
            "rois": [{"name": "left", "score": None if verdict == "error" else seq / 1000, "threshold": 0.25,
                      "verdict": "error" if verdict == "error" else verdict},
                     {"name": "right", "score": None if verdict == "error" else 0.001, "threshold": 0.5,
                      "verdict": "error" if verdict == "error" else "pass"}],
            "images": []}


# ---------------------------------------------------------------- the server process
def _serve(spec: dict[str, Any]) -> int:
    from inspector.errors import InspectorError
    from inspector.gateway.config import OpcUaConfig
    from inspector.gateway.hub import Hub, PartResult
    from inspector.gateway.opcua_server import serve_opcua
    from inspector.gateway.trigger import TriggerForwarder

    async def main() -> int:
        hub = Hub()
        loop = asyncio.get_running_loop()
        cmds: asyncio.Queue[str] = asyncio.Queue()

        def read_stdin() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(cmds.put_nowait, line)
            loop.call_soon_threadsafe(cmds.put_nowait, "")

        threading.Thread(target=read_stdin, daemon=True).start()
        trigger = TriggerForwarder(spec["trigger"], wait_s=0.5)
        server = asyncio.create_task(serve_opcua(hub, OpcUaConfig(**spec["opcua"]), trigger,
                                                 lambda line: print("READY", line, flush=True), "line-t"))
        seq = 0
        while True:
            get = asyncio.create_task(cmds.get())
            await asyncio.wait({get, server}, return_when=asyncio.FIRST_COMPLETED)
            if server.done():
                try:
                    server.result()
                except InspectorError as e:
                    print("ERROR", e, flush=True)
                    return 2
                return 1
            words = get.result().split()
            if not words:
                break
            if words[0] == "feed":
                for _ in range(int(words[1])):
                    seq += 1
                    hub.on_result(PartResult.from_message(header(seq)))
                    await asyncio.sleep(float(words[2]))
                print("FED", seq, flush=True)
            elif words[0] == "badstatus":   # a status the hub cannot make sense of
                hub.on_status({"type": "status", "engine": "nope", "camera": [], "frames_dropped": {"x": "y"}})
                print("STATUS", flush=True)
            elif words[0] == "status":
                hub.on_status({"type": "status", "model_id": "ours-test-123", "final": False,
                               "camera": {"state": words[1]}, "frames_dropped": {"queue_full": 3, "corrupt": 1}})
                print("STATUS", flush=True)
        server.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await server
        return 0

    return asyncio.run(main())


class ServerProc:
    def __init__(self, tmp: Path, opcua: dict[str, Any], trigger: str = "tcp://127.0.0.1:1") -> None:
        self.stderr = tmp / f"opcua-server-{time.monotonic_ns()}.log"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "serve", json.dumps({"opcua": opcua, "trigger": trigger})],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr.open("w"), text=True, env=env)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put("EOF")

    def expect(self, prefix: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {prefix!r} line; stderr: {self.stderr.read_text()[-3000:]}") from None
            if line.startswith(prefix):
                return line
            if line.startswith(("EOF", "ERROR")):
                return line

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def feed(self, n: int, interval: float = 0.0, wait: bool = True) -> None:
        self.send(f"feed {n} {interval}")
        if wait:
            assert self.expect("FED").startswith("FED")

    def close(self) -> None:
        close_stdin_and_wait(self.proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(tmp: Path, opcua: dict[str, Any], trigger: str = "tcp://127.0.0.1:1") -> ServerProc:
    proc = ServerProc(tmp, opcua, trigger)
    line = proc.expect("READY")
    if not line.startswith("READY"):
        proc.close()
        raise AssertionError(f"server did not start: {line}; stderr: {proc.stderr.read_text()[-3000:]}")
    return proc


# ---------------------------------------------------------------- the client side
PATHS = ("StationId", "State", "StateCode", "ModelId", "Connected", "Counters/Parts", "Counters/Passed",
         "Counters/Failed", "Counters/Errors", "Counters/FramesDropped", "LastResult/Sequence",
         "LastResult/PartId", "LastResult/Verdict", "LastResult/VerdictCode", "LastResult/Latency",
         "LastResult/Timestamp", "LastResult/RoiNames", "LastResult/RoiScores", "LastResult/RoiThresholds",
         "LastResult/RoiVerdicts", "Handshake/ResultReady", "Handshake/Sequence", "Handshake/PartId",
         "Handshake/Verdict", "Handshake/VerdictCode", "Handshake/RoiScores", "Handshake/ResultAck")


async def station(client: Any) -> dict[str, Any]:
    """Every variable (and the Station object, the Inspect method) by browse path in the namespace."""
    idx = await client.get_namespace_index(NS)
    root = await client.nodes.objects.get_child([f"{idx}:Station"])
    nodes = {"": root, "Inspect": await root.get_child([f"{idx}:Inspect"])}
    for path in PATHS:
        nodes[path] = await root.get_child([f"{idx}:{p}" for p in path.split("/")])
    return nodes


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 120))


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import zmq
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    trigger_port = pull.bind_to_random_port("tcp://127.0.0.1")
    url = f"opc.tcp://127.0.0.1:{free_port()}/inspector"
    proc = start(tmp_path_factory.mktemp("opcua"), {"endpoint": url}, f"tcp://127.0.0.1:{trigger_port}")
    yield proc, url, pull
    proc.close()
    pull.close(0)
    ctx.term()


def test_last_result_and_station_by_browse_path(local: Any) -> None:
    from asyncua import Client, ua
    proc, url, _ = local
    proc.send("status open")
    proc.expect("STATUS")
    proc.feed(7)

    async def check() -> None:
        async with Client(url) as client:
            n = await station(client)
            seq = await n["LastResult/Sequence"].read_value()
            assert seq >= 7
            values = dict(zip(PATHS, await client.read_values([n[p] for p in PATHS]), strict=True))
            h = header(seq)
            assert values["StationId"] == "line-t" and values["State"] == "running" and values["StateCode"] == 1
            assert values["ModelId"] == "ours-test-123" and values["Connected"] is True
            assert values["Counters/Parts"] == seq and values["Counters/FramesDropped"] == 4
            assert values["Counters/Passed"] + values["Counters/Failed"] + values["Counters/Errors"] == seq
            assert values["LastResult/PartId"] == h["part_id"] and values["LastResult/Verdict"] == h["verdict"]
            assert values["LastResult/VerdictCode"] == {"pass": 1, "fail": 2, "error": 3}[h["verdict"]]
            assert values["LastResult/Latency"] == h["latency_ms"]
            assert values["LastResult/RoiNames"] == ["left", "right"]
            assert values["LastResult/RoiThresholds"] == [0.25, 0.5]
            assert values["LastResult/RoiVerdicts"] == [r["verdict"] for r in h["rois"]]
            ts = await n["LastResult/Timestamp"].read_data_value()
            assert abs(ts.Value.Value.timestamp() - time.time()) < 60 and ts.SourceTimestamp == ts.Value.Value
            types = {p: await n[p].read_data_type_as_variant_type() for p in PATHS}
            assert types["Counters/Parts"] == ua.VariantType.UInt64
            assert types["LastResult/Sequence"] == types["Handshake/ResultAck"] == ua.VariantType.Int64
            assert types["LastResult/Timestamp"] == ua.VariantType.DateTime
            assert types["LastResult/RoiScores"] == ua.VariantType.Double
            assert await n["LastResult/RoiScores"].read_value_rank() == 1
            # the default browse path is namespaced: LastResult/Sequence has ns=<station namespace>
            assert n["LastResult/Sequence"].nodeid.NamespaceIndex == await client.get_namespace_index(NS)

    run(check())


def test_last_result_is_never_a_mix(local: Any) -> None:
    """Reads of the whole LastResult object (one Read) while 300 results arrive at ~300/s."""
    from asyncua import Client
    proc, url, _ = local
    keys = ("LastResult/Sequence", "LastResult/PartId", "LastResult/Verdict", "LastResult/Latency",
            "LastResult/RoiScores", "LastResult/RoiVerdicts", "LastResult/VerdictCode")

    async def check() -> int:
        async with Client(url) as client:
            n = await station(client)
            nodes = [n[k] for k in keys]
            proc.feed(300, 0.003, wait=False)
            seen: set[int] = set()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                seq, pid, verdict, latency, scores, rv, code = await client.read_values(nodes)
                h = header(seq)
                assert (pid, verdict, latency, rv) == (h["part_id"], h["verdict"], h["latency_ms"],
                                                       [r["verdict"] for r in h["rois"]]), seq
                assert code == {"pass": 1, "fail": 2, "error": 3}[verdict]
                left = h["rois"][0]["score"]
                assert (math.isnan(scores[0]) if left is None else scores[0] == left), (seq, scores)
                seen.add(seq)
                if not proc.lines.empty() and proc.expect("FED").startswith("FED"):
                    break
            return len(seen)

    assert run(check()) > 10


def test_inspect_forwards_the_trigger(local: Any) -> None:
    from asyncua import Client, ua
    proc, url, pull = local

    async def call() -> None:
        async with Client(url) as client:
            n = await station(client)
            assert await n[""].call_method(n["Inspect"], ua.Variant("LOT7-000123", ua.VariantType.String)) is None
            for bad in ("x" * 129, "", "tab\there"):
                with pytest.raises(ua.uaerrors.BadInvalidArgument):
                    await n[""].call_method(n["Inspect"], bad)
            with pytest.raises(ua.uaerrors.BadInvalidArgument):
                await n[""].call_method(n["Inspect"], ua.Variant(42, ua.VariantType.Int32))
            with pytest.raises(ua.UaStatusCodeError):
                await n[""].call_method(n["Inspect"])
            assert await n["LastResult/Sequence"].read_value() >= 0   # still serving

    run(call())
    assert pull.poll(5000), "the trigger never arrived"
    assert json.loads(pull.recv()) == {"part_id": "LOT7-000123"}
    assert not pull.poll(300), "a refused Inspect() still sent a trigger"
    assert proc.proc.poll() is None


def test_bad_writes_are_refused_and_change_nothing(local: Any) -> None:
    from asyncua import Client, ua
    proc, url, _ = local
    proc.feed(2)

    async def check() -> None:
        async with Client(url) as client:
            n = await station(client)
            before = await client.read_values([n[p] for p in PATHS])
            for path, value in (("LastResult/Sequence", ua.Variant(1, ua.VariantType.Int64)),
                                ("State", ua.Variant("stopped", ua.VariantType.String)),
                                ("Counters/Parts", ua.Variant(0, ua.VariantType.UInt64)),
                                ("Handshake/ResultReady", ua.Variant(False, ua.VariantType.Boolean)),
                                ("Handshake/Sequence", ua.Variant(0, ua.VariantType.Int64))):
                with pytest.raises((ua.uaerrors.BadUserAccessDenied, ua.uaerrors.BadNotWritable)):
                    await n[path].write_value(value)
            with pytest.raises((ua.uaerrors.BadUserAccessDenied, ua.uaerrors.BadNotWritable)):
                await n["LastResult/Sequence"].write_attribute(
                    ua.AttributeIds.DisplayName, ua.DataValue(ua.Variant(ua.LocalizedText("x"))))
            ack = n["Handshake/ResultAck"]
            presented = await n["Handshake/Sequence"].read_value()
            assert presented > 0
            for wrong in (ua.Variant("1", ua.VariantType.String), ua.Variant(1.0, ua.VariantType.Double),
                          ua.Variant(presented, ua.VariantType.Int32), ua.Variant([presented], ua.VariantType.Int64)):
                with pytest.raises(ua.uaerrors.BadTypeMismatch):
                    await ack.write_value(wrong)
            for future in (presented + 1, 2**62, -5):
                with pytest.raises(ua.uaerrors.BadOutOfRange):
                    await ack.write_value(ua.Variant(future, ua.VariantType.Int64))
            with pytest.raises(ua.UaStatusCodeError):   # adding nodes is for admins; no client is one
                await n[""].add_variable(ua.NodeId("Intruder", 2), "2:Intruder", 1)
            after = await client.read_values([n[p] for p in PATHS])
            assert after == before
            # a stale ack (older than the one acknowledged last) is refused too
            await ack.write_value(ua.Variant(presented, ua.VariantType.Int64))
            while await n["Handshake/Sequence"].read_value() == presented:
                await asyncio.sleep(0.002)
            with pytest.raises(ua.uaerrors.BadOutOfRange):
                await ack.write_value(ua.Variant(presented - 1, ua.VariantType.Int64))
            assert await ack.read_value() == presented
            assert await n["Handshake/Sequence"].read_value() == presented + 1

    run(check())
    assert proc.proc.poll() is None
    # a status header the hub cannot read: logged, the results still show, the server keeps serving
    proc.send("badstatus")
    proc.expect("STATUS")
    proc.feed(1)

    async def still() -> None:
        async with Client(url) as client:
            n = await station(client)
            seq = await n["LastResult/Sequence"].read_value()
            assert await n["LastResult/PartId"].read_value() == header(seq)["part_id"]
            assert await n["Counters/Parts"].read_value() == seq

    run(still())
    proc.send("status open")
    proc.expect("STATUS")
    assert proc.proc.poll() is None


def test_handshake_delivers_every_result_exactly_once(tmp_path: Path) -> None:
    """A PLC following the handshake while 120 results arrive at 100/s gets each sequence once, in order."""
    from asyncua import Client, ua
    url = f"opc.tcp://127.0.0.1:{free_port()}/inspector"
    proc = start(tmp_path, {"endpoint": url})
    total = 120

    async def plc() -> list[int]:
        got: list[int] = []
        async with Client(url) as client:
            n = await station(client)
            assert await n["Handshake/ResultReady"].read_value() is False
            assert await n["Handshake/ResultAck"].read_value() == 0
            proc.feed(total, 0.01, wait=False)
            hs = [n["Handshake/ResultReady"], n["Handshake/Sequence"], n["Handshake/PartId"],
                  n["Handshake/Verdict"], n["Handshake/VerdictCode"], n["Handshake/RoiScores"]]
            deadline = time.monotonic() + 90
            while len(got) < total and time.monotonic() < deadline:
                ready, seq, part_id, verdict, code, scores = await client.read_values(hs)
                if not ready:
                    await asyncio.sleep(0.002)
                    continue
                assert part_id == header(seq)["part_id"] and verdict == header(seq)["verdict"] and code > 0
                assert len(scores) == 2
                got.append(seq)
                await n["Handshake/ResultAck"].write_value(ua.Variant(seq, ua.VariantType.Int64))
                if len(got) == 3:   # a PLC retrying its write: accepted, changes nothing
                    await n["Handshake/ResultAck"].write_value(ua.Variant(seq, ua.VariantType.Int64))
                while await n["Handshake/Sequence"].read_value() == seq:
                    await asyncio.sleep(0.001)
            assert await n["Handshake/ResultAck"].read_value() == got[-1]
            assert await n["Handshake/ResultReady"].read_value() is False
            with pytest.raises(ua.uaerrors.BadCommunicationError):   # no station on the trigger endpoint
                await n[""].call_method(n["Inspect"], "LOT-1")
        return got

    try:
        got = run(plc())
        assert got == list(range(1, total + 1))
        assert proc.expect("FED") == f"FED {total}"
    finally:
        proc.close()


# ---------------------------------------------------------------- security
def test_non_local_endpoint_without_certificate_is_one_line_error(tmp_path: Path) -> None:
    from inspector.errors import InspectorError
    from inspector.gateway.config import OpcUaConfig
    from inspector.gateway.hub import Hub
    from inspector.gateway.opcua_server import serve_opcua

    class NoTrigger:
        async def inspect(self, part_id: str) -> None: ...

    for cfg in (OpcUaConfig(endpoint="opc.tcp://0.0.0.0:4840/inspector"),
                OpcUaConfig(endpoint="opc.tcp://127.0.0.1:4840/inspector", security="sign_encrypt"),
                OpcUaConfig(endpoint="opc.tcp://10.0.0.5:4840/inspector", certificate=tmp_path / "no.der",
                            private_key=tmp_path / "no.pem")):
        with pytest.raises(InspectorError) as err:
            asyncio.run(serve_opcua(Hub(), cfg, NoTrigger(), lambda line: None, "s"))
        assert "\n" not in str(err.value) and "inspector gateway-cert" in str(err.value)
    with socket.socket() as busy:       # a port already taken: one line too
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = OpcUaConfig(endpoint=f"opc.tcp://127.0.0.1:{busy.getsockname()[1]}/inspector")
        with pytest.raises(InspectorError, match="cannot listen") as err:
            asyncio.run(serve_opcua(Hub(), cfg, NoTrigger(), lambda line: None, "s"))
        assert "\n" not in str(err.value)
    # and through a real server process: one ERROR line, nothing served
    proc = ServerProc(tmp_path, {"endpoint": "opc.tcp://0.0.0.0:4840/inspector"})
    line = proc.expect("READY")
    proc.close()
    assert line.startswith("ERROR") and "inspector gateway-cert" in line


def test_opcua_problems_for_check_config(tmp_path: Path) -> None:
    from inspector.gateway.config import OpcUaConfig
    from inspector.gateway.opcua_cert import make_certificate
    from inspector.gateway.opcua_check import is_secure, opcua_problems
    assert not is_secure(OpcUaConfig()) and not is_secure(OpcUaConfig(endpoint="opc.tcp://localhost:4840/x"))
    assert is_secure(OpcUaConfig(endpoint="opc.tcp://[::]:4840/x")) and is_secure(OpcUaConfig(security="sign_encrypt"))
    assert not is_secure(OpcUaConfig(endpoint="opc.tcp://10.0.0.1:4840/x", security="none"))
    assert opcua_problems(OpcUaConfig()) == [] and opcua_problems(OpcUaConfig(endpoint="")) == []
    cert, key = make_certificate(tmp_path, ["gw"], 3)
    base = {"endpoint": "opc.tcp://10.0.0.1:4840/x", "certificate": cert, "private_key": key}
    assert opcua_problems(OpcUaConfig(**base, users={"plc": "scrypt$..."})) == []
    problems = opcua_problems(OpcUaConfig(**base, trusted_clients=tmp_path / "none"))
    assert len(problems) == 2 and "trusted_clients" in problems[0] and "gateway-passwd" in problems[1]


def test_make_certificate(tmp_path: Path) -> None:
    from cryptography import x509

    from inspector.errors import InspectorError
    from inspector.gateway.opcua_cert import certificate_uri, load_certificate, make_certificate
    cert_path, key_path = make_certificate(tmp_path / "pki", ["gw.plant.local", "10.1.2.3"], 30)
    cert = load_certificate(cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["gw.plant.local"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    assert certificate_uri(cert) == "urn:bigan-inspect:gateway:gw.plant.local"
    assert 29 <= (cert.not_valid_after_utc - cert.not_valid_before_utc).days <= 30
    assert key_path.stat().st_mode & 0o077 == 0
    with pytest.raises(InspectorError, match="exists"):
        make_certificate(tmp_path / "pki", ["gw.plant.local"], 30)
    with pytest.raises(InspectorError):
        make_certificate(tmp_path / "other", ["bad host;rm"], 30)


def non_loopback_ip() -> str | None:
    """An address of this machine other than loopback (the one a default route would use)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.254.254.254", 1))     # UDP: nothing is sent
            ip = str(s.getsockname()[0])
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def client_certificate(folder: Path, uri: str) -> tuple[Path, Path]:
    """A PLC's own application certificate (client auth, its application URI in the SAN)."""
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID
    folder.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, "test plc", {}, [x509.UniformResourceIdentifier(uri), x509.DNSName("plc")],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH], days=2)
    (folder / "plc-key.pem").write_bytes(cert_gen.dump_private_key_as_pem(key))
    (folder / "plc-cert.der").write_bytes(cert.public_bytes(Encoding.DER))
    return folder / "plc-cert.der", folder / "plc-key.pem"


def test_secure_endpoint_users_and_certificates(tmp_path: Path) -> None:
    ip = non_loopback_ip()
    if ip is None:
        pytest.skip("this machine has no address other than loopback to serve a non-local endpoint on")
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    from inspector.gateway.opcua_cert import make_certificate
    from inspector.gateway.passwords import hash_password
    cert, key = make_certificate(tmp_path / "server", [ip], 5)
    trusted = tmp_path / "trusted"
    plc_cert, plc_key = client_certificate(tmp_path / "plc", "urn:test:plc")
    trusted.mkdir()
    (trusted / "plc-cert.der").write_bytes(plc_cert.read_bytes())
    other_cert, other_key = client_certificate(tmp_path / "stranger", "urn:test:plc")
    url = f"opc.tcp://{ip}:{free_port()}/inspector"
    proc = start(tmp_path, {"endpoint": url, "certificate": str(cert), "private_key": str(key),
                            "trusted_clients": str(trusted), "users": {"plc": hash_password("s3cret")}})

    async def connect(user: str | None, password: str | None, secure: bool = True,
                      client_cert: tuple[Path, Path] = (plc_cert, plc_key), force_plaintext: bool = False) -> int:
        client = Client(url, timeout=10)
        client.application_uri = "urn:test:plc"
        if secure:
            await client.set_security(SecurityPolicyBasic256Sha256, str(client_cert[0]), str(client_cert[1]),
                                      server_certificate=str(cert), mode=ua.MessageSecurityMode.SignAndEncrypt)
        if user is not None:
            client.set_user(user)
        if password is not None:
            client.set_password(password)
        if force_plaintext:     # a client that ignores the advertised endpoints: a session on the None
            def plaintext(endpoints: list[Any], mode: Any, uri: str) -> Any:  # channel asyncua keeps open
                endpoints[0].SecurityMode, endpoints[0].SecurityPolicyUri = ua.MessageSecurityMode.None_, uri
                return endpoints[0]  # for GetEndpoints, the password in plain text

            with mock.patch.object(Client, "find_endpoint", staticmethod(plaintext)):
                await client.connect()
        else:
            await client.connect()
        try:
            return int(await (await station(client))["LastResult/Sequence"].read_value())
        finally:
            await client.disconnect()

    async def refused(*args: Any, **kwargs: Any) -> Exception:
        with pytest.raises(Exception) as err:  # noqa: B017 - a status error, or the client finds no endpoint
            await connect(*args, **kwargs)
        return err.value

    async def check() -> None:
        denied = ua.uaerrors.BadUserAccessDenied
        assert "No matching endpoints" in str(await refused(None, None, secure=False))  # no open endpoint
        assert "No matching endpoints" in str(await refused("plc", "s3cret", secure=False))
        assert isinstance(await refused(None, None), ua.uaerrors.BadIdentityTokenRejected)  # anonymous
        assert isinstance(await refused("plc", "wrong"), denied)
        assert isinstance(await refused("nobody", "s3cret"), denied)
        assert isinstance(await refused("plc", "s3cret", client_cert=(other_cert, other_key)),
                          ua.uaerrors.BadCertificateUntrusted)                  # not in trusted_clients
        assert isinstance(await refused("plc", "s3cret", secure=False, force_plaintext=True), denied)
        assert await connect("plc", "s3cret") == 0                # Basic256Sha256 Sign&Encrypt + user

    try:
        run(check())
        assert proc.proc.poll() is None
    finally:
        proc.close()


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    sys.exit(_serve(json.loads(sys.argv[2])))
