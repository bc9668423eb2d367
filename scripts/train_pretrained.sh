#!/usr/bin/env bash
# Trains the pretrained models shipped under models/ (docs/pretrained.md): a large
# synthetic warehouse, its simulated raters' consensus, one target-only run per task
# (usable on the `pretrained-mni` preset file, registered to MNI space at 3 mm; quality on
# the `pretrained-native-noise` preset file, 3 mm without registration, the source's noise
# kept on the grid; two more seeds on the same split join it as an ensemble), exported
# with their model cards
# and an IQM forest each. Then, optionally, the external test set
# (scripts/external_eval.sh).
#
#   ./scripts/train_pretrained.sh            # warehouse, store, both models
#   PRE_EXTERNAL=1 ./scripts/train_pretrained.sh   # and score them on the external set
#
# Environment: PRE_DIR (work folder, default pretrained/), PRE_T1, PRE_FLAIR, PRE_OTHER
# (warehouse size), PRE_SEED, PRE_EPOCHS (default: the preset's), PRE_THREADS (libtorch
# threads per run; both runs go in parallel), PRE_PRESET_USABLE (default
# models/presets/pretrained-mni.toml) and PRE_PRESET_QUALITY (default
# models/presets/pretrained-native-noise.toml): a name
# or a preset file; PRE_PRESET sets both. PRE_NAMES (the exported models' names, default
# "cdwqc-flair-usable cdwqc-flair-quality": set it to keep the shipped models when trying
# another preset), PRE_QUALITY_MEMBERS (the seeds of the quality model's further networks,
# trained on seed 1's split; default "2 3"; empty: one network).
set -euo pipefail
cd "$(dirname "$0")/.."
CDWQC=${CDWQC:-target/release/cdwqc}
[ -x "$CDWQC" ] || { echo "$CDWQC is missing: run scripts/setup.sh" >&2; exit 1; }
DIR=${PRE_DIR:-pretrained}
W=$DIR/warehouse
DB=$DIR/cdwqc.duckdb
SEED=${PRE_SEED:-11}
PRESET_USABLE=${PRE_PRESET:-${PRE_PRESET_USABLE:-models/presets/pretrained-mni.toml}}
PRESET_QUALITY=${PRE_PRESET:-${PRE_PRESET_QUALITY:-models/presets/pretrained-native-noise.toml}}
read -r USABLE_NAME QUALITY_NAME <<< "${PRE_NAMES:-cdwqc-flair-usable cdwqc-flair-quality}"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
mkdir -p "$DIR"

if [ ! -f "$W/derivatives/cdwqc-synth/ground_truth.tsv" ]; then
  step "cdwqc synth: the training warehouse (seed $SEED)"
  rm -rf "$W"
  "$CDWQC" synth --out "$W" --t1 "${PRE_T1:-150}" --flair "${PRE_FLAIR:-800}" \
    --other "${PRE_OTHER:-100}" --raters 3 --seed "$SEED"
fi

step "its store: $DB"
[ -f "$DB" ] || "$CDWQC" --db "$DB" init
"$CDWQC" --db "$DB" import "$W" | head -n 3
for f in "$W"/derivatives/cdwqc-synth/ratings/rater?.tsv; do
  "$CDWQC" --db "$DB" ratings import "$f" --rater "$(basename "$f" .tsv)" | tail -n 1
done

# A training run holds its store for writing: each task trains on its own copy.
step "training both tasks in parallel (target-only FLAIR; usable: $PRESET_USABLE, quality: $PRESET_QUALITY)"
pids=()
for task in usable quality; do
  preset=$PRESET_USABLE; [ "$task" = quality ] && preset=$PRESET_QUALITY
  rm -f "$DIR/train-$task.duckdb" "$DIR/train-$task.duckdb.wal"
  cp "$DB" "$DIR/train-$task.duckdb"
  "$CDWQC" --db "$DIR/train-$task.duckdb" train --preset "$preset" --task "$task" --method target-only \
    --seed 1 --run "pretrained-$task" ${PRE_EPOCHS:+--epochs "$PRE_EPOCHS"} \
    ${PRE_THREADS:+--threads "$PRE_THREADS"} > "$DIR/train-$task.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
tail -n 2 "$DIR"/train-*.log
[ "$status" = 0 ] || { echo "a training run failed (logs: $DIR/train-*.log)" >&2; exit 1; }

# The quality model's further networks: other seeds on the first run's split, so the
# card's held-out figures stay held out for each (docs/pretrained.md, "Three seeds, one
# model"). One after the other: a run holds its store for writing.
members=()
for seed in ${PRE_QUALITY_MEMBERS-2 3}; do
  step "quality network of seed $seed on seed 1's split"
  "$CDWQC" --db "$DIR/train-quality.duckdb" train --preset "$PRESET_QUALITY" --task quality \
    --method target-only --seed "$seed" --split-seed 1 --run "pretrained-quality-s$seed" \
    ${PRE_EPOCHS:+--epochs "$PRE_EPOCHS"} ${PRE_THREADS:+--threads "$PRE_THREADS"} \
    > "$DIR/train-quality-s$seed.log" 2>&1 || { echo "see $DIR/train-quality-s$seed.log" >&2; exit 1; }
  tail -n 1 "$DIR/train-quality-s$seed.log"
  members+=(--member-run "pretrained-quality-s$seed")
done

step "exporting the models with their cards"
describe() {
  echo "3D FLAIR $1 from $2: trained on a synthetic warehouse of cdwqc synth (seed $SEED) with the $(basename "$3" .toml) preset, with an IQM forest on the same images' quality metrics; see docs/pretrained.md"
}
"$CDWQC" --db "$DIR/train-usable.duckdb" model export --run pretrained-usable --name "$USABLE_NAME" --force --iqm-forest --licence CC-BY-4.0 \
  --description "$(describe 'usability (usable / reject)' 'one volume' "$PRESET_USABLE")"
"$CDWQC" --db "$DIR/train-quality.duckdb" model export --run pretrained-quality "${members[@]}" --name "$QUALITY_NAME" --force --iqm-forest --licence CC-BY-4.0 \
  --description "$(describe 'quality grade (good / medium / bad)' 'one usable volume' "$PRESET_QUALITY")"

if [ -n "${PRE_EXTERNAL:-}" ]; then
  step "the external test set"
  ./scripts/external_eval.sh "$USABLE_NAME" "$QUALITY_NAME"
fi
