"""Hostile manifests, concurrent runs, weights and secrets."""

import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archive_colorize.errors import ConfigError, ManifestError
from archive_colorize.sources.manifest import safe_name
from archive_colorize.run.lock import STALE_LOCK_S
from archive_colorize.run.options import LOCK
from archive_colorize.run.pipeline import RunOptions, run

from ..conftest import ROOT
from .conftest import WORKING, cli, popen_cli, tiny_scans

HOSTILE_IDS = [
    "../../../../tmp/escaped",
    "/etc/passwd",
    "/",
    "..",
    ".",
    "nul\x00byte",
    "x" * 5000,
    "façade/été 1936 — 写真",
    "a/b",
    "a_b",
    "a?b",
    "a_b-" + __import__("hashlib").sha256(b"a/b").hexdigest()[:8],  # the name 'a/b' is given
    "~/.ssh/authorized_keys",
    "C:\\Windows\\system32",
    " ",
    "\n",
    "emoji 🙂",
]


def _tree(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    tiny_scans(d / "scans", len(HOSTILE_IDS) + 2, seed=5)
    uris = [str(d / "scans" / f"scan_{i:05d}.jpg") for i in range(len(HOSTILE_IDS) + 2)]
    ids = HOSTILE_IDS + ["named_1", "named_2"]
    onames = [None] * len(HOSTILE_IDS) + ["../../outside", "/abs/outside"]
    manifest = d / "hostile.parquet"
    pq.write_table(pa.table({"id": ids, "uri": uris, "output_name": onames}), manifest)
    return d, manifest, ids


def test_hostile_ids_stay_inside_out_and_never_collide(ray_cluster, hostile, weights_path):
    d, manifest, ids = hostile
    before = _tree(d)
    outs = []
    for name in ("out1", "out2"):
        s = run(
            RunOptions(
                manifest=str(manifest), out=str(d / name), weights=str(weights_path), working_size=WORKING
            )
        )
        assert (s.done, s.failed) == (len(ids), 0)
        outs.append(d / name)
    created = _tree(d) - before
    assert all(
        p.resolve().is_relative_to(d / "out1") or p.resolve().is_relative_to(d / "out2") for p in created
    )
    assert not Path("/tmp/escaped.png").exists() and not list(Path("/").glob("outside*"))
    rows = {r["id"]: r for r in pq.read_table(outs[0] / "results.parquet").to_pylist()}
    assert set(rows) == set(ids)  # the original ids, NUL and all, are kept
    files = [Path(r["output_uri"]) for r in rows.values()]
    assert len({f.name for f in files}) == len(ids), "two ids were given the same file name"
    assert len({f.name.casefold() for f in files}) == len(ids)
    for f in files:
        assert f.parent == outs[0] / "images" and f.exists() and len(f.name) <= 140
    again = {
        r["id"]: Path(r["output_uri"]).name for r in pq.read_table(outs[1] / "results.parquet").to_pylist()
    }
    assert again == {k: Path(v["output_uri"]).name for k, v in rows.items()}  # deterministic
    assert rows["a_b"]["output_uri"].endswith("/images/a_b.png")
    assert Path(rows["named_1"]["output_uri"]).name == safe_name("../../outside") + ".png"


def test_names_equal_but_for_case_are_refused_before_work(tmp_path, weights_path):
    manifest = tmp_path / "m.parquet"
    pq.write_table(
        pa.table({"id": ["scan_1", "Photo", "photo"], "uri": ["a.jpg", "b.jpg", "c.jpg"]}), manifest
    )
    with pytest.raises(
        ManifestError,
        match=r"^manifest column 'id': rows 1 and 2 give output names that differ only in case \('Photo' and 'photo'\)$",
    ):
        run(RunOptions(manifest=str(manifest), out=str(tmp_path / "out"), weights=str(weights_path)))
    assert not (tmp_path / "out").exists()


def test_a_second_run_on_the_same_out_is_refused_until_the_first_is_dead(ray_cluster, weights_path, tmp_path):
    manifest = tiny_scans(tmp_path / "scans", 200, seed=11)
    out = tmp_path / "out"
    args = (
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
        "--progress-every",
        "0",
        "--address",
        ray_cluster,
    )
    first = popen_cli(*args)
    deadline = time.time() + 120
    while not (out / "_progress").exists() and time.time() < deadline:
        assert first.poll() is None, first.communicate()[1][-1500:]
        time.sleep(0.05)
    second = cli(*args)
    assert second.returncode == 1
    assert (
        second.stderr.splitlines()[0]
        == f"Error: another run (pid {first.pid} on {socket.gethostname()}) is writing to {out}"
    )
    first.send_signal(signal.SIGKILL)
    first.communicate()
    third = cli(*args)  # the dead run's lock is stale: taken over
    assert third.returncode == 0, third.stderr[-1500:]
    assert pq.read_table(out / "results.parquet").num_rows == 200


@pytest.mark.parametrize("age,refused", [(10, True), (STALE_LOCK_S + 60, False)])
def test_lock_held_by_another_host(age, refused, weights_path, tmp_path):
    """A lock from another machine cannot be probed by pid: it is live while it is fresh."""
    manifest = tiny_scans(tmp_path / "scans", 1, seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK).write_text(json.dumps({"pid": 1, "host": "other-node", "time": time.time() - age}))
    opts = RunOptions(
        manifest=str(manifest), out=str(out), weights=str(weights_path), working_size=WORKING, limit=0
    )
    if refused:
        with pytest.raises(ConfigError, match=f"^another run \\(pid 1 on other-node\\) is writing to {out}$"):
            run(opts)
        assert json.loads((out / LOCK).read_text())["host"] == "other-node"
    else:
        run(opts)
        assert not (out / LOCK).exists()


def test_no_pickle_is_loaded_anywhere():
    """Weights are safetensors; checkpoints are read with weights_only=True. No code path
    may call pickle or an unrestricted torch.load."""
    import ast

    loads = 0
    for f in (ROOT / "archive_colorize").rglob("*.py"):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(
                    a.name.split(".")[0] in ("pickle", "cloudpickle", "dill") for a in node.names
                ), f
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in ("pickle", "cloudpickle", "dill"), f
            if (
                isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load"
            ):  # over several lines too
                loads += 1
                kw = {k.arg: k.value for k in node.keywords}
                assert "weights_only" in kw and getattr(kw["weights_only"], "value", None) is True, (
                    f"{f.name}:{node.lineno}: {ast.unparse(node)}"
                )
    assert loads >= 1  # the checkpoint reader is found, so the check sees what it must


def test_a_checkpoint_with_a_pickle_payload_is_refused(tmp_path):
    import pickle

    from archive_colorize.train.checkpoints import load_checkpoint

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path}/pwned",))

    ck = tmp_path / "step-000000010.pt"
    ck.write_bytes(pickle.dumps({"model": Boom()}))
    from archive_colorize.errors import WeightsError

    with pytest.raises(WeightsError) as e:  # one line for the CLI (`weights export` printed a traceback)
        load_checkpoint(str(ck))
    assert not (tmp_path / "pwned").exists()
    assert str(e.value) == (
        f"checkpoint {ck} is not one this project wrote: it holds pickled objects other than tensors (refused, never run)"
    )


