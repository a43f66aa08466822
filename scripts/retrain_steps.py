"""The steps of scripts/retrain.sh that are not one `inspector`/`trainer` command: the simulated operator,
the count of false calls and misses against the ground truth, the daemon's configuration for the promote
step, and the report. Python's standard library and the project's own modules; no torch.

    python scripts/retrain_steps.py label JOURNAL TRUTH.csv --review rejects,sampled [--by NAME] [--json OUT]
    python scripts/retrain_steps.py score JOURNAL TRUTH.csv [--json OUT]
    python scripts/retrain_steps.py daemon-config LINE.toml OUT.toml --video V --model M --shadow S \
        --control EP --state DIR
    python scripts/retrain_steps.py folders DATASET_DIR OUT.json      # images per split folder
    python scripts/retrain_steps.py pick SRC.json OUT.json FIELD ...  # some top-level fields of a JSON file
    python scripts/retrain_steps.py report OUT.json KEY=FILE.json ... [--set KEY=VALUE ...]

`label` plays the operator: it looks at the journaled parts an operator reviews (`rejects`: every failed or
error part; `sampled`: passed parts whose input crop was kept, [state] store_passed_every; `disputed`: parts
the shadow model judged otherwise) and labels each with what the ground truth says it is (`good`, or the
defect's name), through `inspector label` as an operator would, one command per label.
`score` counts, per model in the journal (production, and the shadow where there is one), the false calls
(good parts rejected) and misses (defective parts passed), one verdict per part (its first).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from common.ground_truth import TruthPart, part_at, read_ground_truth  # noqa: E402

REVIEWS = ("rejects", "sampled", "disputed")


@dataclass(frozen=True)
class Row:
    seq: int
    frame: int
    verdict: str
    images: dict[str, str]
    shadow_verdict: str | None
    model_id: str
    shadow_model_id: str | None


def read_rows(journal: Path) -> list[Row]:
    """Every journaled verdict (read-only), with the shadow's where the journal has shadow columns."""
    conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    try:
        have = {r[1] for r in conn.execute("PRAGMA table_info(verdicts)")}
        shadow = "shadow_verdict, shadow_model_id" if "shadow_verdict" in have else "NULL, NULL"
        return [Row(seq, frame, verdict, json.loads(images or "{}"), sv, model_id, smid)
                for seq, frame, verdict, images, model_id, sv, smid in conn.execute(
                    f"SELECT seq, frame, verdict, images, model_id, {shadow} FROM verdicts ORDER BY seq")]
    finally:
        conn.close()


def review(rows: list[Row], truth: list[TruthPart], kinds: tuple[str, ...]) -> tuple[dict[str, list[int]], Counter[str]]:
    """What the operator labels: {label: [sequences]} and the counts by kind of finding."""
    unknown = [k for k in kinds if k not in REVIEWS]
    if unknown:
        raise SystemExit(f"retrain_steps label: --review {','.join(unknown)}: not one of {', '.join(REVIEWS)}")
    spans = sorted(truth, key=lambda t: t.first_frame)
    plan: dict[str, list[int]] = defaultdict(list)
    found: Counter[str] = Counter()
    for row in rows:
        part = part_at(spans, row.frame)
        reject = row.verdict != "pass"
        sampled = not reject and any(key.endswith("/input") for key in row.images)
        disputed = row.shadow_verdict is not None and (row.shadow_verdict == "pass") != (row.verdict == "pass")
        if not (("rejects" in kinds and reject) or ("sampled" in kinds and sampled)
                or ("disputed" in kinds and disputed)):
            continue
        if part is None:  # a trigger between parts: nothing the operator can call
            found["no part in view"] += 1
            continue
        good = part.label == "good"
        if reject:
            found["false call (labelled good)" if good else "true defect (labelled with its name)"] += 1
        elif sampled and "sampled" in kinds:
            found["sampled pass, confirmed good" if good else "sampled pass, a miss caught"] += 1
        if disputed:
            found["disputed by the shadow"] += 1
        plan[part.label].append(row.seq)
    return dict(plan), found


