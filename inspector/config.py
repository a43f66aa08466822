"""The inspector's configuration: a TOML file plus INSPECTOR_… environment variables over defaults.

Every field has its default beside its meaning; `load_config` turns validation errors into one line per field.
"""

from __future__ import annotations

import contextvars
import os
import re
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from inspector.errors import InspectorError
from inspector.gateway.config import GatewayConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10 (JetPack 6): pip install tomli
    import tomli as tomllib  # type: ignore[no-redef]

DEFAULT_CONFIG = Path("/etc/inspector/inspector.toml")
ImageKind = Literal["input", "reconstruction", "heatmap"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CameraConfig(_Section):
    source: int | str = 0  # device index, video file, RTSP/HTTP URL, or a GStreamer pipeline (contains "!")
    api: Literal["any", "ffmpeg", "gstreamer", "v4l2"] = "any"  # OpenCV backend; "any" picks by source
    width: int = Field(0, ge=0)  # requested resolution; 0 = the camera's default
    height: int = Field(0, ge=0)
    fps: float = Field(0.0, ge=0, allow_inf_nan=False)  # requested rate; for files the pacing rate of --realtime (0 = the file's)
    open_timeout_ms: int = Field(5000, gt=0)  # CAP_PROP_OPEN_TIMEOUT_MSEC
    read_timeout_ms: int = Field(5000, gt=0)  # CAP_PROP_READ_TIMEOUT_MSEC
    reconnect_min_s: float = Field(0.5, gt=0, allow_inf_nan=False)  # first retry delay after a failure, doubled each time ...
    reconnect_max_s: float = Field(30.0, gt=0, allow_inf_nan=False)  # ... up to this
    loop: bool = False  # a file source starts again at its end instead of ending the run
    max_frames: int = Field(0, ge=0)  # end the stream after this many frames (0 = no limit; soak tests)
    queue_frames: int = Field(8, ge=1)  # frames buffered between capture and trigger

    @model_validator(mode="after")
    def _backoff_order(self) -> CameraConfig:
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self


class RoiConfig(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    x: int = Field(ge=0)
    y: int = Field(ge=0)
    width: int = Field(gt=0)
    height: int = Field(gt=0)


class TriggerConfig(_Section):
    mode: Literal["continuous", "presence", "external"] = "continuous"
    every_n: int = Field(1, ge=1)  # continuous: inspect every Nth frame
    roi: str = ""  # presence: the ROI watched (default: the first)
    learn_frames: int = Field(20, ge=1)  # presence: frames used to learn the empty belt at start
    max_present_frames: int = Field(300, ge=1)  # presence: foreground longer than this = the belt changed
    on_fraction: float = Field(0.15, gt=0, le=1, allow_inf_nan=False)  # presence: part present when this much of the ROI is foreground
    off_fraction: float = Field(0.05, ge=0, lt=1, allow_inf_nan=False)  # ... and gone again below this (hysteresis)
    min_diff: float = Field(20.0, gt=0, allow_inf_nan=False)  # presence: grey levels a pixel must differ from the belt
    sigma: float = Field(4.0, gt=0, allow_inf_nan=False)  # ... or this many times the belt's own spread, whichever is larger
    background_rate: float = Field(0.02, ge=0, le=1, allow_inf_nan=False)  # presence: belt model update rate on empty frames
    endpoint: str = "tcp://127.0.0.1:5557"  # external: PULL socket the PLC pushes trigger messages to

    @model_validator(mode="after")
    def _hysteresis(self) -> TriggerConfig:
        if self.off_fraction >= self.on_fraction:
            raise ValueError("off_fraction must be below on_fraction (hysteresis)")
        return self


class EngineConfig(_Section):
    path: Path | None = None  # MODEL.onnx or MODEL.engine (manifest MODEL.json beside it); replay: --model
    backend: Literal["auto", "tensorrt", "onnxruntime"] = "auto"
    max_batch: int = Field(8, ge=1)  # crops per engine call (capped by the engine's own max batch)
    max_wait_ms: float = Field(10.0, ge=0, allow_inf_nan=False)  # a batch is sent when full or this long after its first crop
    queue_parts: int = Field(64, ge=1)  # parts buffered between trigger and scoring
    cpu_threads: int | None = Field(None, ge=1)  # ONNX Runtime CPU threads; None = ENGINES_ORT_THREADS, else all cores but one


class DecisionConfig(_Section):
    threshold: FiniteFloat | None = None  # overrides the manifest's threshold for every ROI
    roi_thresholds: dict[str, FiniteFloat] = {}  # per ROI name, overrides both


class PublishConfig(_Section):
    bind: str | None = "tcp://127.0.0.1:5556"  # ZeroMQ PUB endpoint; empty = publish nowhere
    images: list[ImageKind] = ["input", "reconstruction", "heatmap"]  # frames after the header, per ROI
    send_images: Literal["all", "failed", "none"] = "all"  # which parts carry images ("failed" = fail+error)
    image_format: Literal["png", "jpeg"] = "png"
    jpeg_quality: int = Field(90, ge=1, le=100)
    send_hwm: int = Field(1000, ge=1)  # messages queued per subscriber before PUB drops (ZMQ_SNDHWM)
    linger_ms: int = Field(2000, ge=0)  # on close, how long queued messages may still be delivered
    status_interval_s: float = Field(1.0, gt=0, allow_inf_nan=False)
    wait_subscribers: int = Field(0, ge=0)  # hold the first result until this many subscribers joined ...
    wait_subscribers_s: float = Field(5.0, ge=0, allow_inf_nan=False)  # ... or this long passed
    queue_results: int = Field(256, ge=1)  # results buffered between decide and publish
    backfill_bind: str | None = "tcp://127.0.0.1:5558"  # ROUTER answering "everything after N"; empty = none
    preview_fps: float = Field(2.0, ge=0, le=30, allow_inf_nan=False)  # `preview` topic: JPEGs of the latest frame; 0 = off
    preview_width: int = Field(640, ge=16, le=4096)  # previews wider than this are scaled down to it

    @field_validator("bind", "backfill_bind")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None


class StateConfig(_Section):
    dir: Path = Path("/var/lib/inspector")  # journal.db and images/ (systemd StateDirectory=inspector)
    journal: bool = True  # journal every verdict before it is published (off: no journal, no backfill)
    synchronous: Literal["FULL", "NORMAL"] = "FULL"  # FULL survives a power cut; NORMAL only a crash
    retention_days: float = Field(30.0, gt=0, allow_inf_nan=False)  # journal rows older than this are deleted
    retention_rows: int = Field(1_000_000, ge=1)  # ... and beyond the newest this many
    image_quota_bytes: int = Field(2 * 1024**3, ge=0)  # images of failed parts, oldest deleted first
    store_images: list[ImageKind] = ["input", "reconstruction", "heatmap"]  # kinds kept per failed ROI; [] = none
    # the input crop of one passed part in this many (by sequence number) is kept too: confirmed-good parts for
    # `inspector dataset` and a reload's agreement check; 0 = never. Needs the store on (store_images not [])
    store_passed_every: int = Field(20, ge=0)

    @property
    def journal_file(self) -> Path:
        return self.dir / "journal.db"

    @property
    def images_dir(self) -> Path:
        return self.dir / "images"


class ShadowConfig(_Section):
    model: Path | None = None  # a candidate MODEL.onnx/.engine scoring the same crops; its verdicts never reach the PLC


class DriftConfig(_Section):
    """The drift watch (inspector/drift.py, docs/lifecycle.md "Drift watch"): recent parts' scores against
    the held-out normal scores the model shipped with (manifest normal_scores)."""

    enabled: bool = True  # off: the status topic's drift object says "off"
    window: int = Field(200, ge=10, le=10_000)  # the most recent parts compared (every ROI's crop score)
    min_parts: int = Field(50, ge=5)  # parts since the model started before a state other than "unknown"
    warn_shift: float = Field(1.0, gt=0, allow_inf_nan=False)  # warning when the median moved this many normal spreads (clears below 0.75x)
    max_fail_rate: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)  # also warn when more of the window's parts fail (0 = off)

    @model_validator(mode="after")
    def _min_parts_fit_window(self) -> DriftConfig:
        if self.min_parts > self.window:
            raise ValueError(f"min_parts ({self.min_parts}) must be <= window ({self.window})")
        return self


class ControlConfig(_Section):
    """The control socket (inspector/models/control.py, docs/protocol.md "Control"): reload or promote a model
    without stopping the line. SIGHUP (`systemctl reload`) reloads [engine] path whatever this says."""

    bind: str | None = "tcp://127.0.0.1:5559"  # ZeroMQ REQ/REP endpoint (CURVE as the others); empty = off
    agreement_parts: int = Field(200, ge=0)  # newest journaled parts with stored crops a new model is tried on
    reply_timeout_s: float = Field(120.0, gt=0, allow_inf_nan=False)  # a reload's reply waits this long at most
    swap_timeout_s: float = Field(30.0, gt=0, allow_inf_nan=False)  # the batch in flight must end within this

    @field_validator("bind")
    @classmethod
    def _empty_is_none(cls, v: str | None) -> str | None:
        return v or None


class SecurityConfig(_Section):
    mode: Literal["off", "stonehouse", "ironhouse"] = "off"  # CURVE on every socket unless off
    key_dir: Path = Path("/etc/inspector/keys")  # station.key + station.key_secret (`inspector keygen DIR`)
    allow_dir: Path = Path("/etc/inspector/clients")  # ironhouse: public keys (*.key) of allowed clients


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "json"


_toml_path: contextvars.ContextVar[Path | None] = contextvars.ContextVar("inspector_toml", default=None)


class InspectorConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INSPECTOR_", env_nested_delimiter="__", extra="forbid")

    station_id: str = Field("station-1", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    camera: CameraConfig = CameraConfig()
    rois: list[RoiConfig] = []  # empty: one ROI "center", the centred square of the frame's height
    trigger: TriggerConfig = TriggerConfig()
    engine: EngineConfig = EngineConfig()
    decision: DecisionConfig = DecisionConfig()
    publish: PublishConfig = PublishConfig()
    state: StateConfig = StateConfig()
    security: SecurityConfig = SecurityConfig()
    shadow: ShadowConfig = ShadowConfig()  # docs/lifecycle.md "Shadow"; replay: --shadow
    drift: DriftConfig = DriftConfig()  # docs/lifecycle.md "Drift watch"
    control: ControlConfig = ControlConfig()  # `inspector reload` / `promote`; docs/lifecycle.md "Reload (hot swap)"
    logging: LoggingConfig = LoggingConfig()
    gateway: GatewayConfig = GatewayConfig()  # `inspector gateway` (docs/plant.md); the daemon ignores it

    @property
    def roi_names(self) -> list[str]:
        """The ROIs' names; "center" (the centred square of the frame's height) when none is configured."""
        return [r.name for r in self.rois] or ["center"]

    @model_validator(mode="after")
    def _names_refer_to_rois(self) -> InspectorConfig:
        names = self.roi_names
        if len(set(names)) != len(names):
            raise ValueError(f"rois: names must be unique, got {names}")
        if self.trigger.roi and self.trigger.roi not in names:
            raise ValueError(f"trigger.roi: {self.trigger.roi!r} is not an ROI; allowed: {names}")
        unknown = sorted(set(self.decision.roi_thresholds) - set(names))
        if unknown:
            raise ValueError(f"decision.roi_thresholds: unknown ROI {unknown}; allowed: {names}")
        binds = [e for e in (self.publish.bind, self.publish.backfill_bind, self.control.bind) if e]
        if self.trigger.mode == "external":
            binds.append(self.trigger.endpoint)
        if len(set(binds)) != len(binds):
            raise ValueError(f"publish.bind, publish.backfill_bind, control.bind and trigger.endpoint must differ, "
                             f"got {binds}")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: command-line overrides > environment > TOML file > defaults.
        toml = _toml_path.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> InspectorConfig:
    """Read PATH (None: defaults and environment only); raise InspectorError listing every invalid field, or
    naming why the file cannot be read (missing, a directory, permissions, not UTF-8, not TOML): exit 2, which
    the systemd units do not restart on."""
    if path is not None:
        check_toml_file(path)
    token = _toml_path.set(path)
    try:
        return InspectorConfig(**(overrides or {}))
    except ValidationError as e:
        raise InspectorError(format_errors(e, path)) from None
    except SettingsError as e:  # an INSPECTOR_<SECTION> variable that is not JSON
        raise InspectorError(_settings_error(e, path)) from None
    except OSError as e:  # the file changed between the check and the read
        raise InspectorError(f"config: {path} cannot be read: {e.strerror or e}") from None
    finally:
        _toml_path.reset(token)


def check_toml_file(path: Path) -> None:
    """An InspectorError unless PATH is a readable UTF-8 file that parses as TOML."""
    try:
        if stat.S_ISDIR(path.stat().st_mode):
            raise InspectorError(f"config: {path} is a directory, not a TOML file (pass --config FILE)")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InspectorError(f"config: {path} does not exist (pass --config FILE)") from None
    except PermissionError:
        raise InspectorError(f"config: {path} cannot be read: permission denied (the service reads it as user "
                             "inspector: make it readable, e.g. chgrp inspector and chmod 0640)") from None
    except OSError as e:
        raise InspectorError(f"config: {path} cannot be read: {e.strerror or e}") from None
    try:
        tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InspectorError(f"config: {path} is not UTF-8 text (byte {e.start}: {e.reason}); save it as UTF-8") from None
    except tomllib.TOMLDecodeError as e:
        raise InspectorError(f"config: {path} is not valid TOML: {e}") from None


def _settings_error(err: SettingsError, path: Path | None) -> str:
    match = re.search(r'field "(\w+)"', str(err))
    env = f"INSPECTOR_{match.group(1).upper()}" if match else "an INSPECTOR_* variable"
    where = f"{path}" if path else "configuration"
    return (f"{where}: the environment variable {env} is not valid JSON ({err}); give a whole section as JSON, "
            f"or set one field with a double underscore, e.g. INSPECTOR_CAMERA__WIDTH=640")


def format_errors(err: ValidationError, path: Path | None) -> str:
    """One line per invalid field: `where: what is wrong (got VALUE)`, unknown keys with the allowed ones."""
    where = f"{path}" if path else "configuration"
    lines = [f"{where}: {err.error_count()} invalid field(s)"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            allowed = _allowed_fields(e["loc"][:-1])
            msg = f"unknown field; allowed: {', '.join(allowed)}"
        elif "input" in e and not isinstance(e["input"], dict | list):
            msg += f" (got {e['input']!r})"
        env = "INSPECTOR_" + "__".join(str(p) for p in e["loc"]).upper()
        if env in os.environ:
            msg += f" (from the environment variable {env})"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _allowed_fields(loc: tuple[Any, ...]) -> list[str]:
    model: type[BaseModel] = InspectorConfig
    for part in loc:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[str(part)].annotation if str(part) in model.model_fields else None
        inner = getattr(annotation, "__args__", (annotation,))
        nested = [a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)]
        if not nested:
            return []
        model = nested[0]
    return list(model.model_fields)


def effective_toml(cfg: InspectorConfig) -> str:
    """The configuration as TOML (what check-config prints); unset optional values shown as comments."""
    data = cfg.model_dump(mode="json")
    out: list[str] = [f"station_id = {_toml_value(data.pop('station_id'))}", ""]
    rois = data.pop("rois")
    for name, section in data.items():
        _toml_section(out, name, getattr(cfg, name), section)
    if not rois:
        out.append("# rois: none given -> one ROI \"center\", the centred square of the frame's height")
    for roi in rois:
        out.append("[[rois]]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in roi.items())
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _toml_section(out: list[str], name: str, model: BaseModel, section: dict[str, Any]) -> None:
    """`[name]` with its plain fields, then each nested section as `[name.field]` (the [gateway] section)."""
    out.append(f"[{name}]")
    nested = []
    for key, value in section.items():
        if isinstance(getattr(model, key, None), BaseModel):
            nested.append(key)
        elif value is None:
            out.append(f"# {key} is not set")
        elif isinstance(value, dict):
            inner = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
            out.append(f"{key} = {{ {inner} }}" if inner else f"{key} = {{}}")
        else:
            out.append(f"{key} = {_toml_value(value)}")
    out.append("")
    for key in nested:
        _toml_section(out, f"{name}.{key}", getattr(model, key), section[key])


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    s = str(v)
    return '"' + re.sub(r'(["\\])', r"\\\1", s) + '"'
