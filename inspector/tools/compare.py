"""`inspector compare`: the shadow model against the production model, from the journal (docs/lifecycle.md).

Over the journaled parts that have a shadow verdict (`[shadow] model`; journal.py's shadow columns):
- agreement: the fraction of parts both models decided (pass or fail) on which they agree, and the 2×2 table
  production pass/fail × shadow pass/fail (error verdicts counted apart);
- the parts where they disagree, with both models' scores and thresholds per ROI; with --out DIR their stored
  images (a disputed part's images are stored whatever its verdict: stages/encode.py) copied to DIR with an
  index.csv;
- both score distributions against their thresholds: p1/p50/p99/max, the fraction above threshold and a
  text histogram (and DIR/scores.png when matplotlib is installed);
- with operator labels (`inspector label`): on the labelled parts, which model was right.

When the range holds several production/shadow model pairs (a swap, another candidate), the newest pair is
compared and the others are listed: pass --since to choose. Reads the journal only (read-only connection);
no torch, no engine.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from inspector.errors import InspectorError
from inspector.state.image_store import read_image, safe_name
from inspector.state.journal import SHADOW_COLUMNS
from inspector.state.labels import GOOD, open_journal

DECIDED = ("pass", "fail")
SHOWN = 40  # disagreements printed; --json and --out have them all
BINS = 12


@dataclass(frozen=True)
class CompareOptions:
    journal: Path
    images: Path  # the image store folder (images/ beside journal.db)
    since: int | None = None
    out: Path | None = None  # disagreeing parts' images + index.csv (+ scores.png)
    json_out: Path | None = None


@dataclass
class Row:
    seq: int
    part_id: str
    verdict: str
    scores: dict[str, float | None]
    thresholds: dict[str, float]
    model_id: str
    images: dict[str, str]
    shadow_model_id: str
    shadow_verdict: str
    shadow_scores: dict[str, float | None]
    shadow_thresholds: dict[str, float]
    shadow_error: str | None
    label: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def disagrees(self) -> bool:
        return self.verdict in DECIDED and self.shadow_verdict in DECIDED and self.verdict != self.shadow_verdict

    def right(self) -> str | None:
        """Which model the operator's label sides with: production, shadow, both, neither (None: no label)."""
        if self.label is None:
            return None
        truth = "pass" if self.label == GOOD else "fail"
        p, s = self.verdict == truth, self.shadow_verdict == truth
        return "both" if p and s else "production" if p else "shadow" if s else "neither"


def _json(text: str | None) -> dict[str, Any]:
    value = json.loads(text) if text else {}
    return value if isinstance(value, dict) else {}


def read_rows(conn: sqlite3.Connection, since: int | None) -> list[Row]:
    """The journaled parts after `since` with a shadow verdict, oldest first, with their labels."""
    have = {r[1] for r in conn.execute("PRAGMA table_info(verdicts)")}
    if not set(SHADOW_COLUMNS) <= have:
        return []  # a journal from before shadow mode: no shadow verdicts
    labels: dict[int, str] = {}
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'labels'").fetchone():
        labels = {int(r[0]): str(r[1]) for r in conn.execute("SELECT sequence, label FROM labels WHERE sequence > ?",
                                                             (since or 0,))}
    rows = conn.execute(
        "SELECT seq, part_id, verdict, scores, thresholds, model_id, images, shadow_model_id, shadow_verdict, "
        "shadow_scores, shadow_thresholds, shadow_error FROM verdicts "
        "WHERE seq > ? AND shadow_verdict IS NOT NULL ORDER BY seq", (since or 0,)).fetchall()
    return [Row(int(r["seq"]), r["part_id"] or "", r["verdict"], _json(r["scores"]), _json(r["thresholds"]),
                r["model_id"] or "", _json(r["images"]), r["shadow_model_id"] or "", r["shadow_verdict"],
                _json(r["shadow_scores"]), _json(r["shadow_thresholds"]), r["shadow_error"],
                labels.get(int(r["seq"]))) for r in rows]


