"""Self-describing weights: safetensors plus a metadata header that says what they are.

The header decides the architecture, the class names and the colour normalisation, so a
weights file can never be decoded with the wrong assumptions. A sha256 over the header and
every tensor is checked on load; anything wrong becomes one WeightsError, and no pickle is
ever loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save

from archive_colorize.errors import WeightsError
from archive_colorize.imaging.lab import AB_NORM
from archive_colorize.model.network import ColorizationModel, ModelConfig
from archive_colorize.model.weights_header import (
    DEFAULT_WEIGHTS,  # noqa: F401  re-exported: where the shipped weights are
    FORMAT,
    FORMAT_VERSION,
    JSON_KEYS,
    default_weights,
    parse_metadata,
)

STORAGES = ("fp32", "fp16", "int8")
_SCALE_SUFFIX = ".__int8_scale"


@dataclass
class Weights:
    """A loaded weights file: the model (eval mode) and everything the header says."""

    model: ColorizationModel
    config: ModelConfig
    categories: list[str]
    metadata: dict
    path: str
    file_sha256: str
    source: str = ""  # where to load it again: an absolute path or a URL

    @property
    def ab_norm(self) -> dict:
        return self.metadata["lab"]["ab_norm"]

    @property
    def chroma_gain(self) -> float:
        """The gain `weights calibrate` fitted (1.0 for weights without a calibration block)."""
        return float((self.metadata.get("calibration") or {}).get("gain", 1.0))


def category_display_name(places_name: str) -> str:
    """'/a/abbey' -> 'abbey', '/b/bakery/shop' -> 'bakery/shop'; plain names pass through."""
    parts = places_name.strip().split("/")
    if places_name.startswith("/") and len(parts) > 2:
        return "/".join(parts[2:])
    return places_name.strip()


def load_categories(path: str | os.PathLike) -> list[str]:
    """Places category files: one 'name [index]' per line, in index order."""
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        parts = line.split()
        idx = int(parts[1]) if len(parts) > 1 and parts[1].lstrip("-").isdigit() else i
        rows.append((idx, category_display_name(parts[0])))
    rows.sort()
    return [name for _, name in rows]


def _content_hash(meta: dict, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in meta.items() if k != "content_sha256"}, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _quantize(state: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    out = {}
    for name, t in state.items():
        t = t.detach().cpu().contiguous()
        if not t.is_floating_point() or storage == "fp32":
            out[name] = t
        elif storage == "fp16":
            out[name] = t.half()
        elif t.ndim >= 2:  # int8: symmetric, one scale per output channel (conv/linear weights)
            scale = t.abs().flatten(1).amax(1).clamp(min=1e-12) / 127.0
            shape = (-1,) + (1,) * (t.ndim - 1)
            out[name] = torch.round(t / scale.view(shape)).clamp(-127, 127).to(torch.int8)
            out[name + _SCALE_SUFFIX] = scale.float()
        else:
            out[name] = t  # biases and batch-norm statistics stay fp32: tiny and sensitive
    return out


def _dequantize(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = {}
    for name, t in tensors.items():
        if name.endswith(_SCALE_SUFFIX):
            continue
        scale = tensors.get(name + _SCALE_SUFFIX)
        if scale is not None:
            t = t.float() * scale.view((-1,) + (1,) * (t.ndim - 1))
        elif t.dtype == torch.float16:
            t = t.float()
        state[name] = t
    return state


def save_weights(
    model: ColorizationModel,
    path: str | os.PathLike,
    categories: list[str],
    *,
    storage: str = "fp32",
    recipe: dict | None = None,
    data: dict | None = None,
    metrics: dict | None = None,
    training: dict | None = None,
) -> dict:
    """Write `model` (its unfolded state, batch-norm statistics included) atomically."""
    if storage not in STORAGES:
        raise WeightsError(f"storage must be one of {', '.join(STORAGES)}, not {storage!r}")
    cfg = model.config
    if len(categories) != cfg.num_classes:
        raise WeightsError(f"{len(categories)} category names for a model with {cfg.num_classes} classes")
    tensors = _quantize(model.state_dict(), storage)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "categories": list(categories),
        "lab": {"ab_norm": AB_NORM, "white": "D65", "input": "L*/100"},
        "preprocessing": {"input": "grayscale L* of sRGB, any size", "global_size": cfg.global_size},
        "storage": storage,
        "recipe": recipe or {},
        "data": data or {},
        "metrics": metrics or {},
        "training": training or {},
    }
    return _write(meta, tensors, path)


def _write(meta: dict, tensors: dict[str, torch.Tensor], path) -> dict:
    meta = {k: v for k, v in meta.items() if k != "content_sha256"}
    meta["content_sha256"] = _content_hash(meta, tensors)
    header = {k: (json.dumps(v) if k in JSON_KEYS else str(v)) for k, v in meta.items()}
    from archive_colorize.core.storage import atomic_write_bytes

    atomic_write_bytes(str(path), st_save(tensors, metadata=header))
    return meta


def with_calibration(path: str | os.PathLike, out: str | os.PathLike, calibration: dict) -> dict:
    """A copy of a weights file with a new `calibration` block: the stored tensors exactly
    as they are (int8 stays int8, bit for bit), the header otherwise unchanged, a new
    content sha256 over both."""
    meta, tensors = _read(path, tensors=True)
    if _content_hash(meta, tensors) != meta["content_sha256"]:
        raise WeightsError(f"{path} failed its sha256 check: the file was modified or damaged after export")
    return _write(meta | {"calibration": calibration}, tensors, out)


def read_metadata(path: str | os.PathLike) -> dict:
    """The parsed, schema-checked header, without building the model."""
    meta, _ = _read(path, tensors=False)
    return meta


def _read(path, tensors: bool):
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        with safe_open(str(p), framework="pt") as f:
            raw = f.metadata() or {}
            data = {k: f.get_tensor(k) for k in f.keys()} if tensors else None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise WeightsError(
            f"{path} is not a readable safetensors weights file (truncated or corrupt?): {e}"
        ) from None
    meta = parse_metadata(raw, path)
    return meta, data


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_weights(
    path: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    storage_options: dict | None = None,
) -> Weights:
    """Load, verify and build. `path=None` means the shipped default; s3:// and other
    fsspec URLs are fetched to a temporary file first."""
    if path is None:
        path = default_weights()
    source = str(path)
    if "://" in source and not source.startswith("file://"):
        import tempfile

        from archive_colorize.core.storage import read_bytes, resolve

        try:
            fs, p = resolve(source, storage_options)
            blob = read_bytes(fs, p)
        except FileNotFoundError:
            raise WeightsError(f"weights file not found: {source}") from None
        with tempfile.NamedTemporaryFile(suffix=".safetensors") as f:
            f.write(blob)
            f.flush()
            w = load_weights(f.name, device)
        w.path = w.source = source
        return w
    w = _load_local(path, device)
    w.source = str(Path(path).resolve())
    return w


# What a weights header may ask for. Width 1 is the paper's network (about 40 M parameters);
# a wider one, or thousands of classes, is not one of ours and would allocate gigabytes.
MAX_WIDTH = 1.0
MAX_CLASSES = 10_000


def check_bounds(config: ModelConfig, path) -> None:
    if not (0 < config.width <= MAX_WIDTH):
        raise WeightsError(f"{path}: config width {config.width} is outside (0, {MAX_WIDTH:g}]")
    if not (1 <= config.num_classes <= MAX_CLASSES):
        raise WeightsError(f"{path}: config num_classes {config.num_classes} is outside 1..{MAX_CLASSES}")
    if config.global_size != 224:
        raise WeightsError(
            f"{path}: config global_size {config.global_size}: the global network's FC layers fix 224"
        )


def _load_local(path, device) -> Weights:
    meta, tensors = _read(path, tensors=True)
    if _content_hash(meta, tensors) != meta["content_sha256"]:
        raise WeightsError(f"{path} failed its sha256 check: the file was modified or damaged after export")
    try:
        config = ModelConfig.from_dict(meta["config"])
    except Exception as e:
        raise WeightsError(f"{path}: bad architecture config in header ({e})") from None
    categories = meta["categories"]
    if len(categories) != config.num_classes:
        raise WeightsError(f"{path}: {len(categories)} categories for {config.num_classes} classes")
    check_bounds(config, path)
    state = _dequantize(tensors)
    # the shapes the header's architecture implies, from a model on the meta device (no
    # memory): a header that lies is refused before the real network is allocated
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in ColorizationModel(config).state_dict().items()}
    for k, shape in expected.items():
        if k in state and tuple(state[k].shape) != shape:
            raise WeightsError(
                f"{path}: tensor {k} is {tuple(state[k].shape)}, but the architecture in its header needs {shape}"
            )
    model = ColorizationModel(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise WeightsError(f"{path}: tensors do not match the architecture in its header ({first})") from None
    model.eval().to(device)
    return Weights(model, config, categories, meta, str(path), file_sha256(path))
