"""The network of Iizuka, Simo-Serra and Ishikawa (SIGGRAPH 2016), Table 1.

Input: L*/100 as (N, 1, H, W) for any H, W. Output: normalised a*b* at
(N, 2, ceil(H/2), ceil(W/2)) and scene-class logits (N, num_classes).

Any-size rule: the image is padded on the right and bottom by edge replication up to the
next multiple of 8 (three stride-2 steps), run, and the output is cropped back to
ceil(H/2) x ceil(W/2). Replication (not zeros) keeps the border statistics close to the
image, so a 1x1 input is legal: it becomes an 8x8 flat patch and yields one a*b* pixel.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from archive_colorize.errors import ConfigError


@dataclass(frozen=True)
class ModelConfig:
    num_classes: int = 205
    width: float = 1.0  # channel multiplier; 1.0 is the paper. <1 for CPU-trainable interim models
    global_branch: bool = True  # False is the paper's baseline: a 3x3 conv replaces fusion
    global_size: int = 224  # the global FC layers fix this size (7x7x512 after 4 stride-2 steps)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown model config key(s): {', '.join(sorted(unknown))}")
        cfg = cls(**d)
        if cfg.num_classes < 1 or cfg.width <= 0 or cfg.global_size % 8:
            raise ConfigError(f"invalid model config: {cfg}")
        return cfg


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class LinearBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Linear(cin, cout, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class LowLevelFeatures(nn.Sequential):
    """Shared by the local and global paths. (N,1,H,W) -> (N,512,H/8,W/8)."""

    def __init__(self, c):
        super().__init__(
            ConvBNReLU(1, c(64), 2),
            ConvBNReLU(c(64), c(128), 1),
            ConvBNReLU(c(128), c(128), 2),
            ConvBNReLU(c(128), c(256), 1),
            ConvBNReLU(c(256), c(256), 2),
            ConvBNReLU(c(256), c(512), 1),
        )


class MidLevelFeatures(nn.Sequential):
    """(N,512,H/8,W/8) -> (N,256,H/8,W/8)."""

    def __init__(self, c):
        super().__init__(ConvBNReLU(c(512), c(512)), ConvBNReLU(c(512), c(256)))


class GlobalFeatures(nn.Module):
    """Low-level features of a 224x224 image -> 256-d global vector (and the 512-d one
    the classification network reads)."""

    def __init__(self, c, global_size: int):
        super().__init__()
        self.convs = nn.Sequential(
            ConvBNReLU(c(512), c(512), 2),
            ConvBNReLU(c(512), c(512), 1),
            ConvBNReLU(c(512), c(512), 2),
            ConvBNReLU(c(512), c(512), 1),
        )
        side = global_size // 32  # 224 -> 7
        self.fc1 = LinearBNReLU(c(512) * side * side, c(1024))
        self.fc2 = LinearBNReLU(c(1024), c(512))
        self.fc3 = LinearBNReLU(c(512), c(256))

    def forward(self, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.convs(low).flatten(1)  # (N, 512*7*7)
        h512 = self.fc2(self.fc1(x))  # (N, 512)
        return self.fc3(h512), h512  # (N, 256), (N, 512)


class Fusion(nn.Module):
    """y = ReLU(b + W [global ; mid(u,v)]) at every (u,v): a 1x1 conv over the concatenation."""

    def __init__(self, c):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(c(256) * 2, c(256), 1, bias=False), nn.BatchNorm2d(c(256)), nn.ReLU(inplace=True)
        )

    def forward(self, mid: torch.Tensor, glob: torch.Tensor) -> torch.Tensor:
        g = glob[:, :, None, None].expand(-1, -1, mid.shape[2], mid.shape[3])
        return self.proj(torch.cat([g, mid], dim=1))


class BaselineFusion(nn.Module):
    """The paper's ablation without global features: a 3x3 conv in place of fusion."""

    def __init__(self, c):
        super().__init__()
        self.proj = ConvBNReLU(c(256), c(256))

    def forward(self, mid: torch.Tensor, glob: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(mid)


class ColorizationNetwork(nn.Module):
    """(N,256,H/8,W/8) -> normalised a*b* (N,2,H/2,W/2) through Sigmoid."""

    def __init__(self, c):
        super().__init__()
        self.body = nn.Sequential(
            ConvBNReLU(c(256), c(128)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            ConvBNReLU(c(128), c(64)),
            ConvBNReLU(c(64), c(64)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            ConvBNReLU(c(64), c(32)),
        )
        self.output = nn.Conv2d(c(32), 2, 3, padding=1)

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.output(self.body(fused)))


class ClassificationNetwork(nn.Module):
    """Training aid on the 512-d global layer: FC 256 -> FC N."""

    def __init__(self, c, num_classes: int):
        super().__init__()
        self.fc1 = LinearBNReLU(c(512), c(256))
        self.fc2 = nn.Linear(c(256), num_classes)

    def forward(self, h512: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.fc1(h512))


def _pad_to_multiple(x: torch.Tensor, m: int = 8) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x


class ColorizationModel(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config

        def c(n: int) -> int:
            return max(1, int(round(n * config.width)))

        self.low_level = LowLevelFeatures(c)
        self.mid_level = MidLevelFeatures(c)
        if config.global_branch:
            self.global_features = GlobalFeatures(c, config.global_size)
            self.fusion = Fusion(c)
            self.classification = ClassificationNetwork(c, config.num_classes)
        else:
            self.global_features = None
            self.fusion = BaselineFusion(c)
            self.classification = None
        self.colorization = ColorizationNetwork(c)

    # -- the pieces, so callers can mix images (style transfer) or batch the global branch --

    def resize_for_global(self, L: torch.Tensor) -> torch.Tensor:
        s = self.config.global_size
        if tuple(L.shape[-2:]) == (s, s):
            return L
        return F.interpolate(L, size=(s, s), mode="bilinear", align_corners=False, antialias=True)

    def global_path(self, L: torch.Tensor, low: torch.Tensor | None = None):
        """L (N,1,*,*) -> (global 256-d, class logits). `low` reuses 224x224 low-level features."""
        if self.global_features is None:
            return None, None
        if low is None:
            low = self.low_level(self.resize_for_global(L))
        g256, h512 = self.global_features(low)
        return g256, self.classification(h512)

    def local_path(self, L: torch.Tensor, glob: torch.Tensor | None, low: torch.Tensor | None = None):
        """L (N,1,H,W) + global vector -> normalised a*b* (N,2,ceil(H/2),ceil(W/2))."""
        h, w = L.shape[-2:]
        if low is None:
            low = self.low_level(_pad_to_multiple(L))
        fused = self.fusion(self.mid_level(low), glob)
        ab = self.colorization(fused)
        return ab[:, :, : math.ceil(h / 2), : math.ceil(w / 2)]

    def forward(self, L: torch.Tensor, style: torch.Tensor | None = None):
        """Returns (a*b* in [0,1], class logits or None). `style`: take global features from
        another grayscale image (paper §4.5); the logits then describe the style image."""
        s = self.config.global_size
        low = self.low_level(_pad_to_multiple(L))
        if self.global_features is None:
            return self.local_path(L, None, low), None
        if style is None and tuple(L.shape[-2:]) == (s, s):
            glob, logits = self.global_path(L, low=low)  # the paper's shared fast path
        else:
            glob, logits = self.global_path(L if style is None else style)
        return self.local_path(L, glob, low), logits

    def fold_batchnorm(self) -> "ColorizationModel":
        """An eval-mode copy with every batch norm folded into the preceding layer (§3.4)."""
        folded = copy.deepcopy(self).eval()
        for mod in folded.modules():
            if (
                isinstance(mod, nn.Sequential)
                and len(mod) == 3
                and isinstance(mod[1], nn.modules.batchnorm._BatchNorm)
            ):
                layer, bn = mod[0], mod[1]
                fuse = fuse_conv_bn_eval if isinstance(layer, nn.Conv2d) else fuse_linear_bn_eval
                mod[0] = fuse(layer, bn)
                mod[1] = nn.Identity()
        return folded


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
