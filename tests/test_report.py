"""`archive-colorize report`: a self-contained page, checked in headless Chromium."""

import base64
import io
import re
import shutil


import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from archive_colorize.run.pipeline import RunOptions, run
from archive_colorize.apps.report import ReportOptions, write_report

from .conftest import ROOT, chromium, sample, write_broken_files
from .reliability.conftest import cli, tiny_scans


@pytest.fixture(scope="module")
def run_out(ray_cluster, weights_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    manifest = tiny_scans(d / "scans", 16, size=(96, 72), seed=6)
    reasons = write_broken_files(d / "broken")
    t = pq.read_table(manifest)
    ids = t.column("id").to_pylist() + list(reasons) + ['<script>alert("x")</script>', "coins_16bit"]
    uris = (
        t.column("uri").to_pylist()
        + [str(d / "broken" / f"{k}.jpg") for k in reasons]
        + ["scan_00000.jpg"]
        + [str(ROOT / "manifests" / "sample" / "coins.png")]
    )
    pq.write_table(pa.table({"id": ids, "uri": uris}), manifest)
    out = d / "out"
    s = run(RunOptions(manifest=str(manifest), out=str(out), weights=str(weights_path), working_size=64))
    assert (s.done, s.failed) == (18, 3)
    return out, reasons


def test_report_page_renders_in_chromium(run_out, tmp_path):
    out, reasons = run_out
    page = tmp_path / "report.html"
    r = cli("report", str(out), "--html", str(page))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(
        f"wrote {page} (18 pairs shown of 21 rows;"
    ) and r.stdout.strip().endswith("3 failed)")
    text = page.read_text()
    assert not re.search(r'src="(?!data:image/jpeg;base64,)', text), "an image is not embedded"
    assert "<script" not in text.replace("&lt;script", "")  # the hostile id is shown, not run
    # and should anything slip through, the page may load nothing but its own embedded images
    assert (
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'\">" in text
    )
    for reason in reasons.values():
        assert reason.split(" (")[0] in text.replace("&quot;", '"').replace("&#x27;", "'")
    assert text.count("<img ") == 36 and "<svg" in text
    for uri in re.findall(
        r'src="data:image/jpeg;base64,([^"]+)"', text
    ):  # no blank (e.g. clipped 16-bit) thumbnail
        thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(uri))).convert("L"), np.float32)
        assert thumb.std() > 5 and 5 < thumb.mean() < 250

    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium(),
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.goto(page.as_uri(), wait_until="load")
        n = tab.evaluate("document.images.length")
        broken = tab.evaluate(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).length"
        )
        png = tab.screenshot(full_page=False)
        overflow = {}
        for width in (390, 1366):  # a phone and a laptop: nothing wider than the screen
            tab.set_viewport_size({"width": width, "height": 800})
            overflow[width] = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        # click to enlarge: the pair fills the screen at the embedded images' size; "compare in
        # place" stacks them, and hovering the colour shows the original under it
        tab.set_viewport_size({"width": 1366, "height": 800})
        tab.click("#pair-0 .open")
        card = tab.evaluate(
            "(() => { const r = document.querySelector('#pair-0').getBoundingClientRect(); "
            "return [r.x, r.y, r.width, r.height] })()"
        )
        enlarged = tab.evaluate("document.querySelector('#pair-0 .after img').getBoundingClientRect().width")
        tab.click("label[for=cmp-0]")
        before_box = tab.evaluate(
            "JSON.stringify(document.querySelector('#pair-0 .before img').getBoundingClientRect())"
        )
        after_box = tab.evaluate(
            "JSON.stringify(document.querySelector('#pair-0 .after img').getBoundingClientRect())"
        )
        opacity = lambda: tab.evaluate(
            "getComputedStyle(document.querySelector('#pair-0 .after img')).opacity"
        )
        resting = opacity()
        tab.hover("#pair-0 .after")
        hovered = opacity()
        tab.set_viewport_size({"width": 390, "height": 800})
        overflow["enlarged at 390"] = tab.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        tab.click("#pair-0 a[href='#pairs']")
        closed = tab.evaluate("document.querySelector('#pair-0').getBoundingClientRect().width")
        browser.close()
    assert card == [0, 0, 1366, 800], card
    assert enlarged > 2 * 80, enlarged  # in the grid each image is a half card; enlarged, far more
    assert before_box == after_box  # stacked: the same place on the screen
    assert (resting, hovered) == ("1", "0")
    assert closed < 1366 / 2
    assert (n, broken) == (36, 0)
    assert overflow == {390: 0, 1366: 0, "enlarged at 390": 0}, overflow
    shot = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), np.float32)
    assert shot.std() > 20, "the screenshot is blank"
    coloured = np.abs(shot[..., 0] - shot[..., 2]) > 12  # thumbnails and chart bars are in colour
    assert coloured.mean() > 0.01


