"""The `archive-colorize` command: a thin layer over the library.

Every command parses options, calls one library function and prints. Expected failures
(ColorizeError) become one line plus a hint, never a traceback, unless --debug.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from archive_colorize.core.secrets import scrub_text, scrub_uri
from archive_colorize.core.storage import CREDENTIALS_HINT, no_credentials
from archive_colorize.core.text import printable
from archive_colorize.errors import ColorizeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Colorize black-and-white archive scans (Iizuka et al. 2016).",
)
weights_app = typer.Typer(no_args_is_help=True, help="Inspect and export model weights.")
manifest_app = typer.Typer(no_args_is_help=True, help="Build and check Parquet manifests.")
app.add_typer(weights_app, name="weights")
app.add_typer(manifest_app, name="manifest")

# markup off: ids, uris and column names come from manifests and folders, and `[/]` in one
# is text (styles are given as Text, below)
console = Console(soft_wrap=True, markup=False)
err = Console(stderr=True, soft_wrap=True, markup=False)
_state = {"debug": False}


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors.")):
    _state["debug"] = debug


def run_options(command: str):
    """Offer `command` the run options that RunOptions gives it (run/options.py: one
    definition of each flag, default and help). The command receives them, checked for
    form by Typer, as one dict `run_fields` of RunOptions field names."""
    from dataclasses import MISSING

    from archive_colorize.run.options import RunOptions, parse_storage_options

    types = RunOptions.types()

    def decorate(fn):
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "run_fields"]
        added, names = [], []
        for f in RunOptions.options(command):
            m = f.metadata
            default = f.default_factory() if f.default is MISSING else f.default
            annotation = types[f.name]
            if f.name == "storage_options":  # JSON text on the command line
                annotation, default = Optional[str], None
            elif default == []:  # a repeatable option
                annotation, default = Optional[List[str]], None
            choices = f" One of {', '.join(m['choices'])}." if m["choices"] else ""
            # Rich reads [...] in help as markup: escape it, so [c2pa] stays on the page
            info = typer.Option(default, m["flag"], help=(m["help"] + choices).replace("[", "\\["))
            added.append(
                inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)
            )
            names.append(f.name)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            fields = {name: kwargs.pop(name) for name in names}
            if "storage_options" in fields:
                fields["storage_options"] = parse_storage_options(fields["storage_options"])
            for name in names:
                if fields[name] is None and types[name] is list:
                    fields[name] = []
            return fn(*args, run_fields=fields, **kwargs)

        params = own + added
        wrapper.__signature__ = inspect.Signature(params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        return wrapper

    return decorate


def friendly(fn):
    """Turn ColorizeError into `Error: ...` on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ColorizeError as e:
            if _state["debug"]:
                raise
            print_error(scrub_text(str(e)), e.hint)
            raise typer.Exit(1)
        except Exception as e:  # S3 without credentials, wherever it is first touched
            if _state["debug"] or not no_credentials(e):
                raise
            print_error(f"S3 refused: {e}", CREDENTIALS_HINT)
            raise typer.Exit(1)

    return wrapper


def print_error(message: str, hint: str = "") -> None:
    """`Error: ...` and `Hint: ...` on stderr, each one line, nothing in them read as markup."""
    err.print(
        Text.assemble(("Error:", "bold red"), f" {printable(message)}"), highlight=False, soft_wrap=True
    )
    if hint:
        err.print(f"Hint: {printable(hint)}", highlight=False, soft_wrap=True)