def newest_pair(rows: list[Row]) -> tuple[list[Row], list[dict[str, Any]]]:
    """The rows of the newest (production, shadow) model pair, and a summary of the other pairs."""
    pair = (rows[-1].model_id, rows[-1].shadow_model_id)
    chosen = [r for r in rows if (r.model_id, r.shadow_model_id) == pair]
    others: dict[tuple[str, str], list[int]] = {}
    for r in rows:
        if (r.model_id, r.shadow_model_id) != pair:
            others.setdefault((r.model_id, r.shadow_model_id), []).append(r.seq)
    return chosen, [{"production_model_id": p, "shadow_model_id": s, "parts": len(seqs), "first_sequence": seqs[0],
                     "last_sequence": seqs[-1]} for (p, s), seqs in others.items()]


def agreement(rows: list[Row]) -> dict[str, Any]:
    table = {p: {s: 0 for s in ("pass", "fail", "error")} for p in ("pass", "fail", "error")}
    for r in rows:
        table[r.verdict if r.verdict in table else "error"][r.shadow_verdict if r.shadow_verdict in table else "error"] += 1
    decided = sum(table[p][s] for p in DECIDED for s in DECIDED)
    agree = table["pass"]["pass"] + table["fail"]["fail"]
    return {"fraction": round(agree / decided, 6) if decided else None, "agree": agree, "decided": decided,
            "disagree": decided - agree, "table": table,
            "errors": {"production": sum(table["error"].values()),
                       "shadow": sum(table[p]["error"] for p in table)}}


def distribution(scores: list[float], above: int) -> dict[str, Any]:
    """p1/p50/p99/max of the finite ROI scores, and the fraction above their thresholds."""
    if not scores:
        return {"count": 0, "p1": None, "p50": None, "p99": None, "max": None, "above_threshold": None}
    a = np.asarray(scores, dtype=np.float64)
    q = np.percentile(a, [1, 50, 99])
    return {"count": int(a.size), "p1": _r(q[0]), "p50": _r(q[1]), "p99": _r(q[2]), "max": _r(a.max()),
            "above_threshold": round(above / a.size, 6)}


def _scores(rows: list[Row], shadow: bool) -> tuple[list[float], list[float], int]:
    """Every finite ROI score of one model, the thresholds they were decided against, and how many are above."""
    values, thresholds, above = [], [], 0
    for r in rows:
        scores, limits = (r.shadow_scores, r.shadow_thresholds) if shadow else (r.scores, r.thresholds)
        for roi, score in scores.items():
            t = limits.get(roi)
            if score is None or not math.isfinite(float(score)) or t is None:
                continue
            values.append(float(score))
            thresholds.append(float(t))
            above += float(score) > float(t)
    return values, thresholds, above


def histogram(values: list[float], thresholds: list[float], bins: int = BINS) -> list[dict[str, Any]]:
    """Counts in `bins` equal bins spanning the scores and the thresholds; each bin says if a threshold is in it."""
    if not values:
        return []
    lo, hi = min(min(values), *thresholds), max(max(values), *thresholds)
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    marks = set(int(min(bins - 1, (t - lo) / (hi - lo) * bins)) for t in thresholds)
    return [{"from": _r(edges[i]), "to": _r(edges[i + 1]), "count": int(counts[i]), "threshold": i in marks}
            for i in range(bins)]


def label_summary(rows: list[Row]) -> dict[str, Any] | None:
    judged = Counter(r.right() for r in rows if r.label is not None)
    if not judged:
        return None
    n = sum(judged.values())
    return {"labelled": n, "both_right": judged["both"], "production_only": judged["production"],
            "shadow_only": judged["shadow"], "neither": judged["neither"],
            "production_accuracy": round((judged["both"] + judged["production"]) / n, 6),
            "shadow_accuracy": round((judged["both"] + judged["shadow"]) / n, 6)}


def _r(x: float) -> float:
    return round(float(x), 6)


def _side(verdict: str, scores: dict[str, Any], thresholds: dict[str, Any], error: str | None = None
          ) -> dict[str, Any]:
    return {"verdict": verdict, "scores": scores, "thresholds": thresholds, **({"error": error} if error else {})}


