"""Every kind of bad or awkward input, in one real run: each row is a correct output or a
failed row with a specific reason, and the good rows in the same batch still succeed."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from archive_colorize.run.pipeline import RunOptions, run

from ..conftest import ROOT, sample, sepia_print
from .badfiles import make_bad_inputs


@pytest.fixture(scope="module")
def bad_run(ray_cluster, s3_server, weights_path, tmp_path_factory):
    import s3fs

    d = tmp_path_factory.mktemp("bad")
    cases = make_bad_inputs(d / "inputs")
    s3 = s3fs.S3FileSystem(**s3_server)
    if not s3.exists("bad-inputs"):
        s3.mkdir("bad-inputs")
    good = [sample("rocket.jpg"), sepia_print(d / "sepia_print.jpg")]
    ids = [c.id for c in cases] + ["missing_s3_key", "good_1", "good_2"]
    uris = [c.uri for c in cases] + ["s3://bad-inputs/scans/nothing-here.jpg"] + [str(g) for g in good]
    manifest = d / "bad.parquet"
    pq.write_table(pa.table({"id": ids, "uri": uris}), manifest)
    out = d / "out"
    # one batch holds every case, so a bad row cannot take its neighbours down with it
    summary = run(
        RunOptions(
            manifest=str(manifest),
            out=str(out),
            weights=str(weights_path),
            working_size=96,
            batch_size=len(ids),
            storage_options=dict(s3_server),
        )
    )
    rows = {r["id"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    return cases, rows, summary


def test_every_bad_case_gets_its_reason_or_a_correct_output(bad_run):
    cases, rows, _ = bad_run
    for c in cases:
        r = rows[c.id]
        assert r["status"] == c.expect, (c.id, r["error"])
        if c.expect == "failed":
            assert r["error"].startswith(c.reason), (c.id, r["error"])
            assert "\n" not in r["error"] and r["output_uri"] is None
        else:
            assert r["error"] is None
            out = Image.open(r["output_uri"])
            assert out.size == c.size == (r["width"], r["height"]), c.id
            if c.bit_depth == 16:
                # Pillow reads 16-bit RGB PNG as 8-bit RGB, so read the depth from the IHDR chunk
                assert open(r["output_uri"], "rb").read(25)[24] == 16, c.id
            elif c.size != (1, 1):
                rgb = np.asarray(out.convert("RGB"), np.int16)
                assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 0.5, f"{c.id}: output is grey"


def test_missing_s3_key_and_good_rows(bad_run):
    cases, rows, summary = bad_run
    assert rows["missing_s3_key"]["status"] == "failed"
    assert rows["missing_s3_key"]["error"] == "input not found: s3://bad-inputs/scans/nothing-here.jpg"
    assert rows["good_1"]["status"] == rows["good_2"]["status"] == "done"
    n_failed = sum(c.expect == "failed" for c in cases) + 1
    assert (summary.failed, summary.done) == (n_failed, len(rows) - n_failed)


def test_unreadable_input_as_a_user(tmp_path, weights_path):
    """Root reads any file, so the permission case runs the real `prepare` step in a
    process that has dropped to an unprivileged user (as archive jobs usually run)."""
    if shutil.which("setpriv") is None and os.geteuid() == 0:
        pytest.skip("needs setpriv to drop root")
    tmp_path.chmod(0o755)
    f = tmp_path / "locked.jpg"
    shutil.copy(sample("chelsea.jpg"), f)
    f.chmod(0o000)
    code = (
        "import pyarrow as pa; from archive_colorize.run.stages import prepare;"
        f"b = prepare(pa.table({{'id': ['x'], 'uri': [{str(f)!r}]}}), base_dir='/', storage_options={{}},"
        " working_size=64, max_pixels=10**8); print(b.column('error')[0].as_py())"
    )
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == f"permission denied reading {f}"
