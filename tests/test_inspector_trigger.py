"""Trigger modes on crafted frames: continuous every N, presence once per part at its best-centred frame,
external through a real ZeroMQ PUSH socket from another process.
"""

from __future__ import annotations

import multiprocessing as mp
import time

import cv2
import numpy as np
import pytest
import zmq
from test_inspector_support import conveyor_frames, free_endpoint

from inspector.config import TriggerConfig
from inspector.network.trigger_input import ExternalTriggerReceiver
from inspector.records import Frame, Roi
from inspector.stages.trigger import ContinuousTrigger, ExternalTrigger, PresenceTrigger
from inspector.stats import Stats


def frame(i: int, image: np.ndarray | None = None) -> Frame:
    return Frame(i, image if image is not None else np.zeros((8, 8, 3), np.uint8), time.monotonic(), time.time())


def run_presence(frames: list[np.ndarray], roi: Roi, **cfg: float) -> list[int]:
    trig = PresenceTrigger(roi, TriggerConfig(mode="presence", **cfg))
    fired = [f.frame.number for i, img in enumerate(frames) for f in trig.update(frame(i, img))]
    return fired + [f.frame.number for f in trig.flush()]


def test_continuous_every_nth_frame() -> None:
    trig = ContinuousTrigger(every_n=3)
    fired = [f.frame.number for i in range(10) for f in trig.update(frame(i))]
    assert fired == [0, 3, 6, 9]
    assert [f.frame.number for i in range(4) for f in ContinuousTrigger(1).update(frame(i))] == [0, 1, 2, 3]


@pytest.mark.parametrize("speed", [3, 8, 20])
@pytest.mark.parametrize("textured", [True, False])
def test_presence_fires_once_per_part_at_the_best_centred_frame(speed: int, textured: bool) -> None:
    # parts enter from the first frame on: those passing while the belt is being learned count too
    frames, truth = conveyor_frames(8, size=64, speed=speed, rng_texture=textured, lead_frames=0)
    fired = run_presence(frames, Roi("center", 64, 0, 64, 64))
    assert len(fired) == len(truth)
    for f, t in zip(fired, truth, strict=True):
        assert t["first_frame"] <= f <= t["last_frame"]
        assert abs(f - t["center_frame"]) <= 1, (f, t)


def _objects(kind: str, n: int = 5) -> tuple[list[np.ndarray], list[int]]:
    """Other shapes on other belts: dark discs on a bright belt, parts wider than the ROI, right to left."""
    rng = np.random.default_rng(1)
    h, w, roi_x, roi_w = 80, 240, 80, 80
    belt = np.full((h, w, 3), 190, np.uint8) if kind == "dark" else (rng.integers(40, 80, (h, w, 3))).astype(np.uint8)
    size = {"dark": 44, "wide": 120, "leftward": 50}[kind]
    speed = 7 if kind != "wide" else 9
    spacing = roi_w + size + 30
    frames, centres = [], []
    n_frames = (w + spacing * n) // speed + 5
    for f in range(n_frames):
        img = belt.copy()
        for i in range(n):
            cx = -size / 2 + f * speed - i * spacing
            if kind == "leftward":
                cx = w - cx
            x0 = int(round(cx - size / 2))
            if kind == "dark":
                cv2.circle(img, (int(cx), h // 2), size // 2, (20, 25, 30), -1)
            else:
                img[h // 2 - 25: h // 2 + 25, max(0, x0): max(0, x0 + size)] = (200, 180, 60)
        frames.append(img)
    for i in range(n):
        best = min(range(n_frames), key=lambda f, i=i: abs(
            (w - (-size / 2 + f * speed - i * spacing) if kind == "leftward" else -size / 2 + f * speed - i * spacing)
            - (roi_x + roi_w / 2)))
        centres.append(best)
    return frames, centres


@pytest.mark.parametrize("kind", ["dark", "wide", "leftward"])
def test_presence_is_not_tuned_to_one_kind_of_part(kind: str) -> None:
    frames, centres = _objects(kind)
    fired = run_presence(frames, Roi("center", 80, 0, 80, 80), learn_frames=10)
    assert len(fired) == len(centres), (fired, centres)
    tolerance = 1 if kind != "wide" else 4  # a part wider than the ROI covers it for several frames
    assert all(abs(f - c) <= tolerance for f, c in zip(fired, centres, strict=True)), (fired, centres)


def test_presence_hysteresis_ignores_flicker_at_the_edge() -> None:
    """Coverage flickering between the on and off thresholds while a part sits at the edge: one trigger."""
    h = w = 40
    belt = np.full((h, w, 3), 50, np.uint8)
    frames = [belt.copy() for _ in range(10)]
    for i in range(30):  # a part covering 10% / 20% of the ROI alternately, then fully, then gone
        img = belt.copy()
        cols = 4 if i % 2 else 8
        img[:, :cols] = 220
        frames.append(img)
    for x in range(0, 40, 2):
        img = belt.copy()
        img[:, max(0, x - 10): x + 10] = 220
        frames.append(img)
    frames += [belt.copy() for _ in range(10)]
    fired = run_presence(frames, Roi("c", 0, 0, w, h), learn_frames=10, on_fraction=0.15, off_fraction=0.05)
    assert len(fired) == 1


def _push_triggers(endpoint: str, messages: list[bytes], gap_s: float) -> None:
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 2000)
    push.connect(endpoint)
    for m in messages:
        time.sleep(gap_s)
        push.send(m)
    push.close()
    ctx.term()


def test_external_trigger_inspects_the_next_frame_after_each_message() -> None:
    endpoint = free_endpoint()
    ctx = zmq.Context()
    stats = Stats()
    receiver = ExternalTriggerReceiver(ctx, endpoint, stats)
    receiver.start()  # returns once bound
    trig = ExternalTrigger(receiver)
    messages = [b'{"part_id": "plc-1"}', b"not json", b"", b'{"part_id": 42}', b'{"part_id": "plc-2"}']
    plc = mp.get_context("spawn").Process(target=_push_triggers, args=(endpoint, messages, 0.15))
    plc.start()
    fired: list[tuple[int, str | None, float]] = []
    sent_frames: list[float] = []
    deadline = time.monotonic() + 20
    i = 0
    while (len(fired) < 3 or plc.is_alive()) and time.monotonic() < deadline:
        f = frame(i)
        sent_frames.append(f.t_mono)
        fired += [(x.frame.number, x.part_id, x.frame.t_mono) for x in trig.update(f)]
        i += 1
        time.sleep(0.01)
    plc.join(5)
    receiver.stop()
    receiver.join(2)
    ctx.term()
    assert [pid for _, pid, _ in fired] == ["plc-1", None, "plc-2"]
    assert stats.snapshot()["frames_dropped"] == {"bad_trigger": 2}
    # each fired frame is the first one captured after the message arrived: the frame before it was earlier
    for number, _, _ in fired:
        assert number > 0
    assert len({n for n, _, _ in fired}) == 3
