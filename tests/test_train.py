import io
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from archive_colorize.apps.cli import app
from archive_colorize.train.config import load_config
from archive_colorize.train.data import iter_raw_batches, prepare_batch, resolve_source
from archive_colorize.errors import ConfigError
from archive_colorize.model.network import ColorizationModel, ModelConfig
from archive_colorize.train.checkpoints import list_checkpoints, read_metrics
from archive_colorize.train.driver import run_training
from archive_colorize.train.loop import joint_loss, train_step

from .conftest import MINIPLACES, ROOT, make_categories, make_places_parquet

SMOKE = ROOT / "training" / "smoke.toml"
runner = CliRunner()


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """A small synthetic Places in both of its layouts (Parquet shards; a folder with a file
    list), so that training is tested from a plain clone. smoke.toml's own paths point at
    ../shared; the tests override them."""
    d = tmp_path_factory.mktemp("places")
    train = make_places_parquet(d / "train-00.parquet", 256, seed=1)
    val = make_places_parquet(d / "val.parquet", 64, seed=2)
    make_categories(d / "categories.txt")
    import pyarrow.parquet as pq

    layout = d / "places-layout"
    (layout / "val").mkdir(parents=True)
    lines = []
    for i, row in enumerate(pq.read_table(val).to_pylist()):
        (layout / "val" / f"{i:08d}.jpg").write_bytes(row["image"])
        lines.append(f"{i:08d}.jpg {row['label']}\n")
    (layout / "val.txt").write_text("".join(lines))
    return {
        "train": train,
        "val": val,
        "layout_val": layout / "val.txt",
        "overrides": [f"data.train={train}", f"data.val={val}", f"data.categories={d / 'categories.txt'}"],
    }


@pytest.fixture(scope="module")
def smoke(places):
    return lambda *overrides: load_config(SMOKE, [*places["overrides"], *overrides])


@pytest.fixture(scope="module")
def real_batch(places):
    def batch(n=8, seed=0):
        raw = next(iter_raw_batches(resolve_source(str(places["train"])), 64))
        b = prepare_batch(raw, train=True, seed=seed)
        idx = np.flatnonzero(b["keep"])[:n]
        return {k: torch.as_tensor(b[k][idx]) for k in ("L", "ab", "label")}

    return batch


