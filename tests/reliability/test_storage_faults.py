"""Transient S3 faults, made by a loopback proxy in front of moto: retried with backoff,
then reported as a failed row (inputs) or a stopped run (outputs)."""

import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs

from archive_colorize.core import storage
from archive_colorize.errors import StorageError
from archive_colorize.run.pipeline import RunOptions, run

from .conftest import WORKING, tiny_scans
from .proxy import FaultyProxy

# Fail fast inside botocore, so the retries under test are ours and the test stays short.
FAST = {"config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 5}}


@pytest.fixture()
def proxy(s3_server):
    host, port = s3_server["endpoint_url"].rsplit("/", 1)[-1].split(":")
    p = FaultyProxy((host, int(port)))
    yield p
    p.close()


@pytest.fixture(scope="module")
def bucket(s3_server, tmp_path_factory):
    fs = s3fs.S3FileSystem(**s3_server)
    if not fs.exists("flaky"):
        fs.mkdir("flaky")
    manifest = tiny_scans(tmp_path_factory.mktemp("flaky"), 12, seed=3)
    ids, uris = [], []
    for p in sorted(manifest.parent.glob("*.jpg")):
        fs.put(str(p), f"flaky/scans/{p.name}")
        ids.append(p.stem)
        uris.append(f"s3://flaky/scans/{p.name}")
    return ids, uris


def _options(s3_server, proxy, fast=True):
    so = {**s3_server, "endpoint_url": proxy.endpoint_url, "skip_instance_cache": True}
    return {**so, **FAST} if fast else so


def test_dropped_connections_are_retried_then_succeed(s3_server, proxy, bucket):
    _, uris = bucket
    proxy.reset_next = 2
    fs, path = storage.resolve(uris[0], _options(s3_server, proxy))
    data = storage.read_bytes(fs, path)
    assert data[:2] == b"\xff\xd8" and proxy.resets == 2 and proxy.connections >= 3


def test_an_outage_is_retried_with_backoff_then_reported(s3_server, proxy, bucket, monkeypatch):
    _, uris = bucket
    proxy.down = True
    fs, path = storage.resolve(uris[0], _options(s3_server, proxy))
    t0 = time.monotonic()
    with pytest.raises(
        StorageError,
        match=r"^reading flaky/scans/scan_00000.jpg: EndpointConnectionError: .* \(after 4 retries\)$",
    ):
        storage.read_bytes(fs, path)
    waited = time.monotonic() - t0
    assert proxy.connections >= storage.RETRIES + 1
    assert waited >= storage.BACKOFF_S * (2**storage.RETRIES - 1)  # 0.5 + 1 + 2 + 4 s of backoff


def test_run_through_a_flaky_slow_proxy_completes(
    ray_cluster, s3_server, proxy, bucket, weights_path, tmp_path
):
    ids, uris = bucket
    proxy.reset_next, proxy.delay_s = 5, 0.05
    manifest = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ids, "uri": uris}), manifest)
    s = run(
        RunOptions(
            manifest=str(manifest),
            out="s3://flaky/out",
            weights=str(weights_path),
            working_size=WORKING,
            batch_size=3,
            storage_options=_options(s3_server, proxy, fast=False),
        )
    )
    assert (s.done, s.failed) == (12, 0)
    assert proxy.resets == 5
    fs = s3fs.S3FileSystem(**s3_server)
    assert len(fs.ls("flaky/out/images")) == 12


def test_input_outage_becomes_a_failed_row_and_the_run_goes_on(
    ray_cluster, s3_server, proxy, bucket, weights_path, tmp_path
):
    ids, uris = bucket
    proxy.down = True
    local = tiny_scans(tmp_path / "local", 2, seed=9)
    manifest = tmp_path / "m.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["local_a", "local_b", "remote"],
                "uri": [str(local.parent / "scan_00000.jpg"), str(local.parent / "scan_00001.jpg"), uris[0]],
            }
        ),
        manifest,
    )
    s = run(
        RunOptions(
            manifest=str(manifest),
            out=str(tmp_path / "out"),
            weights=str(weights_path),
            working_size=WORKING,
            storage_options=_options(s3_server, proxy),
        )
    )
    assert (s.done, s.failed) == (2, 1)
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "out" / "results.parquet").to_pylist()}
    assert rows["remote"]["error"].startswith(
        f"cannot read {uris[0]}: EndpointConnectionError: Could not connect"
    )
    assert rows["remote"]["error"].endswith("(after 4 retries)")
