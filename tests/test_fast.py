"""The engine's fast paths against the reference: fp32 (folded, channels-last) must match
the plain model; the opt-in lossy int8/bf16 paths must stay close, measured as PSNR. The
closeness checks use held-out historical scans from ../shared (the int8 calibration set is
the committed sample photographs, so it cannot be the test set)."""

import json
import re
import sys

import numpy as np
import pytest
import torch

from archive_colorize.model.engine import Engine
from archive_colorize.imaging.images import working_copy
from archive_colorize.imaging.render import recombine
from archive_colorize.errors import ConfigError
from archive_colorize.imaging.images import decode_image
from archive_colorize.imaging.lab import denormalize_ab
from archive_colorize.model.weights import load_weights

from .conftest import ROOT, historical, sample

sys.path.insert(0, str(ROOT / "benchmarks"))
from naive import NaiveColorizer  # noqa: E402  the benchmarks' yardstick, reused as the reference

SCANS = [
    "adams_mural_project_1.jpg",
    "detroit_publishing_buffalo_bank_1908.jpg",
    "lange_migrant_mother_1936.jpg",
]


@pytest.fixture(scope="module")
def shipped():
    return load_weights(None)


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(peak**2 / mse)


@pytest.mark.parametrize("name", SCANS)
def test_fp32_engine_matches_the_naive_model(shipped, name):
    d = decode_image(historical(name).read_bytes())
    engine = Engine(shipped, device="cpu", working_size=384)
    x = working_copy(d.lightness, 384)
    fast = engine.predict_working(x)
    ab01, logits = NaiveColorizer(shipped.model)(x)
    ref_ab = denormalize_ab(ab01[0], shipped.ab_norm)
    assert engine.channels_last
    assert (fast.ab - ref_ab).abs().max() < 0.05  # CIE a*b* units; JND is ~2.3
    assert torch.allclose(fast.probs, torch.softmax(logits[0], 0), atol=1e-4)


def test_int8_is_close_deterministic_and_labelled(shipped):
    fp32 = Engine(shipped, device="cpu", working_size=384)
    int8 = Engine(shipped, device="cpu", working_size=384, precision="int8")
    again = Engine(shipped, device="cpu", working_size=384, precision="int8")
    for name in SCANS:
        d = decode_image(historical(name).read_bytes())
        a, b = fp32.predict(d.lightness), int8.predict(d.lightness)
        assert torch.equal(b.ab, again.predict(d.lightness).ab)  # calibration is fixed: same bytes every run
        assert (a.ab - b.ab).abs().mean() < 1.0  # mean a*b* error well under one JND
        assert _psnr(recombine(d.lightness, a.ab), recombine(d.lightness, b.ab)) > 38
    # labelled: a lossy output says so in its EXIF Software tag; an fp32 one does not
    import io

    from PIL import Image

    from archive_colorize.imaging.provenance import Provenance
    from archive_colorize.imaging.render import render

    for engine, mark in ((int8, ", int8)"), (fp32, f"{shipped.file_sha256[:12]})")):
        png = render(
            d, engine.predict(d.lightness).ab, "png", Provenance(shipped.file_sha256, engine.precision)
        )
        assert Image.open(io.BytesIO(png)).getexif()[0x0131].endswith(mark)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN")
def test_bf16_is_close(shipped):
    fp32 = Engine(shipped, device="cpu", working_size=256)
    bf16 = Engine(shipped, device="cpu", working_size=256, precision="bf16")
    d = decode_image(historical(SCANS[0]).read_bytes())
    a, b = fp32.predict(d.lightness), bf16.predict(d.lightness)
    assert _psnr(recombine(d.lightness, a.ab), recombine(d.lightness, b.ab)) > 38


def test_precisions_that_cannot_run_here_are_refused(shipped):
    with pytest.raises(ConfigError, match="^--precision fp16 needs a CUDA GPU$"):
        Engine(shipped, device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="^--precision must be one of fp32, bf16, fp16, int8, not 'int4'$"):
        Engine(shipped, device="cpu", precision="int4")


def test_colorize_int8_says_so_in_the_file(tmp_path):
    from PIL import Image

    from .reliability.conftest import cli

    r = cli(
        "colorize",
        str(sample("rocket.jpg")),
        "--out",
        str(tmp_path),
        "--precision",
        "int8",
        "--working-size",
        "256",
    )
    assert r.returncode == 0, r.stderr
    line = r.stderr.strip().splitlines()[0]
    m = re.fullmatch(
        r"int8 engine \(opt-in, lossy\): \|Δa\*b\*\| against fp32 mean (\d+\.\d\d), p99 (\d+\.\d\d), "
        r"max (\d+\.\d\d) \(2\.3 is just noticeable\), on 5 calibration images",
        line,
    )
    assert m, line
    mean, p99, biggest = map(float, m.groups())
    assert mean < 1.0 and mean <= p99 <= biggest  # on average well under one just-noticeable difference
    out = next(tmp_path.glob("*.png"))
    software = Image.open(out).getexif().get(0x0131) or Image.open(out).info.get("Software")
    assert software and software.endswith(", int8)"), software


def test_run_with_int8_records_its_fidelity(ray_cluster, tmp_path):
    from PIL import Image

    from archive_colorize.run.pipeline import RunOptions, run

    from .reliability.conftest import tiny_scans

    manifest = tiny_scans(tmp_path / "scans", 4, size=(96, 64), seed=12)
    s = run(RunOptions(manifest=str(manifest), out=str(tmp_path / "out"), working_size=64, precision="int8"))
    assert (s.done, s.failed) == (4, 0)
    record = json.loads((tmp_path / "out" / "run.json").read_text())["precision"]
    assert record["name"] == "int8" and record["dab_mean"] < 1.0 and record["psnr_db_vs_fp32_median"] > 38
    assert record["images"] == 5 and record["dab_mean"] <= record["dab_p99"] <= record["dab_max"]
    assert s.fidelity["dab_mean"] == record["dab_mean"]
    for p in (tmp_path / "out" / "images").iterdir():
        assert Image.open(p).info.get("Software", "").endswith(", int8)") or Image.open(p).getexif().get(
            0x0131, ""
        ).endswith(", int8)")
