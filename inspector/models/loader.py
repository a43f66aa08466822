"""Reload the production model in the background, beside the running one, and switch only if it is fit.

One reload at a time, each in its own thread (`model-loader`): open the engine (engines.load_engine reads
the manifest, checks the ONNX file's sha256 against it, or a TensorRT engine's engine_sha256, and the
graph's tensors against the manifest), then what a swap needs on top: the same input size and channels
and colour order as the running model (the crop stage cuts crops for engine.input_shape once), a
threshold for every ROI (`resolve_thresholds`: [decision] overrides still apply), a warm-up at the
largest batch with finite scores, and agreement with the running model on the newest journaled parts
whose crops are stored (inspector/models/agreement.py). Only then is the new set offered to the slot,
which switches between two batches; the old engine is closed once no batch uses it. The shadow (if
any) stays as it is, except on promote, which leaves the shadow slot empty.

A failed reload keeps the running model: the reason goes to the log, the status topic (`model.last_reload`),
the control reply and the journal's events table ('model_refused'); a swap is journaled as 'model_swap'
with both ids and the last sequence number the old model decided.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import structlog

from engines import Engine
from inspector.config import DecisionConfig, InspectorConfig
from inspector.errors import InspectorError
from inspector.models.active import LoadedModel, ModelSet, input_mismatch, one_line
from inspector.models.agreement import agreement, journaled_parts
from inspector.models.slot import ModelSlot, SlotClosed, Swap, SwapTimeout
from inspector.stages.decide import resolve_thresholds
from inspector.stages.scoring import engine_cpu_threads, open_engine
from inspector.state.events import record_event
from inspector.state.journal_reader import JournalUnavailable

T = TypeVar("T")

log = structlog.get_logger("inspector.models")

SOURCES = ("control", "sighup")
_RESTART_ONLY = ("station_id", "camera", "rois", "trigger", "publish", "state", "security", "shadow", "drift",
                 "control", "logging")


class Busy(InspectorError):
    """A reload is already in progress."""


@dataclass
class Reload:
    """One reload request; `outcome` (the control reply) is set when `done` is."""

    path: Path | None  # None: the configured [engine] path (the configuration is read again)
    promote: bool = False  # the new model replaces production and the shadow slot is emptied
    source: str = "control"
    started: float = field(default_factory=time.time)
    done: threading.Event = field(default_factory=threading.Event)
    outcome: dict[str, Any] | None = None

    def wait(self, timeout_s: float | None) -> dict[str, Any] | None:
        self.done.wait(timeout_s)
        return self.outcome


class ModelLoader:
    """Loads models for a pipeline's ModelSlot (attach it first); status for the `model` status object."""

    def __init__(self, cfg: InspectorConfig, *, read_config: Callable[[], InspectorConfig] | None = None,
                 journal_file: Path | None = None, images_dir: Path | None = None,
                 synchronous: str = "FULL") -> None:
        self.cfg = cfg
        self.read_config = read_config  # the daemon's own file + environment, read again (SIGHUP)
        self.journal_file, self.images_dir, self.synchronous = journal_file, images_dir, synchronous
        self.roi_names = cfg.roi_names
        self._decision = cfg.decision
        self._lock = threading.Lock()
        self._active: Reload | None = None
        self._last: dict[str, Any] | None = None
        self._counts = {"swaps": 0, "refused": 0}
        self._slot: ModelSlot | None = None
        self._first_sequence = 1
        self._on_swap: Callable[[Swap], None] | None = None
        self._closed = False

    def attach(self, slot: ModelSlot, first_sequence: int, on_swap: Callable[[Swap], None] | None = None) -> None:
        """The pipeline's slot, its first sequence number (for last_seq) and what it updates on a swap."""
        self._slot, self._first_sequence, self._on_swap = slot, first_sequence, on_swap

    def close(self) -> None:
        """No new reloads; one in progress finds the slot closed and closes what it loaded."""
        with self._lock:
            self._closed = True

    # --- requests -----------------------------------------------------------------------------------
    def request(self, path: Path | None = None, *, promote: bool = False, source: str = "control") -> Reload:
        """Start a reload in its own thread; Busy while another one runs, InspectorError when stopping."""
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}")
        with self._lock:
            if self._closed or self._slot is None:
                raise InspectorError("the pipeline is not running: nothing to reload")
            if self._active is not None:
                a = self._active
                raise Busy(f"busy: a reload ({a.source}, {a.path or 'the configured [engine] path'}) is in "
                           f"progress since {time.strftime('%H:%M:%S', time.localtime(a.started))}; "
                           "ask again when it has ended")
            ticket = self._active = Reload(path, promote, source)
        threading.Thread(target=self._run, args=(ticket,), name="model-loader", daemon=True).start()
        return ticket

    def reload_configured(self) -> Reload | None:
        """SIGHUP: reload the configured [engine] path; None (logged) while another reload runs."""
        try:
            return self.request(source="sighup")
        except InspectorError as e:
            log.warning("SIGHUP: no reload started", reason=str(e))
            return None

    # --- status -------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """{"model": {model_id, path, backend, shadow_model_id, state, loading, last_reload, swaps, refused}}."""
        current = self._slot.current if self._slot is not None else None
        with self._lock:
            active, last, counts = self._active, self._last, dict(self._counts)
        out: dict[str, Any] = {"model_id": None, "path": None, "backend": None, "shadow_model_id": None}
        if current is not None:
            p, s = current.production, current.shadow
            out.update(model_id=p.model_id, path=str(p.path), backend=getattr(p.engine, "backend", None),
                       shadow_model_id=s.model_id if s is not None else None,
                       shadow_path=str(s.path) if s is not None else None)
        out.update(state="loading" if active is not None else "running",
                   loading=None if active is None else {"path": str(active.path) if active.path else None,
                                                        "source": active.source, "promote": active.promote,
                                                        "since": round(active.started, 3)},
                   last_reload=last, **counts)
        return {"model": out}

    # --- the reload thread --------------------------------------------------------------------------
    def _run(self, ticket: Reload) -> None:
        try:
            outcome = self._reload(ticket)
        except Exception as e:  # noqa: BLE001 - a bug here must not leave the request without an answer
            log.exception("model reload failed unexpectedly")
            outcome = self._refused(ticket, f"internal error: {type(e).__name__}: {e}", None, None)
        last = {k: outcome.get(k) for k in ("ok", "at", "model_id", "previous", "error", "agreement", "path",
                                            "source", "promoted")}
        with self._lock:
            self._last = last
            self._active = None
            self._counts["swaps" if outcome["ok"] else "refused"] += 1
        ticket.outcome = outcome
        ticket.done.set()

    def _reload(self, ticket: Reload) -> dict[str, Any]:
        assert self._slot is not None
        t0 = time.monotonic()
        current = self._slot.current
        path: Path | None = ticket.path
        engine: Engine | None = None
        try:
            cfg, decision, restart_needed = self._configuration(ticket)
            path = self._model_path(ticket, cfg, current)
            log.info("loading a model beside the running one", path=str(path), source=ticket.source,
                     promote=ticket.promote, running=current.production.model_id)
            single = starts_no_threads(cfg)
            opened: list[Engine] = []

            def prepare() -> tuple[LoadedModel, dict[str, Any]]:
                """Load, check, warm up, try on recent parts: on a thread of its own whose CPU priority is
                lowered, so the lower priority ends with it (it may not be raised again unprivileged)."""
                if single:
                    lower_priority()  # all of it yields the CPU to the running pipeline
                opened.append(open_engine(cfg.engine, path))
                model = self._checked(opened[0], current.production, decision, path)
                warm_up(opened[0], max(1, min(cfg.engine.max_batch, int(opened[0].max_batch))))
                if not single:
                    lower_priority()  # the engine's threads exist now, at the daemon's priority
                parts = journaled_parts(self.journal_file, self.images_dir, current.production.model_id,
                                        self.roi_names, tuple(opened[0].input_shape),
                                        self.cfg.control.agreement_parts)
                return model, agreement(opened[0], model.thresholds, self.roi_names, parts)

            try:
                model, agree = on_own_thread(prepare, "model-load")
            finally:
                engine = opened[0] if opened else None
            # the switch and its journal row at the daemon's priority: a thread that cannot get the CPU must
            # not hold the journal's write lock or the slot
            new_set = ModelSet(model, None if ticket.promote else current.shadow)
            swap = self._slot.swap(new_set, self.cfg.control.swap_timeout_s)
        except (InspectorError, SwapTimeout, SlotClosed) as e:
            if engine is not None:
                engine.close()
            return self._refused(ticket, one_line(str(e)), path, engine)
        except Exception as e:  # the engine failed in warm-up or agreement: EngineError, ORT's own errors
            if engine is not None:
                engine.close()
            return self._refused(ticket, one_line(f"{type(e).__name__}: {e}"), path, engine)
        self._decision = decision
        return self._swapped(ticket, swap, agree, restart_needed, time.monotonic() - t0)

    def _configuration(self, ticket: Reload) -> tuple[InspectorConfig, DecisionConfig, list[str]]:
        """The configuration a reload follows: read again for the configured path (SIGHUP, or no path
        given), else the running one; and the sections that changed but only apply after a restart."""
        if ticket.path is not None or ticket.promote or self.read_config is None:
            return self.cfg, self._decision, []
        try:
            cfg = self.read_config()
        except InspectorError as e:
            raise InspectorError(f"configuration not reloaded: {e}") from None
        changed = [name for name in _RESTART_ONLY if getattr(cfg, name, None) != getattr(self.cfg, name, None)]
        if cfg.engine.model_dump(exclude={"path"}) != self.cfg.engine.model_dump(exclude={"path"}):
            changed.append("engine (all but path)")
        if changed:
            log.warning("configuration changes that only a restart applies (a reload takes [engine] path and "
                        "[decision])", sections=changed)
        return cfg, cfg.decision, changed

    def _model_path(self, ticket: Reload, cfg: InspectorConfig, current: ModelSet) -> Path:
        if ticket.path is not None:
            return ticket.path
        if ticket.promote:
            if current.shadow is None:
                raise InspectorError("promote: no shadow model is running (promoted already?) and no path was "
                                     "given; name the candidate's path")
            return current.shadow.path
        if cfg.engine.path is None:
            raise InspectorError("engine.path is not set in the configuration: nothing to reload")
        return cfg.engine.path

    def _checked(self, engine: Engine, running: LoadedModel, decision: DecisionConfig, path: Path) -> LoadedModel:
        """What a swap needs beyond a loadable engine: the running model's input, thresholds."""
        mismatch = input_mismatch(engine, running.engine, "running model")
        if mismatch is not None:
            raise InspectorError(f"{path} {mismatch}: a hot swap keeps the crops' size, channels and colour "
                                 "order (export the model to match, or change them with a restart)")
        thresholds = resolve_thresholds(self.roi_names, decision, engine.manifest.threshold)
        return LoadedModel(engine, engine.manifest.model_id, thresholds, path, engine.manifest)

    # --- outcomes -----------------------------------------------------------------------------------
    def _swapped(self, ticket: Reload, swap: Swap, agree: dict[str, Any], restart_needed: list[str],
                 seconds: float) -> dict[str, Any]:
        old, new = swap.old, swap.new
        old.production.engine.close()  # no batch uses it: the switch happened between two batches
        if ticket.promote and old.shadow is not None:
            old.shadow.engine.close()
        last_seq = self._first_sequence + swap.decided - 1
        if self._on_swap is not None:
            self._on_swap(swap)
        outcome = {"ok": True, "model_id": new.production.model_id, "previous": old.production.model_id,
                   "path": str(new.production.path), "backend": getattr(new.production.engine, "backend", None),
                   "thresholds": new.production.thresholds, "agreement": agree, "last_seq": last_seq,
                   "promoted": ticket.promote, "shadow_model_id": new.shadow.model_id if new.shadow else None,
                   "source": ticket.source, "at": round(swap.at, 6), "load_s": round(seconds, 3),
                   "restart_needed": restart_needed}
        self._event("model_swap", old.production.model_id, new.production.model_id, last_seq, outcome)
        log.info("model swapped between two batches", model_id=outcome["model_id"], previous=outcome["previous"],
                 last_seq=last_seq, agreement=agree.get("fraction"), agreement_n=agree["n"],
                 source=ticket.source, promoted=ticket.promote)
        return outcome

    def _refused(self, ticket: Reload, error: str, path: Path | None, engine: Engine | None) -> dict[str, Any]:
        assert self._slot is not None
        running = self._slot.current.production.model_id
        refused_id = engine.manifest.model_id if engine is not None else None
        outcome = {"ok": False, "error": error, "model_id": running, "previous": running, "refused_model_id":
                   refused_id, "path": str(path) if path is not None else None, "source": ticket.source,
                   "promoted": False, "at": round(time.time(), 6), "agreement": None}
        self._event("model_refused", running, refused_id, self._first_sequence + self._slot.decided - 1, outcome)
        log.error("model reload refused: the running model keeps deciding", error=error, path=outcome["path"],
                  model_id=running, source=ticket.source)
        return outcome

    def _event(self, kind: str, old: str | None, new: str | None, last_seq: int, detail: dict[str, Any]) -> None:
        if self.journal_file is None:
            return
        try:
            record_event(self.journal_file, kind, old, new, detail, last_seq, synchronous=self.synchronous)
        except JournalUnavailable as e:
            log.error("model event not journaled", kind=kind, error=str(e))


