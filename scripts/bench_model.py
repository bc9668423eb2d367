"""Conv5_FC3_SSDA speed: cdwqc (tch) against PyTorch on the same libtorch, in the same run,
and where the time of `cdwqc infer` goes, from .nii.gz files to stored predictions.

1. Compute (--skip-compute to leave out). Both sides build the same network (the parameter
   counts are checked and printed) and compute on the same volumes: this script writes
   batches x batch seeded random volumes on the preset grid to one raw float32 file, which
   PyTorch (here) and `bench_model serve` (the example, kept running in a child process)
   both read. Timed, per repetition and side:
     - training: one epoch of the N batches, each a step through the extractor (training
       mode), the source head and the domain head through gradient reversal, CE losses,
       backward and Adam;
     - inference: the N batches through the extractor and target head in eval mode under
       no_grad, softmax. PyTorch as it runs by default (eval mode) and with BatchNorm folded
       into the convolutions plus channels_last_3d; cdwqc in eval mode (the same work as
       PyTorch's default), folded, and folded + channels-last (what `cdwqc infer` runs on
       the CPU).
   One untimed warm-up pass each, then --repeat repetitions; in each, the two sides run one
   after the other (PyTorch first in even repetitions, cdwqc first in odd ones), so load
   from other processes on a shared machine falls on both. The table gives the medians and
   the median of the per-repetition ratios PyTorch time / cdwqc time (above 1: cdwqc is
   faster) with their min-max. Both sides use --threads threads (default 1).

2. End to end (--skip-e2e to leave out), in a temporary folder: `cdwqc synth` writes
   --e2e-images FLAIR and as many T1w images on the clinical 1 mm grid, `cdwqc init`,
   `import`, `ratings import`, a one-epoch `train --preset cpu-small`; then `cdwqc infer
   --threads 1` is timed from process start to exit, cold (models/cache emptied first, so
   every file is decoded and preprocessed) and warm (the cache filled by the cold run),
   alternately; `bench_model stages` times each stage alone, one file after the other
   (read, gunzip, decode, preprocess, forward, store write), and nibabel + scipy time the
   same load / reorient-resample / clip / min-max for the same files (alternating with
   `stages`); their output is compared with cdwqc's cached tensors.

Usage (the venv's Python; builds the example and the binary with cargo if needed):

    .venv/bin/python scripts/bench_model.py [--grid 80 96 80] [--batch 8] [--batches 4]
        [--repeat 5] [--threads 1] [--e2e-images 12] [--e2e-repeat 3]
        [--skip-compute] [--skip-train] [--skip-e2e] [--keep]

--e2e-images must be at least 8 (training needs two labelled FLAIR training images).

A minimal CPU torch install without the CUDA libraries gets stand-in libraries from
scripts/torch_cpu_stubs.py (in a temporary folder) and the script restarts itself with them.
"""
import argparse
import glob
import importlib.util
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


from torch_cpu_stubs import import_torch  # noqa: E402  (scripts/ is on sys.path)
from nibabel_preprocess import nibabel_preprocess  # noqa: E402


torch = import_torch()
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402


def build():
    """`cargo build --release --example bench_model --bins` (a no-op when up to
    date); returns the two executables cargo reports, wherever its target directory is."""
    command = ["cargo", "build", "--release", "--example", "bench_model", "--bins",
               "--message-format=json-render-diagnostics"]
    try:
        done = subprocess.run(command, cwd=root, stdout=subprocess.PIPE, text=True)
    except FileNotFoundError:
        sys.exit("cargo not found: install Rust (see README.md) to build the cdwqc side")
    if done.returncode != 0:
        sys.exit(f"`{' '.join(command[:8])}` failed (exit {done.returncode})")
    found = {}
    for line in done.stdout.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            found[message["target"]["name"]] = message["executable"]
    if "bench_model" not in found or "cdwqc" not in found:
        sys.exit(f"cargo did not report both executables: {found}")
    return found["bench_model"], found["cdwqc"]


# ---- the network in PyTorch -------------------------------------------------------------

def pooled(n):
    return (n + 1) // 2


class GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.alpha * grad, None


class PlainAdam:
    """Adam with L2 weight decay, as torch.optim.Adam(foreach=False) computes it."""

    def __init__(self, params, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.lr, self.wd, self.betas, self.eps = params, lr, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            g = p.grad + self.wd * p
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / (1 - b1 ** self.t))


def head(flat, k):
    return nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(flat, 1300), nn.ReLU(),
                         nn.Linear(1300, 50), nn.ReLU(), nn.Linear(50, k))


