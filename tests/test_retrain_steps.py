"""The pieces scripts/retrain.sh relies on (the whole loop trains two models: too slow for the suite; its
numbers are in docs/research/bench/lifecycle/retrain.md): the simulated operator and the count of false
calls and misses (scripts/retrain_steps.py), on a real journal written by `inspector replay --state` (real
processes, the mean-pixel ONNX model, a small video), labelled through the real `inspector label`, exported
by the real `inspector dataset`; the daemon configuration of the promote step; and the script's syntax and
--help."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from test_inspector_support import REPO, inspector_cmd, make_mean_model, subprocess_env, write_conveyor_video

from common.ground_truth import TruthPart
from inspector.config import load_config
from inspector.stages.encode import passed_part_kept

sys.path.insert(0, str(REPO / "scripts"))
import retrain_steps  # noqa: E402
from retrain_steps import Row, review, score  # noqa: E402

SCRIPT = REPO / "scripts" / "retrain.sh"
TRUTH = [TruthPart("a", 0, 9, 5, "good"), TruthPart("b", 10, 19, 15, "scratch"), TruthPart("c", 20, 29, 25, "good"),
         TruthPart("d", 30, 39, 35, "dent"), TruthPart("e", 40, 49, 45, "good"), TruthPart("f", 50, 59, 55, "good")]


def row(seq: int, frame: int, verdict: str, sampled: bool = False, shadow: str | None = None) -> Row:
    return Row(seq, frame, verdict, {"part/input": f"{seq}.png"} if sampled or verdict != "pass" else {}, shadow,
               "prod-1", "cand-2" if shadow else None)


def test_the_operator_labels_rejects_and_sampled_passes_with_what_the_truth_says() -> None:
    rows = [row(1, 5, "fail"),                  # a false call -> good
            row(2, 15, "fail"),                 # a true defect -> its name
            row(3, 16, "fail"),                 # the same part triggered twice: labelled too
            row(4, 25, "pass", sampled=True),   # a sampled passed part, good
            row(5, 35, "pass", sampled=True),   # a sampled passed part that is a miss: caught
            row(6, 45, "pass"),                 # a passed part never stored: the operator never sees it
            row(7, 62, "error"),                # a trigger between parts: no truth
            row(8, 55, "pass", shadow="fail")]  # disputed by the shadow, not reviewed here
    plan, found = review(rows, TRUTH, ("rejects", "sampled"))
    assert plan == {"good": [1, 4], "scratch": [2, 3], "dent": [5]}
    assert found == {"false call (labelled good)": 1, "true defect (labelled with its name)": 2,
                     "sampled pass, confirmed good": 1, "sampled pass, a miss caught": 1, "no part in view": 1}
    plan, found = review(rows, TRUTH, ("disputed",))
    assert plan == {"good": [8]} and found == {"disputed by the shadow": 1}
    with pytest.raises(SystemExit, match="--review everything"):
        review(rows, TRUTH, ("everything",))


def test_false_calls_and_misses_per_model_one_verdict_per_part() -> None:
    rows = [row(1, 5, "fail", shadow="pass"),    # a: good, production rejects (false call), shadow passes
            row(2, 6, "pass", shadow="pass"),    # a again: not counted (the part's first verdict decides)
            row(3, 15, "pass", shadow="fail"),   # b: scratch, production misses, shadow catches
            row(4, 25, "error", shadow="fail"),  # c: good, both reject (an error is a reject)
            row(5, 35, "fail", shadow="fail"),   # d: dent, both catch
            row(6, 45, "pass", shadow="pass")]   # e: good; f: no verdict
    s = score(rows, TRUTH)
    assert (s["truth_parts"], s["good_parts"], s["defective_parts"], s["no_verdict"]) == (6, 4, 2, 1)
    assert s["production"] == {"model_id": "prod-1", "false_calls": 2, "misses": 1, "false_call_rate": 0.5,
                               "miss_rate": 0.5, "accuracy": 0.5}
    assert s["shadow"] == {"model_id": "cand-2", "false_calls": 1, "misses": 0, "false_call_rate": 0.25,
                           "miss_rate": 0.0, "accuracy": round(1 - 1 / 6, 4)}
    assert "shadow" not in score([row(1, 5, "fail")], TRUTH)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=120)


def test_the_operator_step_on_a_real_journal_feeds_inspector_dataset(tmp_path: Path) -> None:
    """Replay 1 fails every part (a strict threshold: the good ones are false calls); replay 2 passes the good
    ones and keeps every 2nd passed part's crop. The operator's labels go through `inspector label`."""
    video = write_conveyor_video(tmp_path / "line.avi", n_parts=8)
    model = make_mean_model(tmp_path / "model.onnx", size=32)
    config = video.video.with_suffix(".toml")
    strict = tmp_path / "strict.toml"
    strict.write_text(config.read_text() + "\n[decision]\nthreshold = 10.0\n")
    sampled = tmp_path / "sampled.toml"
    sampled.write_text(config.read_text() + "\n[state]\nstore_passed_every = 2\n")
    state = tmp_path / "state"
    for cfg in (strict, sampled):
        done = run(*inspector_cmd("replay", str(video.video), "--model", str(model), "--config", str(cfg),
                                  "--state", str(state)))
        assert done.returncode == 0, done.stderr
    journal = state / "journal.db"
    done = run(sys.executable, str(REPO / "scripts" / "retrain_steps.py"), "score", str(journal), str(video.video.with_suffix(".csv")),
               "--json", str(tmp_path / "score.json"))
    assert done.returncode == 0, done.stderr
    good = sum(r["label"] == "good" for r in video.rows)
    s = json.loads((tmp_path / "score.json").read_text())
    assert s["production"]["false_calls"] == good and s["production"]["misses"] == 0   # replay 1 decides
    assert f"false calls {good} of {good} good parts, misses 0 of {len(video.rows) - good} defective" in done.stdout

    done = run(sys.executable, str(REPO / "scripts" / "retrain_steps.py"), "label", str(journal),
               str(video.video.with_suffix(".csv")), "--review", "rejects,sampled", "--by", "sim",
               "--json", str(tmp_path / "labels.json"))
    assert done.returncode == 0, done.stderr
    conn = sqlite3.connect(journal)
    verdicts = {seq: (verdict, json.loads(images)) for seq, verdict, images in
                conn.execute("SELECT seq, verdict, images FROM verdicts")}
    labels = dict(conn.execute("SELECT sequence, label FROM labels"))
    by = {b for (b,) in conn.execute("SELECT DISTINCT labelled_by FROM labels")}
    conn.close()
    passed_kept = [s for s, (v, images) in verdicts.items() if v == "pass" and images]
    assert passed_kept and all(passed_part_kept(s, 2) for s in passed_kept)
    reviewed = {s for s, (v, images) in verdicts.items() if v != "pass" or images}
    assert set(labels) <= reviewed and by == {"sim"}
    assert {labels[s] for s in passed_kept if s in labels} == {"good"}           # passed parts are the good ones
    assert {"good", "defect"} == set(labels.values())
    summary = json.loads((tmp_path / "labels.json").read_text())
    assert summary["labelled"] == len(labels) and summary["findings"]["false call (labelled good)"] >= good

    done = run(*inspector_cmd("dataset", "--state", str(state), "--out", str(tmp_path / "ds")))
    assert done.returncode == 0, done.stderr
    train = {int(p.name.split("_")[0]) for p in (tmp_path / "ds" / "train" / "good").iterdir()}
    assert train & set(passed_kept), "no sampled passed part in train/good"


def test_the_daemon_configuration_of_the_promote_step_is_valid(tmp_path: Path) -> None:
    video = write_conveyor_video(tmp_path / "line.avi", n_parts=2)
    line = video.video.with_suffix(".toml")
    line.write_text(line.read_text() + "\n[state]\nstore_passed_every = 5\n")
    cfg = retrain_steps.daemon_config(line, tmp_path / "held out.avi", tmp_path / "a.onnx", tmp_path / "b.onnx",
                                      "tcp://127.0.0.1:5597", tmp_path / "daemon")
    out = tmp_path / "daemon.toml"
    out.write_text(retrain_steps.to_toml(cfg))
    loaded = load_config(out)
    assert loaded.camera.source == str(tmp_path / "held out.avi") and loaded.camera.loop
    assert loaded.engine.path == tmp_path / "a.onnx" and loaded.shadow.model == tmp_path / "b.onnx"
    assert loaded.control.bind == "tcp://127.0.0.1:5597" and not loaded.publish.bind
    assert loaded.state.dir == tmp_path / "daemon" and loaded.state.store_passed_every == 5
    assert [(r.name, r.width) for r in loaded.rois] == [("center", 64)] and loaded.trigger.mode == "presence"


def test_retrain_sh_parses_and_its_help_lists_the_knobs_without_running_anything(tmp_path: Path) -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    env = {**subprocess_env(), "RETRAIN_DIR": str(tmp_path / "never")}
    done = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, env=env, timeout=30)
    assert done.returncode == 0 and not (tmp_path / "never").exists()
    for knob in ("RETRAIN_DIR", "RETRAIN_PARTS", "RETRAIN_HELDOUT", "RETRAIN_EPOCHS", "RETRAIN_FT_EPOCHS",
                 "RETRAIN_STORE_EVERY", "RETRAIN_EXTRA_GOOD", "RETRAIN_CONTROL", "RETRAIN_JSON"):
        assert knob in done.stdout, knob
    bad = subprocess.run(["bash", str(SCRIPT), "--now"], capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 2 and "usage" in bad.stderr and not (tmp_path / "never").exists()
