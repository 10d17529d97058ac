"""A run's IIIF Presentation 3 manifest (OUT/iiif/manifest.json): every colorized scan
beside its original, for Mirador and the Universal Viewer.

The reader of IIIF manifests is sources/iiif.py; this is the other direction.
"""

from __future__ import annotations

from pathlib import Path

from archive_colorize.core.formats import MIME_BY_EXTENSION
from archive_colorize.sources.manifest import GAIN_COLUMN, RESERVED

# what the run itself wrote, not the archive's metadata: kept out of each canvas's metadata
CORE = {"id", "uri", *RESERVED, GAIN_COLUMN, "style_uri", "output_name"} | {
    "iiif_manifest", "iiif_canvas", "title", "metadata", "rights", "required_statement",
}  # fmt: skip


def _lmap(text) -> dict:
    return {"none": [str(text)]}


def run_manifest(rows: list[dict], out_url: str, label: str, base: str | None = None) -> dict:
    """IIIF Presentation 3 for a run's done rows: one canvas each, painted with a Choice of
    the colorized image (first, the default) and the original scan, so that Mirador or the
    Universal Viewer offer both. `base`: where OUT is published (https://...). Without it
    the ids are OUT's own location (file:// or s3://): IIIF wants absolute ids, and
    relative ones fail validation."""
    if base:
        root = base.rstrip("/")
    else:
        root = out_url.rstrip("/") if "://" in out_url else Path(out_url).resolve().as_uri()
    me = f"{root}/iiif/manifest.json"
    canvases = []
    for n, r in enumerate((r for r in rows if r.get("status") == "done"), 1):
        cid = f"{root}/iiif/canvas/{n}"
        name = str(r["output_uri"]).rsplit("/", 1)[-1]
        size = {"width": int(r["width"]), "height": int(r["height"])}
        colour = {
            "id": f"{root}/images/{name}",
            "type": "Image",
            "format": MIME_BY_EXTENSION.get(name.rsplit(".", 1)[-1], "image/png"),
            "label": {"en": ["Colorized by a trained model (archive-colorize)"]},
            **size,
        }
        source = r["uri"] if "://" in r["uri"] else Path(r["uri"]).resolve().as_uri()
        original = {"id": source, "type": "Image", "label": {"en": ["Original scan"]}, **size}
        metadata = [
            {
                "label": {"en": ["Colour"]},
                "value": {
                    "en": [
                        f"Added by a trained model: archive-colorize, weights sha256 {r.get('weights_sha256')}"
                    ]
                },
            }
        ]
        if r.get("scene_top5"):
            metadata.append({"label": {"en": ["Scene (model's guess)"]}, "value": _lmap(r["scene_top5"][0])})
        metadata += [
            {"label": _lmap(k), "value": _lmap(v)}
            for k, v in r.items()
            if k not in CORE and v is not None and not isinstance(v, (list, dict, bytes))
        ]
        canvas = {
            "id": cid,
            "type": "Canvas",
            "label": _lmap(r.get("title") or r["id"]),
            **size,
            "metadata": metadata,
            "items": [
                {
                    "id": f"{cid}/page",
                    "type": "AnnotationPage",
                    "items": [
                        {
                            "id": f"{cid}/page/painting",
                            "type": "Annotation",
                            "motivation": "painting",
                            "body": {"type": "Choice", "items": [colour, original]},
                            "target": cid,
                        }
                    ],
                }
            ],
        }
        if r.get("iiif_manifest"):
            canvas["partOf"] = [{"id": r["iiif_manifest"], "type": "Manifest"}]
        if r.get("iiif_canvas"):
            canvas["seeAlso"] = [
                {
                    "id": r["iiif_canvas"],
                    "type": "Dataset",
                    "format": "application/ld+json",
                    "label": {"en": ["The source canvas"]},
                }
            ]
        if r.get("rights"):
            canvas.setdefault("metadata", []).append(
                {"label": {"en": ["Source rights"]}, "value": _lmap(r["rights"])}
            )
        canvases.append(canvas)
    return {
        "@context": "http://iiif.io/api/presentation/3/context.json",
        "id": me,
        "type": "Manifest",
        "label": {"en": [label]},
        "summary": {
            "en": [
                "Scans colorized by a trained model (archive-colorize). Each canvas offers the "
                "colorized image and the original scan."
            ]
        },
        "items": canvases,
    }
