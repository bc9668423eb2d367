"""Warehouse speed: cdwqc against its previous build, and against nibabel + scipy, side by
side in one run, as ratios.

1. Import (`import`): N small files (8x8x8 int16, gzip, one per subject) and the 1 mm
   FLAIR and T1w volumes of `cdwqc synth --grid clinical`, each imported into a fresh
   store by the reference binary and by this tree's binary, alternately (who goes first
   swaps every repetition). Wall time from process start to exit, and the import's own
   time (`seconds` in the JSON summary, which leaves out process start-up: loading
   libtorch and opening the store). Both stores must hold the same rows and previews.
2. Agreement report (`report`): a store of --images images rated by 5 raters (about 80%
   of the cells rated, so about 800,000 ratings in force for 200,000 images, seeded SQL),
   `cdwqc report agreement --json` by both binaries, alternately (wall and CPU time);
   the two JSON documents must be identical but for Dawid-Skene's numbers, which may
   differ by rounding (RELIABILITY_TOLERANCE), and both fits are compared with the same
   fit in long double.
3. Preprocessing (`preprocess`): the synthetic 1 mm FLAIR volumes through
   `bench_preprocess` (read, gunzip, decode; today's preprocessing and the previous
   implementation, with the largest difference between their tensors) and through
   nibabel + scipy (scripts/nibabel_preprocess.py: load, resample, clip, min-max), the
   tensors compared (correlation).
4. Gunzip (`gunzip`): whole-buffer inflation of real 1 mm volumes (the MNI ICBM152 T1 and
   grey-matter maps in tests/data/external, when present) and the synthetic 1 mm FLAIR
   volumes by flate2 + zlib-rs, miniz_oxide, libdeflater and the NIfTI reader's own
   `decompress`, through `bench_gunzip` (same bytes checked).
5. Inference (`infer`): a synthetic 1 mm warehouse (--clinical FLAIR and T1w, 3 raters),
   one epoch of `train --preset cpu-small`, then `bench_infer`: `run_inference` as
   `cdwqc infer` runs it, cold (empty preprocessing cache) and warm, against the forward
   pass alone on the same tensors, in one process, as throughput ratios.

6. Process start (`start`): `cdwqc --version`, `cdwqc sql 'select 1'` and `cdwqc raters
   list` on an empty store, by both binaries alternately, 20 runs each (wall time,
   medians and ranges): what every command pays before its work.

7. Inference with a shipped model (`shipped`): the synthetic 1 mm FLAIR volumes predicted
   cold by `cdwqc infer --model cdwqc-flair-usable` (bias correction, affine registration
   to MNI, anti-aliasing, 3 mm grid, the network and its IQM forest), the reference binary
   and this tree's alternately, each in its own folder with its preprocessing cache
   emptied first. Wall and CPU time from process start to exit, per volume; both must
   store the same predictions, bit for bit.

The reference binary is --reference BIN, or built from --reference-rev REV (default
`main`) in a git worktree under target/bench-reference (the first build compiles the
dependencies once). Medians of --repeat repetitions; `uptime`'s load average is printed
because the machine may be shared.

    .venv/bin/python scripts/bench_warehouse.py [--only import,report,preprocess,gunzip,infer,start,shipped]
        [--reference BIN | --reference-rev main] [--files 1101] [--clinical 6]
        [--images 200000] [--volumes DIR] [--repeat 3] [--keep] [--no-build]
"""
import argparse
import csv
import io
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

root = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

BUILD_ENV = {
    "LIBTORCH": str(root / ".deps" / "libtorch"),
    "DUCKDB_LIB_DIR": str(root / ".deps" / "duckdb"),
}

