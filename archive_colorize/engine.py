"""The inference engine: one model on one device, prepared for inference.

Working-size L* in, a*b* (and scene probabilities) out; everything at full resolution is
render.py's. The lossy precisions are opt-in, and `fidelity` says how far they are from
fp32 on the bundled calibration images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .images import working_copy
from .lab import denormalize_ab
from .options import DEFAULT_WORKING_SIZE, check_precision
from .weights import Weights


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
            from .quantize import calibration_inputs, quantize_int8

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


def fidelity(weights, precision: str, working_size: int = 512, lossy=None) -> dict | None:
    """How far a lossy engine is from fp32, measured on the CPU on the bundled calibration
    images (the same ones int8 fits its ranges on, so read it as a best case; on six
    historical scans int8 gave 41.7-53.8 dB, benchmarks/precision.py). None for fp32, and for
    fp16, which needs a GPU the driver may not have. `lossy`: an Engine already built for
    this precision on the CPU, so int8 is not quantized twice."""
    import statistics

    import numpy as np

    from .images import decode_image
    from .quantize import CALIBRATION
    from .render import recombine

    if precision in ("fp32", "fp16"):
        return None
    ref = Engine(weights, device="cpu", working_size=working_size)
    if lossy is None or lossy.device.type != "cpu" or lossy.working_size != working_size:
        lossy = Engine(weights, device="cpu", working_size=working_size, precision=precision)
    psnr, errors = [], []
    for f in sorted(CALIBRATION.glob("*.jpg")):
        d = decode_image(f.read_bytes())
        a, b = ref.predict(d.lightness), lossy.predict(d.lightness)
        # the a*b* error is the fidelity: L* is the original's in both, by construction
        errors.append((a.ab - b.ab).norm(dim=0).flatten())
        ra = recombine(d.lightness, a.ab).astype(np.float64)
        rb = recombine(d.lightness, b.ab).astype(np.float64)
        mse = float(((ra - rb) ** 2).mean())
        psnr.append(99.0 if mse == 0 else 10 * float(np.log10(255.0**2 / mse)))
    err = torch.cat(errors)
    return {"precision": precision, "dab_mean": round(float(err.mean()), 3),
            "dab_p99": round(float(torch.quantile(err[:: max(1, len(err) // 2**20)], 0.99)), 3),
            "dab_max": round(float(err.max()), 3),
            "psnr_db_vs_fp32_median": round(statistics.median(psnr), 2), "psnr_db_vs_fp32_min": round(min(psnr), 2),
            "images": len(psnr), "measured_on": "the bundled calibration images, on the CPU, at the working size"}


def fidelity_line(f: dict | None) -> str | None:
    if not f:
        return None
    return (f"{f['precision']} engine (opt-in, lossy): |Δa*b*| against fp32 mean {f['dab_mean']:.2f}, "
            f"p99 {f['dab_p99']:.2f}, max {f['dab_max']:.2f} (2.3 is just noticeable), "
            f"on {f['images']} calibration images")