def test_report_fits_a_phone_names_its_images_and_links_the_manifest_from_its_folder(run_out, tmp_path):
    out, _ = run_out
    page = tmp_path / "elsewhere" / "qa" / "report.html"
    page.parent.mkdir(parents=True)
    write_report(ReportOptions(out=str(out), html=str(page)))
    text = page.read_text()
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in text
    link = re.search(r'<a href="([^"]+)">IIIF manifest</a>', text).group(1)
    assert (
        not link.startswith("/")
        and (page.parent / link).resolve() == (out / "iiif" / "manifest.json").resolve()
    )
    assert (page.parent / link).exists()
    assert 'alt="original scan of scan_00001"' in text and 'alt="colorized of scan_00001"' in text
    assert (
        "<figcaption>original scan</figcaption>" in text
        and "<figcaption>colorized<span class=\"hint\">" in text
    )
    assert '<a href="#failed"><b>3</b>failed</a>' in text and '<h2 id="failed">' in text
    assert re.search(r'<svg role="img" aria-label="Top scene class \(done rows\)" viewBox=', text)
    # scene-guess flags are off by default, and the page says what it flags
    assert "Scene-guess flags are off (--low-confidence P turns them on)." in text
    assert 'class="card flagged"' not in text or "nearly grey" in text
    assert "minmax(min(100%, 320px), 1fr)" in text  # the grid's columns never exceed a phone
    # every done row once (a sample larger than the run used to repeat the first row)
    titles = re.findall(r"<h3>([^<]*)</h3>", text)
    assert len(titles) == 18 == len(set(titles)), titles


def test_report_at_10000_rows_stays_bounded(run_out, tmp_path):
    out, _ = run_out
    real = pq.read_table(out / "results.parquet").to_pylist()
    done = [r for r in real if r["status"] == "done"]
    rows = []
    for i in range(10_000):  # a big run's results, pointing at the real outputs
        r = dict(done[i % len(done)])
        r["id"] = f"row-{i:05d}"
        r["mean_chroma"] = float(i % 40)
        rows.append(r)
    big = tmp_path / "big"
    big.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), big / "results.parquet")
    shutil.copy(out / "run.json", big / "run.json")
    info = write_report(
        ReportOptions(out=str(big), html=str(tmp_path / "big.html"), sample=50, low_confidence=0.0)
    )
    assert info == {"total": 10_000, "done": 10_000, "failed": 0, "flagged": 750, "shown": 50}
    text = (tmp_path / "big.html").read_text()
    assert text.count("<img ") == 100 and len(text) < 3_000_000
    assert text.count('class="card flagged"') == 50  # flagged rows (chroma < 3) come first


def test_report_on_a_folder_without_results(tmp_path):
    r = cli("report", str(tmp_path), "--html", str(tmp_path / "r.html"))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"Error: no results in {tmp_path}: neither results.parquet nor a progress log",
        "Hint: give the folder a run wrote to (its --out)",
    ]


def test_report_of_a_directory_manifest_shows_its_before_images(tmp_path):
    """Relative uris of a directory manifest resolve against the directory itself (as the run
    and the IIIF manifest resolve them); the report used to look one folder up."""
    import json
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from archive_colorize.apps.report import ReportOptions, write_report

    d = tmp_path / "batch-01"
    (d / "box=1").mkdir(parents=True)
    shutil.copy(sample("chelsea.jpg"), d / "chelsea.jpg")
    pq.write_table(pa.table({"id": ["c"], "uri": ["chelsea.jpg"]}), d / "box=1" / "part-0.parquet")
    out = tmp_path / "batch-01-out"
    (out / "images").mkdir(parents=True)
    Image.open(sample("chelsea.jpg")).convert("RGB").save(out / "images" / "c.png")
    row = {
        "id": "c",
        "uri": "chelsea.jpg",
        "status": "done",
        "error": None,
        "output_uri": str(out / "images" / "c.png"),
        "width": 451,
        "height": 300,
        "scene_top5": ["a"],
        "scene_top5_prob": [0.5],
        "mean_chroma": 9.0,
        "chroma_gain": 1.0,
    }
    pq.write_table(pa.Table.from_pylist([row]), out / "results.parquet")
    for record in (
        {"manifest": str(d)},
        {"manifest": str(d), "manifest_base_dir": str(d)},
    ):  # an older run.json, a new one
        (out / "run.json").write_text(json.dumps(record))
        write_report(ReportOptions(out=str(out), html=str(tmp_path / "r.html")))
        html = (tmp_path / "r.html").read_text()
        assert "unavailable" not in html and html.count("data:image/") >= 2
