"""Header indexing speed: `cdwqc inspect --json` against nibabel on the same files,
in the same run.

Makes N copies of the real test files (a mix of .nii and .nii.gz, NIfTI-1 and -2),
then times reading every header and deriving shape, voxel sizes, datatype and axis
codes: cdwqc (all cores, and one thread), nibabel in a fresh interpreter (what a
script pays) and nibabel in-process (import cost excluded). Best of 3 runs each.

    .venv/bin/python scripts/bench_headers.py [N_FILES]
"""
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

root = pathlib.Path(__file__).resolve().parent.parent
binary = root / "target" / "release" / "cdwqc"
sources = sorted((root / "tests" / "data" / "external").glob("*.nii*"))
n_files = int(sys.argv[1]) if len(sys.argv) > 1 else 3000

NIBABEL_SCRIPT = """
import sys, pathlib, nibabel as nib
for p in sorted(pathlib.Path(sys.argv[1]).rglob('*.nii*')):
    img = nib.load(p)
    h = img.header
    facts = (img.shape, h.get_zooms()[:3], h.get_data_dtype().name, nib.aff2axcodes(img.affine))
"""


def best_of(runs, fn):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    if not binary.exists() or not sources:
        sys.exit("run scripts/setup.sh first")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        for i in range(n_files):
            src = sources[i % len(sources)]
            sub = tmp / f"sub-{i:05d}" / "anat"
            sub.mkdir(parents=True)
            shutil.copy(src, sub / f"sub-{i:05d}_{src.name}")
        env1 = dict(os.environ, RAYON_NUM_THREADS="1")
        quiet = dict(stdout=subprocess.DEVNULL, check=True)
        # Warm the page cache so every contender reads from memory.
        subprocess.run([str(binary), "inspect", "--json", str(tmp)], **quiet)
        t_cdwqc = best_of(3, lambda: subprocess.run([str(binary), "inspect", "--json", str(tmp)], **quiet))
        t_cdwqc1 = best_of(3, lambda: subprocess.run([str(binary), "inspect", "--json", str(tmp)], env=env1, **quiet))
        t_nib_cmd = best_of(3, lambda: subprocess.run([sys.executable, "-c", NIBABEL_SCRIPT, str(tmp)], **quiet))
        import nibabel as nib

        def nibabel_in_process():
            for p in sorted(tmp.rglob("*.nii*")):
                img = nib.load(p)
                h = img.header
                (img.shape, h.get_zooms()[:3], h.get_data_dtype().name, nib.aff2axcodes(img.affine))

        t_nib = best_of(3, nibabel_in_process)
    print(f"{n_files} files, {os.cpu_count()} cores, best of 3")
    print(f"  cdwqc inspect (all cores)       {t_cdwqc:7.3f} s  {n_files / t_cdwqc:8.0f} files/s")
    print(f"  cdwqc inspect (1 thread)        {t_cdwqc1:7.3f} s  {n_files / t_cdwqc1:8.0f} files/s")
    print(f"  nibabel, fresh interpreter      {t_nib_cmd:7.3f} s  {n_files / t_nib_cmd:8.0f} files/s")
    print(f"  nibabel, in-process             {t_nib:7.3f} s  {n_files / t_nib:8.0f} files/s")
    print(f"ratio nibabel (fresh) / cdwqc (all cores): {t_nib_cmd / t_cdwqc:.1f}x")
    print(f"ratio nibabel (in-process) / cdwqc (1 thread): {t_nib / t_cdwqc1:.1f}x")


if __name__ == "__main__":
    main()
