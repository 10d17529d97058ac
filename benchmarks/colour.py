"""The colour path's element-wise pieces, one torch thread, old form against new, side by
side and interleaved (five rounds, medians), on the planes a 100-megapixel scan makes:

    python benchmarks/colour.py [--megapixels 100] [--rounds 5]

Rows: torch.where against the select-free max/min form (the sRGB curve and CIE f^-1),
torch.pow against NumPy's powf, dense interpolation matrices against two-tap lerps for the
chroma upsampling, and the whole L*a*b* -> sRGB conversion of a strip. Writes
benchmarks/results/colour.json."""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, write  # noqa: E402
from legacy import _interp_matrix, _lab_to_linear_before, linear_to_srgb_before  # noqa: E402

from archive_colorize.imaging.lab import _f_inv, _f_inv_planar, _pow_, lab_to_linear_planes, linear_to_srgb_  # noqa: E402
from archive_colorize.imaging.render import _taps  # noqa: E402

W, ROWS = 8660, 32  # a 100 MP scan's width, and the CPU strip height


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--megapixels", type=float, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    strips = max(1, round(a.megapixels * 1e6 / (W * ROWS)))
    x = torch.rand(ROWS, W, generator=g)
    L = torch.rand(ROWS, W, generator=g) * 100
    A, B = (torch.rand(2, ROWS, W, generator=g) - 0.5) * 60
    lin = lab_to_linear_planes(L, A, B).clamp(0, 1)
    # the power only ever sees values at or above the knee (linear_to_srgb_); NumPy's powf
    # leaves its SIMD path for zeros (3x slower), which never reach it
    knee = lin.clamp(min=0.0031308)
    ab = (torch.rand(2, 512, 384, generator=g) - 0.5) * 60
    H = strips * ROWS
    cols = _interp_matrix(W, 384).T
    c0, c1, cw = _taps(W, 384)
    r0, r1, rw = _taps(H, 512)
    ab_cols = torch.lerp(ab[:, :, c0], ab[:, :, c1], cw)

    def dense(y0=H // 2):
        rows = _interp_matrix(H, 512, y0, y0 + ROWS)
        return torch.einsum("sh,chw,wx->csx", rows, ab, cols)

    def lerps(y0=H // 2):
        w = rw[y0 : y0 + ROWS, None]
        return [torch.lerp(ab_cols[c, r0[y0 : y0 + ROWS]], ab_cols[c, r1[y0 : y0 + ROWS]], w) for c in (0, 1)]

    cases = [
        (
            "sRGB curve, 3 planes",
            "torch.where",
            lambda: linear_to_srgb_before(lin),
            "max/min pieces",
            lambda: linear_to_srgb_(lin.clone()),
        ),
        ("CIE f^-1, 1 plane", "torch.where", lambda: _f_inv(x), "max/min pieces", lambda: _f_inv_planar(x)),
        (
            "x^(1/2.4), 3 planes",
            "torch.pow",
            lambda: knee.pow(1 / 2.4),
            "NumPy powf",
            lambda: _pow_(knee.clone(), 1 / 2.4),
        ),
        ("chroma upsampling, 2 planes", "dense matrices", dense, "two-tap lerps", lerps),
        (
            "L*a*b* -> linear, 3 planes",
            "before",
            lambda: _lab_to_linear_before(torch.stack([L, A, B])[None]),
            "planes",
            lambda: lab_to_linear_planes(L, A, B),
        ),
    ]
    clone = lambda: lin.clone()  # noqa: E731 - subtracted from the rows that clone their input
    times: dict = {}
    for _ in range(a.rounds):
        for name, old, f_old, new, f_new in cases:
            for label, f in ((old, f_old), (new, f_new), ("clone", clone)):
                f()
                t = time.perf_counter()
                for _ in range(10):
                    f()
                times.setdefault((name, label), []).append((time.perf_counter() - t) / 10 * strips)
    med = {k: statistics.median(v) for k, v in times.items()}
    rows = []
    for name, old, _, new, _ in cases:
        t_new = med[(name, new)] - (
            med[(name, "clone")] if "clone" in new or name.startswith(("sRGB", "x^")) else 0
        )
        rows.append(
            {
                "what": name,
                "old": old,
                "old_s": med[(name, old)],
                "new": new,
                "new_s": t_new,
                "speedup": med[(name, old)] / t_new,
            }
        )
    print(f"{a.megapixels:g} MP ({strips} strips of {ROWS}x{W}), one torch thread, median of {a.rounds}:\n")
    print(
        table(
            rows,
            [
                ("what", "what", "s"),
                ("old", "old", "s"),
                ("old_s", "old s", ".3f"),
                ("new", "new", "s"),
                ("new_s", "new s", ".3f"),
                ("speedup", "old / new", ".1f"),
            ],
        )
    )
    print(f"\nwrote {write('colour', {'machine': machine(), 'megapixels': a.megapixels, 'rows': rows})}")


if __name__ == "__main__":
    main()
