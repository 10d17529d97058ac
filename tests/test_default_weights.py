"""The shipped default weights and the README's first command, on the shipped sample."""

import shutil

import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from typer.testing import CliRunner

from archive_colorize.apps.cli import app
from archive_colorize.model.weights import DEFAULT_WEIGHTS, load_weights

from .conftest import ROOT

runner = CliRunner()


def test_default_weights_describe_themselves():
    w = load_weights()
    meta = w.metadata
    assert w.path == str(DEFAULT_WEIGHTS)
    # what any valid default must say of itself, whichever training run produced it
    assert len(w.categories) == w.config.num_classes > 1
    assert all(isinstance(c, str) and c for c in w.categories)
    assert isinstance(meta["training"]["interim"], bool)
    assert meta["training"]["steps"] > 0 and meta["data"]["images_seen"] > 0
    assert meta["storage"] in ("fp32", "fp16", "int8")
    for key in ("val_ab_mse", "val_psnr", "val_top1", "val_top5"):
        assert key in meta["metrics"]
    assert DEFAULT_WEIGHTS.stat().st_size < 45 * 2**20


def test_readme_first_command_on_the_sample(ray_cluster, tmp_path):
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests", ignore=shutil.ignore_patterns("*-out"))
    r = runner.invoke(app, ["run", str(tmp_path / "manifests" / "sample.parquet")])
    assert r.exit_code == 0, r.output
    out = tmp_path / "manifests" / "sample-out"
    assert f"results: {out}/results.parquet" in r.output
    res = pq.read_table(out / "results.parquet").to_pylist()
    assert [x["status"] for x in res] == ["done"] * 5
    assert {x["creator"] for x in res} >= {"NASA", "SpaceX"}
    import cv2

    arr = cv2.imread(str(out / "images" / "coins.png"), cv2.IMREAD_UNCHANGED)
    assert arr.dtype == np.uint16 and arr.shape[2] == 3  # 16-bit in, 16-bit colour out
    astro = np.asarray(Image.open(out / "images" / "astronaut.png")).astype(int)
    assert np.abs(astro[..., 0] - astro[..., 2]).mean() > 1  # coloured, not grey
    again = runner.invoke(app, ["run", str(tmp_path / "manifests" / "sample.parquet")])
    assert again.exit_code == 0 and "Nothing to do" in again.output
