#!/usr/bin/env bash
# The main job: sets up what is missing, builds, then indexes a small warehouse of
# real brain images (with a few broken files, as real warehouses have) into a fresh
# store under demo/ and answers the questions a data manager asks first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh

CDWQC=target/release/cdwqc
DEMO=demo
DB=$DEMO/cdwqc.duckdb
W=$DEMO/warehouse
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

rm -rf "$DEMO"
mkdir -p "$W"
step "building a small BIDS warehouse from the real test images in $W"
X=tests/data/external
put() { mkdir -p "$W/$(dirname "$2")"; cp "$X/$1" "$W/$2"; }
put mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz sub-001/ses-01/anat/sub-001_ses-01_T1w.nii.gz
put mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz sub-001/ses-01/anat/sub-001_ses-01_acq-gm_FLAIR.nii.gz
put anatomical.nii sub-002/ses-01/anat/sub-002_ses-01_T1w.nii
put example4d.nii.gz sub-002/ses-01/func/sub-002_ses-01_task-rest_bold.nii.gz
put example_nifti2.nii.gz sub-003/ses-01/anat/sub-003_ses-01_run-01_FLAIR.nii.gz
put reoriented_anat_moved.nii sub-003/ses-01/anat/sub-003_ses-01_run-02_FLAIR.nii
printf '{"Manufacturer": "Siemens", "ManufacturersModelName": "Prisma", "MagneticFieldStrength": 3, "MRAcquisitionType": "3D", "SeriesDescription": "t1_mprage_sag"}\n' \
  > "$W/sub-001/ses-01/anat/sub-001_ses-01_T1w.json"
printf '{"Manufacturer": "GE", "MagneticFieldStrength": 1.5, "MRAcquisitionType": "2D", "SeriesDescription": "AX FLAIR"}\n' \
  > "$W/sub-003/ses-01/anat/sub-003_ses-01_run-01_FLAIR.json"
# What real warehouses also hold: an interrupted transfer and a mislabelled file.
head -c 200000 "$X/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz" > "$W/sub-004_T1w.nii.gz"
echo "DICOM conversion failed" > "$W/sub-005_FLAIR.nii"

step "cdwqc init && cdwqc import"
"$CDWQC" --db "$DB" init
"$CDWQC" --db "$DB" import "$W"

step "importing again: nothing changed, nothing to do"
"$CDWQC" --db "$DB" import "$W"

step "images per sequence (sql/queries/images_per_sequence.sql)"
"$CDWQC" --db "$DB" sql -f sql/queries/images_per_sequence.sql --format table
step "images per scanner (sql/queries/images_per_scanner.sql)"
"$CDWQC" --db "$DB" sql -f sql/queries/images_per_scanner.sql --format table
step "geometry (sql/queries/image_geometry.sql)"
"$CDWQC" --db "$DB" sql -f sql/queries/image_geometry.sql --format table
step "import failures (sql/queries/import_failures.sql)"
"$CDWQC" --db "$DB" sql -f sql/queries/import_failures.sql --format table

step "done"
echo "The store is $DB: explore it with"
echo "  $CDWQC --db $DB sql \"select subject, suffix, orientation, dim_x, dim_y, dim_z from images\""
