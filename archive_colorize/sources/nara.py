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


def nara_rows(
    url: str, include_restricted: bool = False, storage_options: dict | None = None
) -> tuple[list[dict], int]:
    """-> (rows, number of image objects left out because their use is restricted)."""
    from archive_colorize.core.storage import open_url

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
                d = d.get("record", d) if isinstance(d, dict) else d  # API responses wrap each description
                if not isinstance(d, dict) or "naId" not in d:
                    raise ManifestError(f"NARA export {url} line {n}: not a catalog description (no naId)")
                use, access = _status(d, "useRestriction"), _status(d, "accessRestriction")
                images = [
                    o
                    for o in d.get("digitalObjects") or []
                    if isinstance(o, dict) and o.get("objectUrl") and _is_image(o)
                ]
                if use.lower() not in OPEN and not include_restricted:
                    restricted += len(images)
                    continue
                for k, o in enumerate(images):
                    rows.append(
                        {
                            "id": f"{d['naId']}-{k}",
                            "uri": o["objectUrl"],
                            "naId": int(d["naId"]),
                            "title": d.get("title"),
                            "record_group": _record_group(d),
                            "access_restriction": access or None,
                            "use_restriction": use or None,
                            "object_filename": o.get("objectFilename"),
                        }
                    )
    except FileNotFoundError:
        raise ManifestError(f"NARA export not found: {url}") from None
    return rows, restricted