@app.command()
@friendly
@run_options("colorize")
def colorize(
    inputs: List[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    out: Path = typer.Option(Path("colorized"), "--out", "-o", help="Output folder."),
    style_from: Optional[Path] = typer.Option(
        None, "--style-from", help="Take the global (scene) features from this image."
    ),
    *,
    run_fields: dict,
):
    """Colorize a few files without Ray; prints the top-5 scene classes per image.

    Example: archive-colorize colorize scans/ --out colorized/ --format jpeg
    """
    from archive_colorize.apps.colorize import colorize_paths
    from archive_colorize.model.engine import Engine
    from archive_colorize.model.weights import load_weights
    from archive_colorize.run.options import RunOptions, check_options

    o = RunOptions(manifest="", **run_fields)
    check_options(o)
    weights, device, fmt, working_size, precision = o.weights, o.device, o.fmt, o.working_size, o.precision
    if style_from is not None and not style_from.is_file():
        raise ColorizeError(
            f"--style-from {style_from}: no such file",
            hint="give a grayscale or colour image whose scene should set the colours",
        )
    from archive_colorize.run.options import c2pa_credentials

    credentials = c2pa_credentials(o.c2pa_cert, o.c2pa_key, fmt, {})
    loaded = load_weights(weights)
    engine = Engine(
        loaded, device=device, working_size=working_size, precision=precision, chroma_gain=o.chroma_gain
    )
    if precision != "fp32":
        from archive_colorize.model.engine import fidelity, fidelity_line

        line = fidelity_line(fidelity(loaded, precision, working_size, lossy=engine))
        if line:
            err.print(line, highlight=False)
    failed = 0
    for r in colorize_paths(engine, inputs, out, fmt, style_from, o.max_pixels, credentials, o.max_bytes):
        if r.error:
            failed += 1
            err.print(
                Text.assemble(("failed", "red"), f" {printable(r.input)}: {printable(r.error)}"),
                highlight=False,
            )
            continue
        scenes = ", ".join(f"{name} {p:.0%}" for name, p in r.top5)
        console.print(
            Text.assemble(f"{printable(r.input)} -> {printable(r.output)}  ", (scenes, "dim")),
            highlight=False,
        )
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
    from archive_colorize.model.weights import load_weights

    w = load_weights(path)
    meta = dict(w.metadata)
    if as_json:
        console.print_json(json.dumps(meta | {"file_sha256": w.file_sha256}))
        return
    table = Table(title=str(w.path), show_header=False)
    table.add_row("file sha256", w.file_sha256)
    cal = meta.get("calibration")
    table.add_row(
        "chroma gain",
        f"{w.chroma_gain:g}"
        + (
            f" ({cal['criterion']} on {cal['data'].get('name')} rows {cal['data'].get('rows')})"
            if cal
            else " (not calibrated)"
        ),
    )
    for key in (
        "format",
        "format_version",
        "storage",
        "config",
        "lab",
        "recipe",
        "data",
        "training",
        "metrics",
        "calibration",
    ):
        table.add_row(
            key,
            json.dumps(meta.get(key), sort_keys=True)
            if isinstance(meta.get(key), (dict, list))
            else str(meta.get(key)),
        )
    cats = meta["categories"]
    table.add_row("categories", f"{len(cats)}: {', '.join(cats[:8])}{', ...' if len(cats) > 8 else ''}")
    console.print(table)


def _storage_options(text: Optional[str]) -> dict:
    from archive_colorize.run.options import parse_storage_options

    return parse_storage_options(text)


@app.command()
@friendly
@run_options("run")
def run(
    manifest: str = typer.Argument(
        ...,
        help="Parquet manifest, local or s3://: a file, a folder of part files "
        "(Hive partitions become metadata columns), or a quoted glob.",
    ),
    out: Optional[str] = typer.Option(
        None, "--out", "-o", help="Output folder or URL (default: next to the manifest, NAME-out)."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Check the manifest, weights and output; print what would run; do nothing."
    ),
    *,
    run_fields: dict,
):
    """Colorize every scan in a manifest on Ray; rerun the same command to resume.

    Example: archive-colorize run manifests/sample.parquet --out colorized-sample
    """
    from archive_colorize.run.options import RunOptions, inspect
    from archive_colorize.run.pipeline import run as run_pipeline
    from archive_colorize.run.progress_view import summary_table

    opts = RunOptions(manifest=manifest, out=out, **run_fields)
    if dry_run:
        plan = inspect(opts)
        console.print(
            f"manifest {plan.manifest}: {plan.total} rows; in {plan.out}: {plan.done} done, {plan.failed} failed"
        )
        console.print(
            f"a run now would process {plan.pending} row(s) with weights sha256 {plan.weights_sha256[:12]}"
        )
        if plan.lock:
            console.print(
                f"lock: held by pid {plan.lock.get('pid')} on {plan.lock.get('host')} (stale locks are taken over)"
            )
        from archive_colorize.run.reels import describe_reels
        from archive_colorize.sources.manifest import load_manifest

        for line in describe_reels(
            load_manifest(opts.manifest, opts.storage_options), opts.video_format, opts.storage_options
        ):
            console.print(line, highlight=False)
        return
    summary = run_pipeline(opts, console=err)
    console.print(summary_table(summary))
    from archive_colorize.model.engine import fidelity_line

    if fidelity_line(summary.fidelity):
        console.print(fidelity_line(summary.fidelity), highlight=False)
    if summary.processed_now == 0:
        console.print("Nothing to do: every row is already settled (use --retry-failed to retry failures).")
    console.print(f"results: {summary.out}/results.parquet")
    if summary.unpublished_originals:
        console.print(
            f"IIIF: {summary.unpublished_originals} originals are local or s3:// files with no web copy "
            "(OUT/originals: rows done by an earlier version, or with --no-web-copies); their canvases "
            "show the colorized image only",
            highlight=False,
        )
    if not opts.iiif_base:
        console.print(
            f"IIIF: {summary.out}/iiif/manifest.json is a local preview (its ids are where OUT is now); "
            "give --iiif-base https://... for one to publish (docs/publishing.md)",
            highlight=False,
        )


@app.command()
@friendly
@run_options("submit")
def submit(
    manifests: List[str] = typer.Argument(
        ...,
        help="Parquet manifests, one job each: a file, or a folder (one partitioned "
        "dataset, as Spark and DuckDB write them); a quoted glob ('s3://b/m/*.parquet') is one job "
        "per file. (Changed: a folder used to mean one job per file in it.)",
    ),
    address: str = typer.Option(
        ...,
        "--address",
        envvar="RAY_JOB_ADDRESS",
        help="Ray Jobs API (dashboard) address, e.g. http://head:8265.",
    ),
    out: Optional[str] = typer.Option(
        None, "--out", "-o", help="Output URL (only with one manifest; default: NAME-out next to each)."
    ),
    runtime_env: Optional[str] = typer.Option(
        None, "--runtime-env", help="Ray runtime_env: inline JSON or a .json/.yaml file."
    ),
    wait: bool = typer.Option(False, "--wait", help="Follow each job until it ends; exit 1 if one fails."),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Check each manifest, the weights and the output; print what each job "
        "would do; contact no cluster (loads neither torch nor Ray).",
    ),
    api_timeout: float = typer.Option(
        60.0, "--api-timeout", min=1.0, help="Seconds to wait for each answer of the Ray Jobs API."
    ),
    *,
    run_fields: dict,
):
    """Submit `run` as a Ray Job, idempotently: a finished job is not redone, an unfinished one resumes.

    Example: archive-colorize submit s3://archive/manifests/nara-2026-11.parquet --address http://ray-head:8265 --wait
    """
    from archive_colorize.run.jobs import load_runtime_env
    from archive_colorize.sources.manifest import expand_manifests

    so = run_fields["storage_options"]
    urls = expand_manifests(manifests, so)
    if out and len(urls) > 1:
        raise ColorizeError(
            f"--out names one output, but {len(urls)} manifests were given",
            hint="leave --out unset: each manifest gets NAME-out",
        )
    env = load_runtime_env(runtime_env)
    failed = 0
    for url in urls:
        # one manifest's error is its own: the others of a nightly glob are still submitted
        try:
            failed += _submit_one(url, out, run_fields, address, env, dry_run, wait, api_timeout)
        except ColorizeError as e:
            if _state["debug"] or getattr(e, "for_every_manifest", False):
                raise  # no token, no answer: the same for every manifest
            failed += 1
            said = scrub_text(str(e))
            print_error(said if url in said else f"{url}: {said}", e.hint)
    if failed:
        raise typer.Exit(1)


