"""`archive-colorize submit` against a real Ray head started with `ray start --head`,
through the real Jobs API: submit, wait, check results, resubmit (no-op), resume."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from archive_colorize.run.jobs import KEY, job_key, submit, wait
from archive_colorize.run.pipeline import RunOptions

from .conftest import _free_port
from .reliability.conftest import cli, tiny_scans

RAY = str(Path(sys.executable).parent / "ray")


def _kill_session(sid: int) -> None:
    """`ray stop` would also stop the test session's own cluster: kill only the processes of
    this head, which `ray start` (run as a session leader) and all it spawned share."""
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == sid:
                    os.kill(int(d.name), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass


@pytest.fixture(scope="module")
def ray_head():
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths have a length limit
    port, dash = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["PATH"] = (
        f"{Path(sys.executable).parent}:{env.get('PATH', '')}"  # the job's shell finds archive-colorize
    )
    # Ray 2.5x turns token auth on by itself when ~/.ray/auth_token exists; this test head
    # is on loopback only, so say which mode it uses instead of depending on that file.
    env["RAY_AUTH_MODE"] = "disabled"
    # Every port explicit: the test session's own Ray holds the defaults (the dashboard
    # agent's 52365 among them), and a second agent that cannot bind never accepts jobs.
    ports = [
        f"--{name}={_free_port()}"
        for name in (
            "dashboard-agent-listen-port",
            "dashboard-agent-grpc-port",
            "metrics-export-port",
            "runtime-env-agent-port",
            "ray-client-server-port",
            "node-manager-port",
            "object-manager-port",
        )
    ]
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--temp-dir={temp}",
            *ports,
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = head.communicate(timeout=180)
        assert head.returncode == 0, output[-3000:]
        address = f"http://127.0.0.1:{dash}"
        from ray.job_submission import JobSubmissionClient

        deadline = time.time() + 60
        while True:  # the Jobs API comes up a moment after `ray start` returns
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(1)
        # warm up: the job agent starts after the API; a trivial job proves it is there
        client, deadline = JobSubmissionClient(address), time.time() + 240
        while True:
            try:
                probe = client.submit_job(entrypoint="true")
                break
            except RuntimeError as e:
                if "try again later" not in str(e) or time.time() > deadline:
                    raise
                time.sleep(2)
        while str(client.get_job_status(probe)).split(".")[-1] not in ("SUCCEEDED", "FAILED", "STOPPED"):
            assert time.time() < deadline, "the probe job never finished"
            time.sleep(1)
        yield address
    finally:
        _kill_session(head.pid)
        shutil.rmtree(temp, ignore_errors=True)


def test_submit_wait_resubmit_and_resume(ray_head, weights_path, tmp_path):
    from ray.job_submission import JobSubmissionClient

    manifest = tiny_scans(tmp_path / "scans", 12, seed=4)
    out = tmp_path / "out"
    opts = RunOptions(
        manifest=str(manifest), out=str(out), weights=str(weights_path), working_size=64, limit=5
    )

    # an unfinished job: the first 5 rows only
    first = submit(opts, ray_head)
    assert (
        first.action == "submitted"
        and first.message == f"submitted {first.submission_id}: starts 5 of 12 rows into {out}"
    )
    again = submit(opts, ray_head)
    assert (
        again.action == "running"
        and again.message == f"already running as {first.submission_id}: nothing submitted"
    )
    assert wait(ray_head, first.submission_id, timeout_s=240) == "SUCCEEDED"
    assert pq.read_table(out / "results.parquet").num_rows == 5

    from archive_colorize.model.weights import load_weights
    import hashlib

    key = job_key(
        str(manifest),
        hashlib.sha256(manifest.read_bytes()).hexdigest(),
        load_weights(weights_path).file_sha256,
        str(out),
        "png",
        64,
    )
    assert first.submission_id == key  # deterministic from manifest, weights and output

    args = (
        "submit",
        str(manifest),
        "--address",
        ray_head,
        "--out",
        str(out),
        "--weights",
        str(weights_path),
        "--working-size",
        "64",
    )
    r = cli(*args, "--wait", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == f"{manifest}: submitted {key}-2: resumes 7 of 12 rows into {out}"
    res = pq.read_table(out / "results.parquet")
    assert res.num_rows == 12 and set(res.column("status").to_pylist()) == {"done"}

    r = cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (
        r.stdout.strip()
        == f"{manifest}: already finished: 12 done, 0 failed of 12 in {out}; nothing submitted"
    )
    jobs = [j for j in JobSubmissionClient(ray_head).list_jobs() if (j.metadata or {}).get(KEY) == key]
    assert sorted(j.submission_id for j in jobs) == [key, f"{key}-2"]


def test_submit_refuses_credentials_and_bad_manifests_before_submitting(ray_head, tmp_path):
    manifest = tiny_scans(tmp_path / "scans", 2, seed=8)
    r = cli(
        "submit", str(manifest), "--address", ray_head, "--storage-options", '{"secret": "x", "key": "y"}'
    )
    assert r.returncode == 1
    assert r.stderr.splitlines()[0].startswith(
        "Error: --storage-options for submit must not hold credentials"
    )
    r = cli("submit", str(tmp_path / "nope.parquet"), "--address", ray_head)
    assert (
        r.returncode == 1
        and r.stderr.splitlines()[0] == f"Error: manifest not found: {tmp_path / 'nope.parquet'}"
    )


def test_token_authentication_errors_name_the_token_not_the_address():
    from archive_colorize.run.jobs import AUTH_HINT, auth_hint

    class AuthenticationError(Exception):
        pass

    assert auth_hint(AuthenticationError("Authentication required")) == AUTH_HINT
    assert auth_hint(RuntimeError("HTTP 401 Unauthorized")) == AUTH_HINT
    assert auth_hint(ConnectionError("Connection refused")) is None
    assert (
        "RAY_AUTH_MODE=token" in AUTH_HINT
        and "~/.ray/auth_token" in AUTH_HINT
        and "RAY_AUTH_TOKEN" in AUTH_HINT
    )