def run_label(journal: Path, truth_csv: Path, kinds: tuple[str, ...], by: str, json_out: Path | None) -> int:
    plan, found = review(read_rows(journal), read_ground_truth(truth_csv), kinds)
    state = journal.parent
    for label, seqs in sorted(plan.items()):
        for i in range(0, len(seqs), 500):  # `inspector label` takes any number; keep command lines short
            cmd = [sys.executable, "-m", "inspector", "label", *map(str, seqs[i:i + 500]), "--as", label,
                   "--state", str(state), "--by", by]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                sys.stderr.write(done.stderr)
                return done.returncode
            print(f"   {done.stdout.strip()}")
    labelled = sum(len(s) for s in plan.values())
    print(f"   operator reviewed {labelled} part(s) ({', '.join(kinds)}): "
          + (", ".join(f"{k} {v}" for k, v in sorted(found.items())) or "nothing to label"))
    if json_out is not None:
        json_out.write_text(json.dumps({"labelled": labelled, "by_label": {k: len(v) for k, v in plan.items()},
                                        "findings": dict(found)}, indent=2) + "\n")
    return 0


def score(rows: list[Row], truth: list[TruthPart]) -> dict[str, Any]:
    """Per model: parts, false calls (good part rejected), misses (defective part passed), parts without a
    verdict; one verdict per part, its first (as `inspector replay --ground-truth` does)."""
    spans = sorted(truth, key=lambda t: t.first_frame)
    first: dict[str, Row] = {}
    for row in rows:
        part = part_at(spans, row.frame)
        if part is not None and part.part_id not in first:
            first[part.part_id] = row
    good = sum(t.label == "good" for t in truth)
    out: dict[str, Any] = {"truth_parts": len(truth), "good_parts": good, "defective_parts": len(truth) - good,
                           "no_verdict": len(truth) - len(first)}
    models = {"production": lambda r: r.verdict}
    if any(r.shadow_verdict is not None for r in rows):
        models["shadow"] = lambda r: r.shadow_verdict
    for name, verdict_of in models.items():
        false_calls = misses = 0
        for t in truth:
            row = first.get(t.part_id)
            if row is None or verdict_of(row) is None:
                continue
            rejected = verdict_of(row) != "pass"
            false_calls += t.label == "good" and rejected
            misses += t.label != "good" and not rejected
        model_id = next((r.model_id if name == "production" else r.shadow_model_id for r in rows), None)
        out[name] = {"model_id": model_id, "false_calls": false_calls, "misses": misses,
                     "false_call_rate": round(false_calls / good, 4) if good else None,
                     "miss_rate": round(misses / (len(truth) - good), 4) if len(truth) > good else None,
                     "accuracy": round(1 - (false_calls + misses) / len(truth), 4) if truth else None}
    return out


def run_score(journal: Path, truth_csv: Path, json_out: Path | None) -> int:
    s = score(read_rows(journal), read_ground_truth(truth_csv))
    for name in ("production", "shadow"):
        if name in s:
            m = s[name]
            print(f"   {name:<10} {m['model_id']}: false calls {m['false_calls']} of {s['good_parts']} good parts, "
                  f"misses {m['misses']} of {s['defective_parts']} defective, accuracy {m['accuracy']}")
    if s["no_verdict"]:
        print(f"   {s['no_verdict']} part(s) without a verdict")
    if json_out is not None:
        json_out.write_text(json.dumps(s, indent=2) + "\n")
    return 0


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))  # a basic string: JSON's escapes are TOML's


