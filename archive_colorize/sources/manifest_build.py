"""`archive-colorize manifest build`: a manifest from a folder, glob or S3 prefix of scans,
optionally joined with the archive's catalog (CSV)."""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from archive_colorize.core.formats import IMAGE_SUFFIXES, VIDEO_SUFFIXES, kind_of
from archive_colorize.errors import ManifestError
from archive_colorize.sources.manifest import UNTRUSTED_ORIGIN
from archive_colorize.core.storage import (
    atomic_write_bytes,
    glob_root,
    has_wildcard,
    is_local,
    open_url,
    resolve,
)

if TYPE_CHECKING:
    from archive_colorize.sources.nara import NaraRead

# file names taken for images (decoding itself sniffs the bytes, whatever the name)


def build_manifest(
    source: str,
    out: str,
    *,
    catalog: str | None = None,
    key: str | None = None,
    catalog_key: str | None = None,
    storage_options: dict | None = None,
) -> pa.Table:
    """Folder, glob or S3 prefix -> manifest. Ids are the paths relative to the source root,
    without extension, so they stay stable when files are added elsewhere.

    `catalog`: a CSV whose `key` column matches the image's relative path, file name or stem;
    its other columns ride along as metadata (e.g. the archive's own identifier and title)."""
    fs, path = resolve(source, storage_options)
    proto = "" if is_local(fs) else f"{source.split('://', 1)[0]}://"
    if has_wildcard(path):
        root = glob_root(path)
        files = sorted(fs.glob(path))
    else:
        if not fs.isdir(path):
            raise ManifestError(f"manifest build: {source} is neither a folder, a prefix nor a glob")
        root = path.rstrip("/")
        files = sorted(fs.find(path))
    files = [f for f in files if f.lower().endswith(IMAGE_SUFFIXES + VIDEO_SUFFIXES)]
    if not files:
        raise ManifestError(
            f"manifest build: no images ({', '.join(IMAGE_SUFFIXES)}) or reels ({', '.join(VIDEO_SUFFIXES)}) under {source}"
        )
    rel = [posixpath.relpath(f, root) for f in files]
    ids = [posixpath.splitext(r)[0] for r in rel]
    if len(set(ids)) != len(ids):  # a.jpg and a.png side by side: keep the extension in the id
        ids = rel
    table = pa.table({"id": ids, "uri": [proto + f for f in files], "path": rel})
    kinds = [kind_of(f) for f in files]
    if "video" in kinds:  # a column only where there are reels: image manifests stay as they were
        table = table.append_column("kind", pa.array(kinds, pa.string()))
    if catalog:
        table = _join_catalog(table, catalog, key, catalog_key)
    _write(table, out, storage_options)
    return table


# UNTRUSTED_ORIGIN, in the schema's key-value metadata: rows named by a document fetched
# from elsewhere, and the origin of that document (the only one --storage-options' headers
# may go to). `run` reads it and applies the URI policy (core/uripolicy.py) to every row.


def _write(table: pa.Table, out: str, storage_options: dict | None = None) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    fs, path = resolve(out, storage_options)
    atomic_write_bytes(path, sink.getvalue().to_pybytes(), fs=fs)


def _table(rows: list[dict], source: str, schema: pa.Schema | None = None) -> pa.Table:
    if not rows:
        raise ManifestError(f"manifest build: no images in {source}")
    return pa.Table.from_pylist(rows, schema=schema)


def build_from_iiif(
    source: str,
    out: str,
    *,
    max_size: int | None = None,
    storage_options: dict | None = None,
    allow: tuple[str, ...] = (),
    refused: list | None = None,
    unreachable: list | None = None,
) -> pa.Table:
    """A IIIF Presentation 3 or 2.1 Manifest or Collection -> manifest (one row per image).
    The images the URI policy left out are appended to `refused` as (JSON path, uri, rule),
    also when none is left and the build fails; collection members that could not be read,
    to `unreachable` (JSON path, uri, why)."""
    from archive_colorize.sources.iiif import document_policy, iiif_rows

    table = _table(iiif_rows(source, max_size, storage_options, allow, refused, unreachable), source)
    policy = document_policy(source, allow)
    if policy.untrusted:
        table = table.replace_schema_metadata({UNTRUSTED_ORIGIN: policy.trusted_origin.encode()})
    _write(table, out, storage_options)
    return table


def build_from_nara(
    source: str,
    out: str,
    *,
    include_restricted: bool = False,
    storage_options: dict | None = None,
    allow: tuple[str, ...] = (),
    refused: list | None = None,
) -> tuple[pa.Table, NaraRead]:
    """A NARA catalog export or API response -> (manifest, what was read and left out).
    An export read over http(s) is a remote document: as for IIIF (build_from_iiif)."""
    from archive_colorize.sources.iiif import document_policy
    from archive_colorize.sources.nara import SCHEMA, read_nara

    got = read_nara(source, include_restricted, storage_options, allow, refused)
    table = _table(got.rows, source, SCHEMA)
    policy = document_policy(source, allow)
    if policy.untrusted:
        table = table.replace_schema_metadata({UNTRUSTED_ORIGIN: policy.trusted_origin.encode()})
    _write(table, out, storage_options)
    return table, got


def is_iiif_source(source: str) -> bool:
    """http(s) URLs and .json files are IIIF documents; folders, globs and prefixes are scans."""
    return source.startswith(("http://", "https://")) or source.lower().endswith(".json")


def _join_catalog(table: pa.Table, catalog: str, key: str | None, catalog_key: str | None) -> pa.Table:
    import pyarrow.csv as pacsv

    with open_url(catalog) as f:
        cat = pacsv.read_csv(f)
    key = key or catalog_key
    if not key or key not in cat.column_names:
        raise ManifestError(
            f"catalog {catalog}: key column {key!r} not found (columns: {', '.join(cat.column_names)})"
        )
    cat = cat.cast(
        pa.schema([pa.field(n, pa.string()) if n == key else cat.schema.field(n) for n in cat.column_names])
    )
    keys = cat.column(key).to_pylist()
    lookup = {k: i for i, k in enumerate(keys)}
    match = []
    for r in table.column("path").to_pylist():
        name = posixpath.basename(r)
        match.append(next((lookup[c] for c in (r, name, posixpath.splitext(name)[0]) if c in lookup), None))
    extra = [n for n in cat.column_names if n != key]
    for n in extra:
        col = cat.column(n).to_pylist()
        target = n if n not in table.column_names else f"catalog_{n}"
        table = table.append_column(
            target, pa.array([col[i] if i is not None else None for i in match], cat.schema.field(n).type)
        )
    return table.append_column(
        f"catalog_{key}" if key in table.column_names else key,
        pa.array([keys[i] if i is not None else None for i in match], pa.string()),
    )