RATINGS_FIXTURE = """
INSERT INTO raters (name) SELECT unnest(['ann', 'bob', 'cat', 'dan', 'eve']);
INSERT INTO images (path, root, rel_path, status, suffix, file_size, mtime_ns,
                    manufacturer, field_strength)
SELECT '/w/sub-' || i || '_FLAIR.nii.gz', '/w', 'sub-' || i || '_FLAIR.nii.gz', 'ok', 'FLAIR',
       1, 0, ['Siemens', 'GE MEDICAL SYSTEMS', 'Philips'][1 + (hash(i, 'm') % 3)::BIGINT],
       [1.5, 3.0][1 + (hash(i, 'f') % 2)::BIGINT]
FROM range({images}) t(i);
INSERT INTO ratings (image_id, rater, usable, motion, contrast, noise, gado,
                     protocol_version, source)
SELECT i.image_id, r.name, hash(i.image_id, r.name, 'u') % 10 <> 0,
       (hash(i.image_id, r.name, 'm') % 3)::TINYINT, (hash(i.image_id, r.name, 'c') % 3)::TINYINT,
       (hash(i.image_id, r.name, 'n') % 3)::TINYINT, hash(i.image_id, r.name, 'g') % 2 = 0,
       '1', 'bench'
FROM images i CROSS JOIN raters r
WHERE hash(i.image_id, r.name, 'keep') % 5 <> 0;
SELECT count(*) AS ratings_in_force FROM rater_labels;
"""

# Everything an import stores but its times, to check both binaries stored the same.
STORED = ("SELECT path, status, error, warnings, subject, suffix, file_size, sha256, dim_x, dim_y, "
          "dim_z, datatype, orientation, affine, intensity_mean, intensity_p99, "
          "(SELECT count(*) FROM previews p WHERE p.image_id = i.image_id) AS previews, "
          "(SELECT string_agg(md5(png::VARCHAR), ',' ORDER BY plane) FROM previews p "
          "WHERE p.image_id = i.image_id) AS png "
          "FROM images i ORDER BY path")


def same_rows(reference_csv, current_csv):
    """Whether two stores' STORED rows agree: every column exactly, but the mean intensity
    within 1e-9 relative: the intensity summary now sums in lanes, so against a build from
    before, the mean of an image not stored as integers moves in its last digits."""
    reference = list(csv.DictReader(io.StringIO(reference_csv)))
    current = list(csv.DictReader(io.StringIO(current_csv)))
    if len(reference) != len(current):
        return False
    for a, b in zip(reference, current):
        for column in a:
            if column == "intensity_mean" and a[column] and b[column]:
                x, y = float(a[column]), float(b[column])
                if abs(x - y) > 1e-9 * max(abs(x), abs(y), 1.0):
                    return False
            elif a[column] != b.get(column):
                return False
    return True


