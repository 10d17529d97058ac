"""A run's IIIF Presentation 3 manifest (OUT/iiif/manifest.json): every colorized scan
beside its original, for Mirador and the Universal Viewer.

The reader of IIIF manifests is sources/iiif.py; this is the other direction.
"""

from __future__ import annotations

from pathlib import Path

from archive_colorize.core.formats import MIME_BY_EXTENSION
from archive_colorize.sources.iiif import COLOURED
from archive_colorize.sources.manifest import GAIN_COLUMN, RESERVED

# what the run itself wrote, not the archive's metadata: kept out of each canvas's metadata
CORE = {"id", "uri", *RESERVED, GAIN_COLUMN, "style_uri", "output_name"} | {
    "iiif_manifest", "iiif_canvas", "title", "metadata", "rights", "required_statement",
}  # fmt: skip


def _lmap(text) -> dict:
    return {"none": [str(text)]}


def _en(text) -> dict:
    return {"en": [str(text)]}


COLOUR_NOTE = "Colour added by a trained model (archive-colorize); the lightness is the scan's own."
# rights a viewer may show as a licence: IIIF allows Creative Commons, RightsStatements.org
# and the publisher's own URIs; anything else stays a metadata row
_RIGHTS = ("http://creativecommons.org/", "https://creativecommons.org/", "http://rightsstatements.org/",
           "https://rightsstatements.org/")  # fmt: skip


def _mime(path: str) -> str | None:
    """The media type of an image by its name's extension (a query string aside)."""
    return MIME_BY_EXTENSION.get(path.split("?", 1)[0].rsplit(".", 1)[-1].lower())


def _label(column: str) -> str:
    """A column name as a person reads it: record_group -> Record group."""
    text = column.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _source_metadata(text) -> list[dict]:
    """The source IIIF document's metadata pairs (kept as JSON text by manifest build)."""
    import json

    try:
        pairs = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return []
    return [
        {"label": _en(p["label"]), "value": _en(p["value"])}
        for p in pairs if isinstance(p, dict) and p.get("label") and p.get("value")
    ]  # fmt: skip


def canvas_name(row_id: str) -> str:
    """The canvas's path segment: the row id itself (percent-encoded), so that an id, and
    what annotations and links say about it, never moves to another scan on a resume."""
    from urllib.parse import quote

    return quote(str(row_id), safe="")


def run_manifest(rows: list[dict], out_url: str, label: str, base: str | None = None) -> dict:
    """IIIF Presentation 3 for a run's done rows, in the order given (the manifest's): one
    canvas each, id from the row id, painted with a Choice of the colorized image (first,
    the default) and the original scan, so that Mirador or the Universal Viewer offer both.
    `base`: where OUT is published (https://...). Without it the ids are OUT's own location
    (file:// or s3://): a local preview, as IIIF wants http(s) ids."""
    if base:
        root = base.rstrip("/")
    else:
        root = out_url.rstrip("/") if "://" in out_url else Path(out_url).resolve().as_uri()
    me = f"{root}/iiif/manifest.json"
    canvases = []
    for r in (r for r in rows if r.get("status") == "done"):
        cid = f"{root}/iiif/canvas/{canvas_name(r['id'])}"
        name = str(r["output_uri"]).rsplit("/", 1)[-1]
        size = {"width": int(r["width"]), "height": int(r["height"])}
        colour = {
            "id": f"{root}/images/{name}",
            "type": "Image",
            "format": _mime(name) or "image/png",
            "label": {"en": [COLOURED]},  # sources/iiif.py reads past it to the original
            **size,
        }
        source = r["uri"] if "://" in r["uri"] else Path(r["uri"]).resolve().as_uri()
        original = {"id": source, "type": "Image", "label": {"en": ["Original scan"]}, **size}
        if _mime(source):
            original["format"] = _mime(source)
        # what a person reads: no hashes, no scene guesses (results.parquet has them)
        metadata = [{"label": _en("Colour"), "value": _en("Added by a trained model (archive-colorize)")}]
        metadata += _source_metadata(r.get("metadata"))
        metadata += [
            {"label": _en(_label(k)), "value": _lmap(v)}
            for k, v in r.items()
            if k not in CORE and v is not None and not isinstance(v, (list, dict, bytes))
        ]
        rights = r.get("rights")
        licence = str(rights) if rights and str(rights).startswith(_RIGHTS) else None
        if rights and not licence:
            metadata.append({"label": _en("Rights"), "value": _lmap(rights)})
        canvas = {
            "id": cid,
            "type": "Canvas",
            "label": _lmap(r.get("title") or r["id"]),
            **size,
            "metadata": metadata,
            # viewers must show it: the source's attribution, and where the colour came from
            "requiredStatement": {
                "label": _en("Attribution"),
                "value": _en(
                    f"{r['required_statement']} {COLOUR_NOTE}" if r.get("required_statement") else COLOUR_NOTE
                ),
            },
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
        if licence:
            canvas["rights"] = licence
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
        "requiredStatement": {"label": _en("Attribution"), "value": _en(COLOUR_NOTE)},
        # the run's record (weights sha256, options, versions) for whoever wants the details
        "seeAlso": [
            {
                "id": f"{root}/run.json",
                "type": "Dataset",
                "format": "application/json",
                "label": _en("The run's record (archive-colorize run.json)"),
            }
        ],  # fmt: skip
        "items": canvases,
    }
