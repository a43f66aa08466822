"""capture → trigger → crop → batch → score → decide → encode → publish, as threads joined by bounded queues.

Threads: capture (stages/capture.py), trigger (the front end's trigger and the crop stage), score (batcher,
engine, decisions), publish (encode, journal, send: network/publisher.py) and, with publish.preview_fps > 0,
preview (the latest frame as a small JPEG for the `preview` topic: network/preview.py). The main thread supervises:
systemd notifications, the watchdog, SIGTERM/SIGINT (stop capture, drain, exit 0) and SIGHUP (reload the
configured model beside the running one and swap it in between two batches: inspector/models/loader.py).
"""

from __future__ import annotations

import queue
import signal
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import structlog
import zmq

from engines import Engine
from inspector.config import InspectorConfig
from inspector.drift import DriftWatch
from inspector.errors import InspectorError
from inspector.models.active import LoadedModel, ModelSet
from inspector.models.loader import ModelLoader
from inspector.models.slot import ModelSlot, Swap
from inspector.network.preview import PreviewEncoder
from inspector.network.publisher import Publisher, PublishHook
from inspector.network.trigger_input import ExternalTriggerReceiver
from inspector.notify import Notifier
from inspector.records import Part
from inspector.stages.batcher import Batcher
from inspector.stages.capture import END
from inspector.stages.decide import resolve_thresholds, score_and_decide
from inspector.stages.frontend import Cut, FrontEnd
from inspector.state.recorder import Recorder
from inspector.stats import Stats

log = structlog.get_logger("inspector.pipeline")


class Service(Protocol):
    """Something with its own thread and socket on the pipeline's context (the backfill server): start()
    returns once it is ready or raises; `label` names its configuration for the error message."""

    label: str

    def start(self) -> Any: ...

    def stop(self) -> None: ...


