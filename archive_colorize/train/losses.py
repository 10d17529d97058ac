"""What the colorization network is trained toward (`train.loss`).

The paper's loss is the MSE of normalised a*b* (Eq. 5). Where the model is unsure of a
colour, the MSE optimum is the mean of the colours it might be, which is desaturated: a
red flag that could as well be blue comes out brown. The two alternatives change only the
target's weighting, never the network:

    mse            the paper: mean of (pred - truth)^2 over pixels and both channels
    rebalanced     each pixel's squared error weighted by the rarity of its true colour
                   (Zhang, Isola and Efros, ECCV 2016, Eq. 3-4): w = 1 / ((1-λ) p̃ + λ/Q),
                   p̃ the training set's a*b* distribution on a 10-unit grid smoothed by a
                   Gaussian (σ = 5 units), Q the number of colour bins that occur, λ = 0.5,
                   scaled so that the mean weight over the training pixels is 1
    colourfulness  mse + β · mean over images of max(0, C(truth) - C(pred)) / C(truth), C the
                   Hasler-Süsstrunk colourfulness of the sRGB image made from the input's L*
                   and the a*b*: only a prediction duller than its photograph is penalised

The class loss (α · cross-entropy) is added to all three unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from archive_colorize.errors import ConfigError
from archive_colorize.imaging.lab import denormalize_ab

LOSSES = ("mse", "rebalanced", "colourfulness")
BIN = 10.0  # CIE a*b* units per grid cell, as Zhang et al.
RANGE = 110.0  # a*, b* in [-110, 110): every sRGB colour
BINS = int(2 * RANGE / BIN)  # 22 x 22 cells


def ab_bins(ab: torch.Tensor) -> torch.Tensor:
    """a*b* in CIE units (..., 2, H, W) -> the flat grid cell of each pixel (..., H, W)."""
    idx = ((ab + RANGE) / BIN).floor().long().clamp(0, BINS - 1)
    return idx[..., 0, :, :] * BINS + idx[..., 1, :, :]


class ColourHistogram:
    """The a*b* distribution of the training targets, counted batch by batch."""

    def __init__(self):
        self.counts = torch.zeros(BINS * BINS, dtype=torch.float64)

    def add(self, ab01: torch.Tensor) -> None:
        """Normalised a*b* targets (N, 2, h, w), as the network is trained on."""
        bins = ab_bins(denormalize_ab(ab01.float()))
        self.counts += torch.bincount(bins.flatten().cpu(), minlength=BINS * BINS).double()


def rebalance_weights(counts: torch.Tensor, lam: float = 0.5, sigma: float = 5.0) -> torch.Tensor:
    """Per-cell weights from a histogram of training colours (BINS*BINS counts)."""
    if not 0 < lam <= 1:
        raise ConfigError(f"config key train.rebalance_lambda must be in (0, 1], got {lam}")
    total = float(counts.sum())
    if total <= 0:
        raise ConfigError("no training colours to rebalance by (every image was filtered out?)")
    p = (counts / total).view(1, 1, BINS, BINS)
    if sigma > 0:
        s = sigma / BIN  # in cells
        r = max(1, int(3 * s + 0.5))
        x = torch.arange(-r, r + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (x / s) ** 2)
        k = k / k.sum()
        p = F.conv2d(F.conv2d(p, k.view(1, 1, -1, 1), padding=(r, 0)), k.view(1, 1, 1, -1), padding=(0, r))
    p = p.flatten()
    p = p / p.sum()
    q = int((counts > 0).sum())
    w = 1.0 / ((1 - lam) * p + lam / q)
    w = w / float((p * w).sum())  # E_p[w] = 1: the loss keeps the scale of the MSE
    return w.float()


def colour_loss(
    kind: str,
    pred01: torch.Tensor,
    true01: torch.Tensor,
    L01: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    beta: float = 0.0,
) -> torch.Tensor:
    """The colour term of the joint loss. pred01/true01: normalised a*b* (N, 2, h, w);
    L01: the input L*/100 (N, 1, H, W), for `colourfulness`; weights: rebalance_weights."""
    pred01 = pred01.float()
    if kind == "mse":
        return F.mse_loss(pred01, true01)
    if kind == "rebalanced":
        if weights is None:
            raise ConfigError("train.loss = 'rebalanced' needs the training colours' weights")
        w = weights.to(pred01.device)[ab_bins(denormalize_ab(true01))]  # (N, h, w)
        return ((pred01 - true01).pow(2).mean(1) * w).mean()
    if kind == "colourfulness":
        from archive_colorize.imaging.lab import lab_to_rgb
        from archive_colorize.train.metrics import colourfulness

        L = F.interpolate(L01, size=pred01.shape[-2:], mode="area") * 100
        # eps: a grey prediction has colourfulness 0, where the square root's slope is infinite
        c_pred = colourfulness(lab_to_rgb(torch.cat([L, denormalize_ab(pred01)], 1)), eps=1e-4)
        c_true = colourfulness(lab_to_rgb(torch.cat([L, denormalize_ab(true01)], 1)))
        short = (c_true - c_pred).clamp(min=0) / c_true.clamp(min=1.0)
        return F.mse_loss(pred01, true01) + beta * short.mean()
    raise ConfigError(f"config key train.loss must be one of {', '.join(LOSSES)}, not {kind!r}")
