"""A run's IIIF Presentation 3 manifest (OUT/iiif/manifest.json): every colorized scan
beside its original, for Mirador and the Universal Viewer.

The reader of IIIF manifests is sources/iiif.py; this is the other direction.
"""

from __future__ import annotations

from pathlib import Path

from archive_colorize.core.formats import (
    MIME_BY_EXTENSION, ORIGINALS, THUMB_SIDE, THUMBS, WEB, WEB_SIDE, bounded, web_name,
)  # fmt: skip
from archive_colorize.core.uripolicy import is_http
from archive_colorize.sources.iiif import COLOURED
from archive_colorize.sources.manifest import GAIN_COLUMN, RESERVED

# what the run itself wrote, not the archive's metadata: kept out of each canvas's metadata
CORE = {"id", "uri", *RESERVED, GAIN_COLUMN, "style_uri", "output_name", "kind"} | {
    "iiif_manifest", "iiif_canvas", "title", "metadata", "rights", "required_statement",
}  # fmt: skip


def _lmap(text) -> dict:
    return {"none": [str(text)]}


def _en(text) -> dict:
    return {"en": [str(text)]}


COLOUR_NOTE = "Colour added by a trained model (archive-colorize); the lightness is the scan's own."
# rights a viewer may show as a licence: IIIF 3 takes Creative Commons licences and public
# domain marks and RightsStatements.org statements, as those bodies spell their URIs (http,
# as the presentation validator checks); any other value stays a metadata row
_RIGHTS = ("http://creativecommons.org/licenses/", "http://creativecommons.org/publicdomain/",
           "http://rightsstatements.org/vocab/")  # fmt: skip


def licence(rights) -> str | None:
    """The `rights` URI a canvas may carry, or None: https spellings become the canonical
    http ones (archives often write https://creativecommons.org/...)."""
    text = str(rights or "").strip()
    if text.lower().startswith("https://"):
        text = "http://" + text[len("https://") :]
    return text if text.startswith(_RIGHTS) else None


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


def _jpeg_copy(root: str, folder: str, name: str, size: dict, side: int) -> dict:
    w, h = bounded(size["width"], size["height"], side)
    return {"id": f"{root}/{folder}/{web_name(name)}", "type": "Image", "format": "image/jpeg",
            "width": w, "height": h}  # fmt: skip


def _has(web: dict[str, set[str]] | None, folder: str, name: str) -> bool:
    return web is not None and web_name(name) in web.get(folder, ())


def missing_originals(rows: list[dict], web: dict[str, set[str]] | None) -> int:
    """Done rows whose original no web page can load: not http(s), and no web copy."""
    return sum(
        1
        for r in rows
        if r.get("status") == "done"
        and not is_http(r["uri"])
        and not _has(web, ORIGINALS, str(r["output_uri"]).rsplit("/", 1)[-1])
    )


VIDEO_MIME = {"mp4": "video/mp4", "mkv": "video/x-matroska", "mov": "video/quicktime", "webm": "video/webm"}


def _reel_bodies(r: dict, root: str, base: str | None, size: dict):
    """A reel's canvas bodies: the H.264 access copy for browsers (else the mezzanine), the
    FFV1 mezzanine as the archival rendering, the original where a viewer can load it; and the
    canvas's size with its duration (IIIF's AV canvas)."""
    from fractions import Fraction

    outs = dict(kv.split(":", 1) for kv in (r.get("video_outputs") or "").split(";") if ":" in kv)
    duration = float(int(r.get("frames") or 0) / Fraction(r.get("fps") or "1"))
    size = {**size, "duration": round(duration, 6)}

    def body(fmt: str) -> dict:
        name = outs[fmt].rsplit("/", 1)[-1]
        return {"id": f"{root}/video/{name}", "type": "Video", "format": VIDEO_MIME[fmt], **size}

    colour = body("mp4" if "mp4" in outs else "mkv")
    archival = body("mkv") if "mkv" in outs and "mp4" in outs else None
    source = r["uri"] if "://" in r["uri"] else Path(r["uri"]).resolve().as_uri()
    original = None
    if is_http(source) or not base:  # a published reel's original only where a browser can fetch it
        original = {"id": source, "type": "Video", **size}
        ext = source.rsplit(".", 1)[-1].lower()
        if ext in VIDEO_MIME:
            original["format"] = VIDEO_MIME[ext]
    return colour, original, archival, size


def run_manifest(
    rows: list[dict],
    out_url: str,
    label: str,
    base: str | None = None,
    web: dict[str, set[str]] | None = None,
) -> dict:
    """IIIF Presentation 3 for a run's done rows, in the order given (the manifest's): one
    canvas each, id from the row id, painted with a Choice of the colorized image (first,
    the default) and the original scan, so that Mirador or the Universal Viewer offer both.
    `base`: where OUT is published (https://...). Without it the ids are OUT's own location
    (file:// or s3://): a local preview, as IIIF wants http(s) ids. `web`: the web copies
    OUT holds ({folder: file names}, imaging/web.py): a thumbnail per canvas, a JPEG body in
    place of a TIFF or 16-bit output (the archival file stays, as the canvas's `rendering`),
    and a copy of each original that is a local path or s3:// (published, an original with
    no copy is left out of its Choice: no viewer could load it)."""
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
        archival = {"id": f"{root}/images/{name}", "type": "Image", "format": _mime(name) or "image/png"}
        if r.get("kind") == "video":
            colour, original, archival, size = _reel_bodies(r, root, base, size)
        elif _has(web, WEB, name):  # browsers cannot show it: a JPEG body, the file as a rendering
            colour = _jpeg_copy(root, WEB, name, size, WEB_SIDE)
        else:
            colour, archival = {**archival, **size}, None
        colour["label"] = {"en": [COLOURED]}  # sources/iiif.py reads past it to the original
        source = r["uri"] if "://" in r["uri"] else Path(r["uri"]).resolve().as_uri()
        if r.get("kind") == "video":
            pass  # _reel_bodies chose both
        elif not is_http(source) and _has(web, ORIGINALS, name):
            original = _jpeg_copy(root, ORIGINALS, name, size, WEB_SIDE)
        elif is_http(source) or not base:  # (a local preview may name a file:// original)
            original = {"id": source, "type": "Image", **size}
            if _mime(source):
                original["format"] = _mime(source)
        else:
            original = None
        if original:
            original["label"] = {"en": ["Original reel" if r.get("kind") == "video" else "Original scan"]}
        # what a person reads: no hashes, no scene guesses (results.parquet has them)
        metadata = [{"label": _en("Colour"), "value": _en("Added by a trained model (archive-colorize)")}]
        metadata += _source_metadata(r.get("metadata"))
        metadata += [
            {"label": _en(_label(k)), "value": _lmap(v)}
            for k, v in r.items()
            if k not in CORE and v is not None and not isinstance(v, (list, dict, bytes))
        ]
        rights = r.get("rights")
        canonical = licence(rights)
        if rights and not canonical:
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
                            "body": {"type": "Choice", "items": [colour, original]} if original else colour,
                            "target": cid,
                        }
                    ],
                }
            ],
        }
        if _has(web, THUMBS, name):
            canvas["thumbnail"] = [_jpeg_copy(root, THUMBS, name, size, THUMB_SIDE)]
        if archival:
            canvas["rendering"] = [{**archival, "label": _en("The archival file")}]
        if canonical:
            canvas["rights"] = canonical
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
        **({"thumbnail": canvases[0]["thumbnail"]} if canvases and "thumbnail" in canvases[0] else {}),
        "items": canvases,
    }
