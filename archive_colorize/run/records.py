"""What a run leaves beside its images: run.json (its record) and OUT/iiif/manifest.json
(the colorized scans for any IIIF viewer, each with its original)."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict

import pyarrow as pa

from archive_colorize import __version__
from archive_colorize.run.options import RunSummary, redacted
from archive_colorize.core.secrets import scrub_uri
from archive_colorize.core.storage import write_json


def previous_devices(ctx) -> list[str]:
    try:  # what earlier runs into this OUT ran on, from their run.json
        return json.loads(ctx.out_fs.cat_file(f"{ctx.out_root}/run.json")).get("devices") or []
    except Exception:
        return []


def write_iiif(ctx, results: pa.Table) -> int:
    """-> how many done rows' originals a published manifest cannot show (no web copy)."""
    from archive_colorize.core.storage import abs_uri
    from archive_colorize.core.formats import WEB_FOLDERS
    from archive_colorize.sinks.iiif import missing_originals, run_manifest
    from archive_colorize.sinks.images import ImageFolder

    # canvases in the manifest's order (results.parquet is sorted by id, as text)
    order = {str(v): i for i, v in enumerate(ctx.manifest.ids.to_pylist())}
    rows = sorted(results.to_pylist(), key=lambda r: order.get(r["id"], len(order)))
    rows = [{**r, "uri": abs_uri(r["uri"], ctx.manifest.base_dir)} for r in rows]
    folder = ImageFolder(ctx.out_url, ctx.opts.storage_options)
    web = {f: folder.listing(f) for f in WEB_FOLDERS}  # what exists, also from earlier runs
    label = ctx.opts.iiif_label or manifest_title(ctx.opts.manifest)
    doc = run_manifest(rows, ctx.out_url, label, ctx.opts.iiif_base, web)
    write_json(ctx.out_fs, f"{ctx.out_root}/iiif/manifest.json", doc)
    return missing_originals(rows, web) if ctx.opts.iiif_base else 0


def manifest_title(manifest: str) -> str:
    """A neutral title from the manifest's file (or folder) name: `nara-2026-11, colorized`,
    not the path it has on one server."""
    import posixpath
    from urllib.parse import urlsplit

    path = urlsplit(manifest).path if "://" in manifest else manifest
    stem = posixpath.splitext(posixpath.basename(path.rstrip("/")) or "scans")[0]
    return f"{stem}, colorized"


def chroma_gain_record(override: float | None, calibration: dict | None) -> dict:
    """The run's chroma gain and where it came from (rows may still name their own)."""
    if override is not None:
        return {"gain": float(override), "source": "--chroma-gain"}
    if calibration:
        return {
            "gain": float(calibration["gain"]),
            "source": f"the weights' calibration ({calibration.get('criterion')})",
        }
    return {"gain": 1.0, "source": "uncalibrated weights"}


def write_run_json(ctx, summary: RunSummary, fid: dict | None) -> None:
    import ray
    import torch

    w = ctx.weights
    before = ctx.earlier_devices
    write_json(
        ctx.out_fs,
        f"{ctx.out_root}/run.json",
        {
            "devices": sorted(ctx.devices) or before,
            "earlier_devices": before if ctx.devices and before and set(before) != ctx.devices else None,
            "model_actors": sorted(ctx.actors),  # "<device> on <host> node <id> pid <pid>", this run's
            "archive_colorize": __version__,
            "manifest": scrub_uri(ctx.opts.manifest),
            "manifest_base_dir": scrub_uri(ctx.manifest.base_dir),
            # rows named by a remote document (the URI policy applied): where it came from
            "untrusted_origin": ctx.manifest.untrusted_origin,  # what its relative uris resolve against
            "manifest_files": len(ctx.manifest.files),
            "ids": "integers in the manifest, used as their decimal strings"
            if ctx.manifest.int_ids
            else "strings",
            "options": redacted(ctx.opts),
            "weights": {
                "path": scrub_uri(w.path),
                "sha256": w.file_sha256,
                "storage": w.metadata.get("storage"),
                "training": w.metadata.get("training"),
                "data": w.metadata.get("data", {}).get("description"),
            },
            "counts": {k: v for k, v in asdict(summary).items() if k != "fidelity"},
            "precision": {"name": ctx.opts.precision, **(fid or {})},
            "chroma_gain": chroma_gain_record(ctx.opts.chroma_gain, w.metadata.get("calibration")),
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "ray": ray.__version__,
                "pyarrow": pa.__version__,
            },
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
