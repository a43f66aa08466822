"""Hot swap of the production model (issue 24): `inspector replay` / `inspector run` in subprocesses with a
control socket, reloads from this process over real ZeroMQ sockets, SIGHUP, the journal's events table;
the slot, the loader and the control server in-process with real ONNX Runtime engines.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from test_inspector_support import (
    REPO,
    free_endpoint,
    inspector_cmd,
    make_mean_model,
    start,
    subprocess_env,
    write_conveyor_video,
)
from test_reliability_support import Subscriber, journal_rows

from common.manifest import read_manifest, sha256_file, write_manifest
from inspector.config import InspectorConfig
from inspector.models.active import LoadedModel, ModelSet
from inspector.models.control import ControlServer, request
from inspector.models.loader import ModelLoader
from inspector.models.slot import ModelSlot, SlotClosed, SwapTimeout
from inspector.stages.scoring import open_engine
from inspector.state.events import read_events

A_THRESHOLD, B_THRESHOLD = 100.0, 120.0
B_ID = "meanpixel-b0b0b0b0b0b0"


def two_models(root: Path) -> tuple[Path, Path]:
    """Mean-pixel models A and B: the same graph, other thresholds, and (B's manifest says so) other model_ids."""
    a = make_mean_model(root / "a" / "model.onnx", threshold=A_THRESHOLD)
    b = make_mean_model(root / "b" / "model.onnx", threshold=B_THRESHOLD)
    write_manifest(read_manifest(b).model_copy(update={"model_id": B_ID}), b)
    return a, b


def swap_config(path: Path, control: str, *, camera: str = "", engine: str = "", publish: str = "",
                state: str = "") -> Path:
    """Continuous trigger on the conveyor video's centre square; small messages, a deep send queue."""
    path.write_text(f"""station_id = "swap"
[camera]
{camera}
[trigger]
mode = "continuous"
[engine]
backend = "onnxruntime"
max_batch = 8
max_wait_ms = 5
{engine}
[publish]
send_images = "none"
send_hwm = 1000000
status_interval_s = 0.2
{publish}
[state]
{state}
[control]
bind = "{control}"
[[rois]]
name = "center"
x = 64
y = 0
width = 64
height = 64
""")
    return path


class Collector(threading.Thread):
    """A subscriber in its own thread (ZeroMQ sockets stay with one thread): results and statuses."""

    def __init__(self, endpoint: str) -> None:
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.ready, self.halt = threading.Event(), threading.Event()
        self.results: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []

    def run(self) -> None:
        sub = Subscriber(self.endpoint, hwm=1_000_000)
        self.results, self.statuses = sub.results, sub.statuses
        self.ready.set()
        try:
            while not self.halt.is_set():
                sub.receive(20)
            deadline = time.monotonic() + 10
            while not any(s.get("final") for s in self.statuses) and time.monotonic() < deadline:
                sub.receive(20)
        finally:
            sub.close()

    def wait_for(self, predicate: Any, timeout_s: float = 30) -> bool:
        deadline = time.monotonic() + timeout_s
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.02)
        return bool(predicate())

    def started(self) -> Collector:
        self.start()
        assert self.ready.wait(10)
        return self


