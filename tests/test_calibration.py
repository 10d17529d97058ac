"""The calibrated chroma gain (issue 23): carried by the weights, fitted by `weights
calibrate`, applied before recombination in colorize, run and evaluate, overridable per run
and per row; a gain of 1 changes nothing."""

import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from archive_colorize.train import calibrate as cal
from archive_colorize.apps.cli import app
from archive_colorize.apps.colorize import colorize_file
from archive_colorize.model.engine import Engine, scale_chroma
from archive_colorize.errors import ConfigError, ManifestError
from archive_colorize.imaging.images import decode_image
from archive_colorize.imaging.lab import rgb_to_lab
from archive_colorize.sources.manifest import load_manifest
from archive_colorize.imaging.render import recombine
from archive_colorize.model.weights import load_weights, with_calibration

from .conftest import MINIPLACES, need_shared, sample

runner = CliRunner()
COLOUR_PHOTOS = ("astronaut.jpg", "chelsea.jpg", "coffee.jpg")


def _block(gain: float) -> dict:
    return {
        "gain": gain,
        "criterion": "mse",
        "data": {"name": "test", "rows": [0, 3], "images": 3, "sha256": "0" * 64},
    }


@pytest.fixture(scope="module")
def calibrated(weights_path, tmp_path_factory):
    path = tmp_path_factory.mktemp("cal") / "calibrated.safetensors"
    with_calibration(weights_path, path, _block(1.5))
    return path


def _tensor_bytes(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {
            k: f.get_tensor(k).contiguous().view(-1).view(torch.uint8).numpy().tobytes() for k in f.keys()
        }, f.metadata()


def test_calibration_changes_the_header_only(weights_path, calibrated):
    before, meta_before = _tensor_bytes(weights_path)
    after, meta_after = _tensor_bytes(calibrated)
    assert before == after  # every stored tensor, bit for bit
    changed = {k for k in meta_before.keys() | meta_after.keys() if meta_before.get(k) != meta_after.get(k)}
    assert changed == {"calibration", "content_sha256"}
    w = load_weights(calibrated)  # the new content sha256 verifies
    assert w.chroma_gain == 1.5 and json.loads(meta_after["calibration"])["criterion"] == "mse"
    assert load_weights(weights_path).chroma_gain == 1.0  # no block: today's behaviour


def _decode_png(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)))


def test_gain_one_gives_todays_bytes(weights, calibrated, tmp_path):
    src = sample("chelsea.jpg")
    outs = {}
    for name, engine in (
        ("plain", Engine(weights, device="cpu", working_size=256)),
        ("plain-gain-1", Engine(weights, device="cpu", working_size=256, chroma_gain=1.0)),
        (
            "calibrated-gain-1",
            Engine(load_weights(calibrated), device="cpu", working_size=256, chroma_gain=1.0),
        ),
        ("calibrated", Engine(load_weights(calibrated), device="cpu", working_size=256)),
    ):
        colorize_file(engine, src, tmp_path / f"{name}.png", "png")
        outs[name] = (tmp_path / f"{name}.png").read_bytes()
    assert outs["plain-gain-1"] == outs["plain"]  # the same file, byte for byte
    # other weights bytes (their sha256 is in the file's XMP), the same pixels
    assert np.array_equal(_decode_png(outs["calibrated-gain-1"]), _decode_png(outs["plain"]))
    assert not np.array_equal(_decode_png(outs["calibrated"]), _decode_png(outs["plain"]))
    # and exactly what rendering the model's own a*b* gives: the gain-1 path never touches it
    ab = Engine(weights, device="cpu", working_size=256).predict(decode_image(src.read_bytes()).lightness).ab
    assert scale_chroma(ab, 1.0) is ab


def test_gain_moves_ab_only_and_keeps_full_resolution_lightness(engine):
    d = decode_image(sample("coffee.jpg").read_bytes())
    ab = engine.predict(d.lightness).ab
    ab = ab * (8 / float(ab.norm(dim=0).mean()))  # a photograph's muted chroma (the random net saturates)
    chroma = {}
    for gain in (1.0, 1.6):
        rgb = recombine(d.lightness, scale_chroma(ab, gain), 16)
        lab = rgb_to_lab(torch.from_numpy(rgb.astype(np.float32) / 65535).permute(2, 0, 1)[None])[0]
        assert (lab[0] - d.lightness).abs().max() < 0.02  # L* of the output is the scan's, at 16 bits
        chroma[gain] = float(lab[1:].norm(dim=0).mean())
    assert (
        1.4 < chroma[1.6] / chroma[1.0] < 1.65
    )  # more colour, by about the gain (gamut mapping takes a little)


