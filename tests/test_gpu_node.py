"""The GPU run book's whole-node job, end to end on the CPU with a tiny budget: scans made on
the machine, fp32 and pass-through runs on a local Ray with the node's CPUs, a run SIGKILLed
part-way and resumed to byte-identical outputs, the JSON saved after every section."""

import json
import subprocess
import sys

from .conftest import ROOT


def test_the_whole_node_job_runs_end_to_end_on_the_cpu(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run(
        [sys.executable, str(ROOT / "pipelines" / "gpu_node.py"), "--tiny", "--scans", "12", "--batch", "4",
         "--out", str(out), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    figures = json.loads((out / "gpu-node.json").read_text())
    assert figures["sections_done"] == ["env", "scans", "runs", "ceiling", "resume", "samples"]
    assert figures["scans"]["counts"] == {"1mp": 9, "6mp": 2, "24mp_16bit": 1, "bad": 3}
    for name in ("fp32", "passthrough"):
        run = figures["runs"][name]
        assert (run["done"], run["failed"]) == (12, 3), name  # the three bad inputs fail, the rest are done
        assert set(run["per_class"]) == {"1mp", "6mp", "24mp_16bit"}
    assert "bf16" not in figures["runs"]  # GPU only
    resume = figures["resume"]
    assert resume["identical"] is True and resume["rows"] == 15 and resume["killed"], resume
    assert 0 < resume["settled_at_kill"] < 15, resume  # killed part-way
    assert figures["samples"]["node_mem_peak_gib"] > 0
    assert "ok" in (out / "gpu-node.log").read_text().splitlines()[-1]