def build_report(opts: CompareOptions) -> tuple[dict[str, Any], list[Row]]:
    """The report (JSON-able) and the disagreeing rows; InspectorError when there is nothing to compare."""
    conn = open_journal(opts.journal, readonly=True, command="compare")
    try:
        rows = read_rows(conn, opts.since)
    finally:
        conn.close()
    if not rows:
        raise InspectorError(f"compare: no shadow results since sequence {opts.since or 0} in {opts.journal}: "
                             "set [shadow] model = \"/path/candidate.onnx\" in the station's configuration (or "
                             "replay with --shadow MODEL) and run")
    rows, others = newest_pair(rows)
    disputed = [r for r in rows if r.disagrees]
    dists, hists = {}, {}
    for name, shadow in (("production", False), ("shadow", True)):
        values, thresholds, above = _scores(rows, shadow)
        dists[name] = {**distribution(values, above), "thresholds": sorted(set(thresholds))}
        hists[name] = histogram(values, thresholds)
    report: dict[str, Any] = {
        "journal": str(opts.journal), "since": opts.since or 0, "parts": len(rows),
        "first_sequence": rows[0].seq, "last_sequence": rows[-1].seq,
        "production_model_id": rows[-1].model_id, "shadow_model_id": rows[-1].shadow_model_id,
        "other_pairs": others,
        "agreement": agreement(rows),
        "disagreements": [{"sequence": r.seq, "part_id": r.part_id,
                           "production": _side(r.verdict, r.scores, r.thresholds),
                           "shadow": _side(r.shadow_verdict, r.shadow_scores, r.shadow_thresholds),
                           "label": r.label, "right": r.right()} for r in disputed],
        "shadow_errors": Counter(r.shadow_error for r in rows if r.shadow_verdict == "error").most_common(3),
        "scores": dists, "histograms": hists,
        "labels": label_summary(rows),
    }
    return report, disputed


def write_out(out: Path, images: Path, report: dict[str, Any], disputed: list[Row]) -> dict[str, Any]:
    """Copy the disagreeing parts' stored images into `out` with index.csv (and scores.png); what was written."""
    if out.exists() and not out.is_dir():
        raise InspectorError(f"compare: --out {out} is a file; pass a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        copied = missing = 0
        with open(out / "index.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["sequence", "part_id", "roi", "production_verdict", "production_score",
                             "production_threshold", "shadow_verdict", "shadow_score", "shadow_threshold",
                             "label", "right", "files"])
            for r in disputed:
                for roi in r.scores or r.shadow_scores or {"": None}:
                    files = []
                    for kind in ("input", "reconstruction", "heatmap"):
                        name = r.images.get(f"{roi}/{kind}")
                        data = read_image(images, name) if name else None
                        if name is None or data is None:
                            continue
                        rel = f"{r.seq}_{safe_name(roi, 'roi')}_{kind}{Path(name).suffix}"
                        (out / rel).write_bytes(data)
                        files.append(rel)
                    copied += len(files)
                    missing += not files
                    r.files.extend(files)
                    writer.writerow([r.seq, r.part_id, roi, r.verdict, r.scores.get(roi), r.thresholds.get(roi),
                                     r.shadow_verdict, r.shadow_scores.get(roi), r.shadow_thresholds.get(roi),
                                     r.label or "", r.right() or "", ";".join(files)])
        png = _plot(out / "scores.png", report)
    except OSError as exc:
        raise InspectorError(f"compare: cannot write {out}: {exc}") from None
    return {"dir": str(out), "images": copied, "rois_without_images": missing, "index": str(out / "index.csv"),
            "plot": str(png) if png else None}


