"""`weights calibrate`: fit the chroma gain on held-out colour photographs.

An MSE-trained colorizer is under-confident: where it is unsure, the loss pulls it toward
the mean colour, and outside its training images it is unsure more often. One scalar k on
the predicted a*b* (before recombination and its gamut mapping, as inference applies it)
buys back much of the missing colourfulness at little cost in a*b* error. The gain is a
property of the weights, so it is written into their metadata (`calibration`), never into
the tensors.

Everything here is measured on the inference path itself: each held-out photograph's L*
goes through `Engine.predict` at the working size, the a*b* is scaled by k, recombined with
the full-resolution L* (render.recombine, gamut mapping included) and quantised to 8 bits,
exactly as `colorize` and `run` write it; the figures compare that output with the
photograph.

Criteria:
    mse             the gain that minimises the output's a*b* MSE (least squares)
    colourfulness   the gain whose mean colourfulness (Hasler-Suesstrunk) matches the truth's
    mse-budget      the largest gain whose a*b* MSE is at most `budget` above that at k = 1:
                    as much colour as a stated price in error buys
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

from archive_colorize.errors import ConfigError
from archive_colorize.core.storage import has_wildcard
from archive_colorize.imaging.lab import rgb_to_lab
from archive_colorize.train.metrics import colourfulness

CRITERIA = ("mse", "colourfulness", "mse-budget")
# The curve printed (and stored) for every fit: wide enough to show where colour stops paying.
CURVE_GAINS = (0.8, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0, 2.5)
SEARCH = (0.5, 4.0)  # where a fitted gain may lie
DECIMALS = 2  # the gain is stored, and reproduced, to this many decimals


@dataclass
class Heldout:
    """Held-out photographs, prepared once: what the model saw and what it should have made."""

    lightness: list[torch.Tensor]  # full-resolution L* (H, W), as decode_image gives it
    ab: list[torch.Tensor]  # the model's a*b* at half the working size, gain 1
    truth_ab: list[torch.Tensor]  # (2, H, W) a*b* of the photograph
    truth_rgb: list[torch.Tensor]  # (3, H, W) sRGB in [0, 1]
    truth_colourfulness: float  # mean over images
    grey_mse: float  # a*b* MSE of a grey output (a*b* = 0), pooled over pixels
    info: dict  # name, rows, images, filtered_out, sha256


def read_images(data: str, rows: tuple[int, int | None]) -> tuple[list[bytes], dict]:
    """Parquet shards of JPEG bytes (an `image` column; a glob) or a folder of image files ->
    the images of rows [start, end) in order, and where they came from (with a sha256 of the
    files read, so a calibration names its data exactly)."""
    import glob
    import os

    import pyarrow.parquet as pq

    start, end = rows
    h = hashlib.sha256()
    if os.path.isdir(data):
        from archive_colorize.core.formats import IMAGE_SUFFIXES

        files = sorted(
            os.path.join(d, f)
            for d, _, fs in os.walk(data)
            for f in fs
            if os.path.splitext(f)[1].lower() in IMAGE_SUFFIXES
        )
        images = []
        for path in files[start:end]:
            with open(path, "rb") as f:
                images.append(f.read())
            h.update(os.path.relpath(path, data).encode() + b"\0" + hashlib.sha256(images[-1]).digest())
        name = os.path.basename(os.path.normpath(data))
    else:
        paths = sorted(glob.glob(data)) if has_wildcard(data) else [data]
        if not paths or not all(os.path.isfile(p) for p in paths):
            raise ConfigError(
                f"--data {data}: no Parquet file or image folder there",
                hint="give Parquet shards with an `image` column (a quoted glob) or a folder of colour photographs",
            )
        images = []
        for p in paths:
            with open(p, "rb") as f:
                h.update(hashlib.sha256(f.read()).digest())
            try:
                col = pq.read_table(p, columns=["image"]).column("image")
            except Exception as e:
                raise ConfigError(f"--data {p}: no readable `image` column ({type(e).__name__})") from None
            images += col.to_pylist()
        images = images[start:end]
        name = ", ".join(os.path.basename(p) for p in paths)
    if not images:
        raise ConfigError(f"--data {data}: no images in rows {start}:{'' if end is None else end}")
    return images, {"name": name, "rows": [start, start + len(images)], "sha256": h.hexdigest()}


def prepare(engine, data: str, rows: tuple[int, int | None] = (0, None)) -> Heldout:
    """Predict every held-out photograph once (gain 1); the paper's colour filter first."""
    import io

    from PIL import Image

    from archive_colorize.train.data import MIN_COLOUR_STD, colour_spread
    from archive_colorize.core.formats import GRAY_MODES
    from archive_colorize.imaging.images import decode_image

    images, info = read_images(data, rows)
    Ls, abs_, tabs, trgbs = [], [], [], []
    colour, grey_se, pixels, dropped = 0.0, 0.0, 0, 0
    for blob in images:
        try:
            d = decode_image(bytes(blob))
            im = Image.open(io.BytesIO(bytes(blob)))
            gray = im.mode in GRAY_MODES
            rgb = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
        except Exception:
            dropped += 1
            continue
        if gray or float(colour_spread(rgb[None])[0]) < MIN_COLOUR_STD:  # the paper's filter
            dropped += 1
            continue
        tab = rgb_to_lab(rgb[None])[0, 1:]
        Ls.append(d.lightness)
        abs_.append(engine.predict(d.lightness).ab.float())
        tabs.append(tab)
        trgbs.append(rgb)
        colour += float(colourfulness(rgb[None])[0])
        grey_se += float(tab.pow(2).sum())
        pixels += tab[0].numel()
    if not Ls:
        raise ConfigError(
            f"--data {data}: no colour photographs left after the colour filter ({dropped} removed)"
        )
    info |= {"images": len(Ls), "filtered_out": dropped, "working_size": engine.working_size}
    return Heldout(Ls, abs_, tabs, trgbs, colour / len(Ls), grey_se / pixels, info)


