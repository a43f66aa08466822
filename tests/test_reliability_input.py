"""Bad input: fuzzed bytes at the trigger and backfill endpoints of a running daemon, invalid
configuration values (hypothesis), truncated and garbled videos, a truncated image in a sequence."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_inspector_support import make_mean_model, write_conveyor_video
from test_reliability_support import (
    Run,
    fresh_logging,  # noqa: F401 - a fixture, used by pytestmark
    journal_rows,
    station_config,
)

from inspector.cli import main
from inspector.network.backfill import backfill
from inspector.network.trigger_input import parse_trigger

pytestmark = pytest.mark.usefixtures("fresh_logging")


def _fuzz_messages(rng: random.Random, n: int) -> list[list[bytes]]:
    """Random bytes, several frames, broken and hostile JSON, wrong types, too-long part ids."""
    crafted = [[b"[" * 1000], [b'{"part_id": ' * 80], [b"{}", b"{}"], [b'{"part_id": 7}'], [b"[1, 2]"],
               [b'{"part_id": "' + b"x" * 200 + b'"}'], [b"\xff\xfe\x00"], [b'"just a string"'], [b"nan"],
               [b'{"part_id": ""}'], [b"1e999999"], [b""] * 3]
    randoms = [[rng.randbytes(rng.randint(1, 1000)) for _ in range(rng.choice((1, 1, 1, 2, 5)))] for _ in range(n)]
    return crafted + randoms


def test_fuzzed_triggers_are_counted_and_ignored_and_valid_ones_still_work(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=2, fps=300.0)
    endpoint = "ipc://" + str(tmp_path / "trigger.ipc")
    cfg = station_config(v.video, tmp_path / "state", camera={"loop": True, "fps": 300.0},
                         trigger={"mode": "external", "endpoint": endpoint})
    run = Run(cfg, realtime=True).start()
    messages = _fuzz_messages(random.Random(6), 300)
    expected_bad = sum(parse_trigger(m) is False for m in messages)
    expected_valid = len(messages) - expected_bad
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(endpoint)
        for m in messages:
            push.send_multipart(m)
        oversized = ctx.socket(zmq.PUSH)  # over MAXMSGSIZE: libzmq drops the peer, nothing reaches us
        oversized.setsockopt(zmq.LINGER, 0)
        oversized.connect(endpoint)
        oversized.send(b"{" * 100_000)
        for pid in ("OK-1", "OK-2", "OK-3"):
            push.send_json({"part_id": pid})
        deadline = time.monotonic() + 20
        while len(run.headers) < expected_valid + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        push.close()
        oversized.close()
    finally:
        run.stop()
        ctx.destroy(linger=0)
    status = run.status()
    assert status["frames_dropped"].get("bad_trigger", 0) == expected_bad > 250
    assert [h["part_id"] for h in run.headers[-3:]] == ["OK-1", "OK-2", "OK-3"]
    assert len(run.headers) == expected_valid + 3 == status["parts_inspected"]


@given(st.lists(st.binary(max_size=1100), min_size=0, max_size=4))
@settings(max_examples=300, deadline=None)
def test_the_trigger_parser_never_raises(frames: list[bytes]) -> None:
    result = parse_trigger(frames)
    assert result is False or result is None or (isinstance(result, str) and 0 < len(result) <= 128)


def test_fuzzed_backfill_requests_never_stall_the_daemon(tmp_path: Path) -> None:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=2, fps=300.0)
    bf = "ipc://" + str(tmp_path / "bf.ipc")
    cfg = station_config(v.video, tmp_path / "state", camera={"loop": True, "fps": 300.0},
                         publish={"backfill_bind": bf})
    run = Run(cfg, realtime=True).start()
    rng = random.Random(66)
    ctx = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(bf)
        messages = _fuzz_messages(rng, 200) + [[b"BACKFILL", b'{"since": -1}'], [b"BACKFILL", b'{"since": 1e999}'],
                                               [b"BACKFILL", b'{"since": 0, "evil": 1}'], [b"BACKFILL", b"x" * 5000]]
        messages = [m for m in messages if m != [b""] * 3]
        for m in messages:
            dealer.send_multipart(m)
        answers = []
        while len(answers) < len(messages) and dealer.poll(5000):
            answers.append(dealer.recv_multipart())
        parts_before = len(run.headers)
        time.sleep(0.3)
        assert len(run.headers) > parts_before  # inspection went on
        got = backfill(bf, 0, 5000, limit=50)
        counters = run.status()["backfill"]
    finally:
        run.stop()
        ctx.destroy(linger=0)
    assert len(answers) == len(messages) and all(a[0] == b"ERROR" for a in answers)
    rejected = sum(v for k, v in counters.items() if k.startswith("rejected_"))
    assert rejected == len(messages) and counters["requests"] == 1 and counters["state"] == "serving"
    assert [h["sequence"] for h in got] == list(range(1, 51))


# --- invalid configuration values, property-based -----------------------------------------------------------------
_TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=12)  # what TOML can hold
_BAD_NUMBERS = st.one_of(st.integers(max_value=-1), st.just(math.nan), st.just(math.inf), st.just(-math.inf))
_NOT_A_NUMBER = st.one_of(_TEXT.filter(lambda s: not s.strip().lstrip("-").isdigit()),
                          st.lists(st.integers(), max_size=2), st.booleans().map(lambda b: {"x": b}))
# (section, field) -> invalid values. Every field of the new sections, and a sample of the others.
_INVALID: dict[tuple[str, str], Any] = {
    ("state", "retention_days"): st.one_of(st.floats(max_value=0), st.just(math.nan), st.just(math.inf), _NOT_A_NUMBER),
    ("state", "retention_rows"): st.one_of(st.integers(max_value=0), _NOT_A_NUMBER),
    ("state", "image_quota_bytes"): st.one_of(st.integers(max_value=-1), _NOT_A_NUMBER),
    ("state", "store_images"): st.one_of(st.lists(st.sampled_from(["thumbnail", "raw", ""]), min_size=1, max_size=2),
                                         st.integers()),
    ("state", "synchronous"): st.sampled_from(["OFF", "full", "EXTRA", "", "0"]),
    ("state", "journal"): st.one_of(_TEXT.filter(lambda s: s.lower() not in (
        "true", "false", "1", "0", "yes", "no", "on", "off", "t", "f", "y", "n")), st.integers(min_value=2)),
    ("security", "mode"): _TEXT.filter(lambda s: s not in ("off", "stonehouse", "ironhouse")),
    ("publish", "send_hwm"): st.one_of(st.integers(max_value=0), _NOT_A_NUMBER),
    ("publish", "status_interval_s"): st.one_of(st.floats(max_value=0), st.just(math.inf), st.just(math.nan)),
    ("publish", "send_images"): _TEXT.filter(lambda s: s not in ("all", "failed", "none")),
    ("camera", "reconnect_min_s"): st.one_of(st.floats(max_value=0), st.just(math.inf)),
    ("camera", "max_frames"): _BAD_NUMBERS,
    ("camera", "fps"): st.one_of(st.floats(max_value=-1e-9), st.just(math.inf), st.just(math.nan)),
    ("engine", "max_batch"): st.one_of(st.integers(max_value=0), _NOT_A_NUMBER),
    ("trigger", "mode"): _TEXT.filter(lambda s: s not in ("continuous", "presence", "external")),
    ("trigger", "on_fraction"): st.one_of(st.floats(min_value=1.0001, allow_infinity=False), st.floats(max_value=0)),
}


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value == math.inf else "-inf" if value == -math.inf
                                                else repr(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return "{ " + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + " }"


@st.composite
def _invalid_configs(draw: st.DrawFn) -> tuple[list[str], str]:
    fields = draw(st.lists(st.sampled_from(sorted(_INVALID)), min_size=1, max_size=3, unique=True))
    sections: dict[str, list[str]] = {}
    for section, name in fields:
        sections.setdefault(section, []).append(f"{name} = {_toml(draw(_INVALID[(section, name)]))}")
    if draw(st.booleans()):
        sections.setdefault("state", []).append("not_a_field = 1")
        fields.append(("state", "not_a_field"))
    text = "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())
    return [f"{s}.{n}" for s, n in fields], text


@given(_invalid_configs())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_check_config_names_every_invalid_field_and_exits_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], case: tuple[list[str], str]) -> None:
    names, text = case
    path = tmp_path / "bad.toml"
    path.write_text(text)
    code = main(["check-config", str(path)])
    err = capsys.readouterr().err
    assert code == 2, text
    assert "Traceback" not in err and err.startswith("inspector: ")
    for name in names:
        assert f"  {name}:" in err or f"  {name}." in err, (name, text, err)  # e.g. state.store_images.0


# --- truncated and garbled videos, a truncated image ------------------------------------------------------------
def _video_bytes(tmp_path: Path) -> tuple[bytes, int]:
    v = write_conveyor_video(tmp_path / "line.avi", n_parts=8)
    return v.video.read_bytes(), v.frames


def _frames_in(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_a_damaged_video_is_inspected_up_to_the_damage_and_ends_cleanly(tmp_path: Path, damage: str) -> None:
    data, frames = _video_bytes(tmp_path)
    bad = bytearray(data[: len(data) // 2] if damage == "truncated" else data)
    if damage == "garbled":  # corrupt JPEG frames inside the MJPG stream
        rng = np.random.default_rng(0)
        for off in rng.integers(len(data) // 4, 3 * len(data) // 4, 100):
            bad[off: off + 50] = rng.integers(0, 256, 50, dtype=np.uint8).tobytes()
    video = tmp_path / f"{damage}.avi"
    video.write_bytes(bytes(bad))
    readable = _frames_in(video)
    assert 0 < readable < frames
    run = Run(station_config(video, tmp_path / "state")).run()
    status = run.status()
    assert run.code == 0 and status["camera"]["state"] == "ended"
    assert status["frames_captured"] == readable == len(run.headers) == len(journal_rows(tmp_path / "state" / "journal.db"))


def test_a_video_truncated_before_its_first_frame_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = _video_bytes(tmp_path)
    video = tmp_path / "head.avi"
    video.write_bytes(data[:3000])
    model = make_mean_model(tmp_path / "model.onnx")
    assert main(["replay", str(video), "--model", str(model)]) == 2
    err = capsys.readouterr().err
    assert "cannot be read" in err and "Traceback" not in err


def test_a_truncated_image_in_an_image_sequence_ends_the_sequence_cleanly(tmp_path: Path) -> None:
    cap = cv2.VideoCapture(str(write_conveyor_video(tmp_path / "line.avi", n_parts=1).video))
    (tmp_path / "seq").mkdir()
    for i in range(12):
        cv2.imwrite(str(tmp_path / "seq" / f"f{i:03d}.png"), cap.read()[1])
    cap.release()
    png = tmp_path / "seq" / "f008.png"
    png.write_bytes(png.read_bytes()[:200])
    run = Run(station_config(Path(str(tmp_path / "seq" / "f%03d.png")), tmp_path / "state")).run()
    assert run.code == 0 and len(run.headers) == 8 and run.status()["camera"]["state"] == "ended"
