"""sRGB <-> CIE L*a*b* (D65, 2° observer) in torch, batch-first, plus the a*b* normalisation.

All functions take float tensors shaped (N, C, H, W). sRGB values are in [0, 1];
L* is in [0, 100]; a*, b* are in CIE units.
"""

from __future__ import annotations

import torch

# D65 reference white (CIE 1931 2°), as in IEC 61966-2-1 / Lindbloom.
WHITE_D65 = (0.95047, 1.0, 1.08883)

_RGB_TO_XYZ = torch.tensor(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ],
    dtype=torch.float64,
)
_XYZ_TO_RGB = torch.linalg.inv(_RGB_TO_XYZ)

_EPS = 216 / 24389  # CIE's exact constants, not the rounded 0.008856 / 903.3
_KAPPA = 24389 / 27

# The network's Sigmoid output lies in (0, 1); a*b* are mapped there by one global affine
# map (paper §3.3, "globally normalized"). Its name and constants are stored in every
# weights file so a model is never decoded with the wrong map.
AB_NORM = {"name": "ab-affine-128", "offset": 128.0, "scale": 256.0}


def normalize_ab(ab: torch.Tensor, norm: dict = AB_NORM) -> torch.Tensor:
    return (ab + norm["offset"]) / norm["scale"]


def denormalize_ab(ab01: torch.Tensor, norm: dict = AB_NORM) -> torch.Tensor:
    return ab01 * norm["scale"] - norm["offset"]


def _matmul3(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,njhw->nihw", m.to(x.dtype).to(x.device), x)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp(min=0) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin: torch.Tensor) -> torch.Tensor:
    lin = lin.clamp(0.0, 1.0)
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin ** (1 / 2.4) - 0.055)


def _f(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > _EPS, t.clamp(min=_EPS) ** (1 / 3), (_KAPPA * t + 16) / 116)


def _f_inv(f: torch.Tensor) -> torch.Tensor:
    f3 = f**3
    return torch.where(f3 > _EPS, f3, (116 * f - 16) / _KAPPA)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) sRGB in [0,1] -> (N,3,H,W) L*a*b*."""
    xyz = _matmul3(_RGB_TO_XYZ, srgb_to_linear(rgb))
    white = torch.tensor(WHITE_D65, dtype=rgb.dtype, device=rgb.device).view(1, 3, 1, 1)
    fx, fy, fz = _f(xyz / white).unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def luminance_to_lightness(y: torch.Tensor) -> torch.Tensor:
    """Relative luminance Y in [0,1] -> L* in [0,100]; the grayscale fast path."""
    return 116 * _f(y) - 16


def gray_to_lightness(gray: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded gray values in [0,1] (a neutral R=G=B pixel) -> L*."""
    return luminance_to_lightness(srgb_to_linear(gray))


def _lab_to_linear(lab: torch.Tensor) -> torch.Tensor:
    L, a, b = lab.unbind(1)
    fy = (L + 16) / 116
    fx = fy + a / 500
    fz = fy - b / 200
    white = torch.tensor(WHITE_D65, dtype=lab.dtype, device=lab.device).view(1, 3, 1, 1)
    xyz = torch.stack([_f_inv(fx), _f_inv(fy), _f_inv(fz)], dim=1) * white
    return _matmul3(_XYZ_TO_RGB, xyz)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """(N,3,H,W) L*a*b* -> sRGB in [0,1], clipped per channel (may shift L* out of gamut)."""
    return linear_to_srgb(_lab_to_linear(lab))


def lab_to_rgb_keep_lightness(lab: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """L*a*b* -> sRGB, pulling out-of-gamut chroma toward grey instead of clipping channels.

    Per-channel clipping changes L*, and the contract is that the archive's own luminance
    survives untouched. So for out-of-gamut pixels we bisect the largest chroma scale
    s in [0, 1] whose colour fits in sRGB; s = 0 (neutral grey) always fits.
    """
    lin = _lab_to_linear(lab)
    tol = 1e-6
    outside = ((lin < -tol) | (lin > 1 + tol)).any(dim=1)  # (N, H, W)
    if outside.any():
        # Bisect only the out-of-gamut pixels (often a few percent): the same arithmetic
        # per pixel, on a (1, 3, k, 1) gather instead of the whole image, 11 times over.
        sel = outside.nonzero(as_tuple=True)
        px = lab.permute(0, 2, 3, 1)[sel].T[None, :, :, None]  # (1, 3, k, 1)
        L, ab = px[:, :1], px[:, 1:]
        lo = torch.zeros_like(L)
        hi = torch.ones_like(L)
        for _ in range(steps):
            mid = (lo + hi) / 2
            trial = _lab_to_linear(torch.cat([L, ab * mid], dim=1))
            fits = ((trial >= -tol) & (trial <= 1 + tol)).all(dim=1, keepdim=True)
            lo = torch.where(fits, mid, lo)
            hi = torch.where(fits, hi, mid)
        fixed = _lab_to_linear(torch.cat([L, ab * lo], dim=1))  # (1, 3, k, 1)
        lin = lin.permute(0, 2, 3, 1).contiguous()
        lin[sel] = fixed[0, :, :, 0].T
        lin = lin.permute(0, 3, 1, 2)
    return linear_to_srgb(lin)