def test_class_loss_reaches_only_classification_global_and_low_level(real_batch):
    torch.manual_seed(0)
    model = ColorizationModel(ModelConfig(num_classes=100, width=0.125)).train()
    b = real_batch(4)
    _, colour, cls, _ = joint_loss(model, b["L"], b["ab"], b["label"], alpha=1 / 300)
    cls.backward(retain_graph=True)
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name, g in grads.items():
        reached = g is not None and bool(g.abs().sum() > 0)
        # fc3 makes the 256-d fusion input; the classifier reads the 512-d fc2 output
        expect = (
            name.split(".")[0] in ("low_level", "global_features", "classification") and ".fc3." not in name
        )
        assert reached == expect, name
    model.zero_grad(set_to_none=True)
    colour.backward()
    for (
        name,
        p,
    ) in model.named_parameters():  # the colour loss reaches every sub-network except the classifier
        if not name.startswith("classification"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_training_overfits_one_fixed_batch(real_batch):
    torch.manual_seed(0)
    model = ColorizationModel(ModelConfig(num_classes=100, width=0.125))
    opt = torch.optim.Adadelta(model.parameters())
    b = real_batch(8)
    losses = [train_step(model, opt, b, 1 / 300, torch.device("cpu"))["colour_loss"] for _ in range(60)]
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_filter_removes_grayscale_images(places):
    src = Image.open(io.BytesIO(next(iter_raw_batches(resolve_source(str(places["val"])), 1))["image"][0]))
    colour = src.convert("RGB")
    gray_l = colour.convert("L")
    gray_rgb = gray_l.convert("RGB")
    blobs = []
    for im in (colour, gray_l, gray_rgb):
        buf = io.BytesIO()
        im.save(buf, format="JPEG")
        blobs.append(buf.getvalue())
    out = prepare_batch({"image": np.array(blobs, dtype=object), "label": np.zeros(3)}, train=False)
    assert out["keep"].tolist() == [True, False, False]


@pytest.mark.shared
def test_filter_on_real_miniplaces_removes_a_few_percent():
    raw = next(iter_raw_batches(resolve_source(str(MINIPLACES / "train-00.parquet")), 600))
    out = prepare_batch(raw, train=False, size=64)
    removed = ~out["keep"]
    assert 0.01 < removed.mean() < 0.10
    # every exactly-grey image (R=G=B after decoding) is among the removed
    for i, data in enumerate(raw["image"]):
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
        if np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 2 and np.abs(rgb[..., 1] - rgb[..., 2]).max() <= 2:
            assert removed[i]


def test_smoke_run_with_two_ray_train_workers(ray_cluster, smoke, tmp_path):
    cfg = smoke()
    assert cfg.train.num_workers == 2 and cfg.train.use_ray
    last = run_training(cfg, str(tmp_path / "run"))
    assert last.endswith("step-000000006.pt")
    assert [s for s, _ in list_checkpoints(str(tmp_path / "run"))] == [2, 4, 6]
    rows = read_metrics(str(tmp_path / "run"))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[-1]["val_psnr"] > 10 and rows[2]["val_ab_mse"] is not None
    assert rows[-1]["images"] > 6 * 6  # two workers x 4 images per step, minus filtered rows


@pytest.mark.slow  # a training process killed and resumed: 15 s
def test_kill_then_resume_continues_at_saved_step(places, tmp_path):
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "archive_colorize.apps.cli",
        "train",
        "--config",
        str(SMOKE),
        "--out",
        str(run_dir),
        *places["overrides"],
        "train.use_ray=false",
        "train.steps=400",
        "train.checkpoint_every=3",
        "train.eval_every=1000",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and len(list_checkpoints(str(run_dir))) < 3:
        assert proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = list_checkpoints(str(run_dir))[-1][0]
    assert saved >= 9
    r = subprocess.run(
        cmd[:-3]
        + [
            "--resume",
            "train.use_ray=false",
            f"train.steps={saved + 2}",
            "train.checkpoint_every=3",
            "train.eval_every=1000",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"resumed from checkpoint at step {saved}" in r.stdout
    steps = [int(row["step"]) for row in read_metrics(str(run_dir))]
    assert steps == sorted(set(steps)) and steps[-1] == saved + 2 and saved + 1 in steps


def test_export_and_evaluate_on_both_formats(places, smoke, tmp_path):
    cfg = smoke("train.use_ray=false", "train.steps=2")
    run_training(cfg, str(tmp_path / "run"))
    w = tmp_path / "w.safetensors"
    r = runner.invoke(app, ["weights", "export", str(tmp_path / "run"), "--out", str(w)])
    assert r.exit_code == 0, r.output
    from archive_colorize.model.weights import read_metadata

    meta = read_metadata(w)
    assert meta["training"]["steps"] == 2 and meta["categories"][0] == "class_0"
    assert (
        meta["data"]["description"] == "MiniPlaces smoke subset" and len(meta["data"]["train_mean_ab"]) == 2
    )
    for data in (places["val"], places["layout_val"]):
        r = runner.invoke(
            app,
            [
                "evaluate",
                "--weights",
                str(w),
                "--data",
                str(data),
                "--limit",
                "48",
                "--out",
                str(tmp_path / "r.json"),
            ],
        )
        assert r.exit_code == 0, r.output
        import json

        rep = json.loads((tmp_path / "r.json").read_text())
        assert rep["images"] + rep["filtered_out"] == 48
        assert rep["grey"]["colourfulness"] < 0.5 < rep["ground_truth"]["colourfulness"]
        assert 0 < rep["model"]["auc"] <= 1 and rep["model"]["top5"] is not None
        assert "grey" in r.output and "mean_colour" in r.output


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.stepz=3", "unknown config key train.stepz"),
        ("optim.lr=1", "unknown config section [optim] (known: model, data, train)"),
        ("train.steps=many", "config key train.steps must be int, got 'many'"),
    ],
)
def test_bad_config_is_refused_with_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, [override])
    assert str(e.value) == message


def test_baseline_config_requires_alpha_zero():
    with pytest.raises(ConfigError, match="train.alpha must be 0"):
        load_config(ROOT / "training" / "baseline.toml", ["train.alpha=0.01"])
    assert load_config(ROOT / "training" / "baseline.toml").model.global_branch is False


def test_checkpoints_and_resume_on_s3(s3, s3_server, smoke, monkeypatch):
    # the standard AWS environment is how training finds S3 (no storage options in configs)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server["secret"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server["endpoint_url"])
    import fsspec

    fsspec.config.conf.pop("s3", None)
    s3.mkdir("runs")
    run_dir = "s3://runs/smoke"
    run_training(smoke("train.use_ray=false", "train.steps=4", "train.eval_every=100"), run_dir)
    assert [s for s, _ in list_checkpoints(run_dir)] == [2, 4]
    run_training(smoke("train.use_ray=false", "train.steps=5", "train.eval_every=100"), run_dir, resume=True)
    assert [int(r["step"]) for r in read_metrics(run_dir)] == [1, 2, 3, 4, 5]
    s3.invalidate_cache()
    assert s3.exists("runs/smoke/checkpoints/step-000000005.pt") and s3.exists("runs/smoke/config.json")


def test_both_training_data_paths_call_a_grey_image_with_alpha_grey():
    """The streamed path (data.py) and the resident one (decode_pool.py) share one list of
    colourless Pillow modes: an LA image was grey to one and colour to the other."""
    import io

    from PIL import Image

    from archive_colorize.train.data import _decode_rgb
    from archive_colorize.train.decode_pool import decode_chunk

    buf = io.BytesIO()
    Image.merge("LA", (Image.linear_gradient("L"), Image.new("L", (256, 256), 200))).save(buf, "PNG")
    assert _decode_rgb(buf.getvalue())[1] is True
    assert bool(decode_chunk([buf.getvalue()], 64)[2][0]) is True  # (rgb, ok, gray)
