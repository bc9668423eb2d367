#!/usr/bin/env bash
# Installs what cdwqc needs to build, test and run, then builds it (release profile).
# Idempotent: a second run checks a few files and rebuilds nothing that is current.
#
#   .venv/                   Python venv: torch 2.13.0 (libtorch for tch), nibabel, numpy
#   .deps/libtorch           -> the venv's torch package (LIBTORCH, see .cargo/config.toml)
#   .deps/duckdb/            libduckdb.so 1.5.6, the DuckDB team's prebuilt library
#   tests/data/external/     real NIfTI test files from the nilearn and nibabel wheels
#   tmux (system package)    for the dashboard's end-to-end tests, when root or sudo allows
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

TORCH_VERSION=2.13.0
DUCKDB_NPM=@duckdb/node-bindings-linux-x64@1.5.6-r.1
DUCKDB_SHA256=3f4962cdd266eab2b479a5b5a4a6d063d279b2954ae814ed00385d553b747633
NILEARN_VERSION=0.14.1
NIBABEL_VERSION=5.4.2

say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || { say "missing $1: $2"; exit 1; }; }

need cargo "install Rust (rustup) first"
need python3 "install Python 3.10 or newer"
need npm "install Node.js/npm (used only to fetch DuckDB's prebuilt library)"

mkdir -p .deps

# --- free space: torch and a first release build need room --------------------
# A full disk otherwise surfaces as a pip or linker error half-way through.
# Needs (GiB): torch in .venv 3, a first release build of cdwqc and its tests 8.
need_gib=0
[ -d .venv ] || need_gib=$((need_gib + 3))
[ -x target/release/cdwqc ] || need_gib=$((need_gib + 8))
if [ "$need_gib" -gt 0 ] && [ -z "${CDWQC_SKIP_SPACE_CHECK:-}" ]; then
  free_kib=$(df -Pk . | awk 'NR == 2 { print $4 }')
  if [ -n "$free_kib" ] && [ "$free_kib" -lt $((need_gib * 1024 * 1024)) ]; then
    say "not enough free disk space in $ROOT: $((free_kib / 1024 / 1024)) GiB free, about $need_gib GiB needed"
    say "(torch in .venv about 3 GiB, a first release build about 8 GiB); free space, or set CDWQC_SKIP_SPACE_CHECK=1 to try anyway"
    exit 1
  fi
fi

# --- tmux: the dashboard's end-to-end tests drive the binary in it ------------
if ! command -v tmux >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    say "tmux is missing and there is no apt-get: install tmux (the dashboard tests need it)"
  elif [ "$(id -u)" = 0 ]; then
    say "installing tmux"
    apt-get install -y tmux >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y tmux >/dev/null; }
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    say "installing tmux (sudo)"
    sudo apt-get install -y tmux >/dev/null 2>&1 || { sudo apt-get update >/dev/null && sudo apt-get install -y tmux >/dev/null; }
  else
    say "tmux is missing and installing it needs root: apt-get install -y tmux (the dashboard tests need it)"
  fi
fi

# --- Python venv with libtorch -------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -d "$SITE/torch-$TORCH_VERSION.dist-info" ] || [ ! -f "$SITE/torch/lib/libtorch_cpu.so" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    say "installing torch $TORCH_VERSION with CUDA libraries (GPU found)"
    .venv/bin/pip install --quiet "torch==$TORCH_VERSION"
  else
    # CPU machine: torch without its 3.5 GB of CUDA wheels; the CUDA runtime and
    # CUPTI stubs are enough for libtorch_cuda.so to load and report no GPU.
    say "installing torch $TORCH_VERSION (CPU, minimal)"
    .venv/bin/pip install --quiet --no-deps "torch==$TORCH_VERSION" \
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
  fi
fi
if ! .venv/bin/python -c 'import nibabel, numpy' >/dev/null 2>&1; then
  say "installing nibabel and numpy (benchmarks, reference values)"
  .venv/bin/pip install --quiet "nibabel==$NIBABEL_VERSION" numpy
fi
ln -sfn "$SITE/torch" .deps/libtorch

# --- DuckDB prebuilt library ---------------------------------------------------
if [ ! -f .deps/duckdb/libduckdb.so ] || \
   [ "$(sha256sum .deps/duckdb/libduckdb.so | cut -d' ' -f1)" != "$DUCKDB_SHA256" ]; then
  say "fetching libduckdb.so ($DUCKDB_NPM)"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$DUCKDB_NPM" >/dev/null && tar xzf ./*.tgz)
  got=$(sha256sum "$tmp/package/libduckdb.so" | cut -d' ' -f1)
  if [ "$got" != "$DUCKDB_SHA256" ]; then
    say "libduckdb.so checksum mismatch: got $got, expected $DUCKDB_SHA256"
    exit 1
  fi
  mkdir -p .deps/duckdb
  mv "$tmp/package/libduckdb.so" .deps/duckdb/libduckdb.so
  rm -rf "$tmp"
fi

# --- real NIfTI test files -----------------------------------------------------
DATA=tests/data/external
if [ ! -f "$DATA/.complete" ]; then
  say "extracting test images from the nilearn and nibabel wheels"
  tmp=$(mktemp -d)
  .venv/bin/pip download --quiet --no-deps -d "$tmp" \
    "nilearn==$NILEARN_VERSION" "nibabel==$NIBABEL_VERSION"
  mkdir -p "$DATA"
  .venv/bin/python - "$tmp" "$DATA" <<'PY'
import glob, os, sys, zipfile
src, dst = sys.argv[1], sys.argv[2]
wanted = {
    "nilearn": ["mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
                "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
                "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"],
    "nibabel": ["anatomical.nii", "example4d.nii.gz", "example_nifti2.nii.gz",
                "functional.nii", "reoriented_anat_moved.nii",
                "resampled_anat_moved.nii", "standard.nii.gz"],
}
for pkg, names in wanted.items():
    (wheel,) = glob.glob(os.path.join(src, pkg + "-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        members = {os.path.basename(m): m for m in z.namelist()}
        for n in names:
            with z.open(members[n]) as f, open(os.path.join(dst, n), "wb") as out:
                out.write(f.read())
PY
  rm -rf "$tmp"
  touch "$DATA/.complete"
fi

# --- build ---------------------------------------------------------------------
say "building (release)"
cargo build --release --locked --bins
say "ready: $ROOT/target/release/cdwqc"