def _submit_one(url, out, run_fields, address, env, dry_run, wait, api_timeout) -> int:
    """Submit (or, dry, inspect) one manifest; -> 1 if its job was followed and failed."""
    from archive_colorize.run.jobs import logs_tail
    from archive_colorize.run.jobs import submit as submit_job
    from archive_colorize.run.jobs import wait as wait_job
    from archive_colorize.run.options import RunOptions, inspect

    opts = RunOptions(manifest=url, out=out, **run_fields)
    if dry_run:
        plan = inspect(opts)
        line = (
            f"would submit {plan.pending} of {plan.total} rows into {plan.out}"
            if plan.pending
            else f"nothing to submit: {plan.done} done, {plan.failed} failed of {plan.total} in {plan.out}"
        )
        console.print(f"{url}: {line}", highlight=False)
        return 0
    sub = submit_job(opts, address, env, timeout_s=api_timeout)
    console.print(f"{url}: {sub.message}", highlight=False)
    if not (wait and sub.action in ("submitted", "running")):
        return 0
    status = wait_job(
        address,
        sub.submission_id,
        on_status=lambda st, sid=sub.submission_id: err.print(f"  {sid}: {st}", highlight=False),
        api_timeout_s=api_timeout,
    )
    if status == "SUCCEEDED":
        return 0
    tail = logs_tail(address, sub.submission_id, api_timeout_s=api_timeout)
    err.print(f"  {sub.submission_id} ended {status}; last log lines:\n{tail}", highlight=False)
    return 1


