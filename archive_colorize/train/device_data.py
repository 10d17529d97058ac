"""Training data resident on the training device, augmented there in whole batches.

When the decoded training set fits, it is decoded once by a pool of threads and converted
once to L*a*b* (float16, (N, 3, S, S)) on the training device: all of MiniPlaces, 40k
images at 128x128, is about 3.9 GB. Each step then gathers a batch and does the paper's
augmentation (§3.4) in a few batched kernels:

    scale to `scale`, random `crop` crop, flip p=0.5    one bilinear grid_sample per batch
    L*, and a*b* at half resolution                    a slice and one avg_pool2d
    the colour filter (data.MIN_COLOUR_STD)             once, when the images are loaded

Why L*a*b* before the resampling: the colour conversion is the costly part (two powers per
channel per pixel), and doing it once per image at its stored size, instead of once per
epoch at 224x224, makes the data path several times cheaper on a CPU. The streaming path
(data.prepare_batch) resamples sRGB and converts afterwards; the two differ only where
neighbouring pixels differ strongly, by a fraction of a CIE unit on average (measured in
tests/test_device_data.py).

Scale-then-crop is folded into one bilinear sample of the stored image: for bilinear
upscaling, sampling the small image at the crop's coordinates is the same arithmetic as
resizing it first and cutting the crop out.

Parquet globs are re-read at every epoch boundary: a file that has appeared since (a part
staged onto a GPU machine while training runs) joins the pool at the next epoch.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F

from archive_colorize.train.data import (
    MIN_COLOUR_STD,
    Source,
    colour_spread,
    iter_raw_batches,
    resolve_source,
    usable_cpus,
)
from archive_colorize.train.decode_pool import decode_chunk, image_side
from archive_colorize.imaging.lab import normalize_ab, rgb_to_lab

CHUNK = 512  # images per decode task
CPU_CHUNK = 32  # images augmented at a time on a CPU
IN_PROCESS_BELOW = 2048  # smaller sets decode on this thread


def _row_count(source: Source) -> int:
    import fsspec
    import pyarrow.parquet as pq

    if source.kind == "parquet":
        n = 0
        for p in source.paths:
            with fsspec.open(p, "rb") as f:
                n += pq.ParquetFile(f).metadata.num_rows
        return n
    from archive_colorize.train.data import read_places_list

    return len(read_places_list(source))


def _first_image(source: Source) -> bytes:
    return bytes(next(iter_raw_batches(source, 1))["image"][0])


def free_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
    return info.get("MemAvailable", 0)


def resident_bytes(source: Source, scale: int, limit: int | None = None) -> int:
    side = image_side(_first_image(source), scale)
    n = _row_count(source)
    return min(n, limit or n) * side * side * 3 * 2  # L*a*b* as float16


def fits(
    source: Source, scale: int, device: torch.device, limit: int | None = None, share: float = 0.5
) -> bool:
    """True when the decoded set takes at most `share` of the device's free memory; the rest
    is for the network's activations (or, on a CPU, for everything else on the machine)."""
    return resident_bytes(source, scale, limit) <= share * free_bytes(device)