def warm_up(engine: Engine, batch: int) -> None:
    """One inference at `batch` images (allocations, kernels, caches happen here, not in the first real
    batch); InspectorError unless it returns `batch` finite scores."""
    h, w, c = engine.input_shape
    t0 = time.monotonic()
    r = engine.infer(np.zeros((batch, h, w, c), np.uint8))
    scores = np.asarray(r.scores)
    if scores.shape != (batch,) or not np.all(np.isfinite(scores)):
        raise InspectorError(f"warm-up: {batch} images gave scores of shape {scores.shape} "
                             f"({int(np.sum(~np.isfinite(scores)))} not finite): the model is not usable")
    log.debug("model warmed up", batch=batch, seconds=round(time.monotonic() - t0, 3))


def starts_no_threads(cfg: InspectorConfig) -> bool:
    """Whether the engine runs on the calling thread only (ONNX Runtime with one CPU thread: the 2-core
    box). Then the whole reload can run at a lower priority; otherwise the engine's own threads (its
    pool, the shard workers) must start at the daemon's priority, which they inherit from their creator
    and keep once the engine is production, and only the agreement runs at the lower one."""
    threads = engine_cpu_threads(cfg.engine)
    if threads is None:  # ENGINES_ORT_THREADS decides, as in the engines package (imported lazily, as select.py)
        from engines.onnxruntime_engine import default_threads

        try:
            threads = default_threads()
        except ValueError:
            return False
    return threads == 1 and cfg.engine.backend == "onnxruntime"


def lower_priority(increment: int = 10) -> None:
    """Give this thread the CPU only when the pipeline does not want it: Linux's SCHED_IDLE policy, else a
    nice value `increment` higher (both are per thread on Linux and end with it). On a busy 2-core box this
    is what keeps the swap pause near the normal gap between results (docs/research/bench/lifecycle/swap.md).
    An unprivileged thread cannot take either back: call it on a thread that ends with the work."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # 0: the calling thread
        return
    except (AttributeError, OSError):  # not Linux
        pass
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except (AttributeError, OSError):  # not allowed: the reload runs at normal priority
        pass


def on_own_thread(work: Callable[[], T], name: str) -> T:
    """work() on a new thread, waited for: its result, or its exception raised here."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append((True, work()))
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out.append((False, e))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    ok, value = out[0]
    if not ok:
        raise value
    return value