class Conv5FC3SSDA(nn.Module):
    def __init__(self, grid):
        super().__init__()
        layers, cin = [], 1
        for cout in [8, 16, 32, 64, 128]:
            layers += [nn.Conv3d(cin, cout, 3, padding=1), nn.BatchNorm3d(cout), nn.ReLU(),
                       nn.MaxPool3d(2, 2, ceil_mode=True)]
            cin = cout
        self.extractor = nn.Sequential(*layers)
        cells = 1
        for n in grid:
            for _ in range(5):
                n = pooled(n)
            cells *= n
        flat = 128 * cells
        self.source_head = head(flat, 2)
        self.target_head = head(flat, 2)
        self.domain_head = head(flat, 2)


def folded_channels_last(extractor):
    """The extractor with each BatchNorm folded into its convolution, in channels_last_3d."""
    layers, mods, i = [], list(extractor), 0
    with torch.no_grad():
        while i < len(mods):
            m = mods[i]
            if isinstance(m, nn.Conv3d) and i + 1 < len(mods) and isinstance(mods[i + 1], nn.BatchNorm3d):
                bn = mods[i + 1]
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv = nn.Conv3d(m.in_channels, m.out_channels, 3, padding=1)
                conv.weight.copy_(m.weight * scale.view(-1, 1, 1, 1, 1))
                conv.bias.copy_((m.bias - bn.running_mean) * scale + bn.bias)
                layers.append(conv)
                i += 2
            else:
                layers.append(m)
                i += 1
    return nn.Sequential(*layers).eval().to(memory_format=torch.channels_last_3d)


class PyTorchSide:
    def __init__(self, grid, batch, inputs):
        torch.manual_seed(0)
        self.net = Conv5FC3SSDA(grid)
        try:
            self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4, weight_decay=1e-4)
            self.optimizer = "torch.optim.Adam"
        except ImportError:
            # The minimal CPU install lacks sympy, which torch.optim imports through dynamo.
            self.opt = PlainAdam(list(self.net.parameters()), lr=1e-4, weight_decay=1e-4)
            self.optimizer = "PlainAdam (torch.optim unavailable: no sympy)"
        self.inputs = inputs
        self.labels = torch.arange(batch) % 2
        self.ce = nn.CrossEntropyLoss()

    def counts(self):
        parameters = sum(p.numel() for p in self.net.parameters())
        buffers = sum(b.numel() for name, b in self.net.named_buffers()
                      if not name.endswith("num_batches_tracked"))
        return parameters, buffers

    def step(self, x):
        self.net.train()
        f = self.net.extractor(x)
        loss = (self.ce(self.net.source_head(f), self.labels)
                + 0.1 * self.ce(self.net.domain_head(GradReverse.apply(f, 0.5)), self.labels))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()

    def infer(self, inputs, mode):
        self.net.eval()
        with torch.no_grad():
            if mode == "pytorch":
                extractor, convert = self.net.extractor, lambda x: x
            else:
                extractor = folded_channels_last(self.net.extractor)
                convert = lambda x: x.contiguous(memory_format=torch.channels_last_3d)  # noqa: E731
            return sum(self.net.target_head(extractor(convert(x))).softmax(-1).sum().item()
                       for x in inputs)

    def run(self, command):
        started = time.perf_counter()
        if command == "warmup":
            self.step(self.inputs[0])
            self.infer(self.inputs[:1], "pytorch")
            self.infer(self.inputs[:1], "pytorch-folded-cl")
        elif command == "train":
            for x in self.inputs:
                self.step(x)
        else:
            self.infer(self.inputs, command)
        return time.perf_counter() - started


class CdwqcSide:
    def __init__(self, executable, args):
        self.process = subprocess.Popen([executable, "serve"] + args, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.header = self.read()

    def read(self):
        line = self.process.stdout.readline()
        if not line:
            sys.exit(f"bench_model serve stopped (exit {self.process.wait()})")
        return json.loads(line)

    def run(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()["seconds"]

    def close(self):
        self.process.stdin.write("quit\n")
        self.process.stdin.flush()
        self.process.wait()


def spread(values, digits=2):
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})")