def measure(h: Heldout, gain: float) -> dict:
    """The output at this gain against the photographs: a*b* MSE (pooled over pixels) as a
    ratio to grey output's, mean colourfulness as a ratio to the truth's, mean PSNR (dB)."""
    from archive_colorize.model.engine import scale_chroma
    from archive_colorize.imaging.render import recombine

    se, pixels, colour, psnr = 0.0, 0, 0.0, 0.0
    for L, ab, tab, trgb in zip(h.lightness, h.ab, h.truth_ab, h.truth_rgb):
        rgb = (
            torch.from_numpy(recombine(L, scale_chroma(ab, gain), 8, threads=1)).permute(2, 0, 1).float()
            / 255
        )
        out_ab = rgb_to_lab(rgb[None])[0, 1:]
        se += float((out_ab - tab).pow(2).sum())
        pixels += tab[0].numel()
        colour += float(colourfulness(rgb[None])[0])
        mse = float((rgb - trgb).pow(2).mean())
        psnr += 10 * math.log10(1.0 / max(mse, 1e-10))
    n = len(h.lightness)
    return {
        "gain": round(gain, 4),
        "ab_mse_ratio_to_grey": round(se / pixels / h.grey_mse, 4),
        "colourfulness_ratio_to_truth": round(colour / n / h.truth_colourfulness, 4),
        "psnr": round(psnr / n, 3),
    }


