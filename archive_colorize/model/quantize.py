"""int8 for the CPU engine: static quantization of every convolution stack (oneDNN/x86
kernels, VNNI where the CPU has it): weights per output channel, activations per tensor,
their ranges calibrated once on the bundled calibration images (archive_colorize/calibration/),
so the same weights always give the same int8 model and the same bytes. The fully connected
layers (global MLP, classification) and the output convolution stay fp32: a few percent of
the work. Knows nothing of the Engine, which uses it (engine.py); how far int8 is from fp32
is measured there (`fidelity`).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from archive_colorize.model.network import ColorizationModel

CALIBRATION = Path(__file__).parents[1] / "calibration"  # package data, archive_colorize/calibration/


class _Quantized(nn.Module):
    """float in -> int8 body -> float out."""

    def __init__(self, body: nn.Module):
        super().__init__()
        from torch.ao.quantization import DeQuantStub, QuantStub

        self.quant, self.body, self.dequant = QuantStub(), body, DeQuantStub()

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))


def _fuse_conv_relu(module: nn.Module) -> None:
    """After BN folding a ConvBNReLU is (Conv, Identity, ReLU): fuse Conv+ReLU into one kernel."""
    from torch.ao.quantization import fuse_modules

    if (
        isinstance(module, nn.Sequential)
        and len(module) == 3
        and isinstance(module[0], nn.Conv2d)
        and isinstance(module[2], nn.ReLU)
    ):
        fuse_modules(module, [["0", "2"]], inplace=True)
        return
    for child in module.children():
        _fuse_conv_relu(child)


def calibration_inputs(working_size: int) -> list[torch.Tensor]:
    from archive_colorize.imaging.images import decode_image, working_copy

    files = sorted(CALIBRATION.glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"no calibration images in {CALIBRATION}")
    return [working_copy(decode_image(f.read_bytes()).lightness, working_size) for f in files]


def quantize_int8(folded: ColorizationModel, calibration: list[torch.Tensor]) -> ColorizationModel:
    """A batch-norm-folded fp32 model -> an int8 copy (CPU only)."""
    import torch.ao.quantization as tq

    engine = (
        "x86"
        if "x86" in torch.backends.quantized.supported_engines
        else torch.backends.quantized.supported_engines[-1]
    )
    torch.backends.quantized.engine = engine
    q = copy.deepcopy(folded).eval()
    # The output conv (32 -> 2, feeding the Sigmoid) stays fp32: its per-tensor int8 output
    # step, times the Sigmoid's slope, was worth several a*b* units. With the full-width
    # weights it cost a Detroit scan 9 dB (34.7 -> 44.1 dB against fp32) for a layer that is
    # a fraction of a percent of the work.
    regions = [("low_level", q), ("mid_level", q), ("body", q.colorization)]
    if q.global_features is not None:
        regions += [("convs", q.global_features), ("proj", q.fusion)]
    else:
        regions += [("proj", q.fusion)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its move to torchao
        qconfig = tq.get_default_qconfig(engine)
        for name, parent in regions:
            body = getattr(parent, name)
            _fuse_conv_relu(body)
            wrapped = _Quantized(body)
            wrapped.qconfig = qconfig
            setattr(parent, name, wrapped)
        tq.prepare(q, inplace=True)
        with torch.inference_mode():
            for x in calibration:
                q(x)
        tq.convert(q, inplace=True)
    return q
