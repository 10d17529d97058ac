"""The inference engine: one model on one device, prepared for inference.

Working-size L* in, a*b* (and scene probabilities) out; everything at full resolution is
render.py's. The lossy precisions are opt-in, and `fidelity` says how far they are from
fp32 on the bundled calibration images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from archive_colorize.imaging.images import working_copy
from archive_colorize.imaging.lab import denormalize_ab
from archive_colorize.core.defaults import DEFAULT_WORKING_SIZE, check_chroma_gain, check_precision
from archive_colorize.model.weights import Weights


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        from archive_colorize.errors import ConfigError

        raise ConfigError(
            "--device cuda was asked for, but no CUDA GPU is visible", hint="use --device cpu or auto"
        )
    return torch.device(device)


def scale_chroma(ab: torch.Tensor, gain: float) -> torch.Tensor:
    """The calibrated chroma gain (weights calibrate): a*b* in CIE units times k, before
    recombination. A gain of exactly 1 returns the tensor itself, so an uncalibrated run's
    bytes are untouched; L* is never involved."""
    return ab if gain == 1 else ab * float(gain)


BUCKET = 64  # batched inference: the short side of a working copy is padded to a multiple of this


def _bucket_shape(hw) -> tuple[int, int]:
    """(h, w) -> the padded shape it is batched in: the long side to a multiple of 8 (as
    the network pads anyway), the short side up to a multiple of BUCKET."""
    h, w = int(hw[0]), int(hw[1])
    up = lambda n, m: -(-n // m) * m  # noqa: E731
    return (up(h, 8), up(w, BUCKET)) if h >= w else (up(h, BUCKET), up(w, 8))


@dataclass
class Prediction:
    ab: torch.Tensor  # (2, h, w) a*b* in CIE units at half the working size
    probs: torch.Tensor | None  # (num_classes,) scene probabilities (of the style image, if one was given)


class Engine:
    """Holds one model on one device, prepared for inference: batch norm folded into the
    convolutions, eval mode, `torch.inference_mode`, channels-last on CPU (oneDNN's native
    layout: 8% faster at 512², benchmarks/model.py --nchw). `precision` other than fp32 is an
    opt-in lossy path: bf16 (CPU with AVX-512 BF16/AMX, or CUDA), fp16 (CUDA), int8 (CPU)."""

    def __init__(
        self,
        weights: Weights,
        device: str = "auto",
        working_size: int = DEFAULT_WORKING_SIZE,
        precision: str = "fp32",
        batch: int = 1,
        chroma_gain: float | None = None,
    ):
        from archive_colorize.errors import ConfigError

        check_precision(precision)
        self.weights = weights
        # what `colorize` and `run` scale the predicted a*b* by: the override, else the gain
        # the weights were calibrated with (1 without a calibration block)
        self.chroma_gain = weights.chroma_gain if chroma_gain is None else check_chroma_gain(chroma_gain)
        self.device = pick_device(device)
        self.batch = max(1, int(batch))  # images per forward in predict_batch, always exactly this many
        if self.device.type == "cuda":
            # the same scan must give the same bytes in any batch, on any run: no autotuned
            # algorithm choice, no nondeterministic kernels
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
            if precision == "fp32":
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
            from archive_colorize.model.quantize import calibration_inputs, quantize_int8

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
        with torch.autocast(
            self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None
        ):
            ab01, logits = self.model(x, style=s)
        ab = denormalize_ab(ab01[0].float().cpu(), self.weights.ab_norm)
        probs = None if logits is None else torch.softmax(logits[0].float(), 0).cpu()
        return Prediction(ab, probs)

    @torch.inference_mode()
    def predict_batch(self, items: list[tuple[torch.Tensor, torch.Tensor | None]]) -> list[Prediction]:
        """Working-size L*/100 (1, 1, h, w) each, with an optional style image -> one
        Prediction each, with bytes that do not depend on the batch-mates or the order.

        With `batch` 1 (the CPU default) each image runs alone, as `predict_working`. Above
        that, working copies are bucketed by shape: the short side is padded up to a multiple
        of BUCKET with the image's own edge pixels (then cropped back), and every forward
        runs exactly `batch` images, short batches filled with blank ones; the 224² global
        branch runs at that fixed batch too. Kernels then see the same shapes whatever else
        is in the batch, so cuDNN (deterministic, not autotuned) picks the same algorithms."""
        if self.batch == 1:
            return [self.predict_working(x, s) for x, s in items]
        m = self.model
        glob, logits = self._global_batch([s if s is not None else x for x, s in items])
        out: list[Prediction | None] = [None] * len(items)
        buckets: dict[tuple[int, int], list[int]] = {}
        for i, (x, _) in enumerate(items):
            buckets.setdefault(_bucket_shape(x.shape[-2:]), []).append(i)
        for shape, idx in buckets.items():
            for k in range(0, len(idx), self.batch):
                chunk = idx[k : k + self.batch]
                xs = [
                    F.pad(
                        items[i][0],
                        (0, shape[1] - items[i][0].shape[-1], 0, shape[0] - items[i][0].shape[-2]),
                        mode="replicate",
                    )
                    for i in chunk
                ]
                xb = self._full(xs, (1, *shape))
                g = (
                    None
                    if glob is None
                    else torch.cat([glob[chunk], glob.new_zeros(self.batch - len(chunk), glob.shape[1])])
                )
                with torch.autocast(
                    self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None
                ):
                    ab01 = m.colorization(m.fusion(m.mid_level(m.low_level(xb)), g))
                for j, i in enumerate(chunk):
                    h, w = items[i][0].shape[-2:]
                    ab = denormalize_ab(
                        ab01[j, :, : -(-h // 2), : -(-w // 2)].float().cpu(), self.weights.ab_norm
                    )
                    probs = None if logits is None else torch.softmax(logits[i].float(), 0).cpu()
                    out[i] = Prediction(ab, probs)
        return out

    # -- film: one global feature for a whole shot, fused with each frame's local features --

    def _autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None
        )

    def _on_device(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @torch.inference_mode()
    def shot_global(self, xs: list[torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Working-size L*/100 (1, 1, h, w) of a shot's sampled frames -> their mean global
        feature (1, 256) and mean scene probabilities; (None, None) for a model without a
        global branch. The paper's style transfer fuses one image's global feature with
        another's local features; a shot's frames share the mean one."""
        m = self.model
        if m.global_features is None:
            return None, None
        globs, probs = [], []
        for x in xs:
            with self._autocast():
                g, logits = m.global_path(self._on_device(x))
            globs.append(g.float())
            probs.append(torch.softmax(logits.float(), 1))
        return torch.cat(globs).mean(0, keepdim=True), torch.cat(probs).mean(0).cpu()

    @torch.inference_mode()
    def predict_local(self, x: torch.Tensor, glob: torch.Tensor | None) -> torch.Tensor:
        """Working-size L*/100 (1, 1, h, w) + a global feature -> a*b* (2, h/2, w/2)."""
        with self._autocast():
            ab01 = self.model.local_path(self._on_device(x), glob)
        return denormalize_ab(ab01[0].float().cpu(), self.weights.ab_norm)

    def _full(self, xs: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        """Exactly `batch` images of `shape` on the device: these, then blank ones."""
        xb = torch.cat([x.reshape(1, *shape) for x in xs] + [torch.zeros(self.batch - len(xs), *shape)]).to(
            self.device
        )
        return xb.contiguous(memory_format=torch.channels_last) if self.channels_last else xb

    def _global_batch(self, images: list[torch.Tensor]):
        """The global branch of each image, at the fixed batch: (N, 256), (N, classes) or None."""
        m = self.model
        if m.global_features is None:
            return None, None
        size = (1, m.config.global_size, m.config.global_size)
        globs, logits = [], []
        for k in range(0, len(images), self.batch):
            xb = self._full([m.resize_for_global(x) for x in images[k : k + self.batch]], size)
            with torch.autocast(
                self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None
            ):
                g, lg = m.global_path(xb)
            n = min(self.batch, len(images) - k)
            globs.append(g[:n].float())
            logits.append(lg[:n].float())
        return torch.cat(globs), torch.cat(logits)

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

    from archive_colorize.imaging.images import decode_image
    from archive_colorize.model.quantize import CALIBRATION
    from archive_colorize.imaging.render import recombine

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
    return {
        "precision": precision,
        "dab_mean": round(float(err.mean()), 3),
        "dab_p99": round(float(torch.quantile(err[:: max(1, len(err) // 2**20)], 0.99)), 3),
        "dab_max": round(float(err.max()), 3),
        "psnr_db_vs_fp32_median": round(statistics.median(psnr), 2),
        "psnr_db_vs_fp32_min": round(min(psnr), 2),
        "images": len(psnr),
        "measured_on": "the bundled calibration images, on the CPU, at the working size",
    }


def fidelity_line(f: dict | None) -> str | None:
    if not f:
        return None
    return (
        f"{f['precision']} engine (opt-in, lossy): |Δa*b*| against fp32 mean {f['dab_mean']:.2f}, "
        f"p99 {f['dab_p99']:.2f}, max {f['dab_max']:.2f} (2.3 is just noticeable), "
        f"on {f['images']} calibration images"
    )