def run(command, cwd=None, env=None):
    done = subprocess.run([str(c) for c in command], cwd=cwd, text=True, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed (exit {done.returncode}):\n"
                 f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def cargo_env():
    return dict(os.environ, **{k: v for k, v in BUILD_ENV.items() if pathlib.Path(v).exists()})


def build_current(examples):
    run(["cargo", "build", "--release", "--bins"], cwd=root, env=cargo_env())
    for example in examples:
        run(["cargo", "build", "--release", "--example", example], cwd=root, env=cargo_env())
    return root / "target" / "release" / "cdwqc"


def build_reference(rev):
    base = root / "target" / "bench-reference"
    tree = base / "tree"
    if tree.exists():
        run(["git", "-C", tree, "checkout", "--quiet", "--detach", rev])
    else:
        base.mkdir(parents=True, exist_ok=True)
        run(["git", "-C", root, "worktree", "add", "--quiet", "--detach", tree, rev])
    print(f"building the reference ({rev}, {run(['git', '-C', tree, 'rev-parse', '--short', 'HEAD']).strip()}) "
          f"in {tree}")
    run(["cargo", "build", "--release", "--bins", "--target-dir", base / "target"],
        cwd=tree, env=cargo_env())
    return base / "target" / "release" / "cdwqc"


def load_average():
    return os.getloadavg()


def spread(values):
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def small_warehouse(folder, n):
    """n NIfTI-1 files, 8x8x8 int16, gzip, written directly (no nibabel needed)."""
    import gzip
    import struct

    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(n):
        anat = folder / f"sub-{i:05d}" / "anat"
        anat.mkdir(parents=True)
        header = bytearray(348)
        struct.pack_into("<i", header, 0, 348)
        struct.pack_into("<8h", header, 40, 3, 8, 8, 8, 1, 1, 1, 1)
        struct.pack_into("<hh", header, 70, 4, 16)  # int16
        struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
        struct.pack_into("<f", header, 108, 352)  # vox_offset
        struct.pack_into("<ff", header, 112, 1, 0)  # scl_slope, scl_inter
        struct.pack_into("<h", header, 254, 1)  # sform_code
        for row, values in enumerate(([1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0])):
            struct.pack_into("<4f", header, 280 + 16 * row, *values)
        header[344:348] = b"n+1\0"
        data = rng.integers(0, 1000, (8, 8, 8), dtype="<i2").tobytes(order="F")
        with gzip.open(anat / f"sub-{i:05d}_T1w.nii.gz", "wb") as f:
            f.write(bytes(header) + b"\0" * 4 + data)


def time_import(binary, folder, store):
    for stale in (store, pathlib.Path(f"{store}.wal")):
        if stale.exists():
            stale.unlink()
    run([binary, "--db", store, "init"])
    started = time.perf_counter()
    summary = json.loads(run([binary, "--db", store, "import", folder, "--json"]))
    wall = time.perf_counter() - started
    return wall, summary["seconds"], summary


def import_bench(args, reference, current, work):
    small = work / "small"
    small_warehouse(small, args.files)
    clinical = work / "clinical"
    run([current, "synth", "--out", clinical, "--t1", args.clinical, "--flair", args.clinical,
         "--other", 0, "--raters", 1, "--grid", "clinical", "--seed", 1], cwd=work)
    rows = []
    for label, folder in (("small (8x8x8 int16, gzip)", small), ("1 mm (synth clinical, gzip)", clinical)):
        times = {"reference": [], "current": []}
        summaries = {}
        for repetition in range(args.repeat):
            order = ["reference", "current"] if repetition % 2 == 0 else ["current", "reference"]
            for side in order:
                binary = reference if side == "reference" else current
                store = work / f"{side}.duckdb"
                wall, seconds, summary = time_import(binary, folder, store)
                times[side].append((wall, seconds))
                summaries[side] = summary
        found = summaries["current"]["found"]
        assert summaries["reference"]["found"] == found
        same = same_rows(run([reference, "--db", work / "reference.duckdb", "sql", "--format", "csv", STORED]),
                         run([current, "--db", work / "current.duckdb", "sql", "--format", "csv", STORED]))
        if not same:
            sys.exit(f"{label}: the two binaries stored different rows or previews")
        rows.append((label, found, times))
    print(f"\nImport into a fresh store, medians of {args.repeat} (load average {load_average()[0]:.1f}):")
    print("\n| files | n | reference files/s (wall; import) | current files/s (wall; import) "
          "| current / reference, wall | current / reference, import |")
    print("|---|---|---|---|---|---|")
    for label, n, times in rows:
        ref_wall = [w for w, _ in times["reference"]]
        ref_import = [s for _, s in times["reference"]]
        cur_wall = [w for w, _ in times["current"]]
        cur_import = [s for _, s in times["current"]]
        print(f"| {label} | {n} | {n / statistics.median(ref_wall):,.0f}; "
              f"{n / statistics.median(ref_import):,.0f} | {n / statistics.median(cur_wall):,.0f}; "
              f"{n / statistics.median(cur_import):,.0f} | "
              f"{spread([r / c for r, c in zip(ref_wall, cur_wall)])} | "
              f"{spread([r / c for r, c in zip(ref_import, cur_import)])} |")
    print("(both stores hold the same rows and previews)")


def children_cpu():
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# Dawid-Skene's EM (the `reliability` of each task) sums over distinct rating rows since
# the report got under a second; the previous build summed rating by rating, whose
# rounding left its numbers up to about 2e-12 from an extended-precision fit. Everything
# else in the two reports must be identical.
RELIABILITY_TOLERANCE = 1e-11


def compare_reports(reference, current):
    """(first difference's path or None, [largest |difference| of Dawid-Skene's numbers, its path])."""
    largest = [0.0, ""]

    def first_difference(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
            return next((d for k in a if (d := first_difference(a[k], b[k], f"{path}.{k}"))), None)
        if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            return next((d for i, (x, y) in enumerate(zip(a, b))
                         if (d := first_difference(x, y, f"{path}[{i}]"))), None)
        if (isinstance(a, float) and isinstance(b, float) and ".reliability." in path
                and abs(a - b) <= RELIABILITY_TOLERANCE):
            if abs(a - b) > largest[0]:
                largest[:] = [abs(a - b), path]
            return None
        return None if a == b and type(a) is type(b) else path

    return first_difference(json.loads(reference), json.loads(current), ""), largest


def extended_precision_fits(binary, store):
    """Dawid-Skene on the store's labels in force, in numpy's long double (64-bit
    mantissa) over the distinct rating rows, crowd-kit's steps as src/metrics/
    dawid_skene.rs takes them: per task (iterations, final loss, priors)."""
    import collections
    import csv
    import io

    import numpy as np

    tasks = (("usable_label", ["usable", "reject"]), ("quality_label", ["good", "medium", "bad"]),
             ("gado_label", ["no_gado", "gado"]))
    # Images with the same labels from the same raters, counted in SQL (a few hundred rows).
    query = " UNION ALL ".join(
        f"SELECT '{field}' AS task, labels, count(*) AS images FROM (SELECT image_id, "
        f"string_agg(rater || '=' || {field}, '|' ORDER BY rater) AS labels FROM rater_labels "
        f"WHERE {field} IS NOT NULL GROUP BY image_id) GROUP BY ALL" for field, _ in tasks)
    rows = list(csv.DictReader(io.StringIO(run([binary, "--db", store, "sql", "--format", "csv", query]))))
    raters = sorted({pair.split("=")[0] for r in rows for pair in r["labels"].split("|")})
    column = {name: i for i, name in enumerate(raters)}
    L, floor = np.longdouble, np.longdouble(1e-10)
    out = []
    for field, categories in tasks:
        counts = collections.Counter()
        for r in rows:
            if r["task"] == field:
                pattern = [None] * len(raters)
                for pair in r["labels"].split("|"):
                    rater, label = pair.split("=")
                    pattern[column[rater]] = categories.index(label)
                counts[tuple(pattern)] += int(r["images"])
        patterns = list(counts)
        weights = np.array([counts[p] for p in patterns], dtype=L)
        k, n_raters = len(categories), len(raters)
        # Every rating of every pattern: (pattern, rater, given class).
        triples = [(i, r, c) for i, p in enumerate(patterns) for r, c in enumerate(p) if c is not None]
        at, by, given = (np.array(x) for x in zip(*triples))
        n_ratings = weights[at].sum()
        gave = np.zeros((n_raters, k), bool)
        gave[by, given] = True
        post = np.zeros((len(patterns), k), dtype=L)
        np.add.at(post, (at, given), 1)
        post /= post.sum(axis=1, keepdims=True)

        def m_step(post):
            errors = np.zeros((n_raters, k, k), dtype=L)  # [rater, given, true]
            np.add.at(errors, (by, given), weights[at, None] * post[at])
            errors = np.where(gave[:, :, None], np.maximum(errors, floor), errors)
            total = errors.sum(axis=1, keepdims=True)
            return np.where(total > 0, errors / np.where(total > 0, total, 1), errors)

        priors = (weights[:, None] * post).sum(axis=0) / weights.sum()
        errors = m_step(post)
        loss, history = -np.inf, []
        for _ in range(100):
            with np.errstate(divide="ignore"):
                log_errors = np.log(errors)
            log_post = np.tile(np.log(np.maximum(priors, floor)), (len(patterns), 1))
            np.add.at(log_post, at, log_errors[by, given])
            post = np.exp(log_post - log_post.max(axis=1, keepdims=True))
            post /= post.sum(axis=1, keepdims=True)
            priors = (weights[:, None] * post).sum(axis=0) / weights.sum()
            errors = m_step(post)
            # Entries a rater gave are floored above 0: no log of 0 is used here.
            with np.errstate(divide="ignore"):
                log_errors = np.log(errors)
            log_prior = np.log(np.maximum(priors, floor))
            joint = (weights[at, None] * post[at] * (log_errors[by, given] + log_prior)).sum()
            q = np.maximum(post, floor)
            new_loss = (joint + (weights[:, None] * (-q * np.log(q))).sum()) / n_ratings
            history.append(new_loss)
            if new_loss - loss < 1e-5:
                break
            loss = new_loss
        out.append((len(history), history[-1], np.maximum(priors, floor)))
    return out


def dawid_skene_precision(binary, store, reports):
    """How far each report's Dawid-Skene numbers lie from the extended-precision fit."""
    import numpy as np

    fits = extended_precision_fits(binary, store)
    print("\nDawid-Skene against the same fit in long double (64-bit mantissa), |difference|:")
    print("\n| task | iterations | final loss, reference | final loss, current | priors, reference "
          "| priors, current |")
    print("|---|---|---|---|---|---|")
    docs = {side: json.loads(text) for side, text in reports.items()}
    for t, (iterations, loss, priors) in enumerate(fits):
        got = {side: d["tasks"][t]["reliability"] for side, d in docs.items()}
        cells = []
        for key in ("final_loss", "priors"):
            for side in ("reference", "current"):
                if key == "final_loss":
                    cells.append(float(abs(np.longdouble(got[side][key]) - loss)))
                else:
                    cells.append(max(float(abs(np.longdouble(v) - p))
                                     for v, p in zip(got[side][key], priors)))
        same = all(g["iterations"] == iterations for g in got.values())
        print(f"| {docs['current']['tasks'][t]['task']} | {iterations}{'' if same else ' (differs)'} | "
              + " | ".join(f"{c:.2g}" for c in cells) + " |")


def report_bench(args, reference, current, work):
    store = work / "ratings.duckdb"
    run([current, "--db", store, "init"])
    fixture = work / "fixture.sql"
    fixture.write_text(RATINGS_FIXTURE.format(images=args.images))
    ratings = run([current, "--db", store, "sql", "--write", "--format", "csv", "-f", fixture])
    ratings = int(ratings.strip().splitlines()[-1])
    times = {"reference": [], "current": [], "start": []}
    cpu = {"reference": [], "current": [], "start": []}
    outputs = {}

    def timed(side, command):
        cpu_before, started = children_cpu(), time.perf_counter()
        out = run(command)
        times[side].append(time.perf_counter() - started)
        cpu[side].append(children_cpu() - cpu_before)
        return out

    for repetition in range(args.repeat):
        order = ["reference", "current"] if repetition % 2 == 0 else ["current", "reference"]
        for side in order:
            binary = reference if side == "reference" else current
            outputs[side] = timed(side, [binary, "--db", store, "report", "agreement", "--json"])
        timed("start", [current, "--db", store, "sql", "SELECT 1"])
    difference, largest = compare_reports(outputs["reference"], outputs["current"])
    if difference:
        (work / "report-reference.json").write_text(outputs["reference"])
        (work / "report-current.json").write_text(outputs["current"])
        sys.exit(f"the agreement reports differ at {difference}: see {work}/report-*.json (use --keep)")
    med = {side: statistics.median(values) for side, values in times.items()}
    med_cpu = {side: statistics.median(values) for side, values in cpu.items()}
    print(f"\n`cdwqc report agreement --json`, {args.images:,} images x 5 raters, {ratings:,} ratings "
          f"in force, medians of {args.repeat} (load average {load_average()[0]:.1f}):")
    print("\n| | reference | current | reference / current | `cdwqc sql 'SELECT 1'` (process start) |")
    print("|---|---|---|---|---|")
    print(f"| wall s | {med['reference']:.2f} | {med['current']:.2f} | "
          f"{spread([r / c for r, c in zip(times['reference'], times['current'])])} | {med['start']:.2f} |")
    print(f"| CPU s (user + sys) | {med_cpu['reference']:.2f} | {med_cpu['current']:.2f} | "
          f"{spread([r / c for r, c in zip(cpu['reference'], cpu['current'])])} | {med_cpu['start']:.2f} |")
    if largest[0] > 0:
        print(f"(the two JSON reports are identical but for Dawid-Skene's numbers, at most "
              f"{largest[0]:.2g} apart, at {largest[1]})")
    else:
        print("(the two JSON reports are identical)")
    dawid_skene_precision(current, store, outputs)


START_COMMANDS = [["--version"], ["sql", "select 1"], ["raters", "list"]]
START_RUNS = 20


def start_bench(reference, current, work):
    store = work / "start.duckdb"
    run([current, "--db", store, "init"])
    print(f"\nProcess start, {START_RUNS} runs of each command, the two binaries alternately "
          f"(load average {load_average()[0]:.1f}):")
    print("\n| command | reference ms, median (range) | current ms, median (range) | reference / current |")
    print("|---|---|---|---|")
    for command in START_COMMANDS:
        times = {"reference": [], "current": []}
        for _ in range(START_RUNS):
            for side, binary in (("reference", reference), ("current", current)):
                full = [binary] + (command if command[0].startswith("-") else ["--db", store] + command)
                started = time.perf_counter()
                run(full)
                times[side].append(1000 * (time.perf_counter() - started))
        cells = [f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" for v in times.values()]
        ratio = statistics.median(times["reference"]) / statistics.median(times["current"])
        print(f"| `cdwqc {' '.join(command)}` | {cells[0]} | {cells[1]} | {ratio:.1f}x |")


def preprocess_bench(args, current, work):
    import numpy as np
    from nibabel_preprocess import nibabel_preprocess

    files = sorted(clinical_volumes(args, current, work).rglob("*FLAIR.nii.gz"))
    example = root / "target" / "release" / "examples" / "bench_preprocess"
    tensors = work / "tensors"
    grid, spacing = [80, 96, 80], 2.0
    ours, python = [], []
    for repetition in range(args.repeat):
        # Alternate which side goes first.
        def rust():
            ours.append(json.loads(run([example, "--repeat", 1, "--out", tensors, *files])))

        def nib():
            started = time.perf_counter()
            outputs = [nibabel_preprocess(str(f), grid, spacing) for f in files]
            python.append((time.perf_counter() - started, outputs))

        for step in ((rust, nib) if repetition % 2 == 0 else (nib, rust)):
            step()
    n = len(files)
    med = {k: statistics.median([o["median_seconds"][k] for o in ours]) * 1000
           for k in ours[0]["median_seconds"]}
    load = med["read"] + med["gunzip"] + med["decode"]
    nib_ms = [t / n * 1000 for t, _ in python]
    correlations, mean_abs = [], []
    for f, out in zip(files, python[0][1]):
        stem = f.name.removesuffix(".gz").removesuffix(".nii")
        mine = np.fromfile(tensors / f"{stem}.f32", dtype="<f4").reshape(out.shape)
        correlations.append(float(np.corrcoef(mine.ravel(), out.ravel())[0, 1]))
        mean_abs.append(float(np.abs(mine - out).mean()))
    diff = max(o["max_abs_difference_to_previous"] for o in ours)
    print(f"\nPreprocessing, {n} FLAIR volumes {ours[0]['dims'][0]} (1 mm, int16, gzip) to {grid} at "
          f"{spacing:g} mm, ms per volume, medians of {args.repeat} (load average {load_average()[0]:.1f}):")
    print("\n| read | gunzip | decode | preprocess, previous (wall; CPU) | preprocess, current (wall; CPU) "
          "| previous / current (wall; CPU) | nibabel + scipy, load to tensor | "
          "nibabel + scipy / cdwqc, load to tensor |")
    print("|---|---|---|---|---|---|---|---|")
    per_rep = [(t / n * 1000) / ((o["median_seconds"]["read"] + o["median_seconds"]["gunzip"]
                                  + o["median_seconds"]["decode"] + o["median_seconds"]["preprocess"]) * 1000)
               for (t, _), o in zip(python, ours)]
    print(f"| {med['read']:.1f} | {med['gunzip']:.1f} | {med['decode']:.1f} | "
          f"{med['preprocess_previous']:.1f}; {med['preprocess_previous_cpu']:.1f} | "
          f"{med['preprocess']:.1f}; {med['preprocess_cpu']:.1f} | "
          f"{spread([o['previous_over_current'] for o in ours])}; "
          f"{spread([o['previous_over_current_cpu'] for o in ours])} | {statistics.median(nib_ms):.0f} | "
          f"{spread(per_rep)} |")
    print(f"largest |current - previous| over all voxels: {diff:.3g}; against nibabel + scipy: "
          f"correlation at least {min(correlations):.4f}, mean |difference| at most {max(mean_abs):.4f}; "
          f"cdwqc load + preprocess {load + med['preprocess']:.0f} ms per volume")


def clinical_volumes(args, current, work):
    clinical = args.volumes or work / "clinical"
    if not clinical.exists():
        run([current, "synth", "--out", clinical, "--t1", args.clinical, "--flair", args.clinical,
             "--other", 0, "--raters", 3, "--grid", "clinical", "--seed", 1], cwd=work)
    return clinical


def gunzip_bench(args, current, work):
    real = [root / "tests" / "data" / "external" / name for name in
            ("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
             "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")]
    files = [f for f in real if f.exists()]
    files += sorted(clinical_volumes(args, current, work).rglob("*FLAIR.nii.gz"))
    example = root / "target" / "release" / "examples" / "bench_gunzip"
    report = json.loads(run([example, "--repeat", max(args.repeat, 5), *files]))
    print(f"\nwhole-buffer gunzip of {report['files']} 1 mm volumes ({len([f for f in real if f.exists()])} "
          f"real MNI maps, the rest synthetic FLAIR; {report['mean_compressed_mb']:.1f} MB -> "
          f"{report['mean_inflated_mb']:.1f} MB on average), {report['repeat']} repetitions, the order "
          f"rotating (load average {load_average()[0]:.1f}); thread CPU time:")
    print("\n| decoder | ms per file (median) | speed-up over flate2 + zlib-rs (median; min-max) |")
    print("|---|---|---|")
    for name, seconds in report["cpu_seconds_median"].items():
        r = report["speedup_over_flate2_zlib_rs"][name]
        print(f"| {name} | {seconds * 1000:.1f} | {r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f}) |")


def infer_bench(args, current, work):
    clinical = clinical_volumes(args, current, work)
    folder = work / "infer"
    folder.mkdir()
    db = "store.duckdb"
    run([current, "--db", db, "init"], cwd=folder)
    run([current, "--db", db, "import", "--no-iqm", clinical], cwd=folder)
    for tsv in sorted(clinical.glob("derivatives/cdwqc-synth/ratings/rater?.tsv")):
        run([current, "--db", db, "ratings", "import", tsv, "--rater", tsv.stem], cwd=folder)
    run([current, "--db", db, "train", "--preset", "cpu-small", "--task", "usable", "--method",
         "ssda", "--epochs", 1, "--seed", 1, "--run", "bench"], cwd=folder)
    example = root / "target" / "release" / "examples" / "bench_infer"
    command = [example, "--db", db, "--run", "bench", "--repeat", args.repeat]
    if args.threads:
        command += ["--threads", args.threads]
    before = load_average()[0]
    report = json.loads(run(command, cwd=folder))
    after = load_average()[0]
    ms = report["ms_per_volume"]
    print(f"\ninference over {report['volumes']} 1 mm FLAIR volumes (cpu-small, 80x96x80), "
          f"{report['loaders']} loader(s) + {report['torch_threads']} libtorch thread(s), "
          f"{report['repeat']} repetitions (load average {before:.1f} before, {after:.1f} after):")
    print("\n| | ms per volume (median) |\n|---|---|")
    for name in ("cold", "warm", "forward", "forward_all"):
        print(f"| {name} | {ms[name]:.1f} |")
    print("\n| throughput ratio | median (min-max) |\n|---|---|")
    for key in ("cold_over_forward", "warm_over_forward", "cold_over_forward_all_threads",
                "warm_over_forward_all_threads"):
        r = report[f"throughput_{key}"]
        print(f"| {key.replace('_', ' ')} | {r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f}) |")
    if report["volumes"] < INFER_STEADY_VOLUMES:
        # Measured: 6 volumes gave cold 0.30x and warm 0.62x, 40 gave 0.45x and 0.87x,
        # 160 gave 0.55x and 0.98x on the same machine.
        print(f"\n(only {report['volumes']} volumes: starting the pipeline and loading the "
              f"model weigh on these ratios; --clinical {INFER_STEADY_VOLUMES} measures the "
              f"steady state, as the README's table does)")


# Volumes past which the inference ratios stop rising with the run's length.
INFER_STEADY_VOLUMES = 160

PREDICTIONS = ("SELECT i.rel_path, p.label, p.probabilities, p.error FROM predictions p "
               "JOIN images i USING (image_id) WHERE p.run_id = 'shipped' ORDER BY i.rel_path")


def shipped_bench(args, reference, current, work):
    clinical = clinical_volumes(args, current, work)
    model = root / "models" / "cdwqc-flair-usable"
    folders = {}
    for side, binary in (("reference", reference), ("current", current)):
        folder = work / f"shipped-{side}"
        (folder / "models").mkdir(parents=True)
        shutil.copytree(model, folder / "models" / model.name)
        run([binary, "--db", "store.duckdb", "init"], cwd=folder)
        run([binary, "--db", "store.duckdb", "import", "--no-iqm", clinical], cwd=folder)
        folders[side] = folder
    volumes = len(list(clinical.rglob("*FLAIR.nii.gz")))
    times = {"reference": [], "current": []}
    for repetition in range(args.repeat):
        order = ["reference", "current"] if repetition % 2 == 0 else ["current", "reference"]
        for side in order:
            binary = reference if side == "reference" else current
            folder = folders[side]
            shutil.rmtree(folder / "models" / "cache", ignore_errors=True)
            command = [binary, "--db", "store.duckdb", "infer", "--model", model.name, "--as", "shipped"]
            if args.threads:
                command += ["--threads", args.threads]
            cpu, started = children_cpu(), time.perf_counter()
            run(command, cwd=folder)
            times[side].append((time.perf_counter() - started, children_cpu() - cpu))
    stored = {side: run([binary, "--db", "store.duckdb", "sql", "--format", "csv", PREDICTIONS],
                        cwd=folders[side])
              for side, binary in (("reference", reference), ("current", current))}
    if stored["reference"] != stored["current"]:
        sys.exit("shipped: the two binaries stored different predictions")
    print(f"\ncold `cdwqc infer --model {model.name}` on {volumes} 1 mm FLAIR volumes, medians of "
          f"{args.repeat} (load average {load_average()[0]:.1f}); the same predictions, bit for bit:")
    print("\n| | reference ms per volume (wall; CPU) | current ms per volume (wall; CPU) "
          "| reference / current, wall | reference / current, CPU |")
    print("|---|---|---|---|---|")
    ref, cur = times["reference"], times["current"]
    med = lambda values: statistics.median(values) * 1000 / volumes  # noqa: E731
    print(f"| cold, process start to exit | {med([w for w, _ in ref]):.0f}; {med([c for _, c in ref]):.0f} "
          f"| {med([w for w, _ in cur]):.0f}; {med([c for _, c in cur]):.0f} "
          f"| {spread([r[0] / c[0] for r, c in zip(ref, cur)])} "
          f"| {spread([r[1] / c[1] for r, c in zip(ref, cur)])} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="import,report,preprocess")
    parser.add_argument("--reference", type=pathlib.Path, help="the previous cdwqc binary")
    parser.add_argument("--reference-rev", default="main")
    parser.add_argument("--files", type=int, default=1101)
    parser.add_argument("--clinical", type=int, default=6, help="1 mm FLAIR (and as many T1w) volumes")
    parser.add_argument("--images", type=int, default=200000)
    parser.add_argument("--volumes", type=pathlib.Path,
                        help="preprocess: the FLAIR .nii.gz under this folder instead of synthetic ones")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, help="infer: threads in all (default: the machine's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--no-build", action="store_true",
                        help="use target/release as it is (no cargo build)")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    if args.no_build:
        current = (root / "target" / "release" / "cdwqc").resolve()
    else:
        examples = {"preprocess": "bench_preprocess", "gunzip": "bench_gunzip",
                    "infer": "bench_infer"}
        current = build_current([e for p, e in examples.items() if p in parts]).resolve()
    reference = None
    if parts & {"import", "report", "start", "shipped"}:
        reference = (args.reference or build_reference(args.reference_rev)).resolve()
    print(f"current {current}\nreference {reference}\n{os.cpu_count()} cores; uptime: "
          f"{run(['uptime']).strip()}")
    work = pathlib.Path(tempfile.mkdtemp(prefix="bench-warehouse-"))
    try:
        if "import" in parts:
            import_bench(args, reference, current, work)
        if "report" in parts:
            report_bench(args, reference, current, work)
        if "start" in parts:
            start_bench(reference, current, work)
        if "preprocess" in parts:
            ensure_python_packages("scipy", "nibabel")
            preprocess_bench(args, current, work)
        if "gunzip" in parts:
            gunzip_bench(args, current, work)
        if "infer" in parts:
            infer_bench(args, current, work)
        if "shipped" in parts:
            shipped_bench(args, reference, current, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def ensure_python_packages(*names):
    """A fresh machine's venv may lack the reference's packages: install them once."""
    import importlib.util
    missing = [n for n in names if importlib.util.find_spec(n) is None]
    if missing:
        run([sys.executable, "-m", "pip", "install", "--quiet", *missing])


if __name__ == "__main__":
    main()
