#!/usr/bin/env bash
# The main job: sets up what is missing, builds, generates a synthetic clinical
# warehouse from a real brain (graded artefacts, reject cases, three simulated raters),
# indexes it into a fresh store under demo/, imports the raters' ratings, writes the
# inter-rater agreement report (Markdown here, HTML file beside the store), then trains
# SSDA and its four baselines for both tasks on the consensus labels (the `demo`
# preset: a 4 mm grid, so it fits in minutes on two CPU cores), compares them with
# 95% CIs, predicts every FLAIR image with the SSDA model and reports on it.
#
#   DEMO_T1=300 DEMO_FLAIR=250 DEMO_OTHER=50 ./scripts/demo.sh   # the full-size warehouse
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

CDWQC=target/release/cdwqc
DEMO=demo
DB=$DEMO/cdwqc.duckdb
W=$DEMO/warehouse
N_T1=${DEMO_T1:-120}
N_FLAIR=${DEMO_FLAIR:-120}
N_OTHER=${DEMO_OTHER:-20}
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$DEMO"
mkdir -p "$DEMO"

step "cdwqc synth: $N_T1 T1w + $N_FLAIR FLAIR + $N_OTHER other images, 2 mm grid"
"$CDWQC" synth --out "$W" --t1 "$N_T1" --flair "$N_FLAIR" --other "$N_OTHER" --raters 3 --seed 1
"$CDWQC" synth --montage "$DEMO/montage.png" --from "$W"
# What real warehouses also hold: an interrupted transfer and a mislabelled file.
head -c 100000 tests/data/external/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz \
  > "$W/sub-9998_T1w.nii.gz"
echo "DICOM conversion failed" > "$W/sub-9999_FLAIR.nii"

step "cdwqc init && cdwqc import"
"$CDWQC" --db "$DB" init
"$CDWQC" --db "$DB" import "$W"

step "importing again: nothing changed, nothing to do"
"$CDWQC" --db "$DB" import "$W" | head -n 1

step "the simulated raters' ratings (native TSV, and rater1's notebook file)"
for f in "$W"/derivatives/cdwqc-synth/ratings/rater?.tsv; do
  "$CDWQC" --db "$DB" ratings import "$f" --rater "$(basename "$f" .tsv)"
done
"$CDWQC" --db "$DB" raters list

step "images per sequence (sql/queries/images_per_sequence.sql)"
"$CDWQC" --db "$DB" sql -f sql/queries/images_per_sequence.sql --format table
step "images per scanner (sql/queries/images_per_scanner.sql)"
"$CDWQC" --db "$DB" sql -f sql/queries/images_per_scanner.sql --format table

step "inter-rater agreement on FLAIR (cdwqc report agreement)"
"$CDWQC" --db "$DB" report agreement --sequence FLAIR --html "$DEMO/agreement_flair.html"

step "training on the consensus labels: SSDA and baselines, both tasks (demo preset, 4 mm)"
rm -rf models/runs/demo-*
for task in usable quality; do
  for method in ssda target-only source-only finetune ssda-no-domain; do
    "$CDWQC" --db "$DB" train --preset demo --task "$task" --method "$method" \
      --epochs "${DEMO_EPOCHS:-5}" --seed 1 --run "demo-$task-$method" | tail -n 1
  done
done

step "methods compared on the held-out FLAIR test subjects, 95% CIs (cdwqc report compare)"
"$CDWQC" --db "$DB" report compare 'demo-*' --html "$DEMO/comparison.html"

step "predicting every FLAIR image with the shipped pretrained models (no training, no label)"
for model in cdwqc-flair-usable cdwqc-flair-quality; do
  "$CDWQC" --db "$DB" infer --model "$model" --adapt-batchnorm
done
"$CDWQC" --db "$DB" sql "select run_id as model, p.label as predicted, count(*) as images
  from predictions p where run_id like 'model:%' group by all order by all" --format table
"$CDWQC" --db "$DB" report model --run model:cdwqc-flair-usable --set all \
  --html "$DEMO/model_pretrained_usable.html" | sed -n '/^| balanced accuracy/p'

step "the SSDA usable model in detail (cdwqc report model)"
"$CDWQC" --db "$DB" report model --run demo-usable-ssda --html "$DEMO/model_usable_ssda.html"

step "done"
echo "store:      $DB"
echo "reports:    $DEMO/agreement_flair.html, $DEMO/comparison.html, $DEMO/model_usable_ssda.html,"
echo "            $DEMO/model_pretrained_usable.html"
echo "            (open in a browser, they work offline)"
echo "montage:    $DEMO/montage.png (previews per artefact class and grade)"
echo "consensus:  $CDWQC --db $DB ratings export --consensus --format tsv"
echo "dashboard:  $CDWQC --db $DB tui            (or: tui --rater NAME to rate)"
echo "explore:    $CDWQC --db $DB sql \"select suffix, orientation, count(*) from images group by all\""