def wait_control(endpoint: str, proc: subprocess.Popen[str], timeout_s: float = 30) -> dict[str, Any]:
    """The daemon's control status once the socket answers (requests are queued until it is bound)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            return request(endpoint, {"command": "status"}, 1.0)
        except Exception:  # noqa: BLE001 - not bound yet
            continue
    raise AssertionError("the control socket never answered")


def stop(proc: subprocess.Popen[str], collector: Collector, more: int = 0) -> tuple[str, str]:
    """SIGTERM the daemon once `more` further results arrived (0: at once); its stdout and stderr."""
    if more:
        before = len(collector.results)
        assert collector.wait_for(lambda: len(collector.results) >= before + more)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    collector.halt.set()
    collector.join(15)
    return out, err


def end(proc: subprocess.Popen[str], collector: Collector) -> None:
    """Whatever happened: no daemon left running, the subscriber told to stop."""
    if proc.poll() is None:
        proc.kill()
    collector.halt.set()


def replay(tmp_path: Path, model: Path, cfg: Path, pub: str, *args: str) -> subprocess.Popen[str]:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=12)
    return start("replay", str(v.video), "--model", str(model), "--config", str(cfg), "--state",
                 str(tmp_path / "state"), "--publish", pub, "--frames", "100000000", *args)


def assert_one_switch(results: list[dict[str, Any]], old: str, new: str) -> int:
    """Every result received, gapless from 1, decided by `old` up to one switch and by `new` after it; the
    last sequence `old` decided."""
    ids = [h["model_id"] for h in results]
    switch = ids.index(new)
    assert set(ids[:switch]) == {old} and set(ids[switch:]) == {new}
    assert [h["sequence"] for h in results] == list(range(1, len(ids) + 1))
    return switch


def model_at(seq: int, initial: str, events: list[dict[str, Any]]) -> str:
    """The model that decided `seq`, from the events table's swaps: after last_seq, new_model_id."""
    model = initial
    for e in events:
        if e["kind"] == "model_swap" and seq > e["last_seq"]:
            model = e["new_model_id"]
    return model


@pytest.mark.slow
def test_ten_reloads_during_a_full_speed_replay_lose_nothing_and_each_verdict_names_its_model(tmp_path: Path) -> None:
    a, b = two_models(tmp_path)
    a_id = read_manifest(a).model_id
    control, pub = free_endpoint(), "ipc://" + str(tmp_path / "pub.ipc")
    collector = Collector(pub).started()
    # every other passed part keeps its crop: each model's stretch has stored parts to be compared on
    proc = replay(tmp_path, a, swap_config(tmp_path / "c.toml", control, state="store_passed_every = 2"), pub)
    replies = []
    try:
        assert wait_control(control, proc)["model_id"] == a_id
        assert collector.wait_for(lambda: len(collector.results) >= 50)
        for i in range(10):
            target = b if i % 2 == 0 else a
            reply = request(control, {"command": "reload", "path": str(target)}, 60)
            assert reply["ok"] is True, reply
            assert reply["model_id"] == (B_ID if target == b else a_id) and reply["previous"] != reply["model_id"]
            agreement = reply["agreement"]  # tried on the newest journaled parts the previous model decided
            assert agreement["n"] >= 10 and agreement["old"]["pass"] + agreement["old"]["fail"] == agreement["n"]
            assert len(agreement["disagree"]) == min(agreement["n"] - agreement["agree"], 20)
            old, new = agreement["old"], agreement["new"]  # same scores, a higher (B) or lower (A) threshold:
            flipped = old["fail"] - new["fail"] if target == b else new["fail"] - old["fail"]  # only one way flips
            assert flipped == agreement["n"] - agreement["agree"] >= 0 and new["error"] == 0
            replies.append(reply)
            assert collector.wait_for(lambda seq=reply["last_seq"]: len(collector.results) >= seq + 30)  # it decides
        out, err = stop(proc, collector)
    finally:
        end(proc, collector)
    assert proc.returncode == 0, err
    results, final = collector.results, collector.statuses[-1]
    rows = journal_rows(tmp_path / "state" / "journal.db")
    n = len(results)
    # journaled = published = inspected, gapless
    assert final["final"] is True and final["parts_triggered"] == final["parts_inspected"] == n == len(rows)
    assert [h["sequence"] for h in results] == list(range(1, n + 1)) == [r["seq"] for r in rows]
    assert f"parts {n} " in out
    events = read_events(tmp_path / "state" / "journal.db")
    assert [e["kind"] for e in events] == ["model_swap"] * 10
    assert [e["last_seq"] for e in events] == [r["last_seq"] for r in replies]
    assert all(0 < x < y < n for x, y in zip([e["last_seq"] for e in events], [e["last_seq"] for e in events][1:],
                                             strict=False))
    thresholds = {a_id: A_THRESHOLD, B_ID: B_THRESHOLD}
    for h, row in zip(results, rows, strict=True):  # each verdict by the model active at its batch
        expected = model_at(h["sequence"], a_id, events)
        assert h["model_id"] == row["model_id"] == expected, h["sequence"]
        roi = h["rois"][0]
        assert roi["threshold"] == thresholds[expected]
        assert h["verdict"] == ("fail" if roi["score"] > roi["threshold"] else "pass")
    assert {e["old_model_id"] for e in events} == {e["new_model_id"] for e in events} == {a_id, B_ID}