def to_toml(cfg: dict[str, Any]) -> str:
    """A configuration of scalars, tables of scalars and arrays of tables ([[rois]]) as TOML."""
    top = [f"{k} = {_toml_value(v)}" for k, v in cfg.items() if not isinstance(v, (dict, list))
           or (isinstance(v, list) and not (v and isinstance(v[0], dict)))]
    parts = ["\n".join(top)]
    for k, v in cfg.items():
        if isinstance(v, dict):
            parts.append(f"[{k}]\n" + "\n".join(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            parts += [f"[[{k}]]\n" + "\n".join(f"{kk} = {_toml_value(vv)}" for kk, vv in item.items()) for item in v]
    return "\n\n".join(p for p in parts if p) + "\n"


def daemon_config(line_toml: Path, video: Path, model: Path, shadow: Path | None, control: str,
                  state: Path) -> dict[str, Any]:
    """The line's configuration (ROIs, trigger) as a daemon on a looping video: production model, shadow
    candidate, control socket, its own state folder, no result socket."""
    with line_toml.open("rb") as fh:
        cfg = tomllib.load(fh)
    cfg.setdefault("camera", {}).update({"source": str(video), "loop": True})
    cfg["engine"] = {**cfg.get("engine", {}), "path": str(model)}
    if shadow is not None:
        cfg["shadow"] = {"model": str(shadow)}
    cfg["control"] = {**cfg.get("control", {}), "bind": control}
    cfg["publish"] = {**cfg.get("publish", {}), "bind": "", "backfill_bind": "", "preview_fps": 0}
    cfg["state"] = {**cfg.get("state", {}), "dir": str(state), "synchronous": "NORMAL"}
    cfg["logging"] = {"level": "info", "format": "console"}
    return cfg


def folders(dataset: Path) -> dict[str, int]:
    """Image files per split folder of an MVTec-layout data set ("train/good": 358, ...)."""
    return {f"{split.name}/{label.name}": sum(1 for f in label.iterdir() if f.is_file())
            for split in sorted(dataset.iterdir()) if split.is_dir() and split.name in ("train", "test")
            for label in sorted(split.iterdir()) if label.is_dir()}


def pick(src: Path, fields: list[str]) -> dict[str, Any]:
    data = json.loads(src.read_text())
    return {f: data.get(f) for f in fields}


def run_report(out: Path, pieces: list[str], sets: list[str]) -> int:
    report: dict[str, Any] = {}
    for item in sets:
        key, _, value = item.partition("=")
        try:
            report[key] = json.loads(value)
        except ValueError:
            report[key] = value
    for item in pieces:
        key, _, path = item.partition("=")
        p = Path(path)
        report[key] = json.loads(p.read_text()) if p.is_file() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"   wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="retrain_steps.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    la = sub.add_parser("label", help="the simulated operator: label reviewed parts from the ground truth")
    la.add_argument("journal", type=Path)
    la.add_argument("truth", type=Path)
    la.add_argument("--review", default="rejects,sampled", help=f"comma-separated: {', '.join(REVIEWS)}")
    la.add_argument("--by", default="operator")
    la.add_argument("--json", type=Path, default=None)
    sc = sub.add_parser("score", help="false calls and misses per model against the ground truth")
    sc.add_argument("journal", type=Path)
    sc.add_argument("truth", type=Path)
    sc.add_argument("--json", type=Path, default=None)
    dc = sub.add_parser("daemon-config", help="the line's TOML as a daemon on a looping video")
    dc.add_argument("line_toml", type=Path)
    dc.add_argument("out", type=Path)
    dc.add_argument("--video", type=Path, required=True)
    dc.add_argument("--model", type=Path, required=True)
    dc.add_argument("--shadow", type=Path, default=None)
    dc.add_argument("--control", required=True)
    dc.add_argument("--state", type=Path, required=True)
    rp = sub.add_parser("report", help="gather the steps' JSON files into one")
    rp.add_argument("out", type=Path)
    rp.add_argument("pieces", nargs="*", metavar="KEY=FILE.json")
    rp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    fo = sub.add_parser("folders", help="images per split folder of a data set, as JSON")
    fo.add_argument("dataset", type=Path)
    fo.add_argument("out", type=Path)
    pi = sub.add_parser("pick", help="some top-level fields of a JSON file")
    pi.add_argument("src", type=Path)
    pi.add_argument("out", type=Path)
    pi.add_argument("fields", nargs="+")
    a = p.parse_args(argv)
    if a.command == "folders":
        a.out.write_text(json.dumps(folders(a.dataset), indent=2) + "\n")
        return 0
    if a.command == "pick":
        a.out.write_text(json.dumps(pick(a.src, a.fields), indent=2) + "\n")
        return 0
    if a.command == "label":
        return run_label(a.journal, a.truth, tuple(k for k in a.review.split(",") if k), a.by, a.json)
    if a.command == "score":
        return run_score(a.journal, a.truth, a.json)
    if a.command == "daemon-config":
        cfg = daemon_config(a.line_toml, a.video, a.model, a.shadow, a.control, a.state)
        a.out.write_text(to_toml(cfg))
        return 0
    return run_report(a.out, a.pieces, a.set)


if __name__ == "__main__":
    sys.exit(main())
