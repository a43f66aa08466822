"""capture -> trigger -> crop as one piece: what the daemon's pipeline and `inspector collect` both run.

The camera thread fills a bounded frame queue; `cuts()` takes every frame in order, resolves the ROIs
for its shape (again whenever the shape changes: a camera that comes back at another resolution), makes
the configured trigger on the first frame and yields each triggered frame with its ROIs. The caller cuts
it: model-sized crops for the pipeline, full-resolution crops for a training set.

    front = FrontEnd(cfg, stats, lossless=True)
    front.start()
    try:
        for cut in front.cuts():
            ...cut.crops()...
    finally:
        front.close()
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from inspector.config import InspectorConfig
from inspector.records import Frame, Roi
from inspector.stages.capture import END, Capture
from inspector.stages.crop import crop, frame_rois, model_crops
from inspector.stages.trigger import Fired, Trigger, TriggerMessages, make_trigger
from inspector.stats import Stats


@dataclass(frozen=True)
class Cut:
    """A frame the trigger chose and the ROIs it is cut into (resolved for its shape)."""

    fired: Fired
    rois: list[Roi]

    @property
    def frame(self) -> Frame:
        return self.fired.frame

    def crops(self) -> list[np.ndarray]:
        """Each ROI at full resolution (views of the frame)."""
        return [crop(self.frame.image, r) for r in self.rois]

    def model_input(self, input_shape: tuple[int, int, int]) -> list[np.ndarray]:
        """Each ROI as model input, uint8 H×W×C of the engine's input_shape."""
        return model_crops(self.frame.image, self.rois, input_shape)


class FrontEnd:
    """The capture thread and the trigger over its frames. `receiver`: the external trigger's messages."""

    def __init__(self, cfg: InspectorConfig, stats: Stats, *, realtime: bool = False, lossless: bool | None = None,
                 receiver: TriggerMessages | None = None) -> None:
        self.cfg = cfg
        self.stats = stats
        self.receiver = receiver
        self.frames: queue.Queue = queue.Queue(cfg.camera.queue_frames)
        self.capture = Capture(cfg.camera, self.frames, stats, realtime=realtime, lossless=lossless)

    def start(self) -> None:
        self.capture.start()

    def cuts(self) -> Iterator[Cut]:
        """Every triggered frame until the capture ends (then what the trigger still holds)."""
        rois: list[Roi] = []
        trigger: Trigger | None = None
        shape: tuple[int, ...] | None = None
        while True:
            frame = self.frames.get()
            if frame is END:
                break
            self.stats.frame_examined()
            if frame.image.shape != shape:
                shape = frame.image.shape
                rois = frame_rois(self.cfg.rois, shape)  # InspectorError naming an ROI outside the frame
                if trigger is None:
                    trigger = make_trigger(self.cfg.trigger, rois, self.receiver)
            assert trigger is not None
            for fired in trigger.update(frame):
                yield Cut(fired, rois)
        if trigger is not None:
            for fired in trigger.flush():
                yield Cut(fired, rois)

    def consumer_gone(self) -> None:
        """Nobody takes frames any more: the capture thread must not wait for room in the queue."""
        self.capture.consumer_gone()

    def close(self, timeout_s: float | None = 5.0) -> None:
        """Stop the capture and wait for it to release the camera or file."""
        self.capture.stop()
        self.capture.consumer_gone()
        if self.capture.ident is not None:
            self.capture.join(timeout_s)
