"""The quick path for one person with a few photos: no Ray, files and folders in, images out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .engine import Engine, render, software_tag
from .errors import ImageError
from .images import DEFAULT_MAX_PIXELS, FORMATS, decode_image
from .manifest import IMAGE_SUFFIXES
from .storage import atomic_write_bytes



@dataclass
class FileResult:
    input: Path
    output: Path | None
    top5: list[tuple[str, float]]
    error: str | None = None


def expand_inputs(inputs: list[Path]) -> list[Path]:
    """Files as given; folders walked recursively for image suffixes, in sorted order."""
    files: list[Path] = []
    for p in inputs:
        if p.is_dir():
            files += sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
        else:
            files.append(p)
    return files


def colorize_file(engine: Engine, path: Path, out_path: Path, fmt: str, style=None,
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> list[tuple[str, float]]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror or e}") from None
    decoded = decode_image(data, max_pixels)
    pred = engine.predict(decoded.lightness, None if style is None else style.lightness)
    atomic_write_bytes(str(out_path), render(decoded, pred.ab, fmt, software_tag(engine.weights.file_sha256, engine.precision)))
    return engine.top5(pred.probs)


def colorize_paths(engine: Engine, inputs: list[Path], out_dir: Path, fmt: str = "png",
                   style_from: Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Yields one FileResult per input; a bad file becomes a result with `error`, never a crash."""
    style = decode_image(style_from.read_bytes(), max_pixels) if style_from else None
    for path in expand_inputs(inputs):
        out_path = out_dir / f"{path.stem}.{FORMATS[fmt]}"
        try:
            top5 = colorize_file(engine, path, out_path, fmt, style, max_pixels)
            yield FileResult(path, out_path, top5)
        except ImageError as e:
            yield FileResult(path, None, [], str(e))