class TruthEngine:
    """Stands in for the network where the answer must be known: predicts each photograph's
    own a*b* divided by `under` (an under-confident model, exactly)."""

    def __init__(self, photos, under: float):
        self.working_size = 512
        self.truth = {}
        for p in photos:
            rgb = (
                torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1).float()[None] / 255
            )
            ab = rgb_to_lab(rgb)[:, 1:]
            half = torch.nn.functional.interpolate(ab, scale_factor=0.5, mode="area")[0]
            self.truth[tuple(rgb.shape[-2:])] = half / under

    def predict(self, lightness):
        return type("P", (), {"ab": self.truth[tuple(lightness.shape)]})()


def colour_photo(name: str, path) -> None:
    """A colour photograph for held-out data (the repository ships only grayscale ones): a
    real photograph's L*, with a*b* from smooth fields of hue, saved losslessly."""
    from archive_colorize.imaging.lab import lab_to_rgb

    im = Image.open(sample(name)).convert("L")
    im = im.resize((160, round(160 * im.height / im.width)))  # small: the fit measures many gains
    L = torch.from_numpy(np.asarray(im, np.float32) / 255 * 100)
    h, w = L.shape
    y, x = torch.meshgrid(torch.linspace(0, 3, h), torch.linspace(0, 4, w), indexing="ij")
    lab = torch.stack([L, 35 * torch.sin(x + len(name)), 30 * torch.cos(y * 1.3)])[None]
    rgb = (lab_to_rgb(lab)[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(rgb).save(path)


def _photo_folder(tmp_path):
    d = tmp_path / "heldout"
    d.mkdir()
    for n in COLOUR_PHOTOS:
        colour_photo(n, d / n.replace(".jpg", ".png"))
    Image.open(sample("rocket.jpg")).save(d / "zz_grey.jpg")  # a grayscale photo: the colour filter drops it
    return d


def test_fit_recovers_a_known_under_confidence(tmp_path):
    folder = _photo_folder(tmp_path)
    h = cal.prepare(TruthEngine(sorted(folder.glob("*.png")), under=1.5), str(folder))
    assert h.info["images"] == 3 and h.info["filtered_out"] == 1
    mse = cal.fit(h, "mse")
    assert abs(mse["gain"] - 1.5) <= 0.03, mse["gain"]  # the least-squares gain undoes the shrinkage
    colour = cal.fit(h, "colourfulness")
    assert abs(colour["gain"] - 1.5) <= 0.05, colour["gain"]
    assert abs(colour["at_gain"]["colourfulness_ratio_to_truth"] - 1.0) < 0.02
    budget = cal.fit(h, "mse-budget", budget=0.05)
    assert budget["gain"] > mse["gain"]  # more colour than least squares, at a stated price
    assert budget["at_gain"]["ab_mse_ratio_to_grey"] <= budget["at_1"]["ab_mse_ratio_to_grey"] * 1.05 + 1e-4
    assert mse["at_1"]["gain"] == 1.0 and [r["gain"] for r in mse["curve"]] == sorted(
        r["gain"] for r in mse["curve"]
    )
    with pytest.raises(ConfigError, match="--criterion must be one of mse, colourfulness, mse-budget"):
        cal.fit(h, "vibes")


def test_weights_calibrate_cli_writes_the_gain_and_prints_the_curve(weights_path, tmp_path):
    folder = _photo_folder(tmp_path)
    out = tmp_path / "new.safetensors"
    r = runner.invoke(
        app,
        [
            "weights",
            "calibrate",
            str(weights_path),
            "--data",
            str(folder),
            "--criterion",
            "mse",
            "--out",
            str(out),
            "--plot",
            str(tmp_path / "curve.png"),
            "--working-size",
            "128",
        ],
    )
    assert r.exit_code == 0, r.output
    gain = load_weights(out).chroma_gain
    assert (
        f"mse gain: {gain:.2f}\n" in r.output
        and f"wrote {out} (chroma gain {gain:.2f}; tensors unchanged)" in r.output
    )
    assert "3 images of heldout rows 0:4 (1 removed by the colour filter)" in r.output
    assert f"{gain:.2f} *" in r.output  # the chosen gain is marked in the curve
    assert Image.open(tmp_path / "curve.png").size == (640, 400)
    again = runner.invoke(
        app,
        [
            "weights",
            "calibrate",
            str(out),
            "--data",
            str(folder),
            "--criterion",
            "mse",
            "--working-size",
            "128",
        ],
    )
    assert f"mse gain: {gain:.2f}\n" in again.output  # fitting calibrated weights again finds the same gain
    bad = runner.invoke(
        app, ["weights", "calibrate", str(weights_path), "--data", str(folder), "--rows", "5"]
    )
    assert bad.exit_code == 1 and "Error: --rows must look like START:END (e.g. 0:500), not '5'" in bad.output


@pytest.mark.parametrize(
    "values, message",
    [
        (
            [1.2, 0.0],
            "manifest column 'chroma_gain' must be above 0 and at most 4 (or null for the run's gain); not at row(s) [1]",
        ),
        (
            [math.nan, 1.0],
            "manifest column 'chroma_gain' must be above 0 and at most 4 (or null for the run's gain); not at row(s) [0]",
        ),
        (
            [5.0, -1.0],
            "manifest column 'chroma_gain' must be above 0 and at most 4 (or null for the run's gain); not at row(s) [0, 1]",
        ),
        (
            ["warm", "x"],
            "manifest column 'chroma_gain' has type string; accepted: a number type (float or integer)",
        ),
    ],
)
def test_manifest_chroma_gain_column_is_checked_before_work(tmp_path, values, message):
    pq.write_table(
        pa.table({"id": ["a", "b"], "uri": ["a.jpg", "b.jpg"], "chroma_gain": values}), tmp_path / "m.parquet"
    )
    with pytest.raises(ManifestError) as e:
        load_manifest(str(tmp_path / "m.parquet"))
    assert str(e.value) == message
    pq.write_table(
        pa.table({"id": ["a", "b"], "uri": ["a.jpg", "b.jpg"], "chroma_gain": [None, 2]}),
        tmp_path / "ok.parquet",
    )
    m = load_manifest(str(tmp_path / "ok.parquet"))
    assert "chroma_gain" not in m.metadata_columns  # a run input, not metadata riding along


def test_chroma_gain_option_is_checked_and_travels_to_the_job(tmp_path):
    from archive_colorize.run.jobs import entrypoint, job_key
    from archive_colorize.run.options import RunOptions, check_options

    for bad in (0, -1, 4.5, math.inf):
        with pytest.raises(ConfigError, match=r"^--chroma-gain must be a number above 0 and at most 4, not "):
            check_options(RunOptions(manifest="m", chroma_gain=bad))
    args = entrypoint(RunOptions(manifest="m.parquet", chroma_gain=1.25), "o").split()
    assert args[args.index("--chroma-gain") + 1] == "1.25"
    assert "--chroma-gain" not in entrypoint(RunOptions(manifest="m.parquet"), "o")
    key = ("m", "0" * 64, "1" * 64, "o", "png", 512)
    assert job_key(*key) == job_key(*key, "fp32", None)  # jobs submitted before keep their identity
    assert job_key(*key, "fp32", 1.25) != job_key(*key)


def test_evaluate_reports_gain_one_and_the_weights_gain(weights_path, calibrated, tmp_path):
    from archive_colorize.train.evaluate import evaluate

    blobs = [p.read_bytes() for p in sorted(_photo_folder(tmp_path).glob("*.png"))]
    pq.write_table(pa.table({"image": blobs, "label": [0, 1, 2]}), tmp_path / "val.parquet")
    plain = evaluate(load_weights(weights_path), str(tmp_path / "val.parquet"), device="cpu")
    assert "model_calibrated" not in plain and plain["chroma_gain"] == 1.0
    r = evaluate(load_weights(calibrated), str(tmp_path / "val.parquet"), device="cpu")
    assert r["chroma_gain"] == 1.5 and r["model"] == plain["model"]  # gain 1: as before
    assert r["model_calibrated"]["colourfulness"] > r["model"]["colourfulness"]
    assert r["model_calibrated"]["top5"] == r["model"]["top5"]
    part = evaluate(load_weights(calibrated), str(tmp_path / "val.parquet"), device="cpu", rows=(1, 3))
    assert part["images"] == 2 and part["rows"] == [1, 3]
    one = evaluate(load_weights(calibrated), str(tmp_path / "val.parquet"), device="cpu", rows=(1, 2))
    alone = evaluate(
        load_weights(calibrated), str(tmp_path / "val.parquet"), device="cpu", limit=1, rows=(1, None)
    )
    assert one["model"] == alone["model"] and one["images"] == 1


def test_a_run_applies_run_and_row_gains_and_records_them(ray_cluster, calibrated, tmp_path):
    from archive_colorize.run.pipeline import RunOptions, run
    from archive_colorize.apps.report import ReportOptions, write_report

    src = str(sample("chelsea.jpg"))
    pq.write_table(
        pa.table({"id": ["weights", "row", "run"], "uri": [src] * 3, "chroma_gain": [None, 2.0, None]}),
        tmp_path / "m.parquet",
    )
    s = run(RunOptions(manifest=str(tmp_path / "m.parquet"), weights=str(calibrated), working_size=128))
    assert s.done == 3
    out = tmp_path / "m-out"
    rows = {r["id"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert [rows[k]["chroma_gain"] for k in ("weights", "row", "run")] == [1.5, 2.0, 1.5]
    chroma = {k: rows[k]["mean_chroma"] for k in rows}
    assert chroma["row"] == pytest.approx(
        chroma["weights"] * 2.0 / 1.5, rel=1e-4
    )  # mean of |k ab|: exactly linear
    # the run's files are the library's: colorize at the same gain gives the same pixels
    colorize_file(
        Engine(load_weights(calibrated), device="cpu", working_size=128, chroma_gain=2.0),
        sample("chelsea.jpg"),
        tmp_path / "row.png",
        "png",
    )
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "row.png")), np.asarray(Image.open(rows["row"]["output_uri"]))
    )
    assert json.loads((out / "run.json").read_text())["chroma_gain"] == {
        "gain": 1.5,
        "source": "the weights' calibration (mse)",
    }
    write_report(ReportOptions(out=str(out), html=str(tmp_path / "r.html")))
    import html as html_lib

    html = html_lib.unescape((tmp_path / "r.html").read_text())
    assert (
        "Chroma gain: 1.5 on 2 rows, 2 on 1 row; the run's gain (the weights' calibration (mse)), "
        "rows with a chroma_gain column their own."
    ) in html

    # --chroma-gain for the run: rows without their own gain take it
    out2 = tmp_path / "o2"
    run(
        RunOptions(
            manifest=str(tmp_path / "m.parquet"),
            out=str(out2),
            weights=str(calibrated),
            working_size=128,
            chroma_gain=1.0,
        )
    )
    rows2 = {r["id"]: r for r in pq.read_table(out2 / "results.parquet").to_pylist()}
    assert [rows2[k]["chroma_gain"] for k in ("weights", "row", "run")] == [1.0, 2.0, 1.0]
    assert rows2["row"]["output_sha256"] == rows["row"]["output_sha256"]


@pytest.mark.shared
def test_weights_calibrate_reproduces_the_shipped_gain():
    need_shared()
    shipped = load_weights(None)
    block = shipped.metadata.get("calibration")
    assert block, "the shipped weights carry a calibration block"
    assert block["data"]["rows"] == [0, 500] and block["data"]["name"] == "val.parquet"
    h = cal.prepare(Engine(shipped, device="cpu", chroma_gain=1.0), str(MINIPLACES / "val.parquet"), (0, 500))
    assert h.info["sha256"] == block["data"]["sha256"]
    again = cal.fit(h, block["criterion"], block.get("budget", 0.05))
    assert f"{again['gain']:.2f}" == f"{block['gain']:.2f}"
