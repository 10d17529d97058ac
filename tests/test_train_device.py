"""Training with device-resident data, fine-tuning with --init, relative run folders and
time limits under Ray Train. Synthetic Places-style shards: nothing from ../shared."""

import json
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from archive_colorize.apps.cli import app
from archive_colorize.train.config import load_config
from archive_colorize.errors import ConfigError
from archive_colorize.model.network import ColorizationModel, ModelConfig
from archive_colorize.train.checkpoints import list_checkpoints, read_metrics
from archive_colorize.train.driver import run_training
from archive_colorize.train.loop import init_from_weights
from archive_colorize.model.weights import load_weights, read_metadata

from .conftest import ROOT, make_categories, make_places_parquet

SMOKE = ROOT / "training" / "smoke.toml"
runner = CliRunner()


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    d = tmp_path_factory.mktemp("places")
    make_places_parquet(d / "train-00.parquet", 96, seed=1, gray_every=8)
    make_places_parquet(d / "val.parquet", 24, seed=2, gray_every=0)
    make_categories(d / "categories.txt", 100)
    make_categories(d / "categories10.txt", 10)
    return d


def data_args(d):
    return [
        f"data.train={d / 'train-*.parquet'}",
        f"data.val={d / 'val.parquet'}",
        f"data.categories={d / 'categories.txt'}",
    ]


def test_resident_training_counts_the_filtered_once(places, tmp_path):
    cfg = load_config(
        SMOKE,
        [
            *data_args(places),
            "data.on_device=true",
            "train.use_ray=false",
            "train.steps=30",
            "train.log_every=10",
            "train.eval_every=30",
            "data.train_limit=0",
        ],
    )
    run_training(cfg, str(tmp_path / "run"))
    rows = read_metrics(str(tmp_path / "run"))
    assert [int(r["step"]) for r in rows] == [10, 20, 30]
    # 96 rows, every 8th grayscale: 12 filtered, counted once although 84 images make 3 epochs of batch 8
    assert {int(r["filtered"]) for r in rows} == {12}
    assert int(rows[-1]["images"]) == 30 * 8
    assert rows[-1]["val_ab_mse"] is not None and rows[-1]["images_per_s"] > 0


def _export(run, out):
    r = runner.invoke(app, ["weights", "export", str(run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def base_weights(places, tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    run_training(
        load_config(SMOKE, [*data_args(places), "train.use_ray=false", "train.steps=2"]), str(d / "run")
    )
    return _export(d / "run", d / "base.safetensors")


def test_init_loads_every_tensor_and_reinitialises_a_new_classifier(base_weights):
    base = load_weights(base_weights).model.state_dict()
    same = ColorizationModel(ModelConfig(num_classes=100, width=0.125))
    assert "re-initialised" not in init_from_weights(same, str(base_weights))
    for k, v in same.state_dict().items():
        assert torch.equal(v, base[k]), k
    fewer = ColorizationModel(ModelConfig(num_classes=10, width=0.125))
    note = init_from_weights(fewer, str(base_weights))
    assert note.endswith("(classifier re-initialised: 100 -> 10 classes)")
    for k, v in fewer.state_dict().items():
        if k.startswith("classification.fc2."):
            assert v.shape[0] == 10
        else:
            assert torch.equal(v, base[k]), k


def test_init_refuses_another_width(base_weights):
    with pytest.raises(ConfigError) as e:
        init_from_weights(ColorizationModel(ModelConfig(num_classes=100, width=0.25)), str(base_weights))
    assert str(e.value) == f"--init {base_weights} has model.width = 0.125, this config has 0.25"


def test_fine_tune_from_another_directory_with_relative_paths(places, base_weights, tmp_path):
    """`train --init` with a relative --out and relative data paths, run where a user would."""
    work = tmp_path / "archive"
    (work / "data").mkdir(parents=True)
    make_places_parquet(work / "data" / "ours-00.parquet", 40, seed=5, classes=10, gray_every=0)
    (work / "data" / "cats.txt").write_text((places / "categories10.txt").read_text())
    (work / "base.safetensors").write_bytes(base_weights.read_bytes())
    cli = [sys.executable, "-m", "archive_colorize.apps.cli"]
    r = subprocess.run(
        [
            *cli,
            "train",
            "--config",
            str(ROOT / "training" / "finetune.toml"),
            "--out",
            "runs/ft",
            "--init",
            "base.safetensors",
            "data.train=data/ours-*.parquet",
            "data.val=",
            "data.categories=data/cats.txt",
            "model.num_classes=10",
            "model.width=0.125",
            "train.steps=4",
            "train.batch_size=8",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "initialised from" in r.stdout and "(classifier re-initialised: 100 -> 10 classes)" in r.stdout
    assert f"latest checkpoint: {work / 'runs' / 'ft' / 'checkpoints' / 'step-000000004.pt'}" in r.stdout
    r = subprocess.run(
        [*cli, "weights", "export", "runs/ft", "--out", "ft.safetensors"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    meta = read_metadata(work / "ft.safetensors")
    assert meta["config"]["num_classes"] == 10 and meta["categories"][3] == "class_3"


def test_relative_out_and_time_limit_under_ray_train(ray_cluster, places, tmp_path, monkeypatch):
    """Ray Train workers run in directories of their own; a relative --out must still land
    here, and train.max_minutes must stop both workers together (no all-reduce left waiting)."""
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(SMOKE),
            "--out",
            "runs/smoke",
            *data_args(places),
            "train.steps=100000",
            "train.max_minutes=0.05",
            "train.log_every=2",
            "train.checkpoint_every=100000",
            "train.eval_every=100000",
        ],
    )
    assert r.exit_code == 0, r.output
    ckpts = list_checkpoints(str(tmp_path / "runs" / "smoke"))
    assert len(ckpts) == 1 and 0 < ckpts[0][0] < 100000 and ckpts[0][0] % 2 == 0
    assert f"latest checkpoint: {ckpts[0][1]}" in r.output
    r = runner.invoke(app, ["weights", "export", "runs/smoke", "--out", "w.safetensors"])
    assert r.exit_code == 0, r.output
    assert (
        json.loads(json.dumps(read_metadata(tmp_path / "w.safetensors")["training"]))["steps"] == ckpts[0][0]
    )


def test_streaming_without_ray_when_not_resident(places, tmp_path):
    """data.on_device=false: the threaded streaming loader; the filter counts per batch."""
    cfg = load_config(
        SMOKE,
        [
            *data_args(places),
            "data.on_device=false",
            "train.use_ray=false",
            "train.steps=12",
            "train.log_every=12",
            "train.eval_every=12",
            "data.train_limit=0",
        ],
    )
    run_training(cfg, str(tmp_path / "run"))
    (row,) = read_metrics(str(tmp_path / "run"))
    # 12 batches of 8 drawn from 96 rows of which every 8th is grey: 12 draws filtered in all
    assert int(row["step"]) == 12 and int(row["filtered"]) == 12 and int(row["images"]) == 96 - 12
