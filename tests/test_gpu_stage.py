"""The staged GPU training job (training/gpu/stage.sh), end to end on this CPU with a tiny
network and time budget: parts join a running trainer, then export, evaluate, benchmark."""

import os
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

from .conftest import ROOT, make_categories, make_places_parquet


@pytest.fixture()
def parts(tmp_path):
    p = {k: tmp_path / f"part-{k}" for k in (1, 2, 3)}
    make_places_parquet(p[1] / "train-00.parquet", 48, seed=1, gray_every=8)
    make_places_parquet(p[1] / "val-monitor.parquet", 16, seed=9, gray_every=0)
    make_categories(p[1] / "categories.txt")
    make_places_parquet(p[2] / "train-01.parquet", 48, seed=2, gray_every=0)
    make_places_parquet(p[3] / "train-02.parquet", 48, seed=3, gray_every=0)
    make_places_parquet(p[3] / "val-heldout.parquet", 24, seed=4, gray_every=0)
    return p


@pytest.mark.skipif(
    not shutil.which("pgrep") or not shutil.which("split"), reason="needs procps and coreutils"
)
def test_three_stages_on_the_cpu(parts, tmp_path):
    env = os.environ | {
        "OUT": str(tmp_path / "out"),
        "STAGE": str(tmp_path / "stage"),
        "DEVICE": "cpu",
        "MINUTES": "10",
        "BATCH": "8",
        "EVAL_LIMIT": "24",
        "PYTHON": sys.executable,
        "BENCH_STEPS": "1",
        # a step count, not the time limit, ends this run: a busy machine must not change what is tested
        "EXTRA": "model.width=0.125 train.steps=150 train.eval_every=10 train.checkpoint_every=10 train.log_every=5",
    }

    def stage(*args):
        r = subprocess.run(
            ["bash", "training/gpu/stage.sh", *map(str, args)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        return r.stdout

    started = stage("start", parts[1])
    assert "data on cpu: 42 images (6 filtered)" in started and "step 5/" in started
    stage("add", parts[2])
    log = tmp_path / "stage" / "train.log"
    for _ in range(
        600
    ):  # the trainer takes the part at its next epoch boundary (a fraction of a second here)
        if "90 in all" in log.read_text():
            break
        time.sleep(0.1)
    done = stage("finish", parts[3])
    log = (tmp_path / "out" / "train.log").read_text()
    # each part joined the running trainer at an epoch boundary
    assert "48 new images joined, 90 in all" in log and "48 new images joined, 138 in all" in log
    assert "latest checkpoint: " in log and "step-000000150.pt" in log and "wrote " in done
    out = tmp_path / "out"
    pieces = sorted(out.glob("int8.safetensors.part-*"))
    assert pieces and all(p.stat().st_size <= 15 * 2**20 for p in pieces)
    assert len(list(out.iterdir())) <= 8  # what a device command can bring back
    with tarfile.open(out / "results.tar.gz") as t:
        names = {n.lstrip("./") for n in t.getnames()}
        t.extractall(tmp_path / "res", filter="data")
    assert {"eval-fp32.json", "eval-int8.json", "metrics.csv", "bench-train.json", "int8.sha256"} <= names
    # the pieces reassemble to the file whose sha256 was recorded
    whole = tmp_path / "int8.safetensors"
    whole.write_bytes(b"".join(p.read_bytes() for p in pieces))
    (tmp_path / "int8.sha256").write_text((tmp_path / "res" / "int8.sha256").read_text())
    r = subprocess.run(["sha256sum", "-c", "int8.sha256"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    import json

    ev = json.loads((tmp_path / "res" / "eval-int8.json").read_text())
    assert ev["images"] == 24 and ev["model"]["top5"] is not None
    assert (
        not subprocess.run(["pgrep", "-f", f"--out {tmp_path / 'stage'}/run"]).returncode == 0
    )  # trainer gone