@pytest.mark.slow
def test_unfit_models_are_refused_and_the_running_model_keeps_deciding(tmp_path: Path) -> None:
    a, _ = two_models(tmp_path)
    a_id = read_manifest(a).model_id
    corrupt = tmp_path / "corrupt" / "model.onnx"  # not ONNX, but its manifest's sha256 matches
    shutil.copytree(a.parent, corrupt.parent)
    corrupt.write_bytes(b"\x08\x07 this is not a protobuf " * 50)
    write_manifest(read_manifest(corrupt).model_copy(update={"onnx_sha256": sha256_file(corrupt)}), corrupt)
    tampered = tmp_path / "tampered" / "model.onnx"  # changed after export: the manifest's sha256 differs
    shutil.copytree(a.parent, tampered.parent)
    tampered.write_bytes(tampered.read_bytes() + b"\0")
    big = make_mean_model(tmp_path / "big" / "model.onnx", size=64)
    bare = make_mean_model(tmp_path / "bare" / "model.onnx", threshold=None)
    cases = {corrupt: ["cannot load", "INVALID_PROTOBUF"], tampered: ["does not match its manifest: sha256"],
             big: ["takes 64×64×3 crops but the running model takes 32×32×3"],
             tmp_path / "gone.onnx": ["does not exist"], bare: ["no threshold for ROI 'center'"]}
    control, pub = free_endpoint(), "ipc://" + str(tmp_path / "pub.ipc")
    collector = Collector(pub).started()
    proc = replay(tmp_path, a, swap_config(tmp_path / "c.toml", control), pub)
    try:
        wait_control(control, proc)
        for path, phrases in cases.items():
            reply = request(control, {"command": "reload", "path": str(path)}, 60)
            assert reply["ok"] is False and reply["model_id"] == a_id, reply
            assert reply["path"] == str(path) and all(p in reply["error"] for p in phrases), reply["error"]
            assert collector.wait_for(lambda path=path: any(  # the status topic says why
                (s.get("model", {}).get("last_reload") or {}).get("path") == str(path)
                and s["model"]["last_reload"]["ok"] is False for s in collector.statuses))
            status = next(s for s in reversed(collector.statuses) if s.get("model", {}).get("last_reload"))
            assert status["model"]["last_reload"]["error"] == reply["error"] and status["model"]["model_id"] == a_id
        # the command line: the reason on one line, exit 1; an unreachable daemon or missing file: exit 2
        cli = subprocess.run(inspector_cmd("reload", "--endpoint", control, "--path", str(big)), cwd=REPO,
                             env=subprocess_env(), capture_output=True, text=True, timeout=60)
        assert cli.returncode == 1 and cli.stdout.startswith("reload refused: ") and "64×64×3" in cli.stdout
        before = len(collector.results)
        assert collector.wait_for(lambda: len(collector.results) >= before + 50)  # still deciding
        out, err = stop(proc, collector)
    finally:
        end(proc, collector)
    assert proc.returncode == 0, err
    assert {h["model_id"] for h in collector.results} == {a_id}
    assert [h["sequence"] for h in collector.results] == list(range(1, len(collector.results) + 1))
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    refusals = [e for e in logged if e.get("event", "").startswith("model reload refused")]
    assert len(refusals) == len(cases) + 1
    assert any("does not match its manifest" in e["error"] for e in refusals)
    assert any("no threshold" in e["error"] for e in refusals)
    events = read_events(tmp_path / "state" / "journal.db")
    assert [e["kind"] for e in events] == ["model_refused"] * (len(cases) + 1)
    assert all(e["old_model_id"] == a_id and e["detail"]["error"] for e in events)
    assert events[2]["new_model_id"] == read_manifest(big).model_id  # its manifest was readable