class DeviceDataset:
    """The kept images as float16 L*a*b* (N, 3, S, S) on `device`, their labels, and what was filtered."""

    def __init__(
        self,
        spec: str,
        root: str | None,
        device: torch.device,
        *,
        scale: int = 256,
        crop: int = 224,
        limit: int | None = None,
        workers: int | None = None,
    ):
        self.spec, self.root, self.device = spec, root, device
        self.scale, self.crop, self.limit = scale, crop, limit
        self.workers = workers or usable_cpus()
        self.side: int | None = None
        self.images: torch.Tensor | None = None  # set by the first refresh that keeps an image
        self.labels = torch.empty(0, dtype=torch.int64, device=device)
        self.loaded: list[str] = []  # parquet files (or the one list file) already in the pool
        self.seen = 0  # rows read, before the filter
        self.filtered = 0  # rows left out: undecodable, grayscale or too little colour
        self.refresh()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def nbytes(self) -> int:
        return 0 if self.images is None else self.images.numel() * self.images.element_size()

    def refresh(self) -> int:
        """Load sources that are not in the pool yet. Returns how many images were added."""
        src = resolve_source(self.spec, self.root)
        new = [p for p in src.paths if p not in self.loaded]
        if not new or (self.limit and self.seen >= self.limit):
            return 0
        part = Source(src.kind, tuple(new), src.root)
        if self.side is None:
            self.side = image_side(_first_image(part), self.scale)
        imgs, labels, ok, gray = self._decode(part)
        keep = ok.copy()
        if len(imgs):
            keep &= ~gray
            lab, cstd = to_lab(torch.from_numpy(imgs), self.device)
            keep &= (cstd >= MIN_COLOUR_STD).cpu().numpy()
            idx = torch.from_numpy(np.flatnonzero(keep)).to(self.device)
            self.images = lab[idx] if self.images is None else torch.cat([self.images, lab[idx]])
            self.labels = torch.cat([self.labels, torch.from_numpy(labels).to(self.device)[idx]])
        self.loaded += new
        self.seen += len(keep)
        self.filtered += int((~keep).sum())
        return int(keep.sum())

    def _decode(self, source: Source):
        chunks, labels = [], []
        budget = (self.limit - self.seen) if self.limit else None
        for raw in iter_raw_batches(source, CHUNK, limit=budget):
            chunks.append(list(raw["image"]))
            labels.append(np.asarray(raw["label"], np.int64))
        if not chunks:
            z = np.zeros(0, bool)
            return np.zeros((0, self.side, self.side, 3), np.uint8), np.zeros(0, np.int64), z, z
        total = sum(map(len, chunks))
        if total < IN_PROCESS_BELOW or self.workers == 1:
            parts = [decode_chunk(c, self.side) for c in chunks]
        else:
            # Threads, not processes: Pillow releases the GIL while it decodes, and a process
            # pool would either fork torch's threads and CUDA state (unsafe) or spawn, which
            # re-imports the caller's __main__ (breaks under Ray workers and `python -`).
            with ThreadPoolExecutor(min(self.workers, len(chunks))) as pool:
                parts = list(pool.map(decode_chunk, chunks, [self.side] * len(chunks)))
        return (
            np.concatenate([p[0] for p in parts]),
            np.concatenate(labels),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]),
        )

    def epoch(self, batch: int, generator: torch.Generator, rank: int = 0, world: int = 1):
        """Index batches for one epoch: one permutation shared by all ranks, split rank::world."""
        perm = torch.randperm(len(self), generator=generator)[rank::world]
        for i in range(0, len(perm) - batch + 1, batch):
            yield perm[i : i + batch].to(self.device, non_blocking=True)

    def batch(self, idx: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        # On a CPU, 32 images at a time keep the resampled L*a*b* (19 MB) in cache: batch 128
        # in one piece ran at 0.4x the per-image speed. A GPU takes the batch whole.
        step = len(idx) if self.device.type == "cuda" else CPU_CHUNK
        parts = [
            augment(self.images[idx[i : i + step]], crop=self.crop, scale=self.scale, generator=generator)
            for i in range(0, len(idx), step)
        ]
        L, ab = (torch.cat(t) if len(t) > 1 else t[0] for t in zip(*parts))
        return {"L": L, "ab": ab, "label": self.labels[idx]}


def to_lab(
    rgb_u8: torch.Tensor, device: torch.device, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, S, S, 3) on any device -> (float16 (N, 3, S, S) on `device` holding L*/100 and
    normalised a*b*, i.e. the network's input and target units; the filter's measure
    data.colour_spread per image).

    Both scalings are affine, so they commute with the resampling and pooling that follow."""
    labs, stds = [], []
    for i in range(0, len(rgb_u8), chunk):
        t = rgb_u8[i : i + chunk].to(device).permute(0, 3, 1, 2).float() / 255
        stds.append(colour_spread(t))
        lab = rgb_to_lab(t)
        labs.append(torch.cat([lab[:, :1] / 100, normalize_ab(lab[:, 1:])], 1).half())
    return torch.cat(labs), torch.cat(stds)


def crop_grid(b: int, crop: int, scale: int, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """The sampling grid (B, crop, crop, 2) for grid_sample (align_corners=False).

    For output pixel j of a crop at offset o in the virtual scale x scale image, the
    normalised source coordinate is (2(j + o) + 1)/scale - 1 whatever the stored size, so
    each axis is one vector per image; built by broadcasting, as affine_grid would cost a
    matrix product per pixel."""
    dev = offsets.device
    j = torch.arange(crop, device=dev, dtype=torch.float32)
    y = (2 * (j[None, :] + offsets[:, :1]) + 1) / scale - 1  # (B, crop)
    jx = torch.where(flips[:, None], crop - 1 - j[None, :], j[None, :])
    x = (2 * (jx + offsets[:, 1:]) + 1) / scale - 1
    return torch.stack([x[:, None, :].expand(b, crop, crop), y[:, :, None].expand(b, crop, crop)], dim=-1)


def augment(
    lab16: torch.Tensor,
    *,
    crop: int = 224,
    scale: int = 256,
    generator: torch.Generator | None = None,
    offsets: torch.Tensor | None = None,
    flips: torch.Tensor | None = None,
):
    """float16 (B, 3, S, S) from to_lab -> L*/100 (B, 1, crop, crop), normalised a*b* (B, 2, crop/2, crop/2).

    Each image is scaled to scale x scale, cropped at a random offset and flipped with p=0.5,
    in one bilinear grid_sample. `offsets` (B, 2) as (y, x) and `flips` (B,) fix the draws (tests)."""
    b, dev = lab16.shape[0], lab16.device
    gen_dev = "cpu" if generator is None else generator.device
    if offsets is None:
        offsets = torch.randint(0, scale - crop + 1, (b, 2), generator=generator, device=gen_dev)
    if flips is None:
        flips = torch.rand(b, generator=generator, device=gen_dev) < 0.5
    grid = crop_grid(b, crop, scale, offsets.to(dev, torch.float32), flips.to(dev))
    lab = F.grid_sample(lab16.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return lab[:, :1].contiguous(), F.avg_pool2d(lab[:, 1:], 2)
