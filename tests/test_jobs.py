"""`archive-colorize submit` against a real Ray head started with `ray start --head`, token
authentication on (as Ray 2.60 has it), through the real Jobs API: submit, wait, check
results, resubmit (no-op), resume after `ray job delete`, one job per OUT, a nightly glob
with a bad manifest, a missing or wrong token, an address without a scheme, a head that
never answers."""

import json
import os
import secrets
import shutil
import signal
import socket
import threading
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from archive_colorize.run.jobs import KEY, TOKEN_HINT, job_key

from .conftest import _free_port
from .reliability.conftest import cli, tiny_scans

RAY = str(Path(sys.executable).parent / "ray")
TOKEN = secrets.token_hex(16)
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}  # what the operator's shell has


def api(address: str, method: str, path: str, body: dict | None = None, token: str = TOKEN):
    """The Jobs REST API itself, with the token: the tests' own view of the head."""
    req = urllib.request.Request(
        address + path,
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def jobs_of(address: str, key: str) -> list[dict]:
    return [j for j in api(address, "GET", "/api/jobs/") if (j.get("metadata") or {}).get(KEY) == key]


def wait_job(address: str, sid: str, timeout: float = 300) -> str:
    deadline = time.time() + timeout
    while (status := api(address, "GET", f"/api/jobs/{sid}")["status"]) not in (
        "SUCCEEDED",
        "FAILED",
        "STOPPED",
    ):
        assert time.time() < deadline, f"{sid} still {status}"
        time.sleep(1)
    return status


def submit(*args, env=AUTH, **kw):
    return cli("submit", *args, env=env, **kw)


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
    env.update(AUTH)  # token authentication on, with a token of this test's own
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
        deadline = time.time() + 240
        while True:  # the Jobs API comes up a moment after `ray start` returns, its agent later
            try:
                probe = api(address, "POST", "/api/jobs/", {"entrypoint": "true"})["submission_id"]
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(2)
        assert wait_job(address, probe, 240) == "SUCCEEDED"
        yield address
    finally:
        _kill_session(head.pid)
        shutil.rmtree(temp, ignore_errors=True)


def test_submit_wait_resubmit_resume_after_a_deleted_attempt_and_one_job_per_out(
    ray_head, weights_path, tmp_path
):
    import hashlib

    from archive_colorize.model.weights import load_weights

    manifest = tiny_scans(tmp_path / "scans", 12, seed=4)
    out = tmp_path / "out"
    args = (str(manifest), "--address", ray_head, "--out", str(out), "--weights", str(weights_path),
            "--working-size", "64")  # fmt: skip
    key = job_key(
        str(manifest),
        hashlib.sha256(manifest.read_bytes()).hexdigest(),
        load_weights(weights_path).file_sha256,
        str(out),
        "png",
        64,
    )  # deterministic from manifest, weights and output

    # an unfinished job: the first 5 rows only
    r = submit(*args, "--limit", "5")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == f"{manifest}: submitted {key}: starts 5 of 12 rows into {out}"
    r = submit(*args)
    assert r.stdout.strip() == f"{manifest}: already running as {key}: nothing submitted", r.stderr
    # a rewritten manifest is a new key, but the same OUT: not a second writer
    other = tiny_scans(tmp_path / "other", 3, seed=5)
    r = submit(str(other), *args[1:])
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == (
        f"{other}: already running as {key}, which writes {out} for another manifest or options: "
        "nothing submitted"
    )
    assert wait_job(ray_head, key) == "SUCCEEDED"
    assert pq.read_table(out / "results.parquet").num_rows == 5

    r = submit(*args, "--limit", "3", "--wait")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == f"{manifest}: submitted {key}-2: resumes 3 of 12 rows into {out}"
    # the operator deletes the first attempt: the next is after the highest left, not "-2" again
    api(ray_head, "DELETE", f"/api/jobs/{key}")
    r = submit(*args, "--wait", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == f"{manifest}: submitted {key}-3: resumes 4 of 12 rows into {out}"
    res = pq.read_table(out / "results.parquet")
    assert res.num_rows == 12 and set(res.column("status").to_pylist()) == {"done"}

    r = submit(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (
        r.stdout.strip()
        == f"{manifest}: already finished: 12 done, 0 failed of 12 in {out}; nothing submitted"
    )
    assert sorted(j["submission_id"] for j in jobs_of(ray_head, key)) == [f"{key}-2", f"{key}-3"]


def test_a_nightly_glob_with_a_bad_manifest_submits_the_others(ray_head, tmp_path):
    import pyarrow as pa

    night = tmp_path / "night"
    tiny_scans(night, 2, seed=9).rename(night / "b-good.parquet")
    pq.write_table(pa.table({"id": ["x", "x"], "uri": ["a.jpg", "b.jpg"]}), night / "a-bad.parquet")
    r = submit(str(night / "*.parquet"), "--address", ray_head, "--working-size", "64")
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == (
        f"Error: {night / 'a-bad.parquet'}: manifest column 'id' has duplicate value(s) ['x'] at row(s) [0, 1]"
    ), r.stderr
    line = r.stdout.strip()
    assert line.startswith(f"{night / 'b-good.parquet'}: submitted colorize-") and line.endswith(
        f": starts 2 of 2 rows into {night / 'b-good-out'}"
    ), r.stdout
    sid = line.split("submitted ")[1].split(":")[0]
    assert wait_job(ray_head, sid) == "SUCCEEDED"


def test_submit_refuses_credentials_and_bad_manifests_before_submitting(ray_head, tmp_path):
    manifest = tiny_scans(tmp_path / "scans", 2, seed=8)
    r = submit(str(manifest), "--address", ray_head, "--storage-options", '{"secret": "x", "key": "y"}')
    assert r.returncode == 1
    assert r.stderr.splitlines()[0].startswith(
        "Error: --storage-options for submit must not hold credentials"
    )
    r = submit(str(tmp_path / "nope.parquet"), "--address", ray_head)
    assert (
        r.returncode == 1
        and r.stderr.splitlines()[0] == f"Error: manifest not found: {tmp_path / 'nope.parquet'}"
    )


def test_a_missing_or_wrong_token_is_one_line_naming_the_token(ray_head, tmp_path):
    manifest = tiny_scans(tmp_path / "scans", 2, seed=8)
    hint = f"Hint: {TOKEN_HINT}"
    for env, first in [
        ({"RAY_AUTH_MODE": "", "RAY_AUTH_TOKEN": ""}, f"Error: the Ray Jobs API at {ray_head} wants a token (HTTP 401)"),
        ({**AUTH, "RAY_AUTH_TOKEN": "0" * 32}, f"Error: the Ray Jobs API at {ray_head} refused this token (HTTP 403)"),
    ]:  # fmt: skip
        r = submit(str(manifest), "--address", ray_head, env={**env, "HOME": str(tmp_path)})
        assert r.returncode == 1
        assert r.stderr.splitlines() == [first, hint], r.stderr
    assert "RAY_AUTH_MODE=token" in TOKEN_HINT and "RAY_AUTH_TOKEN_PATH" in TOKEN_HINT


def test_an_address_without_a_scheme_is_refused_at_once(tmp_path):
    manifest = tiny_scans(tmp_path / "scans", 2, seed=8)
    t0 = time.time()
    r = submit(str(manifest), "--address", "127.0.0.1:8265")
    assert r.returncode == 1 and time.time() - t0 < 30
    assert r.stderr.splitlines() == [
        "Error: --address 127.0.0.1:8265: submit talks to the Ray Jobs API, which is a URL",
        "Hint: give the dashboard address, e.g. http://HEAD:8265 (`run --address` is the one that takes the "
        "cluster's HOST:6379)",
    ]


def test_a_head_that_never_answers_times_out(tmp_path):
    manifest = tiny_scans(tmp_path / "scans", 2, seed=8)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(silent.accept()) for _ in range(8)], daemon=True).start()
    address = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        t0 = time.time()
        r = submit(str(manifest), "--address", address, "--api-timeout", "2", timeout=120)
        took = time.time() - t0
    finally:
        silent.close()
    assert r.returncode == 1
    assert r.stderr.splitlines()[0] == f"Error: the Ray Jobs API at {address} did not answer within 2 s", (
        r.stderr
    )
    assert took < 60, took


def test_a_server_error_is_quoted_by_its_last_line():
    from archive_colorize.run.jobs import _api_error

    e = RuntimeError(
        "Request failed with status code 500: Traceback (most recent call last):\n"
        '  File "/ray/dashboard/modules/job/job_head.py", line 385, in submit_job\n'
        "    raise ValueError(msg)\n"
        "ValueError: Job with submission_id colorize-1 already exists. Please use a different submission_id.\n"
    )
    err = _api_error("http://head:8265", e, 60)
    assert str(err) == (
        "the Ray Jobs API at http://head:8265 answered: ValueError: Job with submission_id colorize-1 "
        "already exists. Please use a different submission_id."
    )
    assert err.hint == "see pipelines/README.md for running on a cluster" and not err.for_every_manifest
