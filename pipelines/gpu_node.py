"""The whole-node job: one machine, its CPUs and its GPU, measured with Ray (issue 26).

    python pipelines/gpu_node.py --out $OUT                      # on the lent H200
    python pipelines/gpu_node.py --out /tmp/node --tiny          # here, on the CPU (the test)

Sections, each saved to OUT/gpu-node.json as soon as it is done, so that a time limit keeps
what was measured:

  env         torch, CUDA, Ray, the GPU, the CPUs
  scans       a manifest generated on the machine: 1 MP and 6 MP grayscale JPEGs, a few
              24 MP 16-bit TIFFs, and bad inputs (empty, truncated, text)
  runs        `run` at fp32, at bf16 (GPU only), and with the model stage replaced by a
              pass-through (the CPU stages' own ceiling): scans/s, per size class
  resume      a run SIGKILLed part-way and resumed, its outputs compared byte for byte with
              the uninterrupted fp32 run's
  samples     GPU utilisation and memory every 0.5 s through the runs (NVML, else
              nvidia-smi), and the peak memory of the GPU and of the node

A short log goes to OUT/gpu-node.log. The local Ray is started here with the node's CPUs and
GPUs; `run` joins it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "manifests" / "sample"


class Report:
    """OUT/gpu-node.json, rewritten after every section, and the log beside it."""

    def __init__(self, out: Path):
        self.out, self.data = out, {"sections_done": []}
        out.mkdir(parents=True, exist_ok=True)
        self.log_file = open(out / "gpu-node.log", "a", buffering=1)

    def log(self, msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        self.log_file.write(line + "\n")

    def save(self, section: str, figures) -> None:
        self.data[section] = figures
        if section not in self.data["sections_done"]:
            self.data["sections_done"].append(section)
        tmp = self.out / "gpu-node.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(tmp, self.out / "gpu-node.json")
        self.log(f"saved {section}")


def node_memory_used_gib() -> float:
    """MemTotal - MemAvailable, from /proc/meminfo (no psutil needed)."""
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            info[k] = int(v.split()[0]) * 1024
    return (info["MemTotal"] - info.get("MemAvailable", info.get("MemFree", 0))) / 2**30


class Sampler(threading.Thread):
    """GPU utilisation and memory (NVML, else nvidia-smi) and the node's memory, every 0.5 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.rows: list[tuple] = []
        self.stop = threading.Event()
        self.nvml = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = (pynvml, pynvml.nvmlDeviceGetHandleByIndex(0))
        except Exception:
            self.smi = shutil.which("nvidia-smi")

    def gpu(self) -> tuple[float | None, float | None]:
        if self.nvml:
            nv, h = self.nvml
            return float(nv.nvmlDeviceGetUtilizationRates(h).gpu), nv.nvmlDeviceGetMemoryInfo(h).used / 2**30
        if self.smi:
            r = subprocess.run(
                [self.smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=5,
            )  # fmt: skip
            util, mem = r.stdout.splitlines()[0].split(",")
            return float(util), float(mem) / 1024
        return None, None

    def run(self):
        while not self.stop.wait(0.5):
            try:
                util, mem = self.gpu()
            except Exception:
                util, mem = None, None
            self.rows.append((time.time(), util, mem, node_memory_used_gib()))

    def window(self, t0: float, t1: float) -> dict:
        rows = [r for r in self.rows if t0 <= r[0] <= t1]
        util = [r[1] for r in rows if r[1] is not None]
        return {
            "samples": len(rows),
            "gpu_busy_mean_pct": round(float(np.mean(util)), 1) if util else None,
            "gpu_mem_peak_gib": round(max((r[2] for r in rows if r[2] is not None), default=0), 2) or None,
            "node_mem_peak_gib": round(max((r[3] for r in rows), default=0), 2),
        }


def make_scans(folder: Path, n: int, tiny: bool, report: Report) -> dict:
    """Grayscale scans made from the committed sample photographs, resized per size class,
    with a little noise so that no two files are alike; and bad inputs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    base = [Image.open(p).convert("L") for p in sorted(SAMPLES.glob("*.jpg"))]
    classes = {"1mp": (1152, 864), "6mp": (3000, 2000), "24mp_16bit": (6000, 4000)}
    if tiny:
        classes = {"1mp": (96, 72), "6mp": (240, 160), "24mp_16bit": (480, 320)}
    n_tiff = max(1, n // 300)
    n_six = n // 5
    plan = ["24mp_16bit"] * n_tiff + ["6mp"] * n_six + ["1mp"] * (n - n_tiff - n_six)
    rng = np.random.default_rng(0)
    ids, uris, kinds = [], [], []
    cache: dict = {}
    t0 = time.time()
    for i, kind in enumerate(plan):
        size = classes[kind]
        key = (kind, i % len(base))
        if key not in cache:
            cache[key] = np.asarray(base[i % len(base)].resize(size, Image.BILINEAR), np.int16)
        noisy = np.clip(cache[key] + rng.integers(-2, 3, cache[key].shape), 0, 255)
        if kind == "24mp_16bit":
            p = folder / f"scan-{i:05d}.tif"
            import tifffile

            tifffile.imwrite(p, (noisy.astype(np.uint16) * 257), compression="zlib")
        else:
            p = folder / f"scan-{i:05d}.jpg"
            Image.fromarray(noisy.astype(np.uint8), "L").save(p, quality=90)
        ids.append(p.stem)
        uris.append(str(p))
        kinds.append(kind)
    bad = {
        "empty.jpg": b"",
        "truncated.jpg": (folder / f"scan-{n - 1:05d}.jpg").read_bytes()[:300],
        "text.jpg": b"hello\n",
    }
    for name, data in bad.items():
        (folder / name).write_bytes(data)
        ids.append(name.split(".")[0])
        uris.append(str(folder / name))
        kinds.append("bad")
    manifest = folder.parent / "scans.parquet"
    pq.write_table(pa.table({"id": ids, "uri": uris, "size_class": kinds}), manifest)
    counts = {k: kinds.count(k) for k in (*classes, "bad")}
    report.log(f"scans: {counts} in {time.time() - t0:.0f} s")
    return {
        "manifest": str(manifest),
        "counts": counts,
        "sizes": classes,
        "seconds": round(time.time() - t0, 1),
    }


def run_once(
    manifest: str, out: Path, precision: str, passthrough: bool, batch: int, sampler: Sampler
) -> dict:
    from archive_colorize import RunOptions
    from archive_colorize.run.pipeline import run

    if passthrough:
        os.environ["ARCHIVE_COLORIZE_PASSTHROUGH_MODEL"] = "1"
    try:
        t0 = time.time()
        s = run(RunOptions(manifest=manifest, out=str(out), precision=precision, batch_size=batch))
        t1 = time.time()
    finally:
        os.environ.pop("ARCHIVE_COLORIZE_PASSTHROUGH_MODEL", None)
    return {
        "precision": precision,
        "passthrough": passthrough,
        "done": s.done,
        "failed": s.failed,
        "seconds": round(t1 - t0, 2),
        "scans_per_s": round(s.done / max(t1 - t0, 1e-9), 2),
        **sampler.window(t0, t1),
    }


def per_class(out: Path, manifest: str) -> dict:
    """Seconds per scan by size class, from the run's own per-row timings."""
    import pyarrow.parquet as pq

    kinds = dict(zip(*(pq.read_table(manifest).column(c).to_pylist() for c in ("id", "size_class"))))
    rows = pq.read_table(out / "results.parquet").to_pylist()
    by: dict[str, list] = {}
    for r in rows:
        if r["status"] == "done":
            by.setdefault(kinds[r["id"]], []).append(r["seconds"])
    return {k: {"rows": len(v), "median_row_seconds": round(float(np.median(v)), 4)} for k, v in by.items()}


def outputs(out: Path) -> dict:
    import pyarrow.parquet as pq

    return {
        r["id"]: (r["status"], r["output_sha256"]) for r in pq.read_table(out / "results.parquet").to_pylist()
    }


def kill_and_resume(
    manifest: str, work: Path, reference: dict, precision: str, batch: int, address: str, report: Report
) -> dict:
    """`archive-colorize run` as its own process on the node's Ray, SIGKILLed part-way (it
    freezes itself after writing its first progress file: faults.py, so the kill lands
    part-way however fast the node is), then run again to the end: every output
    byte-identical with the uninterrupted run's."""
    out = work / "resume-out"
    cmd = [sys.executable, "-m", "archive_colorize.apps.cli", "run", manifest, "--out", str(out),
           "--precision", precision, "--batch-size", str(batch), "--address", address,
           "--progress-every", "0.5"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    first = {**env, "ARCHIVE_COLORIZE_STOP_AT": "progress-written:1"}
    proc = subprocess.Popen(
        cmd, env=first, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    t0 = time.time()
    while proc.poll() is None and time.time() - t0 < 1800:
        if _stopped(proc.pid):
            break
        time.sleep(0.2)
    settled = _settled(out)
    killed = proc.poll() is None
    if killed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    report.log(f"resume: {'killed' if killed else 'ended before the kill'} with {settled} rows settled")
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if again.returncode != 0:
        return {"killed": killed, "error": again.stderr[-2000:]}
    got = outputs(out)
    differ = sorted(k for k in reference if reference[k] != got.get(k))
    return {
        "killed": killed,
        "settled_at_kill": settled,
        "rows": len(got),
        "identical": not differ,
        "differ": differ[:20],
    }


def _stopped(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "T"
    except OSError:
        return False


def _settled(out: Path) -> int:
    import pyarrow.parquet as pq

    d = out / "_progress"
    if not d.exists():
        return 0
    n = 0
    for p in d.glob("*.parquet"):
        try:
            n += pq.ParquetFile(p).metadata.num_rows
        except Exception:
            pass
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu-node-out"), help="where the JSON and log go")
    ap.add_argument("--work", default="/tmp/gpu-node", help="scans and run outputs (not brought back)")
    ap.add_argument("--scans", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=32, help="--batch-size of the runs")
    ap.add_argument("--tiny", action="store_true", help="tiny scans and a few rows: the CPU test")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    out, work = Path(a.out), Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    report = Report(out)

    import ray
    import torch

    gpus = torch.cuda.device_count()
    report.save("env", {
        "torch": torch.__version__, "cuda": torch.version.cuda, "ray": ray.__version__, "cpus": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if gpus else None, "gpus": gpus, "python": sys.version.split()[0],
    })  # fmt: skip
    scans = make_scans(work / "scans", a.scans, a.tiny, report)
    report.save("scans", scans)
    sampler = Sampler()
    sampler.start()
    # the node's Ray, which `run` joins and the killed-and-resumed run joins by address
    ctx = ray.init(
        address="local",
        num_cpus=os.cpu_count(),
        num_gpus=gpus,
        include_dashboard=False,
        logging_level="ERROR",
    )
    address = ctx.address_info["address"]
    runs = {}
    for name, precision, passthrough in (
        ("fp32", "fp32", False),
        ("bf16", "bf16", False),
        ("passthrough", "fp32", True),
    ):
        if precision == "bf16" and not gpus:
            continue
        o = work / f"run-{name}"
        report.log(f"run {name} ...")
        runs[name] = run_once(scans["manifest"], o, precision, passthrough, a.batch, sampler)
        runs[name]["per_class"] = per_class(o, scans["manifest"])
        report.log(f"run {name}: {runs[name]['scans_per_s']} scans/s, {runs[name]['failed']} failed")
        report.save("runs", runs)
    if "passthrough" in runs:
        ceiling = runs["passthrough"]["scans_per_s"]
        report.save("ceiling", {k: round(v["scans_per_s"] / ceiling, 3) for k, v in runs.items() if ceiling})
    reference = outputs(work / "run-fp32")
    report.save(
        "resume", kill_and_resume(scans["manifest"], work, reference, "fp32", a.batch, address, report)
    )
    sampler.stop.set()
    report.save("samples", {"gpu_mem_peak_gib": sampler.window(0, time.time())["gpu_mem_peak_gib"],
                            "node_mem_peak_gib": sampler.window(0, time.time())["node_mem_peak_gib"],
                            "n": len(sampler.rows)})  # fmt: skip
    ray.shutdown()
    ok = report.data["resume"].get("identical") is True and all(r["done"] > 0 for r in runs.values())
    report.log("ok" if ok else "FAILED: see gpu-node.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
