"""Head-only training over a frozen trunk and the colour losses (issue 32)."""

import json

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from archive_colorize.apps.cli import app
from archive_colorize.train.config import load_config
from archive_colorize.errors import ConfigError
from archive_colorize.imaging.lab import normalize_ab
from archive_colorize.train.losses import BINS, ColourHistogram, ab_bins, colour_loss, rebalance_weights
from archive_colorize.train.driver import run_training

from .conftest import ROOT, make_categories, make_places_parquet, make_random_weights

SMOKE = ROOT / "training" / "smoke.toml"
TRUNK = ["low_level", "mid_level", "global_features"]
runner = CliRunner()


def _cell(a: float, b: float) -> int:
    return int(ab_bins(torch.tensor([a, b]).view(2, 1, 1))[0, 0])


def test_rebalance_weights_from_a_synthetic_colour_distribution():
    # nine pixels in ten a warm brown, one in ten a saturated blue
    ab = torch.zeros(10, 2, 4, 4)
    ab[:9, 0], ab[:9, 1] = 12.0, 18.0
    ab[9, 0], ab[9, 1] = -15.0, -55.0
    hist = ColourHistogram()
    hist.add(normalize_ab(ab))
    brown, blue = _cell(12, 18), _cell(-15, -55)
    assert hist.counts[brown] == 144 and hist.counts[blue] == 16 and hist.counts.sum() == 160
    w = rebalance_weights(hist.counts, lam=0.5, sigma=0.0)
    # w = 1 / ((1-λ) p + λ/Q) with Q = 2 colours seen, then E_p[w] = 1
    expected_brown, expected_blue = 1 / (0.5 * 0.9 + 0.25), 1 / (0.5 * 0.1 + 0.25)
    scale = 0.9 * expected_brown + 0.1 * expected_blue
    assert float(w[brown]) == pytest.approx(expected_brown / scale, rel=1e-6)
    assert float(w[blue]) == pytest.approx(expected_blue / scale, rel=1e-6)
    assert float(w[blue] / w[brown]) == pytest.approx(0.7 / 0.3, rel=1e-6)  # the rare colour counts more
    smooth = rebalance_weights(hist.counts, lam=0.5, sigma=5.0)
    p = hist.counts / hist.counts.sum()
    assert float(smooth[blue]) > float(smooth[brown])
    assert float((p * smooth.double()).sum()) < 1.05  # about 1 on the training colours themselves
    assert smooth.shape == (BINS * BINS,)
    with pytest.raises(ConfigError, match="train.rebalance_lambda must be in"):
        rebalance_weights(hist.counts, lam=0.0)


def test_rebalanced_loss_weighs_an_error_on_a_rare_colour_more():
    true = torch.zeros(1, 2, 10, 10)
    true[0, 0], true[0, 1] = 12.0, 18.0
    true[0, :, 0, 0] = torch.tensor([-15.0, -55.0])  # one rare pixel
    hist = ColourHistogram()
    hist.add(normalize_ab(true))
    w = rebalance_weights(hist.counts, sigma=0.0)
    t01 = normalize_ab(true)
    off = 5 / 256  # an error of 5 a*b* units
    rare, common = t01.clone(), t01.clone()
    rare[0, 0, 0, 0] += off
    common[0, 0, 5, 5] += off
    assert colour_loss("mse", rare, t01) == pytest.approx(float(colour_loss("mse", common, t01)))
    ratio = float(colour_loss("rebalanced", rare, t01, weights=w)) / float(
        colour_loss("rebalanced", common, t01, weights=w)
    )
    # 1 pixel in 100 is rare; with Q = 2 colours and λ = 0.5 its weight is (0.495 + 0.25) / (0.005 + 0.25) times
    assert ratio == pytest.approx((0.5 * 0.99 + 0.25) / (0.5 * 0.01 + 0.25), rel=1e-4)
    L = torch.full((1, 1, 20, 20), 0.6)
    dull = normalize_ab(true * 0.3)
    assert (
        float(colour_loss("colourfulness", dull, t01, L, beta=1.0))
        > float(colour_loss("mse", dull, t01)) + 0.1
    )
    bright = normalize_ab(true * 1.5)  # more colourful than the truth: no shortfall term
    assert float(colour_loss("colourfulness", bright, t01, L, beta=1.0)) == pytest.approx(
        float(colour_loss("mse", bright, t01))
    )


@pytest.fixture(scope="module")
def head_setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("head")
    train = make_places_parquet(d / "train-00.parquet", 96, seed=1)
    val = make_places_parquet(d / "val.parquet", 16, seed=2)
    make_categories(d / "categories.txt")
    init = make_random_weights(d / "init.safetensors", width=0.125)
    overrides = [
        f"data.train={train}",
        f"data.val={val}",
        f"data.categories={d / 'categories.txt'}",
        "data.scale=64",
        "data.crop=64",
        "train.use_ray=false",
        "train.batch_size=16",
        f"train.freeze={json.dumps(TRUNK)}",
        f"train.feature_cache={d / 'features'}",
    ]
    return {"dir": d, "init": init, "cfg": lambda *o: load_config(SMOKE, [*overrides, *o])}


