"""The two installs side by side (results: benchmarks/RESULTS.md, "Light and full install").

Creates two fresh virtual environments from this checkout - ``pip install REPO`` (light: ONNX Runtime, no
PyTorch) and ``pip install 'REPO[torch]'`` - unless they exist already, then measures in the same run:

* install size: the environment folder on disk (``du``), and the packages pip installed;
* cold start: wall time and CPU time (user + system, of the process and its children) of
  ``defocus predict examples/dahlia_flower.jpg -o OUT`` in a new process, the two installs alternating, median of
  ``--runs`` (on a loaded machine the wall time mostly measures the wait for a core: CPU time does not); the full
  install runs it with its default backend ("auto": the bundled ONNX model) and with ``--backend torch`` (the
  PyTorch path, as every install ran before the split);
* images/s: ``Predictor`` on the example photos (decode, infer, no writing) after one warm-up pass, in each
  environment with its default backend, and the full install with ``backend="torch"``.

    python benchmarks/bench_install.py [--work /tmp/defocus-install-bench] [--runs 5] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dahlia_flower.jpg"
THROUGHPUT = """
import glob, json, sys, time
from defocus import Predictor
paths = sorted(p for p in glob.glob(sys.argv[1] + "/*") if p.endswith((".jpg", ".png")))
p = Predictor(device="cpu", backend=sys.argv[2], batch_size=1)
list(p.predict_many(paths))
t = time.perf_counter()
n = sum(1 for _ in p.predict_many(paths))
print(json.dumps({"images_per_s": n / (time.perf_counter() - t), "backend": p.backend, "n": n}))
"""


def make_env(path: Path, spec: str) -> float:
    """A fresh venv at ``path`` with ``spec`` installed (kept if it exists); returns the install seconds."""
    if (path / "bin" / "defocus").exists():
        return float("nan")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(path / "bin" / "pip"), "install", "-q", "--no-cache-dir", spec], check=True)
    return time.perf_counter() - t


def du_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True).stdout
    return int(out.split()[0]) / 1024


def packages(path: Path) -> list[str]:
    out = subprocess.run([str(path / "bin" / "pip"), "list", "--format=freeze"], capture_output=True, text=True,
                         check=True).stdout
    return sorted(line.split("==")[0] for line in out.splitlines() if line and not line.startswith("pip=="))


def cold_predict(env: Path, out: Path, extra=()) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one ``defocus predict`` process."""
    shutil.rmtree(out, ignore_errors=True)
    cmd = [str(env / "bin" / "defocus"), "predict", str(EXAMPLE), "-o", str(out), "--no-progress", *extra]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{env}: predict failed: {err.strip()}")
    return dt, usage.ru_utime + usage.ru_stime


def throughput(env: Path, backend: str) -> dict:
    r = subprocess.run([str(env / "bin" / "python"), "-c", THROUGHPUT, str(REPO / "examples"), backend],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default="/tmp/defocus-install-bench", help="Folder of the two environments.")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS / ONNX Runtime threads.")
    ap.add_argument("--json", help="Also write the results here.")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    light, full = work / "v-light", work / "v-torch"
    res = {"install_s": {"light": make_env(light, str(REPO)), "torch": make_env(full, f"{REPO}[torch]")}}
    res["size_mb"] = {"light": du_mb(light), "torch": du_mb(full)}
    res["packages"] = {"light": packages(light), "torch": packages(full)}
    configs = {"light": (light, ()), "torch (auto: ONNX)": (full, ()),
               "torch (--backend torch)": (full, ("--backend", "torch"))}
    times = {k: [] for k in configs}
    cpu = {k: [] for k in configs}
    res["loadavg_before"] = Path("/proc/loadavg").read_text().split()[:3]
    with tempfile.TemporaryDirectory() as tmp:
        for name, (env, extra) in configs.items():  # one untimed call each: file-system caches warm alike
            cold_predict(env, Path(tmp) / "o", extra)
        for _ in range(args.runs):
            for name, (env, extra) in configs.items():
                wall, cpu_s = cold_predict(env, Path(tmp) / "o", extra)
                times[name].append(wall)
                cpu[name].append(cpu_s)
    res["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    res["cold_predict_s"] = {k: {"median_wall": statistics.median(v), "median_cpu": statistics.median(cpu[k]),
                                 "runs_wall": [round(x, 3) for x in v], "runs_cpu": [round(x, 3) for x in cpu[k]]}
                             for k, v in times.items()}
    res["images_per_s"] = {"light": throughput(light, "auto"), "torch (auto: ONNX)": throughput(full, "auto"),
                           "torch (--backend torch)": throughput(full, "torch")}
    print(json.dumps(res, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
