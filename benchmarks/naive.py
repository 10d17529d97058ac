"""The naive baseline every benchmark compares against: the same architecture (Table 1)
and the same weights, run the way a straightforward port would run it. Eager PyTorch,
fp32, batch norm left as separate layers, NCHW, `torch.no_grad` (not inference mode),
torch's default threads, one image per forward, the global branch on its own 224x224
copy. No folding and no tricks: keep it that way, it is the yardstick."""

from __future__ import annotations

import copy

import torch

from archive_colorize import ColorizationModel


class NaiveColorizer:
    def __init__(self, model: ColorizationModel):
        self.model = copy.deepcopy(model).eval()  # unfolded: BN layers stay

    def __call__(self, x: torch.Tensor):
        with torch.no_grad():
            return self.model(x)
