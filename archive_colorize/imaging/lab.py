"""sRGB <-> CIE L*a*b* (D65, 2° observer) in torch, batch-first, plus the a*b* normalisation.

All functions take float tensors shaped (N, C, H, W). sRGB values are in [0, 1];
L* is in [0, 100]; a*, b* are in CIE units.
"""

from __future__ import annotations

import numpy as np
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
    # the power's argument clamped to its own branch: at 0 its gradient is infinite, and
    # torch.where's gradient multiplies the branch it did not take by 0 (inf * 0 = NaN)
    return torch.where(lin <= 0.0031308, lin * 12.92, 1.055 * lin.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)


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


# The rendering path below works on planes (L*, a*, b* as separate tensors of any shape) and
# avoids torch.where: on the CPU it is ~6x the cost of an add (tensor-wide bool mask, then
# an unvectorised select), and it used to be half of a 100-megapixel recombination. Each
# piecewise curve is written as max/min of its argument instead, which is exact algebra.
_D = 6 / 29  # where the CIE curve f^-1 turns from the cube to its tangent line
_SRGB_KNEE = 0.0031308
# XYZ -> linear sRGB with the D65 white folded in: X = Xn f^-1(fx), ...
_LAB_M = (_XYZ_TO_RGB * torch.tensor(WHITE_D65, dtype=torch.float64)).tolist()


def _f_inv_planar(t: torch.Tensor) -> torch.Tensor:
    """f^-1: t^3 above 6/29, the tangent 3(6/29)^2 (t - 4/29) below, as
    max(t, D)^3 + 3D^2 (min(t, D) - 4/29) - D^3, which equals each piece on its side."""
    hi = t.clamp(min=_D)
    return hi.mul(hi).mul_(hi).add_(t.clamp(max=_D).sub_(4 / 29).mul_(3 * _D * _D)).sub_(_D**3)


def lab_to_linear_planes(L: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L*, a*, b* planes of one shape -> (3, *shape) linear sRGB (not clipped)."""
    fy = L.add(16).mul_(1 / 116)
    x, y, z = (
        _f_inv_planar(fy.add(a, alpha=1 / 500)),
        _f_inv_planar(fy),
        _f_inv_planar(fy.sub(b, alpha=1 / 200)),
    )
    return torch.stack([x.mul(r[0]).add_(y, alpha=r[1]).add_(z, alpha=r[2]) for r in _LAB_M])


def _pow_(x: torch.Tensor, p: float) -> torch.Tensor:
    # NumPy's SIMD powf is 2.6x torch's on the CPU (measured on AVX-512); the values agree to
    # 1 ulp. On a GPU torch's own is the fast one.
    if x.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous():
        arr = x.numpy()
        np.power(arr, p, out=arr)
        return x
    return x.pow_(p)


def linear_to_srgb_(lin: torch.Tensor) -> torch.Tensor:
    """linear_to_srgb, in place and without a select: 1.055 max(x, k)^(1/2.4) - 0.055 +
    12.92 (min(x, k) - k). Exact above the knee k; below it off by the sRGB curve's own
    discontinuity at k (1e-6, a 15th of a 16-bit code value)."""
    lin.clamp_(0.0, 1.0)
    low = lin.clamp(max=_SRGB_KNEE).sub_(_SRGB_KNEE).mul_(12.92)
    return _pow_(lin.clamp_(min=_SRGB_KNEE), 1 / 2.4).mul_(1.055).sub_(0.055).add_(low)


_GAMUT_TOL = 1e-6


def outside_gamut(lin: torch.Tensor) -> torch.Tensor:
    """(3, *shape) linear sRGB -> bool (*shape): which pixels no sRGB colour can show."""
    return (lin.amin(0) < -_GAMUT_TOL) | (lin.amax(0) > 1 + _GAMUT_TOL)


def fit_into_gamut(L: torch.Tensor, a: torch.Tensor, b: torch.Tensor, steps: int = 10) -> torch.Tensor:
    """Out-of-gamut pixels (1-D planes) -> (3, k) linear sRGB with their chroma pulled toward
    grey: bisect the largest scale s in [0, 1] of (a*, b*) whose colour fits; s = 0 (neutral
    grey) always fits, and L* never changes."""
    lo, hi = torch.zeros_like(L), torch.ones_like(L)
    for _ in range(steps):
        mid = (lo + hi) / 2
        trial = lab_to_linear_planes(L, a * mid, b * mid)
        fits = ((trial >= -_GAMUT_TOL) & (trial <= 1 + _GAMUT_TOL)).all(dim=0)
        lo = torch.where(fits, mid, lo)
        hi = torch.where(fits, hi, mid)
    return lab_to_linear_planes(L, a * lo, b * lo)