class Pipeline:
    def __init__(self, cfg: InspectorConfig, engine: Engine, *, realtime: bool = False,
                 notifier: Notifier | None = None, first_sequence: int = 1,
                 before_publish: Sequence[PublishHook] = (), after_publish: Sequence[PublishHook] = (),
                 status_sources: Sequence[Callable[[], dict[str, Any]]] = (), lossless: bool | None = None,
                 recorder: Recorder | None = None, context: zmq.Context | None = None,
                 curve_secret: str | Path | None = None, services: Sequence[Service] = (),
                 shadow: LoadedModel | None = None, model_loader: ModelLoader | None = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.notifier = notifier or Notifier()
        self.stats = Stats()
        self.run_id = uuid.uuid4().hex[:8]
        thresholds = resolve_thresholds(cfg.roi_names, cfg.decision, engine.manifest.threshold)
        # what the score loop decides with; a hot swap replaces it between two batches (inspector/models/slot.py)
        self.slot = ModelSlot(ModelSet(LoadedModel(engine, engine.manifest.model_id, thresholds,
                                                   Path(str(cfg.engine.path or "")), engine.manifest),
                                       shadow))  # shadow: models/shadow.py load_shadow
        self.ctx = context or zmq.Context()  # with CURVE: the context the authenticator was started on
        self.services = list(services)  # e.g. the backfill server: started after the binds, stopped first
        self.parts: queue.Queue = queue.Queue(cfg.engine.queue_parts)
        self.results: queue.Queue = queue.Queue(cfg.publish.queue_results)
        self.receiver = (ExternalTriggerReceiver(self.ctx, cfg.trigger.endpoint, self.stats, curve_secret)
                         if cfg.trigger.mode == "external" else None)
        self.frontend = FrontEnd(cfg, self.stats, realtime=realtime, lossless=lossless, receiver=self.receiver)
        self.capture = self.frontend.capture
        self._abort = threading.Event()  # a stage died: stop waiting on queues
        self._signal: int | None = None
        self.preview = PreviewEncoder(cfg.publish, lambda: self.capture.latest, cfg.rois,  # the `preview` topic
                                      station_id=cfg.station_id, run_id=self.run_id)
        # drift watch (inspector/drift.py): every published result's scores in, the status topic's `drift` out
        self.drift = DriftWatch(cfg.drift, self.model_id, engine.manifest, reference=lambda model_id: (
            self.models.production.manifest if self.models.production.model_id == model_id else None))
        after_publish = [*after_publish, self.drift.observe]
        status_sources = [*status_sources, self.drift.status_source]
        self.publisher = Publisher(
            cfg.publish, self.ctx, self.results, self.stats, station_id=cfg.station_id, run_id=self.run_id,
            info={"model_id": self.model_id, "backend": engine.backend,
                  "source": str(cfg.camera.source)},
            first_sequence=first_sequence, before_publish=before_publish, after_publish=after_publish,
            status_sources=status_sources, abort=self._abort, recorder=recorder, curve_secret=curve_secret,
            preview=self.preview)
        self.model_loader = model_loader  # hot swap (inspector/models/loader.py): SIGHUP and the control socket
        if model_loader is not None:
            model_loader.attach(self.slot, first_sequence, self._swapped)
        self._reload_requested = False  # SIGHUP: set by the handler, acted on by the supervisor loop
        self._stages = [threading.Thread(target=self._guard, args=(self._trigger_loop,), name="trigger", daemon=True),
                        threading.Thread(target=self._guard, args=(self._score_loop,), name="score", daemon=True)]
        self._stop = threading.Event()
        self.fatal: BaseException | None = None
        self.started_mono = 0.0
        self.ended_mono = 0.0

    @property
    def models(self) -> ModelSet:
        """The ModelSet the next batch is scored with: the slot's, which a reload swaps between two batches."""
        return self.slot.current

    @property
    def model_id(self) -> str:
        """The production model's id (the one a hot swap put in, after one)."""
        return self.models.production.model_id

    def _swapped(self, swap: Swap) -> None:
        """After a hot swap (the loader's thread): the status topic names the new production model."""
        production = swap.new.production
        self.publisher.info.update(model_id=production.model_id, backend=getattr(production.engine, "backend", None))

    # --- life cycle -------------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the sockets and start every thread; InspectorError if an endpoint cannot be bound."""
        _start(self.publisher)
        after: list[Service] = [self.receiver] if self.receiver is not None else []
        try:
            for service in [*after, *self.services]:
                _start(service)
        except InspectorError:
            self.results.put(END)  # the publisher ends: nothing will be inspected
            raise
        self.started_mono = time.monotonic()
        if self.publisher.preview is not None:
            self.preview.start()
        for t in self._stages:
            t.start()
        self.frontend.start()
        log.info("pipeline started", run_id=self.run_id, model_id=self.model_id, trigger=self.cfg.trigger.mode,
                 source=str(self.cfg.camera.source), thresholds=self.models.production.thresholds)

    def request_stop(self) -> None:
        self._stop.set()

    def run(self, handle_signals: bool = True) -> int:
        """Start, supervise until the stream ends or a signal arrives, drain; the process exit code."""
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, _frame: self._on_signal(signum))
            signal.signal(signal.SIGHUP, lambda _signum, _frame: self._on_hangup())  # systemctl reload
        try:
            self.start()
        except InspectorError:
            self._abort.set()
            self.close()  # release what did start: threads, sockets, the backfill server
            raise
        ready = stopping = False
        last_ping, last_examined = 0.0, 0
        camera_state = ""
        interval = self.notifier.watchdog_interval_s
        while self.publisher.is_alive():
            if not ready and self.capture.opened.is_set():
                ready = True
                self.notifier.ready(f"inspecting {self.cfg.camera.source}")
            if self._stop.is_set() and not stopping:
                stopping = True
                self.notifier.stopping()
                log.info("stopping: capture closed, draining the pipeline")
                self.capture.stop()
            if self.stats.camera_state != camera_state:  # shown by `systemctl status`
                camera_state = self.stats.camera_state
                self.notifier.status(f"camera {camera_state}: {self.cfg.camera.source}")
            if self._signal is not None:
                log.info("signal received", signal=signal.Signals(self._signal).name)
                self._signal = None
            if self._reload_requested:
                self._reload_requested = False
                self._reload_configured()
            now, examined = time.monotonic(), self.stats.frames_examined
            if ready and not stopping and interval and now - last_ping >= interval and examined != last_examined:
                last_ping, last_examined = now, examined
                self.notifier.watchdog()  # only while frames are being processed
            self.publisher.join(timeout=min(0.1, interval or 0.1))
        if not stopping:
            self.notifier.stopping()
        if self.publisher.error is not None and self.fatal is None:
            self.fatal = self.publisher.error
        self._abort.set()  # nothing downstream any more: no stage may wait on a full queue
        self.ended_mono = time.monotonic()
        self.close()
        if self.fatal is not None:
            log.error("pipeline failed", error=str(self.fatal))
            return 2 if isinstance(self.fatal, InspectorError) else 1
        log.info("pipeline stopped", **{k: v for k, v in self.stats.snapshot().items() if k != "camera"})
        return 0

    def close(self) -> None:
        for service in self.services:
            service.stop()
        if self.model_loader is not None:
            self.model_loader.close()
        self.capture.stop()
        self.preview.stop()
        if self.receiver is not None:
            self.receiver.stop(2)
        for t in (*self._stages, self.capture, self.publisher):
            if t.ident is not None:  # started (not when a bind failed first)
                t.join(2 if t is not self.publisher else self.cfg.publish.linger_ms / 1000 + 2)
        final = self.slot.close()  # a reload still loading closes what it loaded
        if final.production.engine is not self.engine:  # swapped in by a reload: the pipeline's to close
            final.production.engine.close()
        self.ctx.term()

    def _on_hangup(self) -> None:
        self._reload_requested = True  # the supervisor loop starts the reload: nothing else in a signal handler

    def _reload_configured(self) -> None:
        if self.model_loader is None:
            log.warning("SIGHUP: this pipeline has no model loader; restart to load another model")
            return
        log.info("SIGHUP: reloading the configured model beside the running one")
        self.model_loader.reload_configured()

    def _on_signal(self, signum: int) -> None:
        self._signal = signum  # logged by the supervisor loop: no locks taken in a signal handler
        self._stop.set()

    def _guard(self, loop: Any) -> None:
        try:
            loop()
        except BaseException as e:  # noqa: BLE001 - a stage must never die silently
            self.fatal = e
            if not isinstance(e, InspectorError):
                log.exception("stage failed", stage=threading.current_thread().name)
            self._abort.set()  # the publisher drains what is queued, then ends
            self._stop.set()
            self.capture.consumer_gone()

    def _put(self, q: queue.Queue, item: Any) -> None:
        """Wait for room (back-pressure), unless a stage has died: then give up rather than hang."""
        while True:
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._abort.is_set():
                    return

    # --- stages -----------------------------------------------------------------------------------
    def _trigger_loop(self) -> None:
        """Frames in, parts out: the front end triggers, the crop stage cuts and resizes."""
        try:
            for cut in self.frontend.cuts():
                self.stats.part_triggered()
                self._put(self.parts, self._make_part(cut))
        finally:
            self.frontend.consumer_gone()
            self._put(self.parts, END)

    def _make_part(self, cut: Cut) -> Part:
        frame = cut.frame
        part = Part(cut.fired.part_id or f"{self.cfg.station_id}-{self.run_id}-{frame.number}", frame,
                    self.cfg.trigger.mode, cut.rois)
        try:
            part.crops = cut.model_input(self.engine.input_shape)
        except Exception as e:  # never silence: the part is published with verdict "error"
            part.crops, part.error = [], f"crop failed: {e}"
        return part

    def _score_loop(self) -> None:
        """Parts in, results out: batches up to the engine's max batch or max wait, then decide."""
        max_batch = max(1, min(self.cfg.engine.max_batch, int(self.engine.max_batch)))
        batcher: Batcher[Part] = Batcher(self.parts, max_batch, self.cfg.engine.max_wait_ms / 1000,
                                         size=lambda p: max(1, len(p.crops)))
        try:
            while batch := batcher.next_batch():
                models = self.slot.between_batches()  # a hot swap happens only here, between two batches
                results: list = []
                try:
                    results = score_and_decide(models, batch, stats=self.stats)
                finally:
                    self.slot.batch_done(len(results))
                for result in results:
                    self._put(self.results, result)
        finally:
            self._put(self.results, END)


def _start(service: Service) -> None:
    """Start a socket thread or service; its bind or key error as an InspectorError naming the field."""
    try:
        service.start()
    except Exception as e:  # an endpoint in use or invalid, a key that cannot be read
        raise InspectorError(f"{service.label}: {e}") from None
