"""Builds empty stand-in CUDA libraries so that `import torch` works on a CPU machine whose
torch install lacks the CUDA wheels (the minimal install of scripts/setup.sh).

libtorch_cuda.so is a link-time dependency of the Python extension; on a machine without
a GPU none of the CUDA functions are ever called, so stubs that merely define the symbols
(with the right version nodes) let the dynamic linker finish and torch runs on the CPU.
The stubs live only in the output folder; nothing is installed.

Usage: python3 scripts/torch_cpu_stubs.py TORCH_LIB_DIR OUT_DIR
then:  LD_LIBRARY_PATH=OUT_DIR .venv/bin/python scripts/bench_model.py
"""
import collections
import importlib.util
import os
import re
import subprocess
import sys
import tempfile


def import_torch():
    """Imports torch; where the minimal CPU install cannot load, builds the stubs and
    restarts the calling script with them on LD_LIBRARY_PATH."""
    try:
        import torch
        return torch
    except ImportError as err:
        if os.environ.get("CDWQC_TORCH_STUBS"):
            sys.exit(f"import torch failed, even with stub CUDA libraries: {err}")
        spec = importlib.util.find_spec("torch")
        if spec is None:
            sys.exit("torch is not installed in this Python (use the project's .venv)")
        lib = os.path.join(spec.submodule_search_locations[0], "lib")
        stubs = os.path.join(tempfile.gettempdir(), f"cdwqc-torch-stubs-{os.getuid()}")
        subprocess.run([sys.executable, os.path.abspath(__file__), lib, stubs],
                       check=True, stdout=subprocess.DEVNULL)
        env = dict(os.environ, CDWQC_TORCH_STUBS="1",
                   LD_LIBRARY_PATH=":".join(filter(None, [stubs, os.environ.get("LD_LIBRARY_PATH")])))
        os.execve(sys.executable, [sys.executable] + sys.argv, env)


def run(*args):
    return subprocess.run(args, capture_output=True, text=True, check=False).stdout


def main():
    lib, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    missing = set()
    for name in os.listdir(lib):
        if name.endswith(".so"):
            for line in run("ldd", os.path.join(lib, name)).splitlines():
                if "not found" in line:
                    missing.add(line.split()[0])
    versioned = collections.defaultdict(lambda: collections.defaultdict(set))
    plain = collections.defaultdict(set)
    prefixes = {"libcusparseLt": "cusparseLt", "libnccl": "nccl", "libcurand": "curand",
                "libcufile": "cuFile"}
    for name in os.listdir(lib):
        if not name.endswith(".so"):
            continue
        path = os.path.join(lib, name)
        owner, current = {}, None
        for line in run("readelf", "-W", "-V", path).splitlines():
            found = re.search(r"File: (\S+)", line)
            if found:
                current = found.group(1)
                continue
            found = re.search(r"Name: (\S+)\s+Flags", line)
            if found and current:
                owner[found.group(1)] = current
        for line in run("readelf", "-W", "--dyn-syms", path).splitlines():
            parts = line.split()
            if len(parts) < 8 or parts[6] != "UND" or parts[4] == "WEAK":
                continue
            symbol = parts[7]
            if "@" in symbol:
                base, version = symbol.split("@", 1)
                version = version.lstrip("@").split(" ")[0]
                if owner.get(version) in missing:
                    versioned[owner[version]][version].add(base)
            else:
                for library in missing:
                    prefix = prefixes.get(library.split(".so")[0])
                    if prefix and symbol.startswith(prefix):
                        plain[library].add(symbol)
    for library in sorted(missing):
        source = os.path.join(out, library + ".c")
        script = os.path.join(out, library + ".map")
        with open(source, "w") as c:
            for symbols in versioned[library].values():
                for symbol in sorted(symbols):
                    c.write(f"void {symbol}(void) {{}}\n")
            for symbol in sorted(plain[library]):
                c.write(f"void {symbol}(void) {{}}\n")
        with open(script, "w") as m:
            for version, symbols in versioned[library].items():
                m.write(f"{version} {{ global: " + " ".join(s + ";" for s in sorted(symbols)) + " };\n")
            if not versioned[library]:
                m.write("{ global: *; };\n")
        subprocess.run(["gcc", "-shared", "-fPIC", "-o", os.path.join(out, library), source,
                        "-Wl,-soname," + library, "-Wl,--version-script=" + script], check=True)
        print(library)


if __name__ == "__main__":
    main()
