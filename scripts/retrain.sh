#!/usr/bin/env bash
# The model lifecycle loop on the synthetic line (docs/lifecycle.md "The whole loop"): a model trained on the
# line's still images runs on the line -> an operator labels its false calls and defects -> data set ->
# fine-tune from the running model -> export -> the candidate shadows the original on a held-out part of the
# line -> compare -> promote it in a running daemon. The numbers of each step are printed; the last step
# prints false calls (good parts rejected) and misses on the held-out part for both models and writes them
# to RETRAIN_JSON. The operator is simulated from the videos' ground truth (scripts/retrain_steps.py label).
#
# Knobs (environment):
#   RETRAIN_DIR          working folder, emptied first (build/retrain)
#   RETRAIN_PARTS        parts in the first part of the line: replayed, reviewed, labelled (300)
#   RETRAIN_HELDOUT      parts in the held-out part: other parts of the same line, never labelled for training (300)
#   RETRAIN_STILLS       still images the original model is trained on (300)
#   RETRAIN_EPOCHS       the original's training epochs (5)
#   RETRAIN_FT_EPOCHS    fine-tuning epochs (10)
#   RETRAIN_STORE_EVERY  [state] store_passed_every while the first part runs (5; the product's default is 20)
#   RETRAIN_EXTRA_GOOD   1: the original's still images join the data set's train/good; 0: the station's crops only (1)
#   RETRAIN_CONTROL      1: also fine-tune on the still images alone, same epochs (is it the data or the epochs?) (1)
#   RETRAIN_SEED         the line (trainer synth --seed) (0)
#   RETRAIN_PORT         the daemon's control socket port for the promote step (5597)
#   RETRAIN_JSON         the summary (RETRAIN_DIR/retrain.json)
#   RETRAIN_REUSE        1: keep RETRAIN_DIR/line (the stills and videos) of an earlier run with the same
#                        RETRAIN_PARTS, RETRAIN_HELDOUT, RETRAIN_STILLS and RETRAIN_SEED (0)
# Training runs at 64 px under `nice -n 10` with OMP_NUM_THREADS=1 (unless set): a few minutes on one core.
set -euo pipefail
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
fi
if [ $# -gt 0 ]; then echo "usage: scripts/retrain.sh [--help] (knobs are environment variables)" >&2; exit 2; fi
OUT=${RETRAIN_DIR:-build/retrain}
PARTS=${RETRAIN_PARTS:-300}
HELDOUT=${RETRAIN_HELDOUT:-300}
STILLS=${RETRAIN_STILLS:-300}
EPOCHS=${RETRAIN_EPOCHS:-5}
FT_EPOCHS=${RETRAIN_FT_EPOCHS:-10}
EVERY=${RETRAIN_STORE_EVERY:-5}
EXTRA_GOOD=${RETRAIN_EXTRA_GOOD:-1}
CONTROL=${RETRAIN_CONTROL:-1}
SEED=${RETRAIN_SEED:-0}
PORT=${RETRAIN_PORT:-5597}
JSON=${RETRAIN_JSON:-$OUT/retrain.json}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
NICE="nice -n 10"
HERE=$(cd "$(dirname "$0")" && pwd)
PY=${PYTHON:-python3}
STEPS="$PY $HERE/retrain_steps.py"
T0=$(date +%s)
LINE=$OUT/line
echo "== 1/10 synthesize the line: $STILLS still images (the original's training data), a video of $PARTS parts"
echo "        (the first part, reviewed) and one of $HELDOUT other parts of the same line (held out), ground truth in CSV"
if [ "${RETRAIN_REUSE:-0}" = 1 ] && [ -f "$LINE/heldout.csv" ] && [ -f "$LINE/first.csv" ]; then
    find "$OUT" -mindepth 1 -maxdepth 1 ! -name line -exec rm -rf {} +
    echo "   reusing $LINE (RETRAIN_REUSE=1)"
else
    rm -rf "$OUT"
    mkdir -p "$LINE"
    $NICE trainer synth "$LINE/stills" --seed "$SEED" --n-train "$STILLS" --n-test 20
    $NICE trainer synth "$LINE/.first" --seed "$SEED" --n-train 0 --n-test 0 --video "$LINE/first.mp4" \
        --parts "$PARTS"
    $NICE trainer synth "$LINE/.heldout" --seed "$SEED" --n-train 0 --n-test 0 --video "$LINE/heldout.mp4" \
        --parts "$HELDOUT" --first-part 100000
fi
# the station's configuration (ROI, presence trigger: what trainer synth writes beside its video), with the
# input crop of every EVERY-th passed part kept ([state] store_passed_every)
cp "$LINE/first.toml" "$OUT/line.toml"
printf '\n[state]\nstore_passed_every = %s\n' "$EVERY" >> "$OUT/line.toml"

echo "== 2/10 the original model: trained on the still images only ($EPOCHS epochs, 64 px), exported"
$NICE trainer fit "$LINE/stills" --out "$OUT/run-original" --image-size 64 --epochs "$EPOCHS" --seed "$SEED" \
    | tail -n 2
trainer export "$OUT/run-original" --out "$OUT/original.onnx"

echo "== 3/10 run: the first part of the line through the original (inspector replay, journal in $OUT/station)"
inspector replay "$LINE/first.mp4" --model "$OUT/original.onnx" --config "$OUT/line.toml" \
    --ground-truth "$LINE/first.csv" --state "$OUT/station" --json "$OUT/replay-first.json" | grep -v '^  wrong:'
$STEPS score "$OUT/station/journal.db" "$LINE/first.csv" --json "$OUT/score-first.json"

echo "== 4/10 label: the operator judges the rejects and the sampled passed parts (inspector label, from the truth)"
$STEPS label "$OUT/station/journal.db" "$LINE/first.csv" --review rejects,sampled --by operator \
    --json "$OUT/labels-first.json"

echo "== 5/10 dataset: the labelled crops in the MVTec layout (inspector dataset)"
inspector dataset --state "$OUT/station" --out "$OUT/dataset" | grep -v '^not exported:'
if [ "$EXTRA_GOOD" = 1 ]; then
    for f in "$LINE"/stills/train/good/*; do cp "$f" "$OUT/dataset/train/good/still_$(basename "$f")"; done
    echo "   + the original's $(find "$LINE/stills/train/good" -type f | wc -l) still images in train/good" \
         "(RETRAIN_EXTRA_GOOD=1): $(find "$OUT/dataset/train/good" -type f | wc -l) training images"
fi
$STEPS folders "$OUT/dataset" "$OUT/dataset.json"

echo "== 6/10 fine-tune from the original (trainer fit --init, $FT_EPOCHS epochs), evaluate on the data set's test split, export"
$NICE trainer fit "$OUT/dataset" --out "$OUT/run-finetuned" --init "$OUT/run-original" --epochs "$FT_EPOCHS" \
    --seed "$SEED" | tail -n 2
$NICE trainer evaluate "$OUT/run-finetuned" | tail -n 3 || echo "   (no evaluation: the data set's test split is too small)"
trainer export "$OUT/run-finetuned" --out "$OUT/finetuned.onnx"
$STEPS pick "$OUT/run-finetuned/metrics.json" "$OUT/finetune.json" image_auroc n_good n_defect threshold \
    threshold_source epochs
if [ "$CONTROL" = 1 ]; then
    echo "   control: the same fine-tune on the still images alone (no station data)"
    $NICE trainer fit "$LINE/stills" --out "$OUT/run-control" --init "$OUT/run-original" --epochs "$FT_EPOCHS" \
        --seed "$SEED" | tail -n 1
    trainer export "$OUT/run-control" --out "$OUT/control.onnx" > /dev/null
fi

echo "== 7/10 shadow: the held-out part with the original deciding and the fine-tuned model as its shadow"
if inspector replay --help | grep -- '--shadow' > /dev/null; then
    inspector replay "$LINE/heldout.mp4" --model "$OUT/original.onnx" --shadow "$OUT/finetuned.onnx" \
        --config "$OUT/line.toml" --ground-truth "$LINE/heldout.csv" --state "$OUT/heldout-state" \
        --json "$OUT/replay-heldout.json" | grep -v '^  wrong:'
    $STEPS score "$OUT/heldout-state/journal.db" "$LINE/heldout.csv" --json "$OUT/score-heldout.json"
else   # no shadow mode in this build: one replay per model
    echo "   (this inspector has no --shadow: replaying once per model)"
    for m in original finetuned; do
        inspector replay "$LINE/heldout.mp4" --model "$OUT/$m.onnx" --config "$OUT/line.toml" \
            --ground-truth "$LINE/heldout.csv" --state "$OUT/heldout-$m" | grep -v '^  wrong:'
    done
    $STEPS score "$OUT/heldout-original/journal.db" "$LINE/heldout.csv" --json "$OUT/score-heldout.json"
    $STEPS score "$OUT/heldout-finetuned/journal.db" "$LINE/heldout.csv" --json "$OUT/score-heldout-finetuned.json"
fi
if [ "$CONTROL" = 1 ]; then
    inspector replay "$LINE/heldout.mp4" --model "$OUT/control.onnx" --config "$OUT/line.toml" \
        --ground-truth "$LINE/heldout.csv" --state "$OUT/heldout-control" > /dev/null
    echo "   control (fine-tuned on the still images alone):"
    $STEPS score "$OUT/heldout-control/journal.db" "$LINE/heldout.csv" --json "$OUT/score-heldout-control.json"
fi

echo "== 8/10 compare: the operator labels the parts the two models disagree on, then inspector compare"
if [ -f "$OUT/heldout-state/journal.db" ] && inspector compare --help > /dev/null 2>&1; then
    $STEPS label "$OUT/heldout-state/journal.db" "$LINE/heldout.csv" --review disputed --by operator \
        --json "$OUT/labels-heldout.json"
    inspector compare --journal "$OUT/heldout-state/journal.db" --out "$OUT/compare" --json "$OUT/compare.json" \
        > "$OUT/compare.txt"
    $STEPS pick "$OUT/compare.json" "$OUT/compare-summary.json" parts agreement labels
    # the summary lines (every disagreement and both histograms: $OUT/compare.txt, $OUT/compare.json)
    grep -Ev '^ +[0-9]+ |^ +-?[0-9.e+-]+ \.\. |more \(--json|histogram \(T' "$OUT/compare.txt" | sed 's/^/   /'
else
    echo "   skipped: no shadow journal or no \`inspector compare\` in this build"
fi

echo "== 9/10 promote: a daemon on the held-out video (looping) with the fine-tuned model as shadow; inspector promote"
if inspector promote --help > /dev/null 2>&1; then
    $STEPS daemon-config "$OUT/line.toml" "$OUT/daemon.toml" --video "$LINE/heldout.mp4" \
        --model "$OUT/original.onnx" --shadow "$OUT/finetuned.onnx" --control "tcp://127.0.0.1:$PORT" \
        --state "$OUT/daemon"
    inspector run --config "$OUT/daemon.toml" > "$OUT/daemon.log" 2>&1 &
    DAEMON=$!
    trap 'kill $DAEMON 2>/dev/null || true' EXIT
    rows() { $PY -c "import sqlite3,sys
try: print(sqlite3.connect(f'file:{sys.argv[1]}?mode=ro', uri=True).execute('SELECT count(*) FROM verdicts').fetchone()[0])
except Exception: print(0)" "$OUT/daemon/journal.db"; }
    for _ in $(seq 600); do   # a few parts journaled (<= 60 s): the daemon runs
        if [ "$(rows)" -ge 10 ] || ! kill -0 "$DAEMON" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "   daemon up: $(rows) parts journaled by the original"
    if inspector promote --config "$OUT/daemon.toml"; then PROMOTED=1; else PROMOTED=0; echo "   promote failed"; fi
    BEFORE=$(rows)
    for _ in $(seq 600); do
        if [ "$(rows)" -ge $((BEFORE + 10)) ] || ! kill -0 "$DAEMON" 2>/dev/null; then break; fi
        sleep 0.1
    done
    kill -TERM "$DAEMON" 2>/dev/null || echo "   the daemon had stopped already (see $OUT/daemon.log)"
    wait "$DAEMON" || echo "   daemon exited with $? (see $OUT/daemon.log)"
    trap - EXIT
    $PY - "$OUT/daemon/journal.db" "$OUT/finetuned.json" "$OUT/promote.json" "$PROMOTED" <<'EOF'
import json, sqlite3, sys
conn = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
ids = [m for (m,) in conn.execute("SELECT model_id FROM verdicts ORDER BY seq")]
want = json.load(open(sys.argv[2]))["model_id"]
switch = next((i for i, m in enumerate(ids) if m == want), None)
after = ids[switch:] if switch is not None else []
ok = bool(after) and all(m == want for m in after)
print(f"   journal: {len(ids)} parts; {switch if switch is not None else len(ids)} decided by the original, "
      f"then {len(after)} by the fine-tuned model {want}" + ("" if ok else " (NOT promoted)"))
json.dump({"promoted": sys.argv[4] == "1" and ok, "parts": len(ids), "before": switch, "after": len(after),
           "model_id": want}, open(sys.argv[3], "w"), indent=2)
EOF
else
    echo "   skipped: no \`inspector promote\` in this build (the hot swap is not there yet)"
fi

echo "== 10/10 the held-out part of the line: false calls (good parts rejected) and misses, per model"
SECONDS_TOTAL=$(( $(date +%s) - T0 ))
$STEPS report "$JSON" first=$OUT/score-first.json labels=$OUT/labels-first.json dataset=$OUT/dataset.json \
    finetune=$OUT/finetune.json compare=$OUT/compare-summary.json \
    heldout=$OUT/score-heldout.json heldout_finetuned_alone=$OUT/score-heldout-finetuned.json \
    control=$OUT/score-heldout-control.json compare_labels=$OUT/labels-heldout.json promote=$OUT/promote.json \
    --set "command=RETRAIN_PARTS=$PARTS RETRAIN_HELDOUT=$HELDOUT RETRAIN_STILLS=$STILLS RETRAIN_EPOCHS=$EPOCHS RETRAIN_FT_EPOCHS=$FT_EPOCHS RETRAIN_STORE_EVERY=$EVERY RETRAIN_EXTRA_GOOD=$EXTRA_GOOD RETRAIN_CONTROL=$CONTROL RETRAIN_SEED=$SEED scripts/retrain.sh" \
    --set "seconds=$SECONDS_TOTAL" > /dev/null
$PY - "$JSON" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
h = r["heldout"]
fine = h.get("shadow") or (r.get("heldout_finetuned_alone") or {}).get("production")
rows = [("original (still images)", h["production"]), ("fine-tuned (station labels)", fine)]
if r.get("control"):
    rows.append(("control (stills, same epochs)", r["control"]["production"]))
print(f"   {h['truth_parts']} held-out parts: {h['good_parts']} good, {h['defective_parts']} defective")
print(f"   {'model':<31}{'false calls':>12}{'misses':>8}{'accuracy':>10}")
for name, m in rows:
    if m:
        print(f"   {name:<31}{m['false_calls']:>12}{m['misses']:>8}{m['accuracy']:>10}")
if fine:
    verdict = "fewer" if fine["false_calls"] < h["production"]["false_calls"] else "NOT fewer"
    print(f"   the fine-tuned model makes {verdict} false calls than the original "
          f"({fine['false_calls']} vs {h['production']['false_calls']})")
EOF
echo "== done in ${SECONDS_TOTAL} s: $JSON"
