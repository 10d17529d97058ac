"""NARA National Archives Catalog exports and API responses -> manifest rows.

The catalog is published as open data (the AWS Registry of Open Data, "NARA National
Archives Catalog") and through the Catalog API v2. Every shape NARA hands out is read,
each to the same rows:

- an API v2 response as saved: `{"body": {"hits": {"hits": [{"_id", "_source":
  {"metadata", "record"}}]}}}` (NARA's bulk-download scripts read
  `hits[i]["_source"]["record"]["digitalObjects"][k]["objectUrl"]`);
- JSON lines of those hits, of `{"record": ...}` (the S3 bulk export, `rg_NNN/rg_NNN-K.jsonl`)
  or of bare records;
- one record, pretty-printed; a JSON array of records or hits.

From each record (a description): `naId`, `title`, the record group and the collection
(presidential libraries have a collection instead) and the series from `ancestors`,
`accessRestriction.status`, `useRestriction.status`, and per digital object `objectId`
(NARA's stable id: the row id is `{naId}-{objectId}`), `objectUrl`, `objectType`,
`objectFilename`. One row per image object. Only `useRestriction` decides what is left
out: a use other than "Unrestricted" keeps the images out (counted) unless asked for.
`accessRestriction` is about the physical or digital record's availability and is kept as
a column: a record with a digital object online is accessible by definition. Objects that
are not images (PDFs, audio, video) are counted and reported, never rows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pyarrow as pa

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


@dataclass
class NaraRead:
    rows: list[dict]
    restricted: int = 0  # image objects left out: their use is restricted
    not_images: dict = field(default_factory=dict)  # objectType -> count, objects that are not images


def _records(data, where: str):
    """Each catalog description in one parsed JSON value: -> (where, record) pairs."""
    if isinstance(data, list):
        for i, item in enumerate(data, 1):
            yield from _records(item, f"{where} item {i}")
        return
    if isinstance(data, dict):
        hits = (data.get("body") or {}).get("hits") if isinstance(data.get("body"), dict) else None
        if isinstance(hits, dict) and isinstance(hits.get("hits"), list):
            for i, hit in enumerate(hits["hits"], 1):
                yield from _records(hit, f"{where} hit {i}")
            return
        if isinstance(data.get("_source"), dict):
            data = data["_source"]
        if isinstance(data.get("record"), dict):
            data = data["record"]
    yield where, data


def _ancestor(d: dict, level: str) -> dict:
    for a in d.get("ancestors") or []:
        if isinstance(a, dict) and a.get("levelOfDescription") == level:
            return a
    return {}


def _parsed(raw: bytes, url: str):
    """The export as (where, JSON value) pairs: one document (a response, a record, an
    array; pretty-printed or not), or JSON lines."""
    text = raw.decode("utf-8-sig", errors="replace")
    lines = text.strip().splitlines()
    try:
        yield ("line 1" if len(lines) == 1 else "document"), json.loads(text)
        return
    except RecursionError:
        raise ManifestError(f"NARA export {url} line 1: JSON nested too deeply") from None
    except json.JSONDecodeError as e:
        if len(lines) > 1 and e.msg != "Extra data" and not _is_json(lines[0]):
            raise ManifestError(f"NARA export {url}: not JSON ({e.msg} at line {e.lineno})") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield f"line {n}", json.loads(line)
        except json.JSONDecodeError as e:
            raise ManifestError(f"NARA export {url} line {n}: not JSON ({e.msg})") from None
        except RecursionError:
            raise ManifestError(f"NARA export {url} line {n}: JSON nested too deeply") from None


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except (json.JSONDecodeError, RecursionError):
        return False


def read_nara(
    url: str,
    include_restricted: bool = False,
    storage_options: dict | None = None,
    allow: tuple[str, ...] = (),
    refused: list | None = None,
) -> NaraRead:
    """An export or API response -> its rows and what was left out. One read over http(s)
    is a remote document: its objectUrls go through the URI policy, and those refused are
    left out and appended to `refused` (where, uri, rule)."""
    from archive_colorize.core.storage import open_url
    from archive_colorize.sources.iiif import document_policy

    policy = document_policy(url, allow)
    got = NaraRead([])
    try:
        with open_url(url, "rb", storage_options) as f:
            raw = f.read()
    except FileNotFoundError:
        raise ManifestError(f"NARA export not found: {url}") from None
    for where, value in _parsed(raw, url):
        for at, d in _records(value, where):
            _read_record(d, f"{url} {at}", got, include_restricted, policy, refused)
    return got


def _read_record(d, at: str, got: NaraRead, include_restricted: bool, policy, refused) -> None:
    if not isinstance(d, dict) or "naId" not in d:
        raise ManifestError(f"NARA export {at}: not a catalog description (no naId)")
    na_id = d["naId"]
    if isinstance(na_id, bool) or not (
        isinstance(na_id, int) or (isinstance(na_id, str) and na_id.isascii() and na_id.isdigit())
    ):
        raise ManifestError(f"NARA export {at}: naId must be an integer, not {na_id!r}")
    use, access = _status(d, "useRestriction"), _status(d, "accessRestriction")
    objects = [
        o
        for o in d.get("digitalObjects") or []
        if isinstance(o, dict) and isinstance(o.get("objectUrl"), str)
    ]
    images = []
    for o in objects:
        if _is_image(o):
            images.append(o)
        else:
            kind = _str(o.get("objectType")) or "unknown type"
            got.not_images[kind] = got.not_images.get(kind, 0) + 1
    if use.lower() not in OPEN and not include_restricted:
        got.restricted += len(images)
        return
    series, collection = _ancestor(d, "series"), _ancestor(d, "collection")
    for k, o in enumerate(images):
        try:
            policy.check(o["objectUrl"])
        except UriRefused as e:
            if refused is not None:
                refused.append((at, o["objectUrl"], str(e)))
            continue
        object_id = _str(o.get("objectId"))
        got.rows.append(
            {
                # NARA's stable object id; the position among the record's images only
                # where an export lacks it
                "id": f"{int(na_id)}-{object_id if object_id else k}",
                "uri": o["objectUrl"],
                "naId": int(na_id),
                "title": _str(d.get("title")),
                "record_group": _int_or_none(_record_group(d)),
                "collection": _str(collection.get("collectionIdentifier")),
                "series_naId": _int_or_none(series.get("naId")),
                "series_title": _str(series.get("title")),
                "access_restriction": access or None,
                "use_restriction": use or None,
                "object_id": object_id,
                "object_type": _str(o.get("objectType")),
                "object_filename": _str(o.get("objectFilename")),
            }
        )


# the columns' types, also when every value of one is null (a presidential library's
# records have no record group: pyarrow would type the column `null`)
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("uri", pa.string()),
        ("naId", pa.int64()),
        ("title", pa.string()),
        ("record_group", pa.int64()),
        ("collection", pa.string()),
        ("series_naId", pa.int64()),
        ("series_title", pa.string()),
        ("access_restriction", pa.string()),
        ("use_restriction", pa.string()),
        ("object_id", pa.string()),
        ("object_type", pa.string()),
        ("object_filename", pa.string()),
    ]
)
