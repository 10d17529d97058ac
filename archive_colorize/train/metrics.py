"""Colour metrics shared by training (its validation) and `evaluate`, so both report the
same numbers the same way."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from archive_colorize.imaging.lab import denormalize_ab, lab_to_rgb

AUC_THRESHOLDS = torch.arange(0, 151, dtype=torch.float32)


def rgb_from(L01: torch.Tensor, ab01_half: torch.Tensor) -> torch.Tensor:
    """L*/100 at full size + normalised a*b* at half size -> sRGB in [0,1]."""
    ab = denormalize_ab(F.interpolate(ab01_half, size=L01.shape[-2:], mode="bilinear", align_corners=False))
    return lab_to_rgb(torch.cat([L01 * 100, ab], 1))


def psnr(rgb: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of sRGB images in [0, 1]."""
    mse = (rgb - truth).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-10))


def psnr_rgb(L01, pred_ab01, true_ab01) -> torch.Tensor:
    """Per-image PSNR (dB) of the recombined RGB against the ground-truth RGB."""
    return psnr(rgb_from(L01, pred_ab01), rgb_from(L01, true_ab01))


def colourfulness(rgb01: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Hasler & Suesstrunk (2003), on 0..255 values; one number per image. `eps` under the
    square roots: a loss needs it, since a grey image's gradient there is infinite."""
    r, g, b = (rgb01 * 255).unbind(1)
    rg, yb = r - g, 0.5 * (r + g) - b
    std = (rg.flatten(1).var(1, unbiased=False) + yb.flatten(1).var(1, unbiased=False) + eps).sqrt()
    mean = (rg.flatten(1).mean(1) ** 2 + yb.flatten(1).mean(1) ** 2 + eps).sqrt()
    return std + 0.3 * mean
