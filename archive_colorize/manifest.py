"""Parquet manifests: the schema, validation before any work, and `manifest build`.

Schema (manifests/README.md): `id` (string, unique, not null), `uri` (local path or fsspec
URL; relative paths are relative to the manifest's folder), optional `style_uri` and
`output_name`; every other column is the archive's own metadata, carried to the results.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import ManifestError
from .storage import is_local, resolve

REQUIRED = ("id", "uri")
OPTIONAL = ("style_uri", "output_name")
# Columns the pipeline writes into results.parquet; a manifest may not use these names
# for its own metadata, or they would be silently overwritten.
RESERVED = (
    "status", "error", "output_uri", "width", "height", "input_sha256", "output_sha256",
    "scene_top5", "scene_top5_prob", "weights_sha256", "seconds", "mean_chroma",
)
SHOW_ROWS = 5


@dataclass
class Manifest:
    url: str
    fs: object
    path: str
    num_rows: int
    ids: pa.ChunkedArray
    schema: pa.Schema

    @property
    def metadata_columns(self) -> list[str]:
        return [n for n in self.schema.names if n not in REQUIRED + OPTIONAL]

    @property
    def base_dir(self) -> str:
        """Relative `uri`s resolve against the manifest's own folder."""
        d = posixpath.dirname(self.path)
        return d if is_local(self.fs) else f"{self.url.split('://', 1)[0]}://{d}"


def _rows(mask: pa.ChunkedArray | pa.Array) -> list[int]:
    idx = pc.indices_nonzero(mask.combine_chunks() if isinstance(mask, pa.ChunkedArray) else mask)
    return idx.to_pylist()[:SHOW_ROWS]


def load_manifest(url: str, storage_options: dict | None = None) -> Manifest:
    """Read the schema and the id/uri columns; refuse anything that would fail later."""
    try:
        fs, path = resolve(url, storage_options)
    except Exception as e:
        raise ManifestError(f"cannot open manifest {url}: {e}") from None
    if not fs.exists(path):
        raise ManifestError(f"manifest not found: {url}")
    try:
        with fs.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            schema = pf.schema_arrow
            missing = [c for c in REQUIRED if c not in schema.names]
            if missing:
                raise ManifestError(
                    f"manifest {url} is missing required column(s) {', '.join(repr(m) for m in missing)} "
                    f"(it has: {', '.join(schema.names) or 'none'})"
                )
            cols = pf.read(columns=["id", "uri"])
    except ManifestError:
        raise
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ManifestError(f"manifest {url} is not a readable Parquet file: {first}") from None
    for name in ("id", "uri") + tuple(c for c in OPTIONAL if c in schema.names):
        t = schema.field(name).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise ManifestError(f"manifest column {name!r} must be string, not {t}")
    clash = [c for c in RESERVED if c in schema.names]
    if clash:
        raise ManifestError(f"manifest column(s) {', '.join(map(repr, clash))} clash with result columns; rename them")
    ids, uris = cols.column("id"), cols.column("uri")
    if ids.null_count:
        raise ManifestError(f"manifest column 'id' has {ids.null_count} null value(s), first at row(s) {_rows(pc.is_null(ids))}")
    empty = pc.equal(pc.utf8_length(ids), 0)
    if pc.any(empty).as_py():
        raise ManifestError(f"manifest column 'id' has empty value(s) at row(s) {_rows(empty)}")
    if uris.null_count or pc.any(pc.equal(pc.utf8_length(uris.fill_null("")), 0)).as_py():
        bad = pc.or_(pc.is_null(uris), pc.equal(pc.utf8_length(uris.fill_null("")), 0))
        raise ManifestError(f"manifest column 'uri' has null or empty value(s) at row(s) {_rows(bad)}")
    counts = pc.value_counts(ids)
    dup_mask = pc.greater(counts.field("counts"), 1)
    if pc.any(dup_mask).as_py():
        dups = counts.filter(dup_mask).field("values").to_pylist()[:SHOW_ROWS]
        rows = _rows(pc.is_in(ids, value_set=pa.array(dups, ids.type)))
        raise ManifestError(f"manifest column 'id' has duplicate value(s) {dups} at row(s) {rows}")
    return Manifest(url, fs, path, cols.num_rows, ids, schema)


# ---------------------------------------------------------------- output names


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 120


_HASHED = re.compile(r"-[0-9a-f]{8}$")


def safe_name(raw: str) -> str:
    """A file name that stays inside OUT/images whatever the id holds ('../', '/', NUL,
    unicode, 10 kB). A name that had to change gets 8 hex of the raw id's sha256 appended,
    so two ids never collide: 'a/b' -> 'a_b-1a2b3c4d', while a clean 'a_b' stays 'a_b'.
    A clean id that already ends like such a suffix gets one too, so no id can take the
    name another id was given."""
    clean = _UNSAFE.sub("_", raw).strip("._-")[:MAX_NAME] or "image"
    if clean != raw or _HASHED.search(clean):
        clean = f"{clean}-{hashlib.sha256(raw.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return clean


