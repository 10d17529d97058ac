"""docs/publishing.md's example, done: a run with --iiif-base pointing at docs/serve_out.py
on loopback, and the manifest and every image fetched as a viewer on another origin would."""

import io
import json
import re
import runpy
import threading
import urllib.request

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from archive_colorize.run.pipeline import RunOptions, run

from .conftest import ROOT, _free_port, chromium, fetched, sample


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


def _validate_iiif(doc: dict) -> None:
    """The IIIF presentation validator's own check: its JSON schema for Presentation 3, run
    as it runs it (Draft 7)."""
    import jsonschema

    schema = json.loads(fetched("iiif/iiif_3_0.json", "The IIIF presentation validator's schema").read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=lambda e: list(e.absolute_path))
    assert not errors, [(list(e.absolute_path), e.message[:200]) for e in errors[:5]]


VIEWER = """<!doctype html><html><head><meta charset="utf-8"><link rel="icon" href="data:,">
<script src="mirador.min.js"></script></head>
<body><div id="m" style="position:absolute;inset:0"></div><script>
window.viewer = Mirador.viewer({id: "m", windows: [{id: "w", manifestId: "MANIFEST"}]});
</script></body></html>"""


def test_a_published_tiff_run_validates_and_mirador_shows_each_original(ray_cluster, weights_path, tmp_path):
    """--iiif-base on local scans written as TIFF: every id is http(s) under the base; the
    browser gets JPEG copies (the TIFF stays as the canvas's rendering), a thumbnail, and a
    grey copy of each local original; the validator's schema passes; in Mirador, on another
    origin, switching the Choice to the original loads it, with no console errors."""
    for n in ("chelsea", "coffee"):
        (tmp_path / f"{n}.jpg").write_bytes(sample(f"{n}.jpg").read_bytes())
    pq.write_table(pa.table({
        "id": ["chelsea", "coffee"], "uri": ["chelsea.jpg", "coffee.jpg"], "title": ["Cat", "Coffee"],
        "rights": ["https://creativecommons.org/publicdomain/mark/1.0/", "Courtesy of the archive"],
    }), tmp_path / "m.parquet")  # fmt: skip
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    out = tmp_path / "out"
    s = run(RunOptions(manifest=str(tmp_path / "m.parquet"), out=str(out), weights=str(weights_path),
                       working_size=64, iiif_base=base, fmt="tiff"))  # fmt: skip
    assert (s.done, s.unpublished_originals) == (2, 0)
    doc = json.loads((out / "iiif" / "manifest.json").read_text())
    ids = re.findall(r'"id": "([^"]+)"', json.dumps(doc))
    assert ids and all(i.startswith(base + "/") for i in ids), [i for i in ids if not i.startswith(base)]
    cat = doc["items"][0]
    assert cat["rights"] == "http://creativecommons.org/publicdomain/mark/1.0/"  # the canonical spelling
    colour, original = cat["items"][0]["items"][0]["body"]["items"]
    assert (colour["id"], colour["format"], colour["width"], colour["height"]) == (
        f"{base}/web/chelsea.jpg", "image/jpeg", 451, 300,
    )  # fmt: skip
    assert cat["rendering"][0]["id"] == f"{base}/images/chelsea.tif"
    assert cat["rendering"][0]["format"] == "image/tiff"
    assert original["id"] == f"{base}/originals/chelsea.jpg"
    # the grey copy has the scan's lightness (the recombination kept it), not the colour's hue
    grey = np.asarray(Image.open(out / "originals" / "chelsea.jpg"), np.float32)
    scan = np.asarray(Image.open(tmp_path / "chelsea.jpg").convert("L"), np.float32)
    assert grey.shape == scan.shape and np.abs(grey - scan).mean() < 4.0, np.abs(grey - scan).mean()
    web = Image.open(out / "web" / "chelsea.jpg")
    assert b"compositeWithTrainedAlgorithmicMedia" in web.info["xmp"]  # the copy says what it is too
    server = runpy.run_path(str(ROOT / "docs" / "serve_out.py"))["serve"](str(out), port)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for i in {i for i in ids if "/iiif/canvas/" not in i and not i.endswith("/iiif/manifest.json")}:
            status, headers, _ = _get(i)  # every image and record the manifest names is there
            assert status == 200, i
        # last, as each skips where its file from another project was not fetched (.ci/run)
        _validate_iiif(doc)
        _mirador(f"{base}/iiif/manifest.json", cat["id"], colour["id"], original["id"], tmp_path)
    finally:
        server.shutdown()


def _mirador(manifest: str, canvas: str, colour: str, original: str, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    dist = fetched("mirador/mirador.min.js", "Mirador 4's dist (npm pack mirador@4.0.0)")
    browser_path = chromium()
    site = tmp_path / "viewer"
    site.mkdir()
    (site / "mirador.min.js").write_bytes(dist.read_bytes())
    (site / "index.html").write_text(VIEWER.replace("MANIFEST", manifest))
    vport = _free_port()
    viewer = runpy.run_path(str(ROOT / "docs" / "serve_out.py"))["serve"](str(site), vport)
    threading.Thread(target=viewer.serve_forever, daemon=True).start()
    problems, loaded = [], {}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"])
            tab = browser.new_page(viewport={"width": 1200, "height": 800})
            tab.on(
                "console",
                lambda m: problems.append(m.text) if m.type == "error" and not _mirador_own(m.text) else None,
            )
            tab.on("pageerror", lambda e: problems.append(str(e)))
            tab.on("response", lambda r: loaded.__setitem__(r.url, r.status))
            # Mirador fetches every item of a Choice on opening the canvas, the hidden one too
            with tab.expect_response(colour, timeout=60_000), tab.expect_response(original, timeout=60_000):
                tab.goto(f"http://127.0.0.1:{vport}/index.html")
            tab.wait_for_timeout(1500)
            before = _colourfulness(tab.screenshot())
            # what the Layers panel dispatches when the original is made the visible layer
            tab.evaluate(
                """([canvas, colour, original]) => window.viewer.store.dispatch(
                    Mirador.updateLayers("w", canvas, {
                        [original]: {index: 0, visibility: true},
                        [colour]: {index: 1, visibility: false}}))""",
                [canvas, colour, original],
            )
            tab.wait_for_timeout(1500)
            after = _colourfulness(tab.screenshot())
            browser.close()
    finally:
        viewer.shutdown()
    assert loaded[colour] == 200 and loaded[original] == 200
    assert not problems, problems
    assert before > 2 * after and after < 3, (before, after)  # the canvas went from colour to grey


def _mirador_own(message: str) -> bool:
    """Mirador 4.0.0's own console error on every page, whatever the manifest: its
    components read element.ref, which React 19 removed."""
    return message.startswith("Accessing element.ref was removed in React 19")


def _colourfulness(png: bytes) -> float:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)
    return float(np.abs(rgb[..., 0] - rgb[..., 2]).mean())
