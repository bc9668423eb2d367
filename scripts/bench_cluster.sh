#!/usr/bin/env bash
# Sharded inference on this machine: one `cdwqc infer` process against
# `cdwqc slurm submit infer --local` with 1, 2 and 4 shards (and, where a one-node Slurm
# cluster is up, a real 4-task array), on the same 1 mm synthetic FLAIR images, each run
# cold (tensor cache emptied). Prints wall times, the merges' cost, and the ratio of each
# to the single process measured in the same run.
#
#   scripts/bench_cluster.sh [FLAIR_IMAGES]        # default 24
#   scripts/bench_cluster.sh merge [FLAIR_IMAGES]  # the merge's cost alone, on tiny
#                                                  # images (default 2000)
#   scripts/bench_cluster.sh import [IMAGES] [GRID]  # sharded import against one
#                                                  # `cdwqc import` (default 200 images,
#                                                  # small = 2 mm; clinical = 1 mm)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BIN=${CDWQC:-$ROOT/target/release/cdwqc}
[[ -x $BIN ]] || cargo build --release
WORK=$(mktemp -d /tmp/cdwqc-bench-cluster.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

if [[ ${1:-} == merge ]]; then
  N=${2:-2000}
  "$BIN" synth --out w --t1 16 --flair "$N" --other 0 --raters 1 --grid tiny --seed 5 >/dev/null
  "$BIN" init >/dev/null
  "$BIN" import w >/dev/null
  "$BIN" ratings import w/derivatives/cdwqc-synth/ratings/rater1.tsv --rater rater1 >/dev/null
  "$BIN" train --preset tiny --task usable --method ssda --epochs 1 --seed 1 --device cpu \
    --threads "$(nproc)" --run m1 >/dev/null
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); merging $N predictions from 4 parts"
  "$BIN" slurm submit infer --run m1 --shards 4 --device cpu --dir parts --local | tail -1
  t0=$(date +%s.%N)
  "$BIN" merge parts
  echo "second merge, process start to exit: $(echo "$(date +%s.%N) - $t0" | bc) s"
  exit 0
fi
now() { date +%s.%N; }

if [[ ${1:-} == import ]]; then
  N=${2:-200}
  GRID=${3:-small}
  "$BIN" synth --out w --t1 $((N / 2)) --flair $((N - N / 2)) --other 0 --raters 1 \
    --grid "$GRID" --seed 5 >/dev/null
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $N images ($GRID grid, $(du -sh w | cut -f1)), quality metrics on"
  rm -f plain.duckdb && "$BIN" --db plain.duckdb init >/dev/null
  t0=$(now)
  "$BIN" --db plain.duckdb import w >/dev/null
  single=$(echo "$(now) - $t0" | bc)
  printf '| %-28s | %8s | %8s | %s |\n' "how" "wall s" "merge s" "wall / one import"
  printf '| %-28s | %8.2f | %8s | %s |\n' "one cdwqc import" "$single" "-" "1.00"
  for shards in 1 2 4; do
    rm -rf parts && rm -f s.duckdb && "$BIN" --db s.duckdb init >/dev/null
    t0=$(now)
    out=$("$BIN" --db s.duckdb slurm submit import w --shards "$shards" --dir parts --local)
    wall=$(echo "$(now) - $t0" | bc)
    merge=$(tail -1 <<<"$out" | sed -n 's/.* in \([0-9.]*\) s$/\1/p')
    printf '| %-28s | %8.2f | %8.2f | %.2f |\n' "--local, $shards shards" "$wall" "$merge" \
      "$(echo "$wall / $single" | bc -l)"
  done
  t0=$(now)
  "$BIN" --db s.duckdb merge parts >/dev/null
  echo "merging the 4 parts again (nothing to write), process start to exit: $(echo "$(now) - $t0" | bc) s"
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  exit 0
fi

N=${1:-24}
"$BIN" synth --out w --t1 "$N" --flair "$N" --other 0 --raters 3 --grid clinical --seed 5 >/dev/null
"$BIN" init >/dev/null
"$BIN" import w >/dev/null
for r in rater1 rater2 rater3; do
  "$BIN" ratings import "w/derivatives/cdwqc-synth/ratings/$r.tsv" --rater "$r" >/dev/null
done
"$BIN" train --preset cpu-small --task usable --method ssda --epochs 1 --seed 1 \
  --device cpu --threads "$(nproc)" --run b1 >/dev/null
cp cdwqc.duckdb trained.duckdb

fresh() { rm -rf models/cache models/cluster; cp trained.duckdb cdwqc.duckdb; }

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; $N FLAIR images at 1 mm, preset cpu-small, cold"
fresh
t0=$(now)
"$BIN" infer --run b1 --device cpu --threads "$(nproc)" >/dev/null
single=$(echo "$(now) - $t0" | bc)
printf '| %-28s | %8s | %8s | %s |\n' "how" "wall s" "merge s" "wall / single process"
printf '| %-28s | %8.2f | %8s | %s |\n' "one cdwqc infer process" "$single" "-" "1.00"
for shards in 1 2 4; do
  fresh
  t0=$(now)
  out=$("$BIN" slurm submit infer --run b1 --shards "$shards" --device cpu --local)
  wall=$(echo "$(now) - $t0" | bc)
  merge=$(tail -1 <<<"$out" | sed -n 's/.* in \([0-9.]*\) s$/\1/p')
  printf '| %-28s | %8.2f | %8.2f | %.2f |\n' "--local, $shards shards" "$wall" "$merge" \
    "$(echo "$wall / $single" | bc -l)"
done
if sinfo -h >/dev/null 2>&1; then
  fresh
  t0=$(now)
  "$BIN" slurm submit infer --run b1 --shards 4 --device cpu --cpus-per-task 1 >/dev/null
  merge_job=$(sed -n 's/.*"merge_job": "\([0-9]*\)".*/\1/p' models/cluster/b1/submission.json)
  while squeue -h -j "$merge_job" 2>/dev/null | grep -q .; do sleep 0.2; done
  wall=$(echo "$(now) - $t0" | bc)
  merge=$(sed -n 's/.* in \([0-9.]*\) s$/\1/p' models/cluster/b1/logs/merge-*.log)
  printf '| %-28s | %8.2f | %8.2f | %.2f |\n' "Slurm array, 4 shards" "$wall" "${merge:-0}" \
    "$(echo "$wall / $single" | bc -l)"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