def output_names(ids: list[str], onames: list[str | None] | None = None) -> list[str]:
    """The file name (without extension) each row is written under."""
    return [safe_name(o or i) for i, o in zip(ids, onames or [None] * len(ids))]


def check_output_names(ids: list[str], onames: list[str | None] | None = None) -> None:
    """Refuse, before any work, names that would collide on a case-insensitive store
    (an SMB share, macOS): 'Photo' and 'photo' are different ids but one file there."""
    names = output_names(ids, onames)
    seen: dict[str, int] = {}
    for row, name in enumerate(names):
        first = seen.setdefault(name.casefold(), row)
        if first != row:
            col = "output_name" if onames and (onames[row] or onames[first]) else "id"
            raise ManifestError(
                f"manifest column {col!r}: rows {first} and {row} give output names that differ only in case "
                f"({names[first]!r} and {name!r})",
                hint="they would overwrite each other on a case-insensitive filesystem; make them differ in more than case",
            )


def expand_manifests(sources: list[str], storage_options: dict | None = None) -> list[str]:
    """Manifest files, folders and prefixes -> sorted manifest URLs (a folder or prefix means
    every *.parquet directly in it). Output folders (`*-out/`) are never mistaken for manifests."""
    urls: list[str] = []
    for src in sources:
        fs, path = resolve(src, storage_options)
        proto = "" if is_local(fs) else f"{src.split('://', 1)[0]}://"
        if fs.isdir(path):
            found = sorted(p for p in fs.ls(path, detail=False) if p.endswith(".parquet") and fs.isfile(p))
            if not found:
                raise ManifestError(f"no *.parquet manifests in {src}")
            urls += [f"{proto}{p}" for p in found]
        else:
            urls.append(src)
    return urls


# ---------------------------------------------------------------- manifest build


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif", ".jp2")


def build_manifest(source: str, out: str, *, catalog: str | None = None, key: str | None = None,
                   catalog_key: str | None = None, storage_options: dict | None = None) -> pa.Table:
    """Folder, glob or S3 prefix -> manifest. Ids are the paths relative to the source root,
    without extension, so they stay stable when files are added elsewhere.

    `catalog`: a CSV whose `key` column matches the image's relative path, file name or stem;
    its other columns ride along as metadata (e.g. the archive's own identifier and title)."""
    fs, path = resolve(source, storage_options)
    proto = "" if is_local(fs) else f"{source.split('://', 1)[0]}://"
    if any(ch in path for ch in "*?["):
        root = path.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0].rsplit("/", 1)[0]
        files = sorted(fs.glob(path))
    else:
        if not fs.isdir(path):
            raise ManifestError(f"manifest build: {source} is neither a folder, a prefix nor a glob")
        root = path.rstrip("/")
        files = sorted(fs.find(path))
    files = [f for f in files if f.lower().endswith(IMAGE_SUFFIXES)]
    if not files:
        raise ManifestError(f"manifest build: no images ({', '.join(IMAGE_SUFFIXES)}) under {source}")
    rel = [posixpath.relpath(f, root) for f in files]
    ids = [posixpath.splitext(r)[0] for r in rel]
    if len(set(ids)) != len(ids):  # a.jpg and a.png side by side: keep the extension in the id
        ids = rel
    table = pa.table({"id": ids, "uri": [proto + f for f in files], "path": rel})
    if catalog:
        table = _join_catalog(table, catalog, key, catalog_key)
    from .storage import atomic_write_bytes

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write_bytes(out, sink.getvalue().to_pybytes())
    return table


def _join_catalog(table: pa.Table, catalog: str, key: str | None, catalog_key: str | None) -> pa.Table:
    import pyarrow.csv as pacsv

    from .storage import open_url

    with open_url(catalog) as f:
        cat = pacsv.read_csv(f)
    key = key or catalog_key
    if not key or key not in cat.column_names:
        raise ManifestError(f"catalog {catalog}: key column {key!r} not found (columns: {', '.join(cat.column_names)})")
    cat = cat.cast(pa.schema([pa.field(n, pa.string()) if n == key else cat.schema.field(n) for n in cat.column_names]))
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
        table = table.append_column(target, pa.array([col[i] if i is not None else None for i in match], cat.schema.field(n).type))
    return table.append_column(f"catalog_{key}" if key in table.column_names else key, pa.array([keys[i] if i is not None else None for i in match], pa.string()))
