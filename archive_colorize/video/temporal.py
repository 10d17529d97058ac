"""Colour that holds still: the temporal modes, and the measure of how still it is.

- `none`: each frame alone, its own global feature (the paper as it stands).
- `shot`: one global feature per shot (the mean over sampled frames), fused with every
  frame's local features, as the paper's style transfer fuses one image's global feature
  with another's local features.
- `flow`: `shot`, then each frame's a*b* blended with the previous frame's, warped along
  optical flow (Farnebäck), where the warped lightness agrees.

The warp error (Lai et al., ECCV 2018): the squared a*b* difference between frame t and frame
t+1 warped onto it, where their lightness agrees, averaged over the reel. It is measured with
a second flow method (DIS), so that `flow` is not graded by the flow it was blended along."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

TEMPORAL_MODES = ("shot", "flow", "none")
BLEND = 0.6  # the weight of the previous frame's warped colour in `flow`
AGREE = 6.0  # L* units: where the warped lightness differs more, the flow is not trusted


def _gray8(L: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray((L.clamp(0, 100) * 2.55).round().to(torch.uint8).numpy())


def _at(L: torch.Tensor, hw) -> torch.Tensor:
    return F.interpolate(L[None, None], size=tuple(hw), mode="bilinear", align_corners=False, antialias=True)[
        0, 0
    ]


def _remap(img: np.ndarray, flow: np.ndarray) -> np.ndarray:
    import cv2

    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(
        img, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow from a to b: a(x) ~ b(x + flow(x))."""
    import cv2

    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)


def dis(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)


def blend(Ls: list[torch.Tensor], abs_: list[torch.Tensor]) -> list[torch.Tensor]:
    """`flow` mode over one chunk: working-size L* (h, w) and a*b* (2, h/2, w/2) per frame.
    The first frame is kept as predicted (a chunk depends on no other task)."""
    out = [abs_[0]]
    for t in range(1, len(abs_)):
        hw = abs_[t].shape[1:]
        cur, prev = _gray8(_at(Ls[t], hw)), _gray8(_at(Ls[t - 1], hw))
        flow = farneback(cur, prev)
        warped_ab = _remap(out[-1].permute(1, 2, 0).numpy().astype(np.float32), flow)
        agree = np.abs(cur.astype(np.float32) - _remap(prev, flow).astype(np.float32)) < AGREE * 2.55
        w = torch.from_numpy((agree * BLEND).astype(np.float32))[None]
        out.append(abs_[t] * (1 - w) + torch.from_numpy(warped_ab).permute(2, 0, 1) * w)
    return out


def warp_error(Ls: list[torch.Tensor], abs_: list[torch.Tensor], flow=dis) -> tuple[float, int]:
    """(sum of per-pair warp errors, pairs) over consecutive frames of one shot."""
    total, pairs = 0.0, 0
    for t in range(len(abs_) - 1):
        hw = abs_[t].shape[1:]
        a, b = _gray8(_at(Ls[t], hw)), _gray8(_at(Ls[t + 1], hw))
        f = flow(a, b)
        agree = np.abs(a.astype(np.float32) - _remap(b, f).astype(np.float32)) < AGREE * 2.55
        if not agree.any():
            continue
        warped = _remap(abs_[t + 1].permute(1, 2, 0).numpy().astype(np.float32), f)
        d = ((abs_[t].permute(1, 2, 0).numpy() - warped) ** 2).sum(-1)
        total += float(d[agree].mean())
        pairs += 1
    return total, pairs