def compute_bench(args, bench_model, work):
    grid, batch, batches = args.grid, args.batch, args.batches
    torch.set_num_threads(args.threads)
    volume = grid[0] * grid[1] * grid[2]
    path = os.path.join(work, "volumes.f32")
    rng = np.random.default_rng(0)
    rng.random(batches * batch * volume, dtype=np.float32).astype("<f4").tofile(path)
    values = torch.from_numpy(np.fromfile(path, dtype="<f4"))
    inputs = list(values.view(batches, batch, 1, *grid).unbind(0))
    py = PyTorchSide(grid, batch, inputs)
    rs = CdwqcSide(bench_model, ["--grid", *map(str, grid), "--batch", str(batch),
                                 "--batches", str(batches), "--threads", str(args.threads),
                                 "--input", path])
    py_counts = py.counts()
    rs_counts = (rs.header["parameters"], rs.header["buffers"])
    print(f"grid {grid}, batch {batch}, {batches} batches ({batch * batches} volumes, the same "
          f"float32 values on both sides from {path}); threads: PyTorch "
          f"{torch.get_num_threads()}, cdwqc {rs.header['threads']}")
    print(f"parameters: PyTorch {py_counts[0]:,}, cdwqc {rs_counts[0]:,}; BatchNorm running "
          f"statistics: PyTorch {py_counts[1]:,}, cdwqc {rs_counts[1]:,}")
    print(f"PyTorch {torch.__version__}, optimizer {py.optimizer}")
    if py_counts != rs_counts:
        rs.close()
        sys.exit("the two networks differ")

    py_modes = ["pytorch", "pytorch-folded-cl"]
    rs_modes = ["infer", "infer-folded", "infer-folded-cl"]
    py.run("warmup")
    rs.run("warmup")
    train = [] if args.skip_train else ["train"]
    times = {key: [] for key in [f"train {side}" for side in ("py", "rs") if train]
             + py_modes + rs_modes}
    for repetition in range(args.repeat):
        sides = [("py", py, train, py_modes), ("rs", rs, train, rs_modes)]
        if repetition % 2:
            sides.reverse()
        for group in (2, 3):
            for name, side, train, modes in sides:
                for command in (train if group == 2 else modes):
                    key = f"train {name}" if command == "train" else command
                    times[key].append(side.run(command))
        print(f"  repetition {repetition + 1}/{args.repeat}: " + ", ".join(
            f"{key} {values[-1]:.2f} s" for key, values in times.items()), flush=True)
    rs.close()

    volumes = batch * batches
    rows = [
        ("training, one epoch", "train py", "train rs"),
        ("inference, eval mode on both sides", "pytorch", "infer"),
        ("inference, cdwqc BatchNorm folded", "pytorch", "infer-folded"),
        ("inference, cdwqc folded + channels-last (`cdwqc infer`)", "pytorch", "infer-folded-cl"),
        ("inference, both folded + channels-last", "pytorch-folded-cl", "infer-folded-cl"),
    ]
    print()
    print("| | PyTorch volumes/s | cdwqc volumes/s | PyTorch time / cdwqc time (median; min-max) |")
    print("|---|---|---|---|")
    summary = {}
    for label, py_key, rs_key in rows:
        if py_key not in times:
            continue
        ratios = [a / b for a, b in zip(times[py_key], times[rs_key])]
        summary[label] = ratios
        print(f"| {label} | {volumes / statistics.median(times[py_key]):.2f} | "
              f"{volumes / statistics.median(times[rs_key]):.2f} | {spread(ratios)} |")
    gain = [a / b for a, b in zip(times["infer"], times["infer-folded-cl"])]
    fold = [a / b for a, b in zip(times["infer"], times["infer-folded"])]
    print(f"\ncdwqc folded / eval mode speed-up: {spread(fold)}; folded + channels-last: "
          f"{spread(gain)} (medians over {args.repeat} repetitions)")
    return summary


# ---- end to end -------------------------------------------------------------------------

