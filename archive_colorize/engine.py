"""The inference engine: L* at full resolution in, colour image out.

The network only ever sees a working-size copy (long side <= working_size, never
upscaled); its a*b* is upsampled to full resolution and joined with the ORIGINAL L*,
in row strips so memory stays bounded on 100-megapixel scans.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__
from .errors import ImageError
from .images import DecodedImage, encode_image, output_bit_depth
from .lab import denormalize_ab, lab_to_rgb_keep_lightness
from .weights import Weights

# 512 px long side, from benchmarks/working_size.py on the 18 historical scans (medians):
# the chroma at 512 differs from that at 1024 by 1.97 a*b* units on average, under the
# ~2.3 just-noticeable difference, at a third of the time; 256 differs by 3.1.
DEFAULT_WORKING_SIZE = 512
STRIP_ROWS = 256
# Mean a*b* chroma (CIE units) below which a result is effectively grey: the model added no
# colour, and we refuse to call that colorized.
MIN_MEAN_CHROMA = 0.5


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError("--device cuda was asked for, but no CUDA GPU is visible", hint="use --device cpu or auto")
    return torch.device(device)


@dataclass
class Prediction:
    ab: torch.Tensor  # (2, h, w) a*b* in CIE units at half the working size
    probs: torch.Tensor | None  # (num_classes,) scene probabilities (of the style image, if one was given)


@dataclass
class Colorized:
    rgb: np.ndarray  # (H, W, 3) uint8 or uint16
    top5: list[tuple[str, float]]
    mean_chroma: float


def working_copy(lightness: torch.Tensor, working_size: int) -> torch.Tensor:
    """(H, W) L* -> (1, 1, h, w) L*/100 with max(h, w) <= working_size."""
    h, w = lightness.shape
    scale = working_size / max(h, w)
    if scale >= 1:
        return (lightness / 100.0)[None, None]
    # Resample first, then scale: the division then touches the small copy, not a 400 MB one.
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    x = F.interpolate(lightness[None, None], size=size, mode="bilinear", align_corners=False, antialias=True)
    return x / 100.0


def _interp_matrix(n_out: int, n_in: int, start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows [start, stop) of the (n_out x n_in) bilinear matrix, align_corners=False, edges clamped:
    the same numbers as F.interpolate, but it can be built for one strip at a time."""
    stop = n_out if stop is None else stop
    i = torch.arange(start, stop, dtype=torch.float64)
    src = ((i + 0.5) * n_in / n_out - 0.5).clamp(0, n_in - 1)
    i0 = src.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    w1 = (src - i0).float()
    m = torch.zeros(stop - start, n_in)
    rows = torch.arange(stop - start)
    m.index_put_((rows, i0), 1 - w1, accumulate=True)
    m.index_put_((rows, i1), w1, accumulate=True)
    return m


def recombine(lightness: torch.Tensor, ab: torch.Tensor, bit_depth: int = 8, strip_rows: int = STRIP_ROWS) -> np.ndarray:
    """Full-res L* (H, W) + low-res a*b* (2, h, w) -> (H, W, 3) sRGB uint8/uint16.

    L* is used exactly as decoded; only the chroma is resampled."""
    H, W = lightness.shape
    ab = ab.float().cpu()
    cols = _interp_matrix(W, ab.shape[2]).T  # (w, W)
    maxval = 65535 if bit_depth == 16 else 255
    out = np.empty((H, W, 3), dtype=np.uint16 if bit_depth == 16 else np.uint8)
    for y0 in range(0, H, strip_rows):
        y1 = min(H, y0 + strip_rows)
        rows = _interp_matrix(H, ab.shape[1], y0, y1)  # (strip, h)
        ab_strip = torch.einsum("sh,chw,wx->csx", rows, ab, cols)  # (2, strip, W)
        lab = torch.cat([lightness[y0:y1][None].float(), ab_strip], dim=0)[None]
        rgb = lab_to_rgb_keep_lightness(lab)[0].permute(1, 2, 0)
        out[y0:y1] = (rgb * maxval).round_().numpy().astype(out.dtype)
    return out


def mean_chroma(ab: torch.Tensor) -> float:
    return float(ab.norm(dim=0).mean())