def _plot(path: Path, report: dict[str, Any]) -> Path | None:
    """Both score histograms with their thresholds as a PNG, when matplotlib is installed (no torch)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(2, 1, figsize=(7, 5), constrained_layout=True)
    for ax, name in zip(axes, ("production", "shadow"), strict=True):
        bins = report["histograms"][name]
        if bins:
            ax.bar([b["from"] for b in bins], [b["count"] for b in bins], width=bins[0]["to"] - bins[0]["from"],
                   align="edge", color="tab:blue" if name == "production" else "tab:orange")
        for t in report["scores"][name]["thresholds"]:
            ax.axvline(t, color="red", linestyle="--")
        ax.set_title(f"{name} {report[name + '_model_id']}: ROI scores (threshold dashed)", fontsize=9)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def format_report(report: dict[str, Any]) -> str:
    a = report["agreement"]
    t = a["table"]
    lines = [f"compare: {report['parts']} part(s) with a shadow verdict, sequences {report['first_sequence']}.."
             f"{report['last_sequence']} in {report['journal']}",
             f"production {report['production_model_id']}  vs  shadow {report['shadow_model_id']}"]
    for o in report["other_pairs"]:
        lines.append(f"  (not compared: {o['parts']} part(s) of production {o['production_model_id']} vs shadow "
                     f"{o['shadow_model_id']}, sequences {o['first_sequence']}..{o['last_sequence']}: pass --since)")
    frac = "n/a" if a["fraction"] is None else f"{a['fraction']:.4f}"
    lines += [f"agreement {frac}: {a['agree']} of {a['decided']} part(s) decided by both; {a['disagree']} disagree",
              f"{'':18}{'shadow pass':>12}{'shadow fail':>12}",
              f"{'production pass':18}{t['pass']['pass']:>12}{t['pass']['fail']:>12}",
              f"{'production fail':18}{t['fail']['pass']:>12}{t['fail']['fail']:>12}",
              f"errors: production {a['errors']['production']}, shadow {a['errors']['shadow']}"]
    for message, n in report["shadow_errors"]:
        lines.append(f"  shadow error x{n}: {message}")
    dis = report["disagreements"]
    if dis:
        lines.append(f"disagreements ({len(dis)}): sequence part_id  production verdict roi score/threshold  |  "
                     "shadow  [label: who was right]")
        for d in dis[:SHOWN]:
            label = f"  [{d['label']}: {d['right']}]" if d["label"] else ""
            lines.append(f"  {d['sequence']:>8} {d['part_id']}  {_fmt_side(d['production'])}  |  "
                         f"{_fmt_side(d['shadow'])}{label}")
        if len(dis) > SHOWN:
            lines.append(f"  ... {len(dis) - SHOWN} more (--json FILE or --out DIR for all)")
    lines.append(f"ROI scores{'':8}{'count':>7}{'p1':>11}{'p50':>11}{'p99':>11}{'max':>11}  above threshold")
    for name in ("production", "shadow"):
        d = report["scores"][name]
        cells = "".join(f"{'-' if d[k] is None else f'{d[k]:.4g}':>11}" for k in ("p1", "p50", "p99", "max"))
        above = "-" if d["above_threshold"] is None else f"{d['above_threshold']:.4f}"
        thresholds = ", ".join(f"{x:.4g}" for x in d["thresholds"])
        lines.append(f"  {name:16}{d['count']:>7}{cells}  {above} (threshold {thresholds})")
    for name in ("production", "shadow"):
        bins = report["histograms"][name]
        if not bins:
            continue
        top = max(b["count"] for b in bins) or 1
        lines.append(f"{name} histogram (T: the bin holding its threshold)")
        for b in bins:
            bar = "#" * round(30 * b["count"] / top)
            lines.append(f"  {b['from']:>10.4g} .. {b['to']:<10.4g}{'T' if b['threshold'] else ' '} {b['count']:>6} {bar}")
    lab = report["labels"]
    if lab:
        lines.append(f"operator labels: {lab['labelled']} labelled part(s): both right {lab['both_right']}, "
                     f"production only {lab['production_only']}, shadow only {lab['shadow_only']}, neither "
                     f"{lab['neither']} (accuracy production {lab['production_accuracy']:.4f}, shadow "
                     f"{lab['shadow_accuracy']:.4f})")
    else:
        lines.append("operator labels: none on these parts (`inspector label SEQ --as good|DEFECT` to judge them)")
    return "\n".join(lines)


def _fmt_side(side: dict[str, Any]) -> str:
    rois = " ".join(f"{roi} {'-' if s is None else f'{s:.4g}'}/{side['thresholds'].get(roi, float('nan')):.4g}"
                    for roi, s in side["scores"].items())
    return f"{side['verdict']:4} {rois}"


def run_compare(opts: CompareOptions) -> int:
    report, disputed = build_report(opts)
    if opts.out is not None:
        report["out"] = write_out(opts.out, opts.images, report, disputed)
        for d, r in zip(report["disagreements"], disputed, strict=True):
            d["files"] = r.files
    print(format_report(report))
    if opts.out is not None:
        o = report["out"]
        print(f"--out {o['dir']}: {o['images']} image(s) of {len(disputed)} disagreeing part(s), index.csv"
              + (f", {Path(o['plot']).name}" if o["plot"] else "")
              + (f"; {o['rois_without_images']} ROI(s) had no stored image (quota, or stored before shadow "
                 "mode kept disputed parts)" if o["rois_without_images"] else ""))
    if opts.json_out is not None:
        try:
            opts.json_out.parent.mkdir(parents=True, exist_ok=True)
            opts.json_out.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as exc:
            raise InspectorError(f"compare: cannot write --json {opts.json_out}: {exc}") from None
    return 0
