"""A run's defaults and the checks on the values every layer shares: the working size, the
pixel limit, the precisions, the chroma gain. Plain Python: no torch, no Ray."""

from __future__ import annotations

import math

from archive_colorize.errors import OptionError

# 512 px long side, from benchmarks/working_size.py on the 18 historical scans (medians):
# the chroma at 512 differs from that at 1024 by 1.97 a*b* units on average, under the
# ~2.3 just-noticeable difference, at a third of the time; 256 differs by 3.1.
DEFAULT_WORKING_SIZE = 512
DEFAULT_MAX_PIXELS = 250_000_000  # a 600 dpi scan of a 16x20" print is ~115 Mpx
# The largest input file fetched: a 250-megapixel 16-bit RGB TIFF, uncompressed, is 1.5 GB.
DEFAULT_MAX_BYTES = 4 * 2**30
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# Beyond this a gain is no longer a calibration: every colour would hit the gamut wall.
MAX_CHROMA_GAIN = 4.0


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise OptionError(
            f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}",
            hint="fp32 is exact and the default; int8 (CPU), bf16 and fp16 (GPU) trade fidelity for speed",
        )


def check_chroma_gain(gain: float, where: str = "--chroma-gain") -> float:
    try:
        g = float(gain)
    except (TypeError, ValueError):
        g = math.nan
    if not (math.isfinite(g) and 0 < g <= MAX_CHROMA_GAIN):
        raise OptionError(
            f"{where} must be a number above 0 and at most {MAX_CHROMA_GAIN:g}, not {gain!r}",
            hint="1 is the model's own colour; the weights' calibrated gain is the default (weights inspect)",
        )
    return g