def software_tag(weights_sha256: str, precision: str = "fp32") -> str:
    """EXIF Software of every output: this file is a machine colorization, by these weights
    (and, for the lossy engines, at this precision)."""
    extra = "" if precision == "fp32" else f", {precision}"
    return f"archive-colorize {__version__} (weights {weights_sha256[:12]}{extra})"


def render(decoded: DecodedImage, ab: torch.Tensor, fmt: str, software: str) -> bytes:
    """The one path from predicted chroma to file bytes, for `colorize` and `run` alike:
    refuse a grey result, recombine with the original L*, encode with the original metadata."""
    chroma = mean_chroma(ab)
    if chroma < MIN_MEAN_CHROMA:
        raise ImageError(f"the model produced no colour (mean chroma {chroma:.2f}); nothing written")
    rgb = recombine(decoded.lightness, ab, output_bit_depth(decoded.bit_depth, fmt))
    return encode_image(rgb, fmt, exif=decoded.exif, xmp=decoded.xmp, software=software)


PRECISIONS = ("fp32", "bf16", "fp16", "int8")


def check_precision(precision: str) -> None:
    from .errors import ConfigError

    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}",
                          hint="fp32 is exact and the default; int8 (CPU), bf16 and fp16 (GPU) trade fidelity for speed")


class Engine:
    """Holds one model on one device, prepared for inference: batch norm folded into the
    convolutions, eval mode, `torch.inference_mode`, channels-last on CPU (oneDNN's native
    layout: 8% faster at 512², benchmarks/model.py --nchw). `precision` other than fp32 is an
    opt-in lossy path: bf16 (CPU with AVX-512 BF16/AMX, or CUDA), fp16 (CUDA), int8 (CPU)."""

    def __init__(self, weights: Weights, device: str = "auto", working_size: int = DEFAULT_WORKING_SIZE,
                 precision: str = "fp32"):
        from .errors import ConfigError

        check_precision(precision)
        self.weights = weights
        self.device = pick_device(device)
        if self.device.type == "cuda" and precision == "fp32":
            # fp32 means fp32: cuDNN would otherwise run convolutions on TF32 (10-bit mantissa)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        self.working_size = int(working_size)
        self.precision = precision
        model = weights.model.fold_batchnorm().eval()
        self.autocast = None
        if precision == "int8":
            if self.device.type != "cpu":
                raise ConfigError("--precision int8 runs on the CPU only", hint="use fp16 or bf16 on a GPU")
            from .fast import calibration_inputs, quantize_int8

            model = quantize_int8(model, calibration_inputs(self.working_size))
        elif precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("--precision fp16 needs a CUDA GPU", hint="on a CPU use bf16 or int8")
        elif precision in ("bf16", "fp16"):
            self.autocast = torch.bfloat16 if precision == "bf16" else torch.float16
        self.channels_last = self.device.type == "cpu" and precision != "int8"
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device)
        self.categories = weights.categories

    def predict(self, lightness: torch.Tensor, style: torch.Tensor | None = None) -> Prediction:
        """Full-resolution L* (H, W) [+ a style image's L*] -> Prediction."""
        x = working_copy(lightness, self.working_size)
        s = None if style is None else working_copy(style, self.working_size)
        return self.predict_working(x, s)

    @torch.inference_mode()
    def predict_working(self, x: torch.Tensor, style: torch.Tensor | None = None) -> Prediction:
        """Working-size L*/100 (1, 1, h, w) -> Prediction."""
        x = x.to(self.device)
        s = None if style is None else style.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
            s = None if s is None else s.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None):
            ab01, logits = self.model(x, style=s)
        ab = denormalize_ab(ab01[0].float().cpu(), self.weights.ab_norm)
        probs = None if logits is None else torch.softmax(logits[0].float(), 0).cpu()
        return Prediction(ab, probs)

    def top5(self, probs: torch.Tensor | None) -> list[tuple[str, float]]:
        if probs is None:
            return []
        p, idx = probs.topk(min(5, probs.numel()))
        return [(self.categories[i], float(v)) for v, i in zip(p.tolist(), idx.tolist())]

    def colorize(self, decoded: DecodedImage, style: DecodedImage | None = None, bit_depth: int = 8) -> Colorized:
        pred = self.predict(decoded.lightness, None if style is None else style.lightness)
        chroma = mean_chroma(pred.ab)
        rgb = recombine(decoded.lightness, pred.ab, bit_depth)
        return Colorized(rgb, self.top5(pred.probs), chroma)
