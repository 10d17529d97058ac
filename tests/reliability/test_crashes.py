"""SIGKILL the driver at many moments, kill a model actor, fill and deny the output: every
id ends `done` exactly once, with the bytes an uninterrupted run writes."""

import signal
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from archive_colorize.run import progress
from archive_colorize.errors import StorageError
from archive_colorize.run.pipeline import RunOptions, run
from archive_colorize.core.storage import resolve

from .conftest import WORKING, cli, popen_cli, tiny_scans, wait_until_stopped

N = 120


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    return tiny_scans(tmp_path_factory.mktemp("scans"), N)


@pytest.fixture(scope="module")
def reference(ray_cluster, scans, weights_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    s = run(
        RunOptions(
            manifest=str(scans), out=str(out), weights=str(weights_path), working_size=WORKING, batch_size=4
        )
    )
    assert (s.done, s.failed) == (N, 0)
    return {p.name: p.read_bytes() for p in (out / "images").iterdir()}


def _args(scans, out, weights_path, ray_cluster):
    return (
        "run",
        str(scans),
        "--out",
        str(out),
        "--weights",
        str(weights_path),
        "--working-size",
        str(WORKING),
        "--batch-size",
        "2",
        "--progress-every",
        "0",
        "--address",
        ray_cluster,
    )


def _log_is_readable(out: Path) -> int:
    fs, root = resolve(str(out))
    log = progress.read_log(fs, root)
    return 0 if log is None else log.num_rows


def _parts(out: Path) -> int:
    d = out / "_progress"
    return len(list(d.glob("part-*.parquet"))) if d.exists() else 0


def test_sigkill_at_many_moments_then_resume(ray_cluster, scans, reference, weights_path, tmp_path):
    out = tmp_path / "out"
    args = _args(scans, out, weights_path, ray_cluster)
    moments = []

    def crash(point: str, check) -> None:
        r = cli(*args, env={"ARCHIVE_COLORIZE_CRASH_AT": point})
        assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-1500:])
        moments.append(point)
        check()

    crash("lock-acquired", lambda: (assert_(_parts(out) == 0), assert_((out / "_lock.json").exists())))
    crash("progress-written:3", lambda: assert_(_parts(out) == 3))
    crash("progress-written:5", lambda: assert_(_parts(out) == 8))
    rows_before = _log_is_readable(out)

    # a kill from outside, mid-stream: the run freezes itself after its third progress file
    # (a crash point, so no race with the clock), and the test SIGKILLs it there
    proc = popen_cli(*args, env={"ARCHIVE_COLORIZE_STOP_AT": "progress-written:3"})
    wait_until_stopped(proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    moments.append("external SIGKILL mid-stream")
    assert _parts(out) == 11 and _log_is_readable(out) > rows_before

    crash("before-compact", lambda: assert_(not (out / "results.parquet").exists()))
    crash(
        "compacted",
        lambda: (
            assert_(pq.read_table(out / "results.parquet").num_rows == N),
            assert_(not (out / "run.json").exists()),
        ),
    )
    assert len(moments) == 6

    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    res = pq.read_table(out / "results.parquet")
    assert res.num_rows == N and set(res.column("status").to_pylist()) == {"done"}
    fs, root = resolve(str(out))
    log = progress.read_log(fs, root, columns=["id", "status"])
    done_ids = [
        i for i, s in zip(log.column("id").to_pylist(), log.column("status").to_pylist()) if s == "done"
    ]
    assert len(done_ids) == len(set(done_ids)) == N, "an id was recorded done twice"
    images = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    assert images.keys() == reference.keys()
    assert [k for k in images if images[k] != reference[k]] == []
    assert not [p for p in out.rglob(".tmp-*")], "a temporary file was left behind"
    assert not (out / "_lock.json").exists()


def assert_(cond: bool) -> None:
    assert cond


@pytest.mark.parametrize(
    "fault,point",
    [
        # the actor SIGKILLs itself in its third batch, before it returns it
        ("ARCHIVE_COLORIZE_CRASH_AT", "model-batch:3"),
        # a simulated CUDA error ('illegal memory access') in the third batch: not the scans'
        # fault, so no row may fail; the actor process ends instead
        ("ARCHIVE_COLORIZE_RAISE_AT", "device-error:3"),
    ],
)
def test_a_model_actor_that_dies_or_hits_a_device_error(
    fault, point, ray_cluster, scans, reference, weights_path, tmp_path, monkeypatch
):
    """Once across restarts (the restarted actor carries on): Ray starts another actor and
    the batch is done again. Every row ends done, recorded once, with the bytes of an
    uninterrupted run."""
    out = tmp_path / "out"
    marker = tmp_path / "fault-fired"
    monkeypatch.setenv(fault, point)
    monkeypatch.setenv("ARCHIVE_COLORIZE_CRASH_ONCE", str(marker))
    s = run(
        RunOptions(
            manifest=str(scans),
            out=str(out),
            weights=str(weights_path),
            working_size=WORKING,
            batch_size=2,
            progress_every=0,
        )
    )
    assert marker.exists(), "the model actor never reached its fault"
    assert (s.done, s.failed) == (N, 0)
    fs, root = resolve(str(out))
    ids = progress.read_log(fs, root, columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids)) == N, "a batch was recorded twice after the actor restarted"
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == reference


@pytest.fixture()
def small_disk(tmp_path):
    """A real 1 MB filesystem (tmpfs) as the output location."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_stops_with_a_clear_message_then_resumes(
    ray_cluster, scans, reference, weights_path, small_disk
):
    out = small_disk / "out"
    args = _args(scans, out, weights_path, ray_cluster)
    r = cli(*args, "--format", "tiff")  # uncompressed TIFFs: 120 x 12 kB (in 4 kB pages) overflow 1 MB
    assert r.returncode == 1, r.stderr[-2000:]
    lines = [
        line
        for line in r.stderr.splitlines()
        if line.strip() and not line.startswith(("model actor", "finish tasks"))
    ]  # after the plan lines
    assert (
        lines[0].startswith(f"Error: cannot write to the output location {out}")
        and "No space left on device" in lines[0]
    ), lines
    assert lines[1].startswith("Hint: free space or fix permissions there"), lines
    assert "Traceback" not in r.stderr
    done_before = _log_is_readable(out)
    assert 0 < done_before < N
    assert not [p for p in out.rglob(".tmp-*")], "a partial file was left behind"
    for p in (out / "images").iterdir():  # every image on disk is whole
        from PIL import Image

        Image.open(p).load()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    r = cli(*args, "--format", "tiff")
    assert r.returncode == 0, r.stderr[-2000:]
    res = pq.read_table(out / "results.parquet")
    assert res.num_rows == N and set(res.column("status").to_pylist()) == {"done"}


def test_denied_output_refused_before_work_then_resumes(ray_cluster, scans, weights_path, small_disk):
    out = small_disk / "out"
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(
        StorageError, match=f"^cannot write to the output location {out}: .*Read-only file system"
    ):
        run(RunOptions(manifest=str(scans), out=str(out), weights=str(weights_path), working_size=WORKING))
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    s = run(
        RunOptions(
            manifest=str(scans), out=str(out), weights=str(weights_path), working_size=WORKING, limit=10
        )
    )
    assert s.processed_now == 10 and s.done == 10
