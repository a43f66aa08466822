"""The one start-up of `inspector run` and `inspector replay`: engine -> station -> pipeline.

The station is what is set up around the pipeline (issue 6): CURVE on every socket, the result journal
and image store, the backfill endpoint, and the sequence number this run starts from.

    code, pipeline = run_station(cfg, realtime=True)      # the whole run; InspectorError for a user's fix

or step by step (tests):

    station = open_station(cfg, model_id)                 # keys checked, authenticator started, journal read
    pipe = Pipeline(cfg, engine, **station.pipeline_kwargs())
    pipe.run()                                            # binds, serves backfill; close() stops it all

Nothing here binds a socket: the pipeline binds (publish, trigger, then backfill) once everything
could be set up, so a bad key or configuration leaves nothing half-started.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
import zmq

from inspector.config import InspectorConfig
from inspector.errors import InspectorError
from inspector.models.control import ControlServer
from inspector.models.loader import ModelLoader
from inspector.models.shadow import load_shadow
from inspector.network import security
from inspector.network.backfill import BackfillServer
from inspector.network.publisher import PublishHook
from inspector.notify import Notifier
from inspector.pipeline import Pipeline, Service
from inspector.stages.scoring import open_engine
from inspector.state.image_store import ImageStore
from inspector.state.journal import Journal, JournalUnavailable
from inspector.state.recorder import Recorder

log = structlog.get_logger("inspector.station")

STATION_KEY = "station"


class _Named:
    """A service that is not a socket thread, with a label for error messages (the authenticator)."""

    def __init__(self, label: str, start: Any, stop: Any) -> None:
        self.label, self._start, self._stop = label, start, stop

    def start(self) -> None:
        self._start()

    def stop(self) -> None:
        self._stop()


@dataclass
class Station:
    context: zmq.Context
    recorder: Recorder | None
    first_sequence: int
    curve_secret: Path | None
    services: list[Service] = field(default_factory=list)  # started after the pipeline's binds
    start_info: dict[str, Any] = field(default_factory=dict)
    backfill: BackfillServer | None = None
    loader: ModelLoader | None = None  # hot swap: SIGHUP and the control socket (inspector/models/)

    def pipeline_kwargs(self) -> dict[str, Any]:
        return {"context": self.context, "recorder": self.recorder, "first_sequence": self.first_sequence,
                "curve_secret": self.curve_secret, "services": self.services,
                "status_sources": [self.status], "model_loader": self.loader}

    def status(self) -> dict[str, Any]:
        """Status-topic fields: this start (restart announcement), security mode and the backfill counters."""
        backfill = {"state": "off"} if self.backfill is None else {
            "state": "serving" if self.backfill.is_alive() else "stopped", "endpoint": self.backfill.endpoint,
            **self.backfill.stats()}
        model = self.loader.status() if self.loader is not None else {}  # the `model` object
        return {**self.start_info, "backfill": backfill, **model}


def station_secret(cfg: InspectorConfig) -> Path | None:
    """The station's secret key file when CURVE is on; SecurityError → InspectorError if unusable."""
    if cfg.security.mode == "off":
        return None
    secret = cfg.security.key_dir / f"{STATION_KEY}.key_secret"
    try:
        security.load_keypair(secret)
    except security.SecurityError as exc:
        raise InspectorError(f"security.key_dir: {exc} (make the pair with `inspector keygen "
                             f"{cfg.security.key_dir}`)") from None
    return secret


def run_station(cfg: InspectorConfig, *, realtime: bool, notifier: Notifier | None = None,
                synchronous: str | None = None, after_publish: Sequence[PublishHook] = (),
                read_config: Callable[[], InspectorConfig] | None = None) -> tuple[int, Pipeline]:
    """Load the model, open the station around it, run the pipeline until its stream ends or a signal
    arrives; the exit code and the finished pipeline (its stats and times). A missing or bad model stops
    before anything is bound; an error the user can fix is raised as InspectorError. `read_config` reads the
    configuration again as the daemon started with it (file + environment): SIGHUP reloads its [engine] path."""
    engine = open_engine(cfg.engine)  # a missing or bad model stops here: nothing bound, no READY
    shadow = None
    try:
        shadow = load_shadow(cfg, engine)  # [shadow] model: checked here too, before anything is bound
        station = open_station(cfg, engine.manifest.model_id, synchronous=synchronous, read_config=read_config)
        pipeline = Pipeline(cfg, engine, realtime=realtime, notifier=notifier, after_publish=after_publish,
                            shadow=shadow, **station.pipeline_kwargs())
        code = pipeline.run(handle_signals=True)
    finally:
        engine.close()
        if shadow is not None:
            shadow.engine.close()
    if isinstance(pipeline.fatal, InspectorError):
        raise pipeline.fatal
    return code, pipeline


def open_station(cfg: InspectorConfig, model_id: str, *, synchronous: str | None = None,
                 backfill: bool = True, read_config: Callable[[], InspectorConfig] | None = None) -> Station:
    """Check the keys, start the authenticator, read the journal's last sequence and record this start;
    the model loader (hot swap) and, with [control] bind, its control socket."""
    secret = station_secret(cfg)
    context = zmq.Context()
    try:
        auth = security.start_authenticator(context, cfg.security.mode, cfg.security.allow_dir)
    except security.SecurityError as exc:
        context.term()
        raise InspectorError(f"security: {exc}") from None
    station = Station(context, None, 1, secret, start_info={"security": cfg.security.mode})
    if cfg.state.journal:
        _open_journal(station, cfg, model_id, synchronous or cfg.state.synchronous)
        if backfill and cfg.publish.backfill_bind:
            server = BackfillServer(cfg.publish.backfill_bind, cfg.state.journal_file,
                                    image_root=cfg.state.images_dir, context=context, curve_secret=secret)
            station.backfill = server
            station.services.append(server)
    state = cfg.state
    station.loader = ModelLoader(cfg, read_config=read_config, journal_file=state.journal_file if state.journal else None,
                                 images_dir=state.images_dir, synchronous=synchronous or state.synchronous)
    if cfg.control.bind:  # after the pipeline's binds, stopped before them (and before the authenticator)
        station.services.append(ControlServer(cfg.control.bind, station.loader, context=context, curve_secret=secret,
                                              reply_timeout_s=cfg.control.reply_timeout_s))
    if auth is not None:
        station.services.append(_Named("security authenticator", lambda: None, auth.stop))
    return station


def _open_journal(station: Station, cfg: InspectorConfig, model_id: str, synchronous: str) -> None:
    state = cfg.state
    journal = Journal(state.journal_file, state.retention_days, state.retention_rows,
                      synchronous=synchronous)
    first, from_journal = journal.start_seq()
    start_id = None
    with contextlib.suppress(JournalUnavailable):
        start_id = journal.record_start(os.getpid(), model_id)
    journal.close()  # the publishing thread reopens it with its first append
    store = None
    if state.store_images and state.image_quota_bytes > 0:
        store = ImageStore(state.images_dir, state.image_quota_bytes, fsync=synchronous == "FULL")
    station.recorder = Recorder(journal, store, state.store_images, state.store_passed_every)
    station.first_sequence = first
    station.start_info.update({"start_id": start_id, "restart": bool(start_id and start_id > 1),
                               "sequence_from_journal": from_journal})
    if from_journal:
        log.info("journal opened: sequence numbers continue", first_sequence=first, start_id=start_id,
                 journal=str(journal.path))
    else:
        log.error("journal unreadable at start: sequence numbers start from the clock (subscribers see a gap)",
                  first_sequence=first, error=journal.last_error)
