"""Which frames are parts to inspect: continuous (every Nth), presence (once per part, best centred), external (PLC).

Each trigger sees every frame in order through `update` and returns the frames to inspect; `flush` at the end.
The external trigger's messages arrive on a socket (network/trigger_input.py); here they are only matched
to frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np
import structlog

from inspector.config import TriggerConfig
from inspector.records import Frame, Roi
from inspector.stages.crop import crop
from inspector.stats import Stats

log = structlog.get_logger("inspector.trigger")

PRESENCE_WIDTH = 64  # the watched ROI is shrunk to this width (INTER_AREA averages belt texture out)
PASSED_CENTRE_MARGIN = 0.03  # fire once the part is this far (fraction of the ROI) past its best position


@dataclass(frozen=True)
class Fired:
    frame: Frame
    part_id: str | None = None  # given by the PLC with an external trigger


class Trigger(Protocol):
    mode: str

    def update(self, frame: Frame) -> list[Fired]: ...

    def flush(self) -> list[Fired]: ...


class ContinuousTrigger:
    """Every Nth frame the stage sees (N = 1: every frame)."""

    mode = "continuous"

    def __init__(self, every_n: int = 1) -> None:
        self.every_n = every_n
        self._seen = 0

    def update(self, frame: Frame) -> list[Fired]:
        fire = self._seen % self.every_n == 0
        self._seen += 1
        return [Fired(frame)] if fire else []

    def flush(self) -> list[Fired]:
        return []


class PresenceTrigger:
    """A part entering the ROI, seen as foreground against a learned belt, fired once at its best-centred frame.

    The belt is learned per pixel (median and spread of the first `learn_frames` frames, then a running
    update on empty frames), on a shrunken grey ROI so a textured or moving belt averages out. A part is
    present from `on_fraction` foreground until below `off_fraction` (hysteresis); the frames seen while
    learning are checked once the belt is known. While present, the
    frame whose foreground centroid is closest to the ROI centre is kept; it fires as soon as the part has
    clearly passed that position, or when the part leaves, whichever comes first.
    """

    mode = "presence"

    def __init__(self, roi: Roi, cfg: TriggerConfig) -> None:
        self.roi = roi
        self.cfg = cfg
        self._learning: list[tuple[np.ndarray, Frame]] = []
        self._mean: np.ndarray | None = None
        self._spread: np.ndarray | None = None
        self._active = False
        self._fired = False
        self._best: tuple[float, Frame] | None = None
        self._present = 0  # frames the current part has been present
        self.coverage = 0.0  # of the last frame, for tests and debugging

    def _small_grey(self, image: np.ndarray) -> np.ndarray:
        patch = crop(image, self.roi)
        if patch.ndim == 3 and patch.shape[2] == 3:
            patch = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
        patch = patch.reshape(patch.shape[0], patch.shape[1])
        w = min(PRESENCE_WIDTH, patch.shape[1])
        h = max(1, round(patch.shape[0] * w / patch.shape[1]))
        return cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)

    def update(self, frame: Frame) -> list[Fired]:
        grey = self._small_grey(frame.image)
        if self._mean is None or self._mean.shape != grey.shape:
            return self._learn(grey, frame)
        return self._detect(grey, frame)

    def _detect(self, grey: np.ndarray, frame: Frame) -> list[Fired]:
        assert self._mean is not None and self._spread is not None
        diff = np.abs(grey - self._mean)
        fg = diff > np.maximum(self.cfg.min_diff, self.cfg.sigma * self._spread)
        self.coverage = float(fg.mean())
        if not self._active:
            if self.coverage < self.cfg.on_fraction:
                if self.coverage <= self.cfg.off_fraction:  # an empty belt: follow slow changes (light)
                    rate = self.cfg.background_rate
                    self._mean += rate * (grey - self._mean)
                    self._spread += rate * (np.maximum(diff * 1.4826, 1.0) - self._spread)
                return []
            self._active, self._fired, self._best, self._present = True, False, None, 0
        self._present += 1
        if self.coverage <= self.cfg.off_fraction:  # the part has left
            self._active = False
            return self._fire()
        if self._present > self.cfg.max_present_frames:  # not a part: the belt itself changed
            log.warning("presence: foreground for too long, learning the belt again", frames=self._present)
            self._mean = None
            self._active = False
            return self._fire()
        if not self._fired:
            d = _centroid_distance(fg)
            if self._best is None or d < self._best[0]:
                self._best = (d, frame)
            elif d > self._best[0] + PASSED_CENTRE_MARGIN:
                return self._fire()
        return []

    def flush(self) -> list[Fired]:
        return self._fire() if self._active else []

    def _fire(self) -> list[Fired]:
        best, self._best = self._best, None
        if self._fired or best is None:
            return []
        self._fired = True
        return [Fired(best[1])]

    def _learn(self, grey: np.ndarray, frame: Frame) -> list[Fired]:
        """Collect the first frames; then model the belt from them and run them through detection,
        so a part that passed while the belt was being learned still gets its one trigger."""
        if self._learning and self._learning[0][0].shape != grey.shape:
            self._learning.clear()  # the camera came back at another resolution: start again
        self._learning.append((grey, frame))
        if len(self._learning) < self.cfg.learn_frames:
            return []
        stack = np.stack([g for g, _ in self._learning])
        self._mean = np.median(stack, axis=0)
        self._spread = np.maximum(np.median(np.abs(stack - self._mean), axis=0) * 1.4826, 1.0)
        learned, self._learning = self._learning, []
        self._active = False
        return [fired for g, f in learned for fired in self._detect(g, f)]


def _centroid_distance(fg: np.ndarray) -> float:
    """Distance of the foreground's centroid from the ROI centre, in fractions of the ROI size."""
    ys, xs = np.nonzero(fg)
    if xs.size == 0:
        return float("inf")
    h, w = fg.shape
    return float(np.hypot((xs.mean() + 0.5) / w - 0.5, (ys.mean() + 0.5) / h - 0.5))


class TriggerMessages(Protocol):
    """The trigger messages received so far (network.trigger_input.ExternalTriggerReceiver)."""

    stats: Stats

    def take_before(self, t_mono: float) -> list[str | None]: ...

    def pending(self) -> int: ...


class ExternalTrigger:
    """Inspects the first frame captured after each trigger message (one part per message)."""

    mode = "external"

    def __init__(self, receiver: TriggerMessages) -> None:
        self.receiver = receiver

    def update(self, frame: Frame) -> list[Fired]:
        return [Fired(frame, pid) for pid in self.receiver.take_before(frame.t_mono)]

    def flush(self) -> list[Fired]:
        left = self.receiver.pending()
        if left:
            log.warning("triggers arrived after the last frame", count=left)
            self.receiver.stats.drop("trigger_without_frame", left)
        return []


def make_trigger(cfg: TriggerConfig, rois: list[Roi], receiver: TriggerMessages | None = None) -> Trigger:
    """The configured trigger over the frame's ROIs (presence watches `cfg.roi`, else the first one);
    "external" needs the receiver of the PLC's trigger messages."""
    if cfg.mode == "continuous":
        return ContinuousTrigger(cfg.every_n)
    if cfg.mode == "presence":
        return PresenceTrigger(next((r for r in rois if r.name == cfg.roi), rois[0]), cfg)
    if receiver is None:
        raise ValueError("an external trigger needs its receiver")
    return ExternalTrigger(receiver)
