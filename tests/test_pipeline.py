"""`archive-colorize run` on a real local Ray cluster (2 CPUs), real scans, real S3 (moto).
The scans are the committed sample photographs and prints made from them; one test runs the
18 historical scans of ../shared."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageOps

from archive_colorize.run.pipeline import RunOptions, plan_resources, run
from archive_colorize.errors import ConfigError

from .reliability.conftest import wait_until_stopped
from .conftest import ROOT, historical_files, sample, sample_scans, write_broken_files

WORKING = 128  # small working size: these tests check the plumbing, not colour quality


def make_manifest(path: Path, uris: list[str], ids: list[str]) -> Path:
    t = pa.table({"id": ids, "uri": uris, "archive_ref": [f"NARA-{i:04d}" for i in range(len(ids))]})
    pq.write_table(t, path)
    return path


@pytest.fixture(scope="module")
def scans_manifest(tmp_path_factory):
    d = tmp_path_factory.mktemp("scans")
    files = sample_scans(d / "scans")
    reasons = write_broken_files(d / "broken")
    uris = [str(f) for f in files] + [str(d / "broken" / f"{k}.jpg") for k in reasons]
    ids = [f.stem for f in files] + list(reasons)
    return make_manifest(d / "scans.parquet", uris, ids), files, reasons


@pytest.fixture(scope="module")
def clean_run(ray_cluster, scans_manifest, weights_path, tmp_path_factory):
    manifest, files, reasons = scans_manifest
    out = tmp_path_factory.mktemp("clean") / "out"
    summary = run(
        RunOptions(
            manifest=str(manifest),
            out=str(out),
            weights=str(weights_path),
            working_size=WORKING,
            batch_size=4,
        )
    )
    return summary, out


def test_run_7_done_3_failed(clean_run, scans_manifest, weights):
    summary, out = clean_run
    _, files, reasons = scans_manifest
    assert (summary.done, summary.failed, summary.total) == (7, 3, 10)
    res = pq.read_table(out / "results.parquet")
    assert res.num_rows == 10 and len(set(res.column("id").to_pylist())) == 10
    for col in (
        "id",
        "uri",
        "status",
        "error",
        "output_uri",
        "width",
        "height",
        "input_sha256",
        "output_sha256",
        "scene_top5",
        "scene_top5_prob",
        "weights_sha256",
        "seconds",
        "archive_ref",
    ):
        assert col in res.column_names, col
    rows = {r["id"]: r for r in res.to_pylist()}
    for key, reason in reasons.items():
        assert rows[key]["status"] == "failed" and rows[key]["error"].startswith(reason), rows[key]["error"]
        assert rows[key]["output_uri"] is None
    for f in files:
        r = rows[f.stem]
        assert r["status"] == "done" and r["error"] is None
        src = ImageOps.exif_transpose(Image.open(f))
        img = Image.open(r["output_uri"])
        assert img.size == src.size == (r["width"], r["height"])
        assert len(r["scene_top5"]) == 5 and r["scene_top5"][0] in weights.categories
        probs = r["scene_top5_prob"]
        # the five largest of 100 probabilities: descending, and together at least 5 %
        assert probs == sorted(probs, reverse=True) and all(0 < p <= 1 for p in probs)
        assert 0.05 <= sum(probs) <= 1.0001
        assert r["weights_sha256"] == weights.file_sha256
        assert r["archive_ref"].startswith("NARA-")
        assert Path(r["output_uri"]).parent == out / "images"
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["counts"]["done"] == 7 and run_json["weights"]["sha256"] == weights.file_sha256
    assert run_json["precision"] == {"name": "fp32"}
    assert not (out / "_lock.json").exists()
    assert not list((out / "images").glob(".tmp-*"))  # (TEMP_PREFIX starts so)


def test_rerun_does_no_work(clean_run, scans_manifest, weights_path):
    summary, out = clean_run
    manifest, _, _ = scans_manifest
    parts = sorted((out / "_progress").iterdir())
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()}
    again = run(
        RunOptions(manifest=str(manifest), out=str(out), weights=str(weights_path), working_size=WORKING)
    )
    assert again.processed_now == 0 and again.skipped == 10
    assert sorted((out / "_progress").iterdir()) == parts
    assert {p: p.stat().st_mtime_ns for p in (out / "images").iterdir()} == mtimes
    assert pq.read_table(out / "results.parquet").num_rows == 10


def test_retry_failed_only_retries_failures(clean_run, scans_manifest, weights_path, tmp_path):
    # work on a copy so the module's clean run stays untouched
    import shutil

    summary, out = clean_run
    manifest, _, _ = scans_manifest
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    again = run(
        RunOptions(
            manifest=str(manifest),
            out=str(copy),
            weights=str(weights_path),
            working_size=WORKING,
            retry_failed=True,
        )
    )
    assert again.processed_now == 3 and again.failed_now == 3
    assert pq.read_table(copy / "results.parquet").num_rows == 10


def test_kill_and_resume_gives_identical_images(
    clean_run, scans_manifest, weights_path, ray_cluster, tmp_path
):
    _, clean_out = clean_run
    manifest, _, _ = scans_manifest
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "archive_colorize.apps.cli",
        "run",
        str(manifest),
        "--out",
        str(out),
        "--weights",
        str(weights_path),
        "--working-size",
        str(WORKING),
        "--batch-size",
        "1",
        "--address",
        ray_cluster,
    ]
    # the run freezes itself after its second progress file (a crash point: no race with
    # the clock), and is SIGKILLed from outside there
    proc = subprocess.Popen(
        cmd + ["--progress-every", "0"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ARCHIVE_COLORIZE_STOP_AT": "progress-written:2"},
    )
    wait_until_stopped(proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "_lock.json").exists()  # the dead run's lock is left behind...
    from archive_colorize.run import progress
    from archive_colorize.core.storage import resolve

    settled = set(progress.read_log(*resolve(str(out)), columns=["id"]).column("id").to_pylist())
    assert len(settled) == 2  # batches of one, a progress file per batch
    summary = run(
        RunOptions(manifest=str(manifest), out=str(out), weights=str(weights_path), working_size=WORKING)
    )
    assert summary.processed_now == 10 - 2  # ...taken over, and exactly the remainder processed
    res = pq.read_table(out / "results.parquet")
    assert res.num_rows == 10 and len(set(res.column("id").to_pylist())) == 10
    clean = {p.name: p.read_bytes() for p in (clean_out / "images").iterdir()}
    resumed = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    assert resumed.keys() == clean.keys() and all(resumed[k] == clean[k] for k in clean)


def test_s3_manifest_inputs_and_outputs(
    ray_cluster, s3, s3_server, weights_path, clean_run, scans_manifest, tmp_path
):
    _, clean_out = clean_run
    _, files, reasons = scans_manifest
    s3.mkdir("archive")
    uris, ids = [], []
    for f in files:
        s3.put(str(f), f"archive/scans/{f.name}")
        uris.append(f"s3://archive/scans/{f.name}")
        ids.append(f.stem)
    broken = tmp_path / "broken"
    write_broken_files(broken)
    for k in reasons:
        s3.put(str(broken / f"{k}.jpg"), f"archive/scans/{k}.jpg")
        uris.append(f"s3://archive/scans/{k}.jpg")
        ids.append(k)
    uris.append("s3://archive/scans/does-not-exist.jpg")
    ids.append("missing")
    local = make_manifest(tmp_path / "m.parquet", uris, ids)
    s3.put(str(local), "archive/manifests/nara.parquet")
    summary = run(
        RunOptions(
            manifest="s3://archive/manifests/nara.parquet",
            weights=str(weights_path),
            working_size=WORKING,
            batch_size=4,
            storage_options=s3_server,
        )
    )
    assert summary.out == "s3://archive/manifests/nara-out"  # the documented default
    assert (summary.done, summary.failed) == (7, 4)
    s3.invalidate_cache()
    with s3.open("archive/manifests/nara-out/results.parquet", "rb") as f:
        rows = {r["id"]: r for r in pq.read_table(f).to_pylist()}
    assert rows["missing"]["error"] == "input not found: s3://archive/scans/does-not-exist.jpg"
    for f in files:
        r = rows[f.stem]
        assert r["output_uri"] == f"s3://archive/manifests/nara-out/images/{f.stem}.png"
        # same model, same bytes as the local run
        assert s3.cat_file(r["output_uri"]) == (clean_out / "images" / f"{f.stem}.png").read_bytes()
    run_json = s3.cat_file("archive/manifests/nara-out/run.json").decode()
    assert s3_server["secret"] not in run_json and s3_server["key"] not in run_json
    with s3.open("archive/manifests/nara-out/results.parquet", "rb") as f:
        assert s3_server["secret"].encode() not in f.read()


def test_default_resources_leave_a_cpu_for_decoding():
    plan = plan_resources({"CPU": 2.0}, RunOptions(manifest="m"))
    assert plan.actors == 1 and plan.num_cpus == 1.0 and plan.device == "cpu"
    # the model is the bottleneck on CPUs: it may use the decoding CPU while that one is idle
    assert plan.threads == 2
    assert plan_resources({"CPU": 16.0}, RunOptions(manifest="m")).threads == 2  # 6 actors of 2 CPUs
    plan = plan_resources({"CPU": 16.0, "GPU": 4.0}, RunOptions(manifest="m"))
    assert plan.actors == 4 and plan.num_gpus == 1.0 and plan.device == "cuda"
    with pytest.raises(ConfigError, match="2 actors x 1 CPUs leaves no CPU for decoding on a 2-CPU cluster"):
        plan_resources({"CPU": 2.0}, RunOptions(manifest="m", actors=2, cpus_per_actor=1))


def test_a_cpu_pool_on_several_nodes_is_each_nodes_share():
    def plan(*nodes, **kw):
        p = plan_resources({"CPU": sum(nodes)}, RunOptions(manifest="m", **kw), 0, list(nodes))
        return p.actors, p.num_cpus, p.threads

    # a 0-CPU head and two 2-CPU workers: one actor per worker, each keeping a CPU to decode
    # (pooled, the 4 CPUs would give 3 actors: one worker with two and nothing left to feed them)
    assert plan(0, 2, 2) == (2, 1.0, 2)
    assert plan(16, 16) == (12, 2.0, 2)  # 6 a node, as on one node of 16
    assert plan(4, 16) == (15, 1.0, 1)  # 3 + 12 actors of the smallest node's CPU; 4 CPUs / 3
    # nodes of one CPU keep nothing back on their own: the cluster's CPUs are pooled, one kept
    # free, and no actor gets more threads than a node has CPUs
    assert plan(1, 1, 1) == (2, 1.0, 1)
    assert plan(0, 1, 1) == (1, 1.0, 1)
    assert plan(2, 2, actors=2) == (2, 1.0, 2)  # the operator's count: its share of the CPUs
    assert plan(2) == (1, 1.0, 2)  # one node: as before


def test_finish_stages_declare_the_memory_of_their_largest_scan():
    from archive_colorize.run.options import (
        FINISH_BYTES_PER_PIXEL,
        LARGE_SCAN_PIXELS,
        FinishStage,
        finish_line,
        plan_finish,
    )

    stages = plan_finish(250_000_000)
    assert [(s.low, s.high) for s in stages] == [(0, LARGE_SCAN_PIXELS + 1), (LARGE_SCAN_PIXELS + 1, None)]
    assert [s.memory for s in stages] == [
        LARGE_SCAN_PIXELS * FINISH_BYTES_PER_PIXEL,
        250_000_000 * FINISH_BYTES_PER_PIXEL,
    ]
    # never more than a node has: the large stage could not be scheduled, and the run would hang
    assert plan_finish(250_000_000, node_memory=4e9)[1].memory == int(0.8 * 4e9)
    assert plan_finish(10_000_000) == [FinishStage(0, 10_000_001, 10_000_000 * FINISH_BYTES_PER_PIXEL)]
    assert finish_line(stages, 250_000_000) == (
        "finish tasks, one scan at a time: scans to 40 Mpx declare 960 MB each; "
        "larger scans to 250 Mpx declare 6.00 GB each"
    )
    assert plan_resources({"CPU": 2.0}, RunOptions(manifest="m", max_pixels=10_000_000)).finish == tuple(
        plan_finish(10_000_000)
    )


def test_large_scans_are_finished_by_their_own_stage_with_the_same_bytes(
    clean_run, scans_manifest, weights_path, tmp_path, monkeypatch
):
    """With the line between small and large scans at 0.2 Mpx, four of the seven sample scans
    go to the second finish stage: every row is settled once, with the bytes of a run where
    one stage did them all."""
    import io

    from rich.console import Console

    from archive_colorize.run import options

    monkeypatch.setattr(options, "LARGE_SCAN_PIXELS", 200_000)
    manifest, files, reasons = scans_manifest
    screen = io.StringIO()
    s = run(
        RunOptions(
            manifest=str(manifest),
            out=str(tmp_path / "out"),
            weights=str(weights_path),
            working_size=WORKING,
            batch_size=4,
        ),
        console=Console(file=screen, width=300),
    )
    assert (s.done, s.failed) == (7, 3)
    assert (
        "finish tasks, one scan at a time: scans to 0.2 Mpx declare 5 MB each; larger scans to 250 Mpx"
        in screen.getvalue()
    )
    res = pq.read_table(tmp_path / "out" / "results.parquet")
    rows = {r["id"]: r for r in res.to_pylist()}
    assert res.num_rows == 10 and {r["status"] for r in rows.values()} == {"done", "failed"}
    large = {i for i, r in rows.items() if r["width"] and r["width"] * r["height"] > 200_000}
    assert large == {"astronaut", "coffee", "rocket", "sepia_print"}
    before = {r["id"]: r for r in pq.read_table(clean_run[1] / "results.parquet").to_pylist()}
    for i, r in rows.items():
        assert r["output_sha256"] == before[i]["output_sha256"] and r["error"] == before[i]["error"], i
        assert r["seconds"] is None or r["seconds"] > 0


def test_colour_made_in_the_model_actor_gives_the_same_files(
    clean_run, scans_manifest, weights_path, tmp_path
):
    """--recombine-on actor (what a GPU run does by default) on this CPU cluster: the scan is
    decoded once, the actor recombines, finish only encodes; every file is the one the
    default CPU layout wrote."""
    import io

    from rich.console import Console

    manifest, files, reasons = scans_manifest
    screen = io.StringIO()
    s = run(
        RunOptions(
            manifest=str(manifest),
            out=str(tmp_path / "out"),
            weights=str(weights_path),
            working_size=WORKING,
            batch_size=4,
            recombine_on="actor",
        ),
        console=Console(file=screen, width=300),
    )
    assert (s.done, s.failed) == (7, 3)
    assert "the model actors make the colour on cpu" in screen.getvalue()
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()}
    before = {r["id"]: r for r in pq.read_table(clean_run[1] / "results.parquet").to_pylist()}
    assert rows.keys() == before.keys()
    for i, r in rows.items():
        assert (r["status"], r["error"], r["output_sha256"]) == (
            before[i]["status"],
            before[i]["error"],
            before[i]["output_sha256"],
        ), i


def test_where_colour_is_made_by_default_and_bad_values():
    assert plan_resources({"CPU": 2.0}, RunOptions(manifest="m")).recombine_on == "finish"
    assert plan_resources({"CPU": 16.0, "GPU": 1.0}, RunOptions(manifest="m")).recombine_on == "actor"
    assert (
        plan_resources(
            {"CPU": 16.0, "GPU": 1.0}, RunOptions(manifest="m", recombine_on="finish")
        ).recombine_on
        == "finish"
    )
    from archive_colorize.run.options import check_options

    with pytest.raises(ConfigError, match=r"^--recombine-on must be one of auto, actor, finish, not 'gpu'$"):
        check_options(RunOptions(manifest="m", recombine_on="gpu"))
    from archive_colorize.run.jobs import entrypoint

    assert entrypoint(RunOptions(manifest="m.parquet", recombine_on="actor"), "o") == (
        "archive-colorize run m.parquet --out o --format png --working-size 512 --batch-size 8 --temporal shot "
        "--video-format both --recombine-on actor"
    )
    assert "--recombine-on" not in entrypoint(RunOptions(manifest="m.parquet"), "o")


def test_style_uri_and_output_name(ray_cluster, weights_path, tmp_path):
    a = str(sample("chelsea.jpg"))
    b = str(sample("astronaut.jpg"))
    t = pa.table(
        {
            "id": ["plain", "styled", "../escape"],
            "uri": [a, a, a],
            "style_uri": [None, b, None],
            "output_name": ["mural", "mural-styled", None],
        }
    )
    pq.write_table(t, tmp_path / "m.parquet")
    import io

    from rich.console import Console

    screen = io.StringIO()
    s = run(
        RunOptions(manifest=str(tmp_path / "m.parquet"), weights=str(weights_path), working_size=WORKING),
        console=Console(file=screen, force_terminal=True),
    )
    assert "3/3" in screen.getvalue() and "0 failed" in screen.getvalue()  # the live progress bar
    # the first lines say where the model runs: the plan, then each actor's real device
    assert "model actors: 1 on cpu, 1 CPU each (cluster: 2 CPUs, 0 GPUs)" in screen.getvalue()
    assert re.search(
        r"model actor: cpu \(2 threads; torch [^)]+\) on \S+ node [0-9a-f]{12} pid \d+", screen.getvalue()
    ), screen.getvalue()
    devices = json.loads((tmp_path / "m-out" / "run.json").read_text())["devices"]
    assert len(devices) == 1 and devices[0].startswith("cpu (2 threads; torch ")
    actors = json.loads((tmp_path / "m-out" / "run.json").read_text())["model_actors"]
    assert len(actors) == 1 and re.fullmatch(r"cpu \(.+\) on \S+ node [0-9a-f]{12} pid \d+", actors[0]), (
        actors
    )
    out = tmp_path / "m-out"
    assert s.out == str(out) and s.done == 3
    from archive_colorize.sources.manifest import safe_name

    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == sorted(["mural.png", "mural-styled.png", f"{safe_name('../escape')}.png"])
    assert safe_name("../escape").startswith("escape-")  # inside OUT/images, with a hash of the raw id
    assert not (tmp_path / "escape.png").exists()
    plain = Image.open(out / "images" / "mural.png")
    styled = Image.open(out / "images" / "mural-styled.png")
    assert plain.tobytes() != styled.tobytes()
    rows = {r["id"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert rows["styled"]["style_uri"] == b and rows["../escape"]["output_uri"].startswith(
        str(out / "images" / "escape-")
    )


@pytest.mark.shared
def test_the_18_historical_scans(ray_cluster, weights_path, tmp_path):
    """Real archive scans of every kind in ../shared: all done, full size, coloured."""
    files = historical_files()
    manifest = make_manifest(
        tmp_path / "historical.parquet", [str(f) for f in files], [f.stem for f in files]
    )
    s = run(RunOptions(manifest=str(manifest), weights=str(weights_path), working_size=WORKING, batch_size=4))
    assert (s.done, s.failed) == (18, 0)
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "historical-out" / "results.parquet").to_pylist()}
    for f in files:
        r = rows[f.stem]
        assert Image.open(r["output_uri"]).size == ImageOps.exif_transpose(Image.open(f)).size
        assert r["mean_chroma"] > 0.5, f"{f.name}: output is grey"


def test_resuming_on_another_device_says_so(ray_cluster, weights_path, tmp_path):
    """Rows made on another device may differ in their last bits: the resumed run says so,
    on screen and in run.json."""
    import io

    from rich.console import Console

    manifest = str(ROOT / "manifests" / "sample.parquet")
    out = tmp_path / "out"
    run(RunOptions(manifest=manifest, out=str(out), weights=str(weights_path), working_size=WORKING, limit=2))
    record = json.loads((out / "run.json").read_text())
    here = record["devices"]
    assert len(here) == 1 and here[0].startswith("cpu (")
    gpu = "cuda:0 (NVIDIA H200; CUDA 12.8, cuDNN 91002; torch 2.13.0)"
    record["devices"] = [gpu]  # as if the first rows had been made on a GPU node
    (out / "run.json").write_text(json.dumps(record))
    screen = io.StringIO()
    s = run(
        RunOptions(manifest=manifest, out=str(out), weights=str(weights_path), working_size=WORKING),
        console=Console(file=screen, width=400),
    )
    assert s.processed_now == 3
    assert (
        f"note: earlier rows here were made on {gpu}; the rows made now on {here[0]} may differ"
        in screen.getvalue()
    )
    after = json.loads((out / "run.json").read_text())
    assert after["devices"] == here and after["earlier_devices"] == [gpu]
