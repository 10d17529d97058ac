"""The quick path for one person with a few photos: no Ray, files and folders in, images out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from archive_colorize.model.engine import Engine, scale_chroma
from archive_colorize.imaging.provenance import Provenance
from archive_colorize.imaging.render import render
from archive_colorize.errors import ColorizeError, ImageError
from archive_colorize.core.defaults import DEFAULT_MAX_BYTES
from archive_colorize.imaging.images import DEFAULT_MAX_PIXELS, FORMATS, decode_image
from archive_colorize.sources.manifest import safe_name
from archive_colorize.core.formats import IMAGE_SUFFIXES
from archive_colorize.core.storage import atomic_write_bytes


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


def plan_outputs(files: list[Path], out_dir: Path, fmt: str) -> list[Path]:
    """Each input's output path, by run's rule (the stem, made file-system safe). Two inputs
    that would share an output, also one differing only in case, are refused before any work."""
    outs, seen = [], {}
    for path in files:
        out = out_dir / f"{safe_name(path.stem)}.{FORMATS[fmt]}"
        first, first_out = seen.setdefault(out.name.casefold(), (path, out))
        if first != path:
            raise ColorizeError(
                f"{first} and {path} would both be written to {first_out}",
                hint="colorize them into different --out folders, or rename one",
            )
        outs.append(out)
    return outs


def colorize_file(
    engine: Engine,
    path: Path,
    out_path: Path,
    fmt: str,
    style=None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    c2pa=None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> list[tuple[str, float]]:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ImageError(f"{size} bytes, larger than --max-bytes {max_bytes}")
        data = path.read_bytes()
    except OSError as e:
        raise ImageError(f"cannot read {path}: {e.strerror or e}") from None
    decoded = decode_image(data, max_pixels)
    pred = engine.predict(decoded.lightness, None if style is None else style.lightness)
    provenance = Provenance(engine.weights.file_sha256, engine.precision, c2pa)
    ab = scale_chroma(pred.ab, engine.chroma_gain)
    atomic_write_bytes(
        str(out_path),
        render(decoded, ab, fmt, provenance, source=data, title=out_path.name, ingredient=str(path)),
    )
    return engine.top5(pred.probs)


def colorize_paths(
    engine: Engine,
    inputs: list[Path],
    out_dir: Path,
    fmt: str = "png",
    style_from: Path | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    c2pa=None,
    max_bytes: int = DEFAULT_MAX_BYTES,
):
    """Yields one FileResult per input; a bad file becomes a result with `error`, never a crash."""
    files = expand_inputs(inputs)
    outs = plan_outputs(files, out_dir, fmt)
    style = decode_image(style_from.read_bytes(), max_pixels) if style_from else None
    for path, out_path in zip(files, outs):
        try:
            top5 = colorize_file(engine, path, out_path, fmt, style, max_pixels, c2pa, max_bytes)
            yield FileResult(path, out_path, top5)
        except ImageError as e:
            yield FileResult(path, None, [], str(e))