def _golden(f, lo: float, hi: float, tol: float = 0.002) -> float:
    """The minimum of a unimodal f on [lo, hi]."""
    r = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - r * (b - a), a + r * (b - a)
    fc, fd = f(c), f(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - r * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + r * (b - a)
            fd = f(d)
    return (a + b) / 2


def _last_true(pred, lo: float, hi: float, tol: float = 0.002) -> float:
    """The largest x in [lo, hi] with pred(x), for pred true at lo and false beyond some point."""
    if pred(hi):
        return hi
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if pred(mid) else (lo, mid)
    return lo


def fit(h: Heldout, criterion: str, budget: float = 0.05) -> dict:
    """-> the calibration block: gain, criterion, data, figures at the gain and at 1, curve."""
    if criterion not in CRITERIA:
        raise ConfigError(f"--criterion must be one of {', '.join(CRITERIA)}, not {criterion!r}")
    if not 0 <= budget <= 1:
        raise ConfigError(f"--mse-budget must be between 0 and 1 (a fraction), not {budget}")
    cache: dict[float, dict] = {}

    def m(k: float) -> dict:
        k = round(k, 4)
        if k not in cache:
            cache[k] = measure(h, k)
        return cache[k]

    at_1 = m(1.0)
    lo, hi = SEARCH
    if criterion == "mse":
        gain = _golden(lambda k: m(k)["ab_mse_ratio_to_grey"], lo, 2.5)
    elif criterion == "colourfulness":
        gain = _last_true(lambda k: m(k)["colourfulness_ratio_to_truth"] <= 1.0, 1.0, hi)
    else:
        best = _golden(lambda k: m(k)["ab_mse_ratio_to_grey"], lo, 2.5)
        limit = m(1.0)["ab_mse_ratio_to_grey"] * (1 + budget)
        gain = _last_true(lambda k: m(k)["ab_mse_ratio_to_grey"] <= limit, max(1.0, best), hi)
    # stored to DECIMALS; the two criteria that are limits round down, so the stored gain
    # still keeps within them
    q = 10**DECIMALS
    gain = round(gain, DECIMALS) if criterion == "mse" else math.floor(gain * q + 1e-9) / q
    block = {
        "gain": gain,
        "criterion": criterion,
        "data": h.info,
        "at_gain": m(gain),
        "at_1": at_1,
        "curve": [m(k) for k in sorted(set(CURVE_GAINS) | {gain})],
        "measured_as": "the inference path: working-size prediction x gain, recombined with the full-res L* "
        "(gamut mapping) and quantised to 8 bits, against the photograph",
    }
    if criterion == "mse-budget":
        block["budget"] = budget
    return block


def curve_table(block: dict) -> list[tuple[str, str, str, str]]:
    """(gain, MSE / grey, colourfulness / truth, PSNR) rows, the chosen gain marked."""
    rows = []
    for r in block["curve"]:
        mark = " *" if r["gain"] == block["gain"] else ""
        rows.append(
            (
                f"{r['gain']:.2f}{mark}",
                f"{r['ab_mse_ratio_to_grey']:.3f}",
                f"{r['colourfulness_ratio_to_truth']:.3f}",
                f"{r['psnr']:.2f}",
            )
        )
    return rows


def plot(block: dict, path: str) -> None:
    """The curve as a small PNG: colourfulness and a*b* error against the gain (Pillow only)."""
    from PIL import Image, ImageDraw

    W, H, pad = 640, 400, 50
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    pts = block["curve"]
    g0, g1 = pts[0]["gain"], pts[-1]["gain"]
    ys = [p["ab_mse_ratio_to_grey"] for p in pts] + [p["colourfulness_ratio_to_truth"] for p in pts] + [1.0]
    y0, y1 = min(ys + [0.0]), max(ys) * 1.05

    def xy(g, v):
        return pad + (g - g0) / (g1 - g0 or 1) * (W - 2 * pad), H - pad - (v - y0) / (y1 - y0 or 1) * (
            H - 2 * pad
        )

    d.rectangle([pad, pad, W - pad, H - pad], outline="black")
    d.line([xy(g0, 1.0), xy(g1, 1.0)], fill=(180, 180, 180))
    for key, colour in (
        ("ab_mse_ratio_to_grey", (200, 40, 40)),
        ("colourfulness_ratio_to_truth", (40, 90, 200)),
    ):
        d.line([xy(p["gain"], p[key]) for p in pts], fill=colour, width=2)
    gx = xy(block["gain"], y0)[0]
    d.line([(gx, pad), (gx, H - pad)], fill=(60, 160, 60))
    d.text(
        (pad, 15),
        f"gain {block['gain']:.2f} ({block['criterion']}); red: a*b* MSE / grey; blue: colourfulness / truth",
        fill="black",
    )
    for g in (g0, 1.0, block["gain"], g1):
        d.text((xy(g, y0)[0] - 10, H - pad + 8), f"{g:.2f}", fill="black")
    for v in (y0, 1.0, y1):
        d.text((5, xy(g0, v)[1] - 6), f"{v:.2f}", fill="black")
    import io

    from archive_colorize.core.storage import atomic_write_bytes

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