@app.command()
@friendly
def report(
    out: str = typer.Argument(..., help="A run's output folder or URL (it holds results.parquet)."),
    html: Path = typer.Option(Path("report.html"), "--html", help="The page to write."),
    sample: int = typer.Option(
        200, "--sample", help="Before/after pairs to show: flagged rows first, then an even sample."
    ),
    low_confidence: float = typer.Option(
        0.0,
        "--low-confidence",
        help="Flag rows whose top scene guess is below this probability (about the scene class, not the "
        "colour; off by default: the shipped model's top guess is often under 10 %).",
    ),
    near_grey: float = typer.Option(
        3.0, "--near-grey", help="Flag rows whose mean a*b* chroma is below this."
    ),
    storage_options: Optional[str] = typer.Option(None, "--storage-options", help="fsspec options as JSON."),
):
    """Write a self-contained HTML page for visual QA of a run.

    Example: archive-colorize report manifests/sample-out --html sample-report.html
    """
    from archive_colorize.apps.report import ReportOptions, write_report

    r = write_report(
        ReportOptions(
            out=out,
            html=str(html),
            sample=sample,
            low_confidence=low_confidence,
            near_grey=near_grey,
            storage_options=_storage_options(storage_options),
        )
    )
    console.print(
        f"wrote {html} ({r['shown']} pairs shown of {r['total']} rows; {r['flagged']} flagged, {r['failed']} failed)",
        highlight=False,
    )


