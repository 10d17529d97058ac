"""Shared fixtures: real images from ../shared, seeded random weights, one Ray cluster."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ARCHIVE_COLORIZE_SHARED", ROOT.parent / "shared"))
HISTORICAL = SHARED / "data" / "historical"
MINIPLACES = SHARED / "data" / "miniplaces"


def historical(name: str) -> Path:
    p = HISTORICAL / name
    if not p.exists():
        pytest.skip(f"shared data missing: {p}")
    return p


def make_random_weights(path: Path, width: float = 0.125, seed: int = 0, global_branch: bool = True) -> Path:
    """A seeded random model whose batch norms hold non-trivial statistics (so folding is
    really exercised) and whose output layer is scaled up so it produces visible colour."""
    from archive_colorize.model import ColorizationModel, ModelConfig
    from archive_colorize.weights import load_categories, save_weights

    torch.manual_seed(seed)
    model = ColorizationModel(ModelConfig(num_classes=100, width=width, global_branch=global_branch))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.momentum = 0.5
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(4, 1, 224, 224))
    model.colorization.output.weight.data *= 8  # saturate a little: random nets are near-grey
    model.eval()
    cats = load_categories(MINIPLACES / "categories.txt")
    save_weights(model, path, cats, recipe={"note": "seeded random, for tests"}, data={"description": "none"})
    return path


@pytest.fixture(scope="session")
def weights_path(tmp_path_factory) -> Path:
    return make_random_weights(tmp_path_factory.mktemp("weights") / "random.safetensors")


@pytest.fixture(scope="session")
def weights(weights_path):
    from archive_colorize.weights import load_weights

    return load_weights(weights_path)


@pytest.fixture(scope="session")
def engine(weights):
    from archive_colorize.engine import Engine

    return Engine(weights, device="cpu", working_size=256)