def test_reload_command_line_bad_input_and_unreachable_daemon_exit_2(tmp_path: Path) -> None:
    nobody = free_endpoint()
    runs = [inspector_cmd("reload", "--endpoint", nobody, "--timeout", "1"),
            inspector_cmd("reload", "--endpoint", nobody, "--path", str(tmp_path / "missing.onnx")),
            inspector_cmd("reload", "--endpoint", nobody, "--timeout", "0")]
    for cmd in runs:
        p = subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=60)
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    assert "no answer" in subprocess.run(runs[0], cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                                         timeout=60).stderr


@pytest.mark.slow
def test_sighup_to_inspector_run_reloads_the_configured_path(tmp_path: Path) -> None:
    a, b = two_models(tmp_path)
    a_id = read_manifest(a).model_id
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=6, fps=200.0)
    pub = "ipc://" + str(tmp_path / "pub.ipc")

    def config(model: Path) -> Path:  # no control socket: SIGHUP works without one
        return swap_config(tmp_path / "inspector.toml", "", camera=f'source = "{v.video}"\nloop = true\nfps = 200',
                           engine=f'path = "{model}"', publish=f'bind = "{pub}"\nbackfill_bind = ""\nwait_subscribers = 1',
                           state=f'dir = "{tmp_path / "state"}"\nsynchronous = "NORMAL"')

    cfg = config(a)
    collector = Collector(pub).started()
    proc = start("run", "--config", str(cfg))
    try:
        assert collector.wait_for(lambda: len(collector.results) >= 30 or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        config(b)  # the operator edits the file ...
        proc.send_signal(signal.SIGHUP)  # ... and runs `systemctl reload inspector`
        assert collector.wait_for(lambda: any(h["model_id"] == B_ID for h in collector.results)), "no swap"
        config(tmp_path / "nothing.onnx")
        proc.send_signal(signal.SIGHUP)  # a bad path: refused, B keeps deciding
        assert collector.wait_for(lambda: any(
            ((s.get("model") or {}).get("last_reload") or {}).get("ok") is False for s in collector.statuses))
        out, err = stop(proc, collector, more=20)
    finally:
        end(proc, collector)
    assert proc.returncode == 0, err
    switch = assert_one_switch(collector.results, a_id, B_ID)
    final = collector.statuses[-1]
    assert final["final"] and final["parts_inspected"] == len(collector.results) and final["model"]["model_id"] == B_ID
    events = read_events(tmp_path / "state" / "journal.db")
    assert [(e["kind"], e["detail"]["source"]) for e in events] == [("model_swap", "sighup"),
                                                                    ("model_refused", "sighup")]
    assert events[0]["last_seq"] == switch and events[1]["old_model_id"] == B_ID
    assert "does not exist" in events[1]["detail"]["error"]
    assert any(json.loads(line).get("event", "").startswith("SIGHUP") for line in out.splitlines()
               if line.startswith("{"))


# --- in-process: the slot, the loader's one-at-a-time rule, the control server's replies -----------------
class Marked:
    """A stand-in model for the slot: records its use, refuses use after close."""

    def __init__(self, name: str) -> None:
        self.name, self.closed, self.uses = name, False, 0


def model_set(name: str) -> ModelSet:
    engine: Any = Marked(name)
    return ModelSet(LoadedModel(engine, name, {"center": 1.0}, Path(name), None))  # type: ignore[arg-type]


def test_slot_switches_only_between_batches() -> None:
    a, b, c = model_set("a"), model_set("b"), model_set("c")
    slot = ModelSlot(a)
    assert slot.between_batches() is a
    slot.offer(b)  # a batch is in flight: b waits
    assert slot.current is a and slot.swaps == []
    slot.batch_done(5)
    assert slot.current is b and slot.swaps[-1].decided == 5 and slot.swaps[-1].old is a
    slot.offer(c)  # idle: at once
    assert slot.current is c and slot.swaps[-1].decided == 5
    assert slot.between_batches() is c
    with pytest.raises(RuntimeError):
        slot.offer(a)
        slot.offer(b)  # one pending set at a time
    slot.batch_done(3)
    assert slot.current is a and slot.decided == 8
    slot.between_batches()
    with pytest.raises(SwapTimeout):  # the batch in flight never ends: withdrawn, the running set stays
        slot.swap(b, timeout_s=0.05)
    slot.batch_done(1)
    assert slot.current is a
    closing = threading.Timer(0.05, slot.close)
    slot.between_batches()
    closing.start()
    with pytest.raises(SlotClosed):
        slot.swap(c, timeout_s=5)
    with pytest.raises(SlotClosed):
        slot.offer(c)


def test_slot_under_a_busy_score_loop_never_uses_a_closed_model_and_counts_every_result() -> None:
    sets = [model_set(f"m{i}") for i in range(41)]
    slot = ModelSlot(sets[0])
    used: list[tuple[int, str]] = []  # (results decided before the batch, model)
    stop = threading.Event()
    errors: list[str] = []

    def score_loop() -> None:
        rng = random.Random(1)
        while not stop.is_set():
            models = slot.between_batches()
            engine = models.production.engine
            n = rng.randint(1, 8)
            used.append((slot.decided, models.production.model_id))
            for _ in range(n):
                if engine.closed:
                    errors.append(f"{engine.name} used after close")
                engine.uses += 1
                time.sleep(0.0002)
            slot.batch_done(n)

    t = threading.Thread(target=score_loop)
    t.start()
    for new in sets[1:]:
        swap = slot.swap(new, timeout_s=5)
        swap.old.production.engine.closed = True  # what the loader does: no batch uses it any more
        time.sleep(0.003)
    stop.set()
    t.join(5)
    assert not errors
    swaps = slot.swaps
    assert [s.new.production.model_id for s in swaps] == [f"m{i}" for i in range(25, 41)]  # the newest 16 kept
    for decided, model in used:  # each batch used the set current at its start: from the swap boundaries
        expected = next((s.new.production.model_id for s in reversed(swaps) if decided >= s.decided), None)
        if expected is not None and decided >= swaps[0].decided:
            assert model == expected


def test_loader_one_reload_at_a_time_and_control_replies_to_anything(tmp_path: Path) -> None:
    a, b = two_models(tmp_path)
    cfg = InspectorConfig(engine={"path": str(a), "backend": "onnxruntime"}, control={"agreement_parts": 0},
                          state={"dir": str(tmp_path / "state")}, publish={"bind": "", "backfill_bind": ""})
    engine = open_engine(cfg.engine)
    release = threading.Event()

    def slow_config() -> InspectorConfig:  # the configuration read blocks: the reload is "in progress"
        release.wait(10)
        return InspectorConfig(engine={"path": str(tmp_path / "missing.onnx")})

    loader = ModelLoader(cfg, read_config=slow_config, journal_file=tmp_path / "state" / "journal.db")
    slot = ModelSlot(ModelSet(LoadedModel(engine, engine.manifest.model_id, {"center": A_THRESHOLD}, a,
                                          engine.manifest)))
    loader.attach(slot, first_sequence=1)
    ctx = zmq.Context()
    server = ControlServer("tcp://127.0.0.1:*", loader, context=ctx, reply_timeout_s=30)
    server.start()
    ep = server.endpoint
    assert ep is not None
    try:
        raw = ctx.socket(zmq.REQ)
        raw.connect(ep)
        for bad in ([b"not json"], [b"[1, 2]"], [b'{"command": "explode"}'], [b'{"command": "status", "x": 1}'],
                    [b'{"command": "reload", "path": 7}'], [b'{"command": "reload", "timeout_s": -1}'],
                    [b"{}", b"{}"], [b"x" * 5000], [b""]):
            raw.send_multipart(bad)
            assert raw.poll(5000), bad
            reply = json.loads(raw.recv())
            assert reply["ok"] is False and reply["error"].startswith("bad request: "), (bad, reply)
        raw.close()
        assert request(ep, {"command": "status"}, 5)["state"] == "running"
        first = threading.Thread(target=lambda: results.append(request(ep, {"command": "reload"}, 30)))
        results: list[dict[str, Any]] = []
        first.start()
        deadline = time.monotonic() + 10
        while request(ep, {"command": "status"}, 5)["state"] != "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        busy = request(ep, {"command": "reload", "path": str(b)}, 5)  # answered at once, while the first waits
        assert busy["ok"] is False and busy["busy"] is True and busy["error"].startswith("busy: ")
        assert loader.reload_configured() is None  # SIGHUP meanwhile: logged, nothing started
        release.set()
        first.join(20)
        assert results[0]["ok"] is False and "does not exist" in results[0]["error"]
        assert slot.current.production.engine is engine and not server.bind_error and server.is_alive()
        swapped = request(ep, {"command": "reload", "path": str(b), "timeout_s": 20}, 30)
        assert swapped["ok"] is True and swapped["model_id"] == B_ID and swapped["last_seq"] == 0
        status = request(ep, {"command": "status"}, 5)
        assert status["model_id"] == B_ID and status["swaps"] == 1 and status["refused"] == 1
        assert status["last_reload"]["previous"] == engine.manifest.model_id
        with pytest.raises(Exception, match="closed"):  # the old engine was closed after the switch
            engine.infer(__import__("numpy").zeros((1, 32, 32, 3), "uint8"))
    finally:
        server.stop()
        slot.close().production.engine.close()
        engine.close()
        ctx.term()
    kinds = [e["kind"] for e in read_events(tmp_path / "state" / "journal.db")]
    assert kinds == ["model_refused", "model_swap"]


@pytest.mark.slow
def test_promote_makes_the_shadow_the_production_model_and_empties_the_shadow_slot(tmp_path: Path) -> None:
    a, b = two_models(tmp_path)
    a_id = read_manifest(a).model_id
    control, pub = free_endpoint(), "ipc://" + str(tmp_path / "pub.ipc")
    collector = Collector(pub).started()
    proc = replay(tmp_path, a, swap_config(tmp_path / "c.toml", control), pub, "--shadow", str(b))
    try:
        status = wait_control(control, proc)
        assert status["model_id"] == a_id and status["shadow_model_id"] == B_ID
        assert collector.wait_for(lambda: len(collector.results) >= 30)
        cli = subprocess.run(inspector_cmd("promote", "--endpoint", control), cwd=REPO, env=subprocess_env(),
                             capture_output=True, text=True, timeout=60)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert cli.stdout.startswith(f"promoted: {B_ID} (was {a_id})")
        assert "the shadow slot is empty now" in cli.stdout and f'[engine] path = "{b}"' in cli.stdout
        status = request(control, {"command": "status"}, 5)
        assert status["model_id"] == B_ID and status["shadow_model_id"] is None
        again = request(control, {"command": "promote"}, 30)  # nothing left to promote
        assert again["ok"] is False and "no shadow model" in again["error"]
        out, err = stop(proc, collector, more=30)
    finally:
        end(proc, collector)
    assert proc.returncode == 0, err
    switch = assert_one_switch(collector.results, a_id, B_ID)
    events = read_events(tmp_path / "state" / "journal.db")
    assert [e["kind"] for e in events] == ["model_swap", "model_refused"]
    assert events[0]["detail"]["promoted"] is True and events[0]["last_seq"] == switch


def test_the_control_socket_speaks_curve_only_with_curve_on(tmp_path: Path) -> None:
    from inspector.network.security import keygen, start_authenticator

    a, _ = two_models(tmp_path)
    _, station_secret = keygen(tmp_path / "keys", "station")
    _, client_secret = keygen(tmp_path / "keys", "client")
    cfg = InspectorConfig(engine={"path": str(a), "backend": "onnxruntime"}, publish={"bind": "", "backfill_bind": ""})
    engine = open_engine(cfg.engine)
    loader = ModelLoader(cfg)
    loader.attach(ModelSlot(ModelSet(LoadedModel(engine, engine.manifest.model_id, {"center": 1.0}, a,
                                                 engine.manifest))), first_sequence=1)
    ctx = zmq.Context()
    auth = start_authenticator(ctx, "stonehouse")
    server = ControlServer("tcp://127.0.0.1:*", loader, context=ctx, curve_secret=station_secret)
    server.start()
    try:
        ep = server.endpoint
        assert ep is not None
        reply = request(ep, {"command": "status"}, 5, client_secret=client_secret,
                        server_public=tmp_path / "keys" / "station.key")
        assert reply["ok"] is True and reply["model_id"] == engine.manifest.model_id
        with pytest.raises(Exception, match="no answer"):  # a plain client gets nothing
            request(ep, {"command": "status"}, 1)
    finally:
        server.stop()
        assert auth is not None
        auth.stop()
        engine.close()
        ctx.term()