@manifest_app.command("build")
@friendly
def manifest_build(
    source: Optional[str] = typer.Argument(
        None,
        help="A folder, a glob ('scans/**/*.tif') or an S3 prefix of scans; or a "
        "IIIF Presentation 3/2.1 Manifest or Collection (an http(s) URL or a .json file).",
    ),
    out: str = typer.Option(..., "--out", "-o", help="Where to write the manifest (.parquet)."),
    catalog: Optional[str] = typer.Option(
        None, "--catalog", help="A catalog CSV to join (its columns ride along)."
    ),
    key: Optional[str] = typer.Option(
        None, "--key", help="The catalog column that holds the file name, stem or relative path."
    ),
    nara: Optional[str] = typer.Option(
        None,
        "--nara",
        help="Read a NARA National Archives Catalog export (JSON lines; a path or URL) instead.",
    ),
    include_restricted: bool = typer.Option(
        False, "--include-restricted", help="With --nara: keep images whose use is restricted."
    ),
    max_size: Optional[int] = typer.Option(
        None, "--max-size", help="With IIIF: ask the image service for at most N x N pixels."
    ),
    allow_uri: Optional[List[str]] = typer.Option(
        None,
        "--allow-uri",
        help="With a remote IIIF document: let it name URIs under this prefix, which the URI policy refuses "
        "otherwise (another scheme, a private or loopback address). Repeatable.",
    ),
    storage_options: Optional[str] = typer.Option(None, "--storage-options", help="fsspec options as JSON."),
):
    """Make a manifest from scans (ids: relative paths without extension), a IIIF manifest or a NARA export.

    Example: archive-colorize manifest build s3://archive/scans/ --out manifests/nara.parquet --catalog catalog.csv --key filename
    """
    from archive_colorize.sources import manifest_build as mb

    so = _storage_options(storage_options)
    refused: list = []
    if nara:
        try:
            table, got = mb.build_from_nara(
                nara, out, include_restricted=include_restricted, storage_options=so,
                allow=tuple(allow_uri or ()), refused=refused,
            )  # fmt: skip
        finally:
            _print_refused(refused)
        extra = (
            f"; {got.restricted} restricted image(s) left out (--include-restricted keeps them)"
            if got.restricted
            else ""
        )
        if got.not_images:
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(got.not_images.items()))
            extra += f"; {sum(got.not_images.values())} object(s) that are not images skipped ({kinds})"
        if refused:
            extra += f"; {len(refused)} image(s) left out by the URI policy (--allow-uri opens a prefix)"
    elif source and mb.is_iiif_source(source):
        unreachable: list = []
        try:
            table = mb.build_from_iiif(
                source,
                out,
                max_size=max_size,
                storage_options=so,
                allow=tuple(allow_uri or ()),
                refused=refused,
                unreachable=unreachable,
            )
        finally:  # also when the policy left nothing and the build fails
            _print_refused(refused)
            for where, uri, why in unreachable:
                err.print(
                    f"skipped: {printable(where)}: {printable(scrub_uri(uri))}: {printable(why)}",
                    highlight=False,
                    soft_wrap=True,
                )
        extra = (
            f"; {len(refused)} image(s) left out by the URI policy (--allow-uri opens a prefix)"
            if refused
            else ""
        )
        if unreachable:
            extra += f"; {len(unreachable)} collection member(s) could not be read and were skipped"
    elif source:
        table, extra = mb.build_manifest(source, out, catalog=catalog, key=key, storage_options=so), ""
    else:
        raise ColorizeError(
            "manifest build needs a SOURCE (scans or a IIIF manifest) or --nara FILE",
            hint="see `archive-colorize manifest build --help`",
        )
    console.print(
        f"wrote {out}: {table.num_rows} rows, columns {', '.join(table.column_names)}{extra}", highlight=False
    )


def _print_refused(refused: list) -> None:
    for where, uri, rule in refused:
        err.print(f"left out {printable(where)}: {printable(uri)}: {printable(rule)}", highlight=False)


@manifest_app.command("check")
@friendly
def manifest_check(
    manifest: str = typer.Argument(
        ..., help="Parquet manifest to validate: a file, a folder of part files, or a glob."
    ),
    storage_options: Optional[str] = typer.Option(None, "--storage-options", help="fsspec options as JSON."),
):
    """Validate a manifest without running anything.

    Example: archive-colorize manifest check manifests/sample.parquet
    """
    from archive_colorize.sources.manifest import load_manifest

    m = load_manifest(manifest, _storage_options(storage_options))
    files = f" in {len(m.files)} files" if m.is_dataset else ""
    ids = " (integer ids, used as their decimal strings)" if m.int_ids else ""
    console.print(
        f"{manifest}: {m.num_rows} rows{files} OK{ids}; metadata columns: {', '.join(m.metadata_columns) or 'none'}",
        highlight=False,
    )
    from archive_colorize.run.reels import describe_reels

    for line in describe_reels(m, storage_options=_storage_options(storage_options)):
        console.print(line, highlight=False)


