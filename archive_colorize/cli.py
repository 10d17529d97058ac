"""The `archive-colorize` command: a thin layer over the library.

Every command parses options, calls one library function and prints. Expected failures
(ColorizeError) become one line plus a hint, never a traceback, unless --debug.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import ColorizeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Colorize black-and-white archive scans (Iizuka et al. 2016).")
weights_app = typer.Typer(no_args_is_help=True, help="Inspect and export model weights.")
manifest_app = typer.Typer(no_args_is_help=True, help="Build and check Parquet manifests.")
app.add_typer(weights_app, name="weights")
app.add_typer(manifest_app, name="manifest")

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")):
    _state["debug"] = debug


def friendly(fn):
    """Turn ColorizeError into `Error: ...` on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ColorizeError as e:
            if _state["debug"]:
                raise
            err.print(f"[bold red]Error:[/] {e}", highlight=False, soft_wrap=True)
            if e.hint:
                err.print(f"Hint: {e.hint}", highlight=False, soft_wrap=True)
            raise typer.Exit(1)

    return wrapper


@app.command()
@friendly
def colorize(
    inputs: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    out: Path = typer.Option(Path("colorized"), "--out", "-o", help="Output folder."),
    style_from: Optional[Path] = typer.Option(None, "--style-from", help="Take the global (scene) features from this image."),
    weights: Optional[Path] = typer.Option(None, "--weights", help="A .safetensors weights file (default: the shipped one)."),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
    fmt: str = typer.Option("png", "--format", help="jpeg, png, tiff or webp. 16-bit inputs stay 16-bit in png/tiff."),
    working_size: int = typer.Option(512, "--working-size", help="Long side (px) at which the network predicts colour."),
    max_pixels: int = typer.Option(250_000_000, "--max-pixels", help="Refuse images larger than this (decompression bombs)."),
):
    """Colorize a few files without Ray; prints the top-5 scene classes per image.

    Example: archive-colorize colorize scans/ --out colorized/ --format jpeg
    """
    from .colorize import colorize_paths
    from .engine import Engine
    from .images import FORMATS
    from .weights import load_weights

    if fmt not in FORMATS:
        raise ColorizeError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    engine = Engine(load_weights(weights), device=device, working_size=working_size)
    failed = 0
    for r in colorize_paths(engine, inputs, out, fmt, style_from, max_pixels):
        if r.error:
            failed += 1
            err.print(f"[red]failed[/] {r.input}: {r.error}", highlight=False)
            continue
        scenes = ", ".join(f"{name} {p:.0%}" for name, p in r.top5)
        console.print(f"{r.input} -> {r.output}  [dim]{scenes}[/]", highlight=False)
    if failed:
        raise typer.Exit(1)


@weights_app.command("inspect")
@friendly
def weights_inspect(
    path: Optional[Path] = typer.Argument(None, help="Weights file (default: the shipped one)."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw metadata as JSON."),
):
    """Print what a weights file says about itself, after verifying it.

    Example: archive-colorize weights inspect archive_colorize/weights/default.safetensors
    """
    from .weights import load_weights

    w = load_weights(path)
    meta = dict(w.metadata)
    if as_json:
        console.print_json(json.dumps(meta | {"file_sha256": w.file_sha256}))
        return
    table = Table(title=str(w.path), show_header=False)
    table.add_row("file sha256", w.file_sha256)
    for key in ("format", "format_version", "storage", "config", "lab", "recipe", "data", "training", "metrics"):
        table.add_row(key, json.dumps(meta.get(key), sort_keys=True) if isinstance(meta.get(key), (dict, list)) else str(meta.get(key)))
    cats = meta["categories"]
    table.add_row("categories", f"{len(cats)}: {', '.join(cats[:8])}{', ...' if len(cats) > 8 else ''}")
    console.print(table)


def run_cli():  # console-script entry point
    app()


if __name__ == "__main__":
    sys.exit(run_cli())
