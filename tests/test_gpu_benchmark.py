"""benchmarks/gpu.py is run on a borrowed GPU with minutes to spare: its code must already
work. The same code, on this CPU, with the quick sizes."""

import json
import subprocess
import sys

from .conftest import ROOT


def test_gpu_benchmark_smoke_run_on_the_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    r = subprocess.run(
        [
            sys.executable,
            "benchmarks/gpu.py",
            "--device",
            "cpu",
            "--quick",
            "--sections",
            "model",
            "recombine",
            "--batches",
            "1",
            "2",
            "--precisions",
            "fp32",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert [(m["precision"], m["batch"]) for m in res["model"]] == [("fp32", 1), ("fp32", 2)]
    assert all(m["images_per_s"] > 0 for m in res["model"])
    assert res["batch_independence"] == [{"precision": "fp32", "batch": 2, "identical": True}]
    # on the CPU the "device" run is the CPU run: the same function, so the same bytes
    assert [(r["bits"], r["max_code_diff"]) for r in res["recombine"]] == [(8, 0), (16, 0)]
