"""NARA National Archives Catalog exports -> manifest rows.

The catalog is published as open data (the AWS Registry of Open Data, "NARA National
Archives Catalog"): JSON lines, one description per line, each with its digital objects.
The fields read here follow the catalog's record schema: `naId`, `title`, the record group
from `ancestors` (or `recordGroupNumber`), `accessRestriction.status`,
`useRestriction.status`, and `digitalObjects[].objectUrl` / `objectType` /
`objectFilename`. One row per image object; rows whose use is restricted are left out and
counted unless asked for.
"""

from __future__ import annotations

import json

from archive_colorize.core.uripolicy import UriRefused
from archive_colorize.errors import ManifestError

IMAGE_TYPES = ("image", "jpg", "jpeg", "tif", "tiff", "png", "jp2", "gif")
OPEN = ("unrestricted", "")


def _record_group(d: dict):
    if d.get("recordGroupNumber") is not None:
        return d["recordGroupNumber"]
    for a in d.get("ancestors") or []:
        if isinstance(a, dict) and (a.get("levelOfDescription") == "recordGroup" or "recordGroupNumber" in a):
            return a.get("recordGroupNumber")
    return None


def _status(d: dict, key: str) -> str:
    v = d.get(key)
    return str((v or {}).get("status", "") if isinstance(v, dict) else (v or "")).strip()


def _is_image(obj: dict) -> bool:
    kind = str(obj.get("objectType", "")).lower()
    name = str(obj.get("objectFilename") or obj.get("objectUrl") or "").lower()
    return any(t in kind for t in IMAGE_TYPES) or name.endswith(tuple(f".{t}" for t in IMAGE_TYPES[1:]))


def _str(v) -> str | None:
    """A text field from another system's JSON: strings kept, numbers and lists made text."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, list):
        return "; ".join(s for s in (_str(x) for x in v) if s)
    if isinstance(v, dict):
        return None
    return str(v)


def _int_or_none(v) -> int | None:
    """The record group, an integer in the catalog's schema; another system's "83" too."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().isascii() and v.strip().isdigit():
        return int(v)
    return None


def nara_rows(
    url: str,
    include_restricted: bool = False,
    storage_options: dict | None = None,
    allow: tuple[str, ...] = (),
    refused: list | None = None,
) -> tuple[list[dict], int]:
    """-> (rows, number of image objects left out because their use is restricted). An
    export read over http(s) is a remote document: its objectUrls go through the URI
    policy, and those refused are left out and appended to `refused` (line, uri, rule)."""
    from archive_colorize.core.storage import open_url
    from archive_colorize.sources.iiif import document_policy

    policy = document_policy(url, allow)
    rows, restricted = [], 0
    try:
        with open_url(url, "rb", storage_options) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    d = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ManifestError(f"NARA export {url} line {n}: not JSON ({e.msg})") from None
                except RecursionError:
                    raise ManifestError(f"NARA export {url} line {n}: JSON nested too deeply") from None
                d = d.get("record", d) if isinstance(d, dict) else d  # API responses wrap each description
                if not isinstance(d, dict) or "naId" not in d:
                    raise ManifestError(f"NARA export {url} line {n}: not a catalog description (no naId)")
                na_id = d["naId"]
                if isinstance(na_id, bool) or not (
                    isinstance(na_id, int) or (isinstance(na_id, str) and na_id.isascii() and na_id.isdigit())
                ):
                    raise ManifestError(f"NARA export {url} line {n}: naId must be an integer, not {na_id!r}")
                use, access = _status(d, "useRestriction"), _status(d, "accessRestriction")
                images = [
                    o
                    for o in d.get("digitalObjects") or []
                    if isinstance(o, dict) and isinstance(o.get("objectUrl"), str) and _is_image(o)
                ]
                if use.lower() not in OPEN and not include_restricted:
                    restricted += len(images)
                    continue
                for k, o in enumerate(images):
                    try:
                        policy.check(o["objectUrl"])
                    except UriRefused as e:
                        if refused is not None:
                            refused.append((f"{url} line {n}", o["objectUrl"], str(e)))
                        continue
                    rows.append(
                        {
                            "id": f"{int(na_id)}-{k}",
                            "uri": o["objectUrl"],
                            "naId": int(na_id),
                            "title": _str(d.get("title")),
                            "record_group": _int_or_none(_record_group(d)),
                            "access_restriction": access or None,
                            "use_restriction": use or None,
                            "object_filename": _str(o.get("objectFilename")),
                        }
                    )
    except FileNotFoundError:
        raise ManifestError(f"NARA export not found: {url}") from None
    return rows, restricted
