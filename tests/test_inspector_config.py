"""Configuration: TOML + environment over defaults, every invalid field reported, check-config and exit 2.

The CLI cases run the real `inspector` command in a subprocess.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel
from test_inspector_support import REPO, inspector_cmd, subprocess_env

from inspector.config import InspectorConfig, RoiConfig, effective_toml, load_config
from inspector.errors import InspectorError
from inspector.stages.crop import resolve_rois

SYNTH_TOML = """\
station_id = "synth-line"

[camera]
source = "line.mp4"
fps = 30

[[rois]]
name = "center"
x = 128
y = 0
width = 128
height = 128

[trigger]
mode = "presence"
"""

INVALID_TOML = """\
station_id = "bad station!"

[camera]
fps = -1
reconect_max_s = 3

[trigger]
mode = "sometimes"
on_fraction = 0.1
off_fraction = 0.2

[engine]
max_batch = 0
backend = "cuda"

[publish]
image_format = "bmp"
"""


def write(tmp_path: Path, text: str, name: str = "inspector.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_synth_style_config_loads_with_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, SYNTH_TOML))
    assert cfg.station_id == "synth-line"
    assert cfg.camera.source == "line.mp4" and cfg.camera.fps == 30
    assert [(r.name, r.x, r.width) for r in cfg.rois] == [("center", 128, 128)]
    assert cfg.trigger.mode == "presence"
    assert cfg.engine.backend == "auto" and cfg.publish.image_format == "png"
    assert cfg.decision.threshold is None  # from the manifest
    # the effective configuration is itself valid TOML that loads to the same thing
    again = load_config(write(tmp_path, effective_toml(cfg), "again.toml"))
    assert again == cfg


def test_every_invalid_field_is_reported_with_what_is_allowed(tmp_path: Path) -> None:
    with pytest.raises(InspectorError) as e:
        load_config(write(tmp_path, INVALID_TOML))
    msg = str(e.value)
    for needle in ["station_id: String should match pattern", "camera.fps: Input should be greater than or equal to 0",
                   "camera.reconect_max_s: unknown field; allowed: source, api", "reconnect_max_s",
                   "trigger.mode: Input should be 'continuous', 'presence' or 'external' (got 'sometimes')",
                   "engine.max_batch", "engine.backend: Input should be 'auto', 'tensorrt' or 'onnxruntime'",
                   "publish.image_format: Input should be 'png' or 'jpeg'"]:
        assert needle in msg, (needle, msg)
    assert "invalid field(s)" in msg.splitlines()[0]


def test_cross_field_rules(tmp_path: Path) -> None:
    text = SYNTH_TOML + '\n[decision]\nroi_thresholds = { left = 0.3 }\n'
    with pytest.raises(InspectorError, match=r"unknown ROI \['left'\]; allowed: \['center'\]"):
        load_config(write(tmp_path, text))
    with pytest.raises(InspectorError, match="off_fraction must be below on_fraction"):
        load_config(write(tmp_path, '[trigger]\non_fraction = 0.1\noff_fraction = 0.1\n'))


def test_environment_overrides_file_with_double_underscore_nesting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSPECTOR_STATION_ID", "from-env")
    monkeypatch.setenv("INSPECTOR_ENGINE__MAX_BATCH", "16")
    monkeypatch.setenv("INSPECTOR_TRIGGER__EVERY_N", "3")
    cfg = load_config(write(tmp_path, SYNTH_TOML))
    assert (cfg.station_id, cfg.engine.max_batch, cfg.trigger.every_n) == ("from-env", 16, 3)
    assert cfg.trigger.mode == "presence"  # the rest of the section still comes from the file
    monkeypatch.setenv("INSPECTOR_ENGINE__MAX_BATCH", "-2")
    with pytest.raises(InspectorError, match="from the environment variable INSPECTOR_ENGINE__MAX_BATCH"):
        load_config(write(tmp_path, SYNTH_TOML))


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(InspectorError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(InspectorError, match="not valid TOML"):
        load_config(write(tmp_path, "[camera\nsource = 1\n"))


def test_default_roi_is_the_centred_square_of_the_frame_height() -> None:
    cfg = InspectorConfig()
    assert cfg.rois == []
    (roi,) = resolve_rois(cfg.rois, (128, 384, 3))
    assert (roi.name, roi.x, roi.y, roi.width, roi.height) == ("center", 128, 0, 128, 128)


def test_check_config_cli(tmp_path: Path) -> None:
    good = write(tmp_path, SYNTH_TOML)
    ok = subprocess.run(inspector_cmd("check-config", str(good)), cwd=REPO, env=subprocess_env(),
                        capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert 'station_id = "synth-line"' in ok.stdout and 'mode = "presence"' in ok.stdout
    assert "engine.path is not set" in ok.stderr

    bad = write(tmp_path, INVALID_TOML, "bad.toml")
    for args in (["check-config", str(bad)], ["run", "--config", str(bad)]):
        r = subprocess.run(inspector_cmd(*args), cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert "trigger.mode" in r.stderr and "engine.max_batch" in r.stderr and "publish.image_format" in r.stderr


def test_the_commented_deploy_example_is_valid_and_shows_every_field() -> None:
    text = (REPO / "deploy" / "inspector.toml").read_text()
    cfg = load_config(REPO / "deploy" / "inspector.toml")
    assert cfg.trigger.mode == "presence" and cfg.engine.path is not None
    for name, field in InspectorConfig.model_fields.items():
        section = field.annotation
        names = list(section.model_fields) if isinstance(section, type) and issubclass(section, BaseModel) else [name]
        if name == "rois":
            names = list(RoiConfig.model_fields)
        for key in names:
            shown = rf"^(# )?{key} = |^\[{name}\.{key}\]$"      # a field, or a nested section ([gateway.opcua])
            assert re.search(shown, text, re.M), f"deploy/inspector.toml does not show {name}.{key}"