def run(command, cwd, quiet=True):
    done = subprocess.run(command, cwd=cwd, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed (exit {done.returncode}):\n{done.stdout}")
    if not quiet:
        print("  " + done.stdout.strip().splitlines()[-1])
    return done.stdout


def e2e_bench(args, bench_model, cdwqc, work):
    folder = os.path.join(work, "e2e")
    os.makedirs(folder)
    db = "store.duckdb"
    n = args.e2e_images
    print(f"\nend to end, in {folder}: synthesising {n} FLAIR + {n} T1w images (1 mm), "
          "import, ratings, one training epoch (cpu-small: 80x96x80 at 2 mm)")
    run([cdwqc, "synth", "--out", "w", "--t1", str(n), "--flair", str(n), "--other", "0",
         "--raters", "3", "--grid", "clinical", "--seed", "1"], folder)
    run([cdwqc, "--db", db, "init"], folder)
    run([cdwqc, "--db", db, "import", "w"], folder, quiet=False)
    for tsv in sorted(glob.glob(os.path.join(folder, "w/derivatives/cdwqc-synth/ratings/rater?.tsv"))):
        run([cdwqc, "--db", db, "ratings", "import", tsv, "--rater", pathlib.Path(tsv).stem], folder)
    run([cdwqc, "--db", db, "train", "--preset", "cpu-small", "--task", "usable", "--method", "ssda",
         "--epochs", "1", "--seed", "1", "--run", "bench", "--threads", str(max(args.threads, 2))],
        folder, quiet=False)

    infer = [cdwqc, "--db", db, "infer", "--run", "bench", "--sequence", "FLAIR", "--threads", "1"]
    cold, warm = [], []
    for repetition in range(args.e2e_repeat):
        shutil.rmtree(os.path.join(folder, "models", "cache"), ignore_errors=True)
        for label, into in (("cold", cold), ("warm", warm)):
            started = time.perf_counter()
            out = run(infer, folder)
            into.append(time.perf_counter() - started)
            print(f"  infer {label} {repetition + 1}: {into[-1]:.2f} s wall; {out.strip()}")

    stages, python = [], []
    report = None
    for repetition in range(args.e2e_repeat):
        report = json.loads(run([bench_model, "stages", "--db", db, "--run", "bench",
                                 "--threads", "1"], folder))
        stages.append(report["seconds"])
        started = time.perf_counter()
        outputs = [nibabel_preprocess(os.path.join(folder, f["path"]) if not os.path.isabs(f["path"])
                                      else f["path"], report["grid"], 2.0) for f in report["files"]]
        python.append(time.perf_counter() - started)
    volumes = report["volumes"]
    differences = []
    for f, out in zip(report["files"], outputs):
        cached = glob.glob(os.path.join(folder, "models", "cache", f"{f['sha256']}-cpu-small-*.f32"))
        if cached:
            ours = np.fromfile(cached[0], dtype="<f4", offset=20).reshape(out.shape)
            differences.append((float(np.abs(ours - out).mean()), float(np.corrcoef(ours.ravel(), out.ravel())[0, 1])))

    def ms(values):
        return 1000 * statistics.median(values) / volumes

    keys = ["store_open_and_list", "model_load", "read", "gunzip", "decode", "preprocess",
            "forward_folded", "forward_unfolded", "store_write"]
    print(f"\n{volumes} FLAIR volumes, {report['files'][0]['dims']} voxels (1 mm, int16, gzip) "
          f"to {report['grid']} at 2 mm; batch {report['batch']}; medians of {args.e2e_repeat} runs")
    print("\n| stage (`bench_model stages`, one file after the other, 1 thread) | ms per volume |")
    print("|---|---|")
    for key in keys:
        print(f"| {key} | {ms([s[key] for s in stages]):.1f} |")
    decode_pre = [s["read"] + s["gunzip"] + s["decode"] + s["preprocess"] for s in stages]
    serial = [d + s["forward_folded"] + s["store_write"] for d, s in zip(decode_pre, stages)]
    print(f"| sum: load + preprocess + forward (folded) + store write | {ms(serial):.1f} |")
    print(f"| nibabel + scipy: load, resample, clip, min-max | {ms(python):.1f} |")
    ratio = [p / d for p, d in zip(python, decode_pre)]
    print(f"\nnibabel + scipy / cdwqc load + preprocess time: {spread(ratio)}")
    if differences:
        mean_abs = max(d[0] for d in differences)
        corr = min(d[1] for d in differences)
        print(f"nibabel + scipy output against cdwqc's cached tensors: mean |difference| at most "
              f"{mean_abs:.4f}, correlation at least {corr:.4f} ({len(differences)} files)")
    forward = [s["forward_folded"] for s in stages]
    print(f"\n`cdwqc infer --threads 1`, wall time from process start: cold {ms(cold):.0f} ms per "
          f"volume ({statistics.median(cold):.2f} s), warm (tensor cache) {ms(warm):.0f} ms per "
          f"volume ({statistics.median(warm):.2f} s); pure forward (folded) {ms(forward):.0f} ms per volume")
    print(f"cold end to end / pure forward: {statistics.median(cold) / statistics.median(forward):.2f}; "
          f"warm / pure forward: {statistics.median(warm) / statistics.median(forward):.2f}; "
          f"cold infer / serial stage sum: {statistics.median(cold) / statistics.median(serial):.2f}")
    print(f"largest probability difference, folded vs unfolded: "
          f"{report['max_probability_difference_folded_unfolded']:.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, nargs=3, default=[80, 96, 80])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--e2e-images", type=int, default=12)
    parser.add_argument("--e2e-repeat", type=int, default=3)
    parser.add_argument("--skip-compute", action="store_true")
    parser.add_argument("--skip-train", action="store_true", help="compute: inference only")
    parser.add_argument("--skip-e2e", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    bench_model, cdwqc = build()
    work = tempfile.mkdtemp(prefix="cdwqc-bench-model-")
    try:
        if not args.skip_compute:
            compute_bench(args, bench_model, work)
        if not args.skip_e2e:
            e2e_bench(args, bench_model, cdwqc, work)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