@app.command()
@friendly
def train(
    config: Path = typer.Option(..., "--config", "-c", help="A TOML config from training/ (or your own)."),
    out: Optional[str] = typer.Option(
        None, "--out", "-o", help="Run folder, local or s3:// (default: runs/<config name>)."
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Continue from the latest checkpoint in the run folder."
    ),
    init: Optional[str] = typer.Option(
        None,
        "--init",
        help="Fine-tune: start from this weights file (same architecture; "
        "a different class count re-initialises only the classifier).",
    ),
    overrides: List[str] = typer.Argument(None, help="section.key=value overrides, e.g. train.steps=100."),
):
    """Train the network with the paper's joint loss; checkpoints and metrics go to the run folder.

    Example: archive-colorize train --config training/smoke.toml --out runs/smoke train.steps=10
    """
    from archive_colorize.train.config import load_config
    from archive_colorize.train.driver import default_run_dir, run_training

    cfg = load_config(config, overrides or [])
    run_dir = out or default_run_dir(str(config))
    last = run_training(cfg, run_dir, resume=resume, init=init)
    console.print(f"latest checkpoint: {last}")
    console.print(f"export with: archive-colorize weights export {run_dir} --out weights.safetensors")


@weights_app.command("export")
@friendly
def weights_export(
    checkpoint: str = typer.Argument(..., help="A checkpoint file, or a run folder (its latest checkpoint)."),
    out: Path = typer.Option(..., "--out", "-o", help="The .safetensors file to write."),
    storage: str = typer.Option(
        "fp32", "--storage", help="fp32, fp16 or int8 (per-output-channel, dequantized on load)."
    ),
    info: List[str] = typer.Option(
        [], "--info", help="KEY=VALUE facts for the 'training' metadata, e.g. gpu=H100 minutes=9."
    ),
):
    """Write inference weights, with categories, recipe, data and latest validation metrics.

    Example: archive-colorize weights export runs/miniplaces --out miniplaces.safetensors --storage int8 --info gpu=H200
    """
    import tomllib

    from archive_colorize.train.export import export_checkpoint

    extra = {}
    for item in info:
        if "=" not in item:
            raise ColorizeError(f"--info {item!r} must look like KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            extra[k] = tomllib.loads(f"v = {v}")["v"]
        except tomllib.TOMLDecodeError:
            extra[k] = v
    meta = export_checkpoint(checkpoint, str(out), storage=storage, extra_training=extra)
    console.print(
        f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {storage}, step {meta['training']['steps']})"
    )


def _rows(text: Optional[str]) -> tuple[int, Optional[int]]:
    """'500:5000' -> (500, 5000); '0:' -> (0, None); None -> every row."""
    if not text:
        return 0, None
    start, sep, end = text.partition(":")
    try:
        r = (int(start or 0), int(end) if end else None)
    except ValueError:
        r = (-1, None)
    if not sep or r[0] < 0 or (r[1] is not None and r[1] <= r[0]):
        raise ColorizeError(f"--rows must look like START:END (e.g. 0:500), not {text!r}")
    return r


