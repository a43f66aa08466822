"""Operator review into data: `inspector label` and `inspector dataset` as real CLI processes on a journal
written by real `inspector replay --state DIR` runs of a tiny video with the mean-pixel ONNX model."""

from __future__ import annotations

import csv
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_inspector_support import REPO, inspector_cmd, make_mean_model, subprocess_env, write_conveyor_video

from common.layout import detect_layout
from trainer.datasets import load_split

N_PARTS = 10


def inspector(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(inspector_cmd(*args), cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def station(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A state folder: replay 1 (threshold 10: every part fails, its images are stored) is sequences 1-10,
    replay 2 (the model's threshold: good parts pass, nothing stored for them) 11-20. Returns the truth labels."""
    base = tmp_path_factory.mktemp("station")
    video = write_conveyor_video(base / "line.avi", n_parts=N_PARTS)
    model = make_mean_model(base / "model.onnx", size=32)
    config = video.video.with_suffix(".toml")
    strict = base / "strict.toml"
    strict.write_text(config.read_text() + "\n[decision]\nthreshold = 10.0\n")
    for cfg in (strict, config):
        done = inspector("replay", str(video.video), "--model", str(model), "--config", str(cfg),
                         "--state", str(base / "state"))
        assert done.returncode == 0, done.stderr
    return base / "state", [str(r["label"]) for r in video.rows] * 2


@pytest.fixture
def state(station: tuple[Path, list[str]], tmp_path: Path) -> Path:
    copy = tmp_path / "state"
    shutil.copytree(station[0], copy)
    return copy


def query(state: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(state / "journal.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def seqs(truth: list[str], label: str, first: int, last: int) -> list[str]:
    return [str(s) for s in range(first, last + 1) if (truth[s - 1] == "good") == (label == "good")]


def test_label_and_dataset_round_trip(station: tuple[Path, list[str]], state: Path, tmp_path: Path) -> None:
    truth = station[1]
    good, bad = seqs(truth, "good", 1, 10), seqs(truth, "defect", 1, 10)
    assert inspector("label", *bad[:1], "--as", "good", "--state", str(state)).returncode == 0  # a slip ...
    done = inspector("label", *bad, "--as", "dent", "--state", str(state), "--by", "ann", "--note", "bright")
    assert done.returncode == 0, done.stderr                                                   # ... corrected
    assert inspector("label", *good, "--as", "good", "--state", str(state), "--by", "bob").returncode == 0
    passed = seqs(truth, "good", 11, 20)[:2]   # passed in replay 2: their images were never stored
    assert inspector("label", *passed, "--as", "good", "--state", str(state)).returncode == 0
    labels = dict(query(state, "SELECT sequence, label FROM labels"))
    assert labels == {**{int(s): "dent" for s in bad}, **{int(s): "good" for s in good + passed}}
    history = query(state, f"SELECT label, labelled_by, note FROM label_history WHERE sequence = {bad[0]} ORDER BY id")
    assert history == [("good", None, None), ("dent", "ann", "bright")]

    [removed] = [p for p in (state / "images").rglob(f"{good[0]}_center_input.png")]
    removed.unlink()  # what the image quota does
    out = tmp_path / "ds"
    done = inspector("dataset", "--out", str(out), "--state", str(state))
    assert done.returncode == 0, done.stderr
    exported = [g for g in good[1:]]
    train = sorted(int(s) for s in exported if int(s) % 5)
    test = sorted(int(s) for s in exported if int(s) % 5 == 0)
    assert sorted(int(p.name.split("_")[0]) for p in (out / "train" / "good").iterdir()) == train
    assert sorted(int(p.name.split("_")[0]) for p in (out / "test" / "good").iterdir()) == test
    assert sorted(p.name for p in (out / "test" / "dent").iterdir()) == sorted(f"{s}_center.png" for s in bad)
    lines = done.stdout.splitlines()
    assert f"not exported: sequence {good[0]} roi center (good): its image was removed (quota) or is unreadable" \
        in lines
    assert all(f"not exported: sequence {s} roi center (good): its image was never stored" in lines for s in passed)
    assert lines[-1].startswith(f"dataset {out}: {len(exported) + len(bad)} crop(s) of "
                                f"{len(good) + len(bad) + len(passed)} labelled part(s)")
    assert "3 crop(s) not exported (2 never stored, 1 removed)" in lines[-1]

    with open(out / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["sequence", "part_id", "roi", "label", "score", "threshold", "verdict", "model_id",
                             "file"]
    assert [int(r["sequence"]) for r in rows] == sorted(int(s) for s in good + bad + passed)
    for r in rows:
        assert (r["file"] == "") == (r["sequence"] in passed or r["sequence"] == good[0])
        assert r["file"] == "" or (out / r["file"]).is_file()
        assert r["roi"] == "center" and r["model_id"].startswith("meanpixel-") and float(r["score"]) > 0
        assert r["verdict"] == ("pass" if r["sequence"] in passed else "fail")

    assert detect_layout(out) == "mvtec"
    train_set, test_set = load_split(out, "train", 32), load_split(out, "test", 32)
    assert len(train_set) == len(train) and train_set.images.shape[1:] == (32, 32, 3)
    assert sorted(test_set.kinds) == sorted(["good"] * len(test) + ["dent"] * len(bad))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".ds")]  # no temp folder left

    again = inspector("dataset", "--out", str(out), "--state", str(state))
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "not empty" in again.stderr
    since = inspector("dataset", "--out", str(out), "--state", str(state), "--since", "5", "--force")
    assert since.returncode == 0, since.stderr
    with open(out / "labels.csv", newline="") as fh:
        assert min(int(r["sequence"]) for r in csv.DictReader(fh)) > 5


@pytest.mark.parametrize("case", ["one unknown sequence", "not an integer", "zero", "bad label", "long label",
                                  "dot label"])
def test_bad_input_writes_nothing(station: tuple[Path, list[str]], state: Path, case: str) -> None:
    args = {"one unknown sequence": ["1", "2", "999", "--as", "good"],
            "not an integer": ["1", "2x", "--as", "good"], "zero": ["0", "--as", "good"],
            "bad label": ["1", "--as", "a/b"], "long label": ["1", "--as", "x" * 33],
            "dot label": ["1", "--as", ".."]}[case]
    done = inspector("label", *args, "--state", str(state))
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    tables = {r[0] for r in query(state, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "labels" not in tables and "label_history" not in tables  # not even the tables


def test_a_failed_label_keeps_the_earlier_ones(state: Path) -> None:
    assert inspector("label", "1", "2", "--as", "good", "--state", str(state)).returncode == 0
    assert inspector("label", "1", "2", "3", "999", "--as", "dent", "--state", str(state)).returncode == 2
    assert query(state, "SELECT sequence, label FROM labels ORDER BY sequence") == [(1, "good"), (2, "good")]
    assert query(state, "SELECT count(*) FROM label_history") == [(2,)]


def test_journals_that_cannot_be_used(tmp_path: Path) -> None:
    missing = inspector("label", "1", "--as", "good", "--state", str(tmp_path / "none"))
    assert missing.returncode == 2 and "no journal" in missing.stderr
    assert not (tmp_path / "none").exists()  # never created
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "journal.db").write_bytes(b"not a database" * 100)
    junk = inspector("label", "1", "--as", "good", "--state", str(tmp_path / "junk"))
    assert junk.returncode == 2 and junk.stderr.count("\n") == 1 and "cannot open the journal" in junk.stderr
    empty = inspector("dataset", "--out", str(tmp_path / "ds"), "--state", str(tmp_path / "junk"))
    assert empty.returncode == 2 and not (tmp_path / "ds").exists()


def test_dataset_without_labels_or_images_writes_nothing(state: Path, tmp_path: Path) -> None:
    none = inspector("dataset", "--out", str(tmp_path / "ds"), "--state", str(state))
    assert none.returncode == 2 and "no labelled parts" in none.stderr
    assert inspector("label", "11", "12", "--as", "good", "--state", str(state)).returncode == 0  # passed parts
    unstored = inspector("dataset", "--out", str(tmp_path / "ds"), "--state", str(state))
    assert unstored.returncode == 2 and "nothing was written" in unstored.stderr
    assert not (tmp_path / "ds").exists()


def test_label_waits_for_the_daemons_write_lock(state: Path) -> None:
    """The daemon holds the journal's write lock for a commit: label waits (busy_timeout) instead of failing."""
    writer = sqlite3.connect(state / "journal.db", isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    release = threading.Timer(1.0, lambda: writer.execute("COMMIT"))
    release.start()
    t0 = time.monotonic()
    done = inspector("label", "1", "--as", "good", "--state", str(state))
    release.join()
    writer.close()
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - t0 >= 0.9
    assert query(state, "SELECT sequence, label FROM labels") == [(1, "good")]


def test_split_fallback_pruned_parts_and_config(state: Path, tmp_path: Path) -> None:
    """Good parts none of whose sequences is a multiple of 5: the newest goes to test/good. A labelled part the
    journal's retention deleted is reported, not exported. --config takes the state folder from [state] dir."""
    config = tmp_path / "station.toml"
    config.write_text(f'[state]\ndir = "{state}"\n')
    assert inspector("label", "1", "2", "4", "--as", "good", "--config", str(config)).returncode == 0
    assert inspector("label", "3", "--as", "Good", "--config", str(config)).returncode == 2
    assert inspector("label", "3", "--as", "dent", "--config", str(config)).returncode == 0
    conn = sqlite3.connect(state / "journal.db")
    conn.execute("DELETE FROM verdicts WHERE seq = 1")  # what retention does
    conn.commit()
    conn.close()
    out = tmp_path / "ds"
    done = inspector("dataset", "--out", str(out), "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert [p.name for p in (out / "train" / "good").iterdir()] == ["2_center.png"]
    assert [p.name for p in (out / "test" / "good").iterdir()] == ["4_center.png"]
    assert "not exported: sequence 1 (good): the part is no longer in the journal (retention)" in done.stdout
    assert "(1 pruned)" in done.stdout.splitlines()[-1]


def _killed(delay_s: float, *args: str) -> None:
    """Start `inspector ARGS`, SIGKILL it after delay_s (it may have finished already)."""
    proc = subprocess.Popen(inspector_cmd(*args), cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    time.sleep(delay_s)
    proc.kill()
    proc.wait(30)


def _complete_dataset(out: Path) -> int:
    """The rows of a data set folder's labels.csv, after checking every file it names is there."""
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert all((out / r["file"]).is_file() for r in rows if r["file"])
    return len(rows)


def _count(state: Path, table: str, label: str) -> int:
    """Rows of `table` with `label`; 0 while the table does not exist (no label run committed yet)."""
    try:
        [(n,)] = query(state, f"SELECT COUNT(*) FROM {table} WHERE label = '{label}'")
    except sqlite3.OperationalError as e:
        assert "no such table" in str(e)
        return 0
    return n


def test_sigkill_during_label_or_dataset_leaves_all_or_nothing(state: Path, tmp_path: Path) -> None:
    """SIGKILL at moments from before the first write to after the end: `inspector label` leaves all of
    its labels or none of them (one transaction), `inspector dataset` leaves DIR absent or complete, and
    the next run of each works on what the killed one left."""
    every = [str(s) for s in range(1, 2 * N_PARTS + 1)]
    out = tmp_path / "ds"
    outcomes = set()
    for i, delay in enumerate((0.0, 0.4, 0.8, 1.2, 1.8, 5.0)):
        label = f"kind{i}"
        _killed(delay, "label", *every, "--as", label, "--state", str(state))
        n, h = (_count(state, table, label) for table in ("labels", "label_history"))
        assert (n, h) in ((0, 0), (len(every), len(every))), (delay, n, h)
        outcomes.add(n > 0)
        _killed(delay, "dataset", "--out", str(out), "--state", str(state), "--force")
        if out.exists():
            assert _complete_dataset(out) > 0
    assert outcomes == {False, True}    # the kill landed both before and after a label run's commit
    assert inspector("label", *every, "--as", "good", "--state", str(state)).returncode == 0
    assert query(state, "SELECT COUNT(*) FROM labels WHERE label = 'good'") == [(len(every),)]
    done = inspector("dataset", "--out", str(out), "--state", str(state), "--force")
    assert done.returncode == 0, done.stderr
    assert _complete_dataset(out) == len(every)
    assert [p.name for p in tmp_path.iterdir() if p.name != "state"] == ["ds"]   # no half data set left beside it