def _tensors(path) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _export(run_dir, out):
    r = runner.invoke(app, ["weights", "export", str(run_dir), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return _tensors(out)


def test_head_training_from_init_keeps_the_frozen_trunk_byte_identical(head_setup, capsys):
    d = head_setup["dir"]
    run_training(
        head_setup["cfg"]("train.steps=4", "train.loss=rebalanced"),
        str(d / "run"),
        init=str(head_setup["init"]),
    )
    log = capsys.readouterr().out
    assert "features: " in log and "images (" in log  # extracted once, into the cache
    before, after = _tensors(head_setup["init"]), _export(d / "run", d / "head.safetensors")
    assert before.keys() == after.keys()
    for name, t in before.items():
        same = torch.equal(t, after[name]) and t.dtype == after[name].dtype
        if name.split(".")[0] in TRUNK:
            assert same, f"{name} changed"  # frozen: every weight and batch-norm statistic, bit for bit
    head_changed = [
        n
        for n in before
        if n.split(".")[0] in ("fusion", "colorization") and not torch.equal(before[n], after[n])
    ]
    assert len(head_changed) > 10
    ckpt = torch.load(sorted((d / "run" / "checkpoints").glob("*.pt"))[-1], weights_only=True)
    assert ckpt["step"] == 4 and len(ckpt["colour_weights"]) == BINS * BINS


def test_head_training_resumes_to_the_same_weights_and_reuses_the_cache(head_setup, capsys):
    d = head_setup["dir"]
    cfg6 = head_setup["cfg"]("train.steps=6", "train.checkpoint_every=3")
    run_training(cfg6, str(d / "straight"), init=str(head_setup["init"]))
    assert (
        "reused" in capsys.readouterr().out
    )  # the first test's features: same weights, data and augmentation
    run_training(
        head_setup["cfg"]("train.steps=3", "train.checkpoint_every=3"),
        str(d / "halves"),
        init=str(head_setup["init"]),
    )
    run_training(cfg6, str(d / "halves"), resume=True, init=str(head_setup["init"]))
    a, b = _export(d / "straight", d / "a.safetensors"), _export(d / "halves", d / "b.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_colourfulness_loss_and_a_partly_frozen_full_loop(head_setup):
    d = head_setup["dir"]
    run_training(
        head_setup["cfg"]("train.steps=2", "train.loss=colourfulness"),
        str(d / "colour"),
        init=str(head_setup["init"]),
    )
    # only the low-level features frozen: the ordinary loop, which keeps them as they were
    cfg = head_setup["cfg"]("train.steps=2", 'train.freeze=["low_level"]', "train.loss=colourfulness")
    run_training(cfg, str(d / "partial"), init=str(head_setup["init"]))
    before, after = _tensors(head_setup["init"]), _export(d / "partial", d / "p.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("low_level."))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("mid_level."))


@pytest.mark.parametrize(
    "override, message",
    [
        (
            'train.freeze=["low_level", "trunk"]',
            "config key train.freeze names unknown sub-network(s) ['trunk']",
        ),
        (
            "train.loss=focal",
            "config key train.loss must be one of mse, rebalanced, colourfulness, not 'focal'",
        ),
        (
            'train.freeze=["fusion", "colorization", "classification"]',
            "config key train.freeze leaves nothing to train",
        ),
    ],
)
def test_bad_head_configs_are_refused_with_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(SMOKE, [override])
    assert str(e.value) == message


def test_rebalanced_without_a_frozen_trunk_and_a_frozen_trunk_without_init(head_setup):
    d = head_setup["dir"]
    with pytest.raises(ConfigError, match="^train.loss = 'rebalanced' needs a frozen trunk"):
        run_training(head_setup["cfg"]("train.freeze=[]", "train.loss=rebalanced"), str(d / "x"))
    with pytest.raises(
        ConfigError, match="^a frozen trunk \\(train.freeze\\) needs trained weights to start from$"
    ):
        run_training(head_setup["cfg"](), str(d / "y"))


def test_colourfulness_loss_has_finite_gradients_where_srgb_clips():
    """A grey prediction on a black or white region clips to 0 or 1 in linear sRGB, where
    the gamma curve's power has an infinite slope: the first CPU run of this loss went NaN
    at step 100 (torch.where passes inf * 0 back through the branch it did not take)."""
    torch.manual_seed(0)
    true = normalize_ab(torch.randn(4, 2, 8, 8) * 30)
    L = torch.rand(4, 1, 16, 16)
    L[0] = 0.0  # black
    L[1] = 1.0  # white
    for start in (
        torch.full_like(true, 0.5),
        normalize_ab(torch.randn(4, 2, 8, 8) * 200),
    ):  # grey; far out of gamut
        pred = start.clone().requires_grad_(True)
        loss = colour_loss("colourfulness", pred, true, L, beta=0.005)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(pred.grad).all()
        assert pred.grad.abs().sum() > 0
