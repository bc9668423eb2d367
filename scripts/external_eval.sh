#!/usr/bin/env bash
# External validation of exported QC models (docs/external-test-set.md): builds the
# external test warehouse (scripts/external_warehouse.py: a TorchIO simulator, not
# `cdwqc synth`), indexes it and its truth ratings into a store of its own, predicts
# every FLAIR-named image with each model (`cdwqc infer --model`: no training there)
# and scores it against the truth (`cdwqc report model --set all`). The external set is
# never used for training or model selection.
#
#   ./scripts/external_eval.sh demo-usable demo-quality      # names under models/, or folders
#   EXT_DIR=external EXT_N=150 EXT_SEED=7 ./scripts/external_eval.sh MODEL...
#
# Prints, per model: usable balanced accuracy (usable models) or quality balanced
# accuracy and `bad` vs the rest balanced accuracy (quality models), with 95% CIs;
# the full reports go to $EXT_DIR/report_<model>.json and .html (and, where some images
# failed, such as a flagged registration, report_<model>-failed-as-<class>.json with them
# scored as reject or bad), and with BatchNorm
# adapted to the external images (cdwqc infer --adapt-batchnorm) to report_<model>-adabn.*, and for
# a model with an IQM forest, its network alone (cdwqc infer --network-only) to report_<model>-network.*.
# EXT_RECORD=1 also records both scores in each model card (cdwqc model evaluate).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 MODEL [MODEL...]  (a folder, or a name under models/)" >&2; exit 2; }
CDWQC=${CDWQC:-target/release/cdwqc}
[ -x "$CDWQC" ] || { echo "$CDWQC is missing: run scripts/setup.sh (or cargo build --release)" >&2; exit 1; }
PY=.venv/bin/python
[ -x "$PY" ] || PY=python3
OUT=${EXT_DIR:-external}
W=$OUT/warehouse
DB=$OUT/cdwqc.duckdb
TRUTH=$W/derivatives/external-truth/ratings_truth.tsv
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [ ! -f "$TRUTH" ]; then
  step "building the external warehouse (${EXT_N:-150} images, seed ${EXT_SEED:-7})"
  rm -rf "$W"
  start=$(date +%s)
  "$PY" scripts/external_warehouse.py --out "$W" --n "${EXT_N:-150}" --seed "${EXT_SEED:-7}" \
    ${EXT_WORKERS:+--workers "$EXT_WORKERS"}
  echo "generation: $(( $(date +%s) - start )) s"
else
  step "external warehouse: $W (delete it to rebuild)"
fi

step "its own store: $DB"
[ -f "$DB" ] || "$CDWQC" --db "$DB" init
"$CDWQC" --db "$DB" import "$W" | head -n 3
"$CDWQC" --db "$DB" ratings import "$TRUTH" --rater truth | tail -n 1

for model in "$@"; do
  dir=$model
  [ -f "$dir/model.toml" ] || dir=models/$model
  [ -f "$dir/model.toml" ] || { echo "no model $model (neither $model/model.toml nor models/$model/model.toml)" >&2; exit 1; }
  name=$(sed -n 's/^name = "\(.*\)"$/\1/p' "$dir/model.toml" | head -n 1)
  # As shipped, and adapted to this warehouse with no label (AdaBN); a model that
  # carries an IQM forest also with its network alone, to show what the forest adds.
  variants=(plain adabn)
  grep -q '^\[iqm_forest\]' "$dir/model.toml" && variants+=(network)
  for variant in "${variants[@]}"; do
  run=model:$name; report=$OUT/report_$name.json; flags=()
  if [ "$variant" = adabn ]; then
    run=model:$name-adabn; report=$OUT/report_$name-adabn.json; flags=(--as "$run" --adapt-batchnorm)
  elif [ "$variant" = network ]; then
    run=model:$name-network; report=$OUT/report_$name-network.json; flags=(--as "$run" --network-only)
  fi
  step "model $name ($variant): predicting every FLAIR-named image (no training here)"
  "$CDWQC" --db "$DB" infer --model "$dir" "${flags[@]}"
  "$CDWQC" --db "$DB" report model --run "$run" --set all --json > "$report"
  "$CDWQC" --db "$DB" report model --run "$run" --set all --html "${report%.json}.html" > /dev/null
  if [ -n "${EXT_RECORD:-}" ]; then
    label=external; how=""
    case $variant in
      adabn) label=external-adabn; how="; BatchNorm statistics adapted on them (cdwqc infer --adapt-batchnorm)" ;;
      network) label=external-network-only; how="; the network alone, without the model's IQM forest (cdwqc infer --network-only)" ;;
    esac
    "$CDWQC" --db "$DB" model evaluate "$dir" --run "$run" --set all --label "$label" \
      --description "${EXT_N:-150} FLAIR-named images of scripts/external_warehouse.py (seed ${EXT_SEED:-7}), no label used$how" \
      | tail -n 1
  fi
  # A model whose preset registers leaves the images with a flagged registration
  # unpredicted; they are scored again as what a warehouse makes of them (reject, or
  # bad for the quality task) beside the scores that leave them out.
  reports=("$report")
  task=$("$PY" -c 'import json, sys; r = json.load(open(sys.argv[1])); print(r["task"] if r["failed"] else "")' "$report")
  if [ -n "$task" ]; then
    as=reject; [ "$task" = quality ] && as=bad
    "$CDWQC" --db "$DB" report model --run "$run" --set all --json --failed-as "$as" > "${report%.json}-failed-as-$as.json"
    reports+=("${report%.json}-failed-as-$as.json")
  fi
  for scored in "${reports[@]}"; do
  "$PY" - "$scored" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
def show(v):
    if v.get("value") is None:
        return f"undefined ({v.get('undefined', 'no value')})"
    ci = v.get("ci95")
    return f"{v['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
o = r["overall"]
failed = f"{r['failed']} failed" + (f", scored as {r['failed_as']}" if r.get("failed_as") else "")
print(f"{r['run']['run_id']}: task {r['task']}, {o['images']} images scored against {r['against']}"
      f" ({r['without_truth']} without a {r['task']} label, {failed})")
if r["task"] == "usable":
    print(f"  usable balanced accuracy: {show(o['balanced_accuracy'])}")
else:
    print(f"  {r['task']} balanced accuracy: {show(o['balanced_accuracy'])}")
for c in o["per_class"]:
    if r["task"] != "usable" or c["class"] == "reject":
        print(f"  {c['class']} vs rest balanced accuracy: {show(c['balanced_accuracy_one_vs_rest'])}"
              f" (support {c['support']})")
print("  confusion (rows truth, columns prediction, order " + ", ".join(r["categories"]) + "): "
      + " | ".join(" ".join(str(x) for x in row) for row in o["confusion"]))
PYEOF
  done
  done
done
echo
echo "reports: $OUT/report_<model>[-adabn|-network].json and .html; store: $DB"
