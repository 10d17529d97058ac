"""docs/publishing.md's example, done: a run with --iiif-base pointing at docs/serve_out.py
on loopback, and the manifest and every image fetched as a viewer on another origin would."""

import json
import runpy
import threading
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq

from archive_colorize.run.pipeline import RunOptions, run

from .conftest import ROOT, _free_port, sample


def _get(url: str):
    req = urllib.request.Request(url, headers={"Origin": "https://viewer.example"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, r.headers, r.read()


def test_a_published_run_is_fetchable_by_a_viewer(ray_cluster, weights_path, tmp_path):
    for n in ("chelsea", "coffee"):
        (tmp_path / f"{n}.jpg").write_bytes(sample(f"{n}.jpg").read_bytes())
    pq.write_table(
        pa.table({"id": ["chelsea", "coffee"], "uri": ["chelsea.jpg", "coffee.jpg"]}), tmp_path / "m.parquet"
    )
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    out = tmp_path / "out"
    s = run(RunOptions(manifest=str(tmp_path / "m.parquet"), out=str(out), weights=str(weights_path),
                       working_size=64, iiif_base=base))  # fmt: skip
    assert s.done == 2
    server = runpy.run_path(str(ROOT / "docs" / "serve_out.py"))["serve"](str(out), port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status, headers, body = _get(f"{base}/iiif/manifest.json")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
        assert headers["Content-Type"] == "application/ld+json"
        doc = json.loads(body)
        assert doc["id"] == f"{base}/iiif/manifest.json"
        for canvas in doc["items"]:
            colour = canvas["items"][0]["items"][0]["body"]["items"][0]
            status, headers, data = _get(colour["id"])
            assert status == 200 and headers["Content-Type"] == colour["format"] == "image/png"
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
        status, headers, _ = _get(doc["seeAlso"][0]["id"])
        assert status == 200
    finally:
        server.shutdown()