def test_secrets_never_written(ray_cluster, s3_server, weights_path, tmp_path):
    """Credentials passed in --storage-options appear in no output, log or message."""
    secret = f"S3CRET-{uuid.uuid4().hex}"
    key_id = f"AKIA{uuid.uuid4().hex[:16].upper()}"
    so = {
        "endpoint_url": s3_server["endpoint_url"],
        "key": key_id,
        "secret": secret,
        "client_kwargs": {"aws_session_token": f"tok-{secret}"},
    }
    import s3fs

    fs = s3fs.S3FileSystem(**s3_server)
    if not fs.exists("secrets"):
        fs.mkdir("secrets")
    manifest = tiny_scans(tmp_path / "scans", 4, seed=2)
    t = pq.read_table(manifest)
    uris = [str(manifest.parent / u) for u in t.column("uri").to_pylist()] + ["s3://secrets/missing.jpg"]
    pq.write_table(
        pa.table({"id": t.column("id").to_pylist() + ["missing"], "uri": uris}), tmp_path / "m.parquet"
    )
    r = cli(
        "run",
        str(tmp_path / "m.parquet"),
        "--out",
        "s3://secrets/out",
        "--weights",
        str(weights_path),
        "--working-size",
        str(WORKING),
        "--address",
        ray_cluster,
        "--storage-options",
        json.dumps(so),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = pq.read_table(fs.open("secrets/out/results.parquet", "rb")).to_pylist()
    assert sorted(r["status"] for r in res) == ["done"] * 4 + ["failed"]
    blobs = {"stdout": r.stdout.encode(), "stderr": r.stderr.encode()}
    for p in fs.find("secrets/out"):
        blobs[p] = fs.cat_file(p)
    for log in Path(os.environ.get("TMPDIR", "/tmp")).glob("archive-colorize-ray-*.log"):
        blobs[str(log)] = log.read_bytes()
    for log in Path("/tmp/ray/session_latest/logs").rglob("*"):
        if log.is_file():
            blobs[str(log)] = log.read_bytes()
    assert "secrets/out/run.json" in blobs and "secrets/out/results.parquet" in blobs
    leaks = [name for name, b in blobs.items() if secret.encode() in b or key_id.encode() in b]
    assert leaks == []
    run_json = json.loads(blobs["secrets/out/run.json"])
    assert run_json["options"]["storage_options"]["secret"] == "***"
    assert run_json["options"]["storage_options"]["client_kwargs"]["aws_session_token"] == "***"


def test_the_lock_is_kept_fresh_on_a_timer(tmp_path, monkeypatch):
    """A slow start must not lose the lock: it is refreshed on a timer as well as with
    every progress file, and the timer stops with the release."""
    import json
    import time

    import fsspec

    from archive_colorize.run import lock as lock_module

    monkeypatch.setattr(lock_module, "REFRESH_S", 0.05)
    held = lock_module.OutputLock(fsspec.filesystem("file"), str(tmp_path))
    held.acquire()
    first = json.loads((tmp_path / LOCK).read_text())["time"]
    deadline = time.time() + 10
    while json.loads((tmp_path / LOCK).read_text())["time"] == first and time.time() < deadline:
        time.sleep(0.02)
    assert json.loads((tmp_path / LOCK).read_text())["time"] > first
    held.release()
    assert not (tmp_path / LOCK).exists() and not held._timer.is_alive()