@weights_app.command("calibrate")
@friendly
@run_options("calibrate")
def weights_calibrate(
    weights: Optional[str] = typer.Argument(None, help="Weights file (default: the shipped one)."),
    data: str = typer.Option(
        ...,
        "--data",
        help="Held-out colour photographs: Parquet shards with an `image` column "
        "(a quoted glob) or a folder of image files.",
    ),
    criterion: str = typer.Option(
        "mse-budget",
        "--criterion",
        help=(
            "mse: the least-squares gain; colourfulness: match the photographs' mean colourfulness; mse-budget: the largest "
            "gain whose a*b* MSE is at most --mse-budget above the uncalibrated model's."
        ),
    ),
    mse_budget: float = typer.Option(
        0.05,
        "--mse-budget",
        help="With --criterion mse-budget: the a*b* MSE allowed above gain 1, as a fraction.",
    ),
    rows: Optional[str] = typer.Option(
        None, "--rows", help="Only these rows of --data, START:END (e.g. 0:500)."
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Write a copy of the weights with the fitted gain here "
        "(tensors unchanged); without it, only print the curve.",
    ),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw the curve as a PNG."),
    *,
    run_fields: dict,
):
    """Fit the chroma gain on held-out colour photographs and print the curve.

    Example: archive-colorize weights calibrate --data val.parquet --rows 0:500 --out calibrated.safetensors
    """
    from archive_colorize.train import calibrate as cal
    from archive_colorize.model.engine import Engine
    from archive_colorize.model.weights import load_weights, with_calibration

    if criterion not in cal.CRITERIA:
        raise ColorizeError(f"--criterion must be one of {', '.join(cal.CRITERIA)}, not {criterion!r}")
    loaded = load_weights(weights)
    engine = Engine(
        loaded, device=run_fields["device"], working_size=run_fields["working_size"], chroma_gain=1.0
    )
    heldout = cal.prepare(engine, data, _rows(rows))
    block = cal.fit(heldout, criterion, mse_budget)
    info = block["data"]
    table = Table(
        title=f"{info['images']} images of {info['name']} rows {info['rows'][0]}:{info['rows'][1]} "
        f"({info['filtered_out']} removed by the colour filter)"
    )
    for col in ("gain", "a*b* MSE / grey", "colourfulness / truth", "PSNR"):
        table.add_column(col, justify="right")
    for r in cal.curve_table(block):
        table.add_row(*r)
    console.print(table)
    console.print(
        f"{criterion} gain: {block['gain']:.2f}"
        + (f" (a*b* MSE at most {mse_budget:.0%} above gain 1)" if criterion == "mse-budget" else ""),
        highlight=False,
    )
    if plot:
        cal.plot(block, str(plot))
        console.print(f"plot: {plot}")
    if out:
        with_calibration(loaded.path, out, block)
        console.print(f"wrote {out} (chroma gain {block['gain']:.2f}; tensors unchanged)")


@app.command()
@friendly
def evaluate(
    weights: Optional[str] = typer.Option(
        None, "--weights", help="Weights file or URL to evaluate (default: the shipped one)."
    ),
    data: str = typer.Option(
        ..., "--data", help="val.parquet (or a glob), or a Places list such as val.txt."
    ),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the JSON report here."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate at most this many images."),
    rows: Optional[str] = typer.Option(
        None, "--rows", help="Only these rows of --data, START:END (e.g. 500:5000)."
    ),
    device: str = typer.Option("auto", "--device", help="cpu, cuda or auto."),
):
    """Colour and scene metrics against the grey and mean-colour baselines.

    Example: archive-colorize evaluate --data ../shared/data/miniplaces/val.parquet --out report.json
    """
    from archive_colorize.train.evaluate import evaluate as run_eval
    from archive_colorize.model.weights import load_weights

    report = run_eval(load_weights(weights), data, limit=limit, device=device, rows=_rows(rows))
    table = Table(title=f"{report['images']} images ({report['filtered_out']} removed by the colour filter)")
    table.add_column("", no_wrap=True, min_width=12)
    for col in ("a*b* MSE", "PSNR", "AuC", "colour", "/truth", "top-1", "top-5"):
        table.add_column(col, overflow="fold")
    for name in ("model", "model_calibrated", "grey", "mean_colour"):
        if name not in report:
            continue
        r = report[name]
        label = {
            "model": "model (gain 1)",
            "model_calibrated": f"model (gain {report['chroma_gain']:g})",
        }.get(name, name)
        table.add_row(
            label,
            f"{r['ab_mse']:.5f}",
            f"{r['psnr']:.2f}",
            f"{r['auc']:.4f}",
            f"{r['colourfulness']:.2f}",
            f"{r['colourfulness_ratio_to_truth']:.2f}",
            f"{r['top1']:.3f}" if r.get("top1") is not None else "",
            f"{r['top5']:.3f}" if r.get("top5") is not None else "",
        )
    table.add_row(
        "ground truth", "", "", "", f"{report['ground_truth']['colourfulness']:.2f}", "1.00", "", ""
    )
    console.print(table)
    if out:
        from archive_colorize.core.storage import atomic_write_bytes

        atomic_write_bytes(str(out), (json.dumps(report, indent=2) + "\n").encode())
        console.print(f"report: {out}")


def run_cli():  # console-script entry point
    app()


if __name__ == "__main__":
    sys.exit(run_cli())
