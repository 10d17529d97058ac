"""Parquet manifests: a dataset as the data world writes it, checked before any work.

A manifest is a Parquet file, a directory of part files (read recursively; Hive-style
`box=1/` folders become metadata columns), a glob, or any of these on S3. Spark, DuckDB,
polars and pandas all write such datasets, each with its own idea of a string.

Schema (manifests/README.md): `id` (string or integer, unique, not null), `uri` (local
path or fsspec URL; relative paths resolve against the manifest's folder), optional
`style_uri` and `output_name`; every other column is the archive's own metadata, carried
to the results with its type intact. Integer ids are used as their decimal strings.

The checks stream over only the columns they need, so a 10-million-row manifest is checked
in bounded memory: duplicates are found by 8-byte hashes, and only rows whose hash repeats
are looked at again (`benchmarks/manifest_check.py`).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from archive_colorize.core.defaults import MAX_CHROMA_GAIN
from archive_colorize.errors import ManifestError
from archive_colorize.core.storage import glob_root, has_wildcard, is_local, pa_filesystem, resolve

REQUIRED = ("id", "uri")
OPTIONAL = ("style_uri", "output_name", "kind")
TEXT_COLUMNS = ("id", "uri") + OPTIONAL
# An optional number per row: the chroma gain for that scan (weights calibrate), where an
# archivist wants one series warmer or plainer than the run's gain. Null: the run's gain.
GAIN_COLUMN = "chroma_gain"
# Columns the pipeline writes into results.parquet; a manifest may not use these names
# for its own metadata, or they would be silently overwritten.
RESERVED = (
    "status",
    "error",
    "output_uri",
    "width",
    "height",
    "input_sha256",
    "output_sha256",
    "scene_top5",
    "scene_top5_prob",
    "weights_sha256",
    "seconds",
    "mean_chroma",
    "node",
    # a reel's row (run/reels.py)
    "frames",
    "shots",
    "fps",
    "temporal",
    "warp_error",
    "video_outputs",
    "frames_per_second",
)
SHOW_ROWS = 5
CHECK_BATCH = 256 * 1024  # rows per streamed batch: ~20 MB of id and uri text
HASHES_PER_PASS = 4_000_000  # 32 MB of 8-byte hashes: the duplicate check's memory, at any size
STRING_TYPES = "string, large_string, string_view or dictionary<string>"


# ---------------------------------------------------------------- types


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or getattr(pa.types, "is_string_view", lambda _: False)(t)
    )


def _check_type(name: str, t: pa.DataType) -> None:
    if _is_text(t) or (name == "id" and pa.types.is_integer(t)):
        return
    accepted = STRING_TYPES + (", or an integer type" if name == "id" else "")
    raise ManifestError(f"manifest column {name!r} has type {t}; accepted: {accepted}")


def normalize(batch: pa.Table, schema: pa.Schema) -> pa.Table:
    """A batch as any writer produced it -> the manifest's one schema: the text columns as
    plain strings, every other column in the type the manifest declares (a part file that
    lacks a column, or holds it as all-null, gets it as nulls of that type)."""
    cols = []
    for f in schema:
        if f.name in batch.column_names:
            c = batch.column(f.name)
            cols.append(c if c.type == f.type else c.cast(f.type))
        else:
            cols.append(pa.nulls(batch.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


# ---------------------------------------------------------------- the dataset


# set by manifest_build on rows from a document fetched over http(s): its origin
UNTRUSTED_ORIGIN = b"archive_colorize.untrusted_origin"


@dataclass
class Manifest:
    url: str
    fs: object
    root: str  # the file itself, or the folder the dataset's partition paths start at
    files: list[str]  # the Parquet files, in reading order
    partitions: pa.Schema  # Hive partition columns, typed as pyarrow infers them
    source_schema: pa.Schema  # as written, partition columns included
    num_rows: int
    int_ids: bool = False  # `id` was an integer column, used as decimal strings
    schema: pa.Schema = field(init=False)  # what every batch is normalized to

    def __post_init__(self):
        self.schema = pa.schema(
            [pa.field(f.name, pa.string()) if f.name in TEXT_COLUMNS else f for f in self.source_schema]
        )

    @property
    def is_dataset(self) -> bool:
        return len(self.files) != 1 or self.files[0] != self.root

    @property
    def metadata_columns(self) -> list[str]:
        return [n for n in self.schema.names if n not in REQUIRED + OPTIONAL + (GAIN_COLUMN,)]

    @property
    def untrusted_origin(self) -> str | None:
        """Set when `manifest build` made the rows from a document fetched over http(s):
        that document's origin. `run` then applies the URI policy to every row."""
        value = (self.source_schema.metadata or {}).get(UNTRUSTED_ORIGIN)
        return value.decode() if value else None

    @property
    def base_dir(self) -> str:
        """Relative `uri`s resolve against the manifest's own folder (a directory
        manifest: that directory)."""
        d = self.root if self.is_dataset else posixpath.dirname(self.root)
        return d if is_local(self.fs) else f"{self.url.split('://', 1)[0]}://{d}"

    def partition_values(self, path: str) -> dict[str, pa.Scalar]:
        """`.../box=1/part-0.parquet` -> {"box": 1}, typed as the manifest declares."""
        from urllib.parse import unquote

        values = {}
        for seg in posixpath.relpath(path, self.root).split("/")[:-1]:
            key, eq, raw = seg.partition("=")
            if eq and key in self.partitions.names:
                raw = None if raw == "__HIVE_DEFAULT_PARTITION__" else unquote(raw)
                values[key] = pa.array([raw], pa.string()).cast(self.partitions.field(key).type)[0]
        return values

    def batches(self, columns: list[str], batch_size: int = CHECK_BATCH) -> Iterator[pa.Table]:
        """Stream the named columns, normalized, file by file in manifest order. Read with
        ParquetFile.iter_batches, one row group at a time: the dataset scanner's read-ahead
        made memory grow with the row count."""
        sub = pa.schema([self.schema.field(c) for c in columns])
        for path in self.files:
            parts = self.partition_values(path)
            with self.fs.open(path, "rb") as f:
                pf = pq.ParquetFile(f)
                present = [c for c in columns if c in pf.schema_arrow.names]
                for b in pf.iter_batches(batch_size=batch_size, columns=present):
                    t = pa.Table.from_batches([b])
                    for c in columns:
                        if c in parts:
                            t = t.append_column(c, pa.array([parts[c].as_py()] * t.num_rows, parts[c].type))
                    yield normalize(t, sub)

    def fingerprint(self) -> str:
        """sha256 of the content: a file's bytes; for a dataset, each part file's path
        (relative to the root) and the sha256 of its bytes."""
        if not self.is_dataset:
            return hashlib.sha256(self.fs.cat_file(self.root)).hexdigest()
        h = hashlib.sha256()
        for path in self.files:
            h.update(posixpath.relpath(path, self.root).encode() + b"\0")
            h.update(hashlib.sha256(self.fs.cat_file(path)).digest())
        return h.hexdigest()

    def column(self, name: str) -> pa.ChunkedArray:
        chunks = [b.column(name) for b in self.batches([name])]
        return pa.chunked_array([c for ch in chunks for c in ch.chunks], self.schema.field(name).type)

    @cached_property
    def ids(self) -> pa.ChunkedArray:
        """Every id as a string (read on first use: `manifest check` never needs them all)."""
        return self.column("id")


def default_out(manifest_url: str) -> str:
    """`m.parquet` -> `m-out`, `m/` -> `m-out`, `m/*.parquet` -> `m-out`: beside the
    manifest, in the same folder or bucket prefix."""
    base = manifest_url.rstrip("/")
    if has_wildcard(base):
        base = glob_root(base)
    elif base.endswith(".parquet"):
        base = base[: -len(".parquet")]
    return base.rstrip("/") + "-out"


def _visible(rel: str) -> bool:
    # Spark's _SUCCESS and _committed_*, checksum files (.crc), editors' dot files
    return not any(part.startswith(("_", ".")) for part in rel.split("/"))


def locate(url: str, storage_options: dict | None = None) -> tuple[object, str, list[str]]:
    """-> (fs, root, files): a file, a directory (recursive), or a glob."""
    try:
        fs, path = resolve(url, storage_options)
    except Exception as e:
        raise ManifestError(f"cannot open manifest {url}: {e}") from None
    path = path.rstrip("/") or "/"
    if has_wildcard(path):
        root = glob_root(path)
        files = sorted(p for p in fs.glob(path) if p.endswith(".parquet") and fs.isfile(p))
        if not files:
            raise ManifestError(f"manifest {url}: no Parquet files match")
        return fs, root, files
    if not fs.exists(path):
        raise ManifestError(f"manifest not found: {url}")
    if fs.isdir(path):
        files = sorted(
            p for p in fs.find(path) if p.endswith(".parquet") and _visible(posixpath.relpath(p, path))
        )
        if not files:
            raise ManifestError(f"manifest {url} is a directory with no *.parquet files in it")
        return fs, path, files
    return fs, path, [path]


def _read_schema(fs, files: list[str], url: str) -> tuple[pa.Schema, int]:
    schemas, rows, untrusted = [], 0, None
    for p in files:
        try:
            with fs.open(p, "rb") as f:
                meta = pq.ParquetFile(f).metadata
                arrow = meta.schema.to_arrow_schema()
                # one part built from a remote document makes the whole manifest untrusted
                untrusted = untrusted or (arrow.metadata or {}).get(UNTRUSTED_ORIGIN)
                schemas.append(arrow.remove_metadata())
                rows += meta.num_rows
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            where = url if len(files) == 1 else f"{url} (part file {p})"
            raise ManifestError(f"manifest {where} is not a readable Parquet file: {first}") from None
    try:
        # part files of one export may differ: a column all-null (type null) in one part
        unified = pa.unify_schemas(schemas, promote_options="permissive")
        return (unified.with_metadata({UNTRUSTED_ORIGIN: untrusted}) if untrusted else unified), rows
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ManifestError(
            f"manifest {url}: its part files have conflicting schemas: {str(e).splitlines()[0]}"
        ) from None


def open_manifest(url: str, storage_options: dict | None = None) -> Manifest:
    """Find the files and the schema; check the columns and their types (no rows read)."""
    fs, root, files = locate(url, storage_options)
    schema, num_rows = _read_schema(fs, files, url)
    partitions = pa.schema([])
    keys = {
        seg.split("=", 1)[0]
        for p in files
        if p != root
        for seg in posixpath.relpath(p, root).split("/")[:-1]
        if "=" in seg
    }
    if keys:
        part = pads.HivePartitioning.discover(infer_dictionary=False)
        found = pads.dataset(
            files, format="parquet", filesystem=pa_filesystem(fs), partitioning=part, partition_base_dir=root
        ).partitioning.schema
        partitions = pa.schema([f for f in found if f.name in keys])  # (with no keys it lists every column)
        clash = [f.name for f in partitions if f.name in schema.names]
        if clash:
            raise ManifestError(
                f"manifest {url}: partition folder(s) {clash} repeat a column of the part files"
            )
        for f in partitions:
            schema = schema.append(f)
    missing = [c for c in REQUIRED if c not in schema.names]
    if missing:
        raise ManifestError(
            f"manifest {url} is missing required column(s) {', '.join(repr(m) for m in missing)} "
            f"(it has: {', '.join(schema.names) or 'none'})"
        )
    for name in TEXT_COLUMNS:
        if name in schema.names:
            _check_type(name, schema.field(name).type)
    if GAIN_COLUMN in schema.names:
        t = schema.field(GAIN_COLUMN).type
        if not (
            pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t) or pa.types.is_null(t)
        ):
            raise ManifestError(
                f"manifest column {GAIN_COLUMN!r} has type {t}; accepted: a number type (float or integer)"
            )
    clash = [c for c in RESERVED if c in schema.names]
    if clash:
        raise ManifestError(
            f"manifest column(s) {', '.join(map(repr, clash))} clash with result columns; rename them"
        )
    return Manifest(
        url, fs, root, files, partitions, schema, num_rows, pa.types.is_integer(schema.field("id").type)
    )


def load_manifest(url: str, storage_options: dict | None = None) -> Manifest:
    """Open and check everything that would fail later, before any work starts."""
    m = open_manifest(url, storage_options)
    check_rows(m)
    return m


# ---------------------------------------------------------------- streaming checks


def _where(m: Manifest, rows: list[int]) -> str:
    return f"row(s) {rows}" + ("" if not m.is_dataset else " (counted across the part files in name order)")


def _first(mask: pa.Array, offset: int, room: int) -> list[int]:
    return [offset + i for i in pc.indices_nonzero(mask).to_pylist()[:room]]


def _hash(text: pa.Array) -> np.ndarray:
    from pandas.util import hash_array  # pandas comes with Ray Data

    return hash_array(text.to_numpy(zero_copy_only=False), categorize=False)


def _repeats(hashes: np.ndarray) -> np.ndarray:
    hashes.sort()
    return np.unique(hashes[1:][hashes[1:] == hashes[:-1]])  # 64-bit: a chance repeat in 10M rows is ~3e-6


def _hashes(b: pa.Table, has_oname: bool) -> tuple[np.ndarray, np.ndarray]:
    """(hash of each id, hash of each case-folded output name). Without an output_name
    column equal ids give equal names, so one hash serves both."""
    ids = b.column("id").combine_chunks().fill_null("")
    onames = b.column("output_name").combine_chunks() if has_oname else None
    names = _hash(_folded_names(ids, onames))
    return (_hash(ids) if has_oname else names), names


def check_rows(m: Manifest) -> None:
    """Nulls, empty values, duplicate ids and colliding output names, streaming over only
    the needed columns. Memory is bounded whatever the row count: each pass keeps the 8-byte
    hashes of one slice of hash space (about HASHES_PER_PASS of them); only rows whose hash
    repeats are read again, to tell a real repeat from a chance one."""
    has_oname = "output_name" in m.schema.names
    has_gain = GAIN_COLUMN in m.schema.names and not pa.types.is_null(m.schema.field(GAIN_COLUMN).type)
    columns = ["id", "uri"] + (["output_name"] if has_oname else []) + ([GAIN_COLUMN] if has_gain else [])
    bad_gains: list[int] = []
    passes = max(1, -(-m.num_rows // HASHES_PER_PASS))
    id_suspects, name_suspects = [], []
    for p in range(passes):
        id_parts, name_parts = [], []
        null_ids, empty_ids, bad_uris, nulls, offset = [], [], [], 0, 0
        for b in m.batches(columns):
            if p == 0:
                ids, uris = b.column("id").combine_chunks(), b.column("uri").combine_chunks()
                nulls += ids.null_count
                if ids.null_count and len(null_ids) < SHOW_ROWS:
                    null_ids += _first(pc.is_null(ids), offset, SHOW_ROWS - len(null_ids))
                empty = pc.equal(pc.utf8_length(ids), 0).fill_null(False)
                if len(empty_ids) < SHOW_ROWS and pc.any(empty).as_py():
                    empty_ids += _first(empty, offset, SHOW_ROWS - len(empty_ids))
                bad = pc.equal(pc.utf8_length(uris.fill_null("")), 0)
                if len(bad_uris) < SHOW_ROWS and pc.any(bad).as_py():
                    bad_uris += _first(bad, offset, SHOW_ROWS - len(bad_uris))
                if has_gain and len(bad_gains) < SHOW_ROWS:
                    g = b.column(GAIN_COLUMN).combine_chunks().cast(pa.float64())
                    ok = pc.and_(pc.greater(g, 0.0), pc.less_equal(g, MAX_CHROMA_GAIN))  # NaN compares false
                    bad = pc.invert(ok).fill_null(False)
                    if pc.any(bad).as_py():
                        bad_gains += _first(bad, offset, SHOW_ROWS - len(bad_gains))
            ih, nh = _hashes(b, has_oname)
            name_parts.append(nh[nh % passes == p])
            if has_oname:
                id_parts.append(ih[ih % passes == p])
            offset += b.num_rows
        if null_ids:
            raise ManifestError(
                f"manifest column 'id' has {nulls} null value(s), first at {_where(m, null_ids)}"
            )
        if empty_ids:
            raise ManifestError(f"manifest column 'id' has empty value(s) at {_where(m, empty_ids)}")
        if bad_uris:
            raise ManifestError(f"manifest column 'uri' has null or empty value(s) at {_where(m, bad_uris)}")
        if bad_gains:
            raise ManifestError(
                f"manifest column {GAIN_COLUMN!r} must be above 0 and at most {MAX_CHROMA_GAIN:g} "
                f"(or null for the run's gain); not at {_where(m, bad_gains)}"
            )
        name_suspects.append(_repeats(np.concatenate(name_parts) if name_parts else np.empty(0, np.uint64)))
        del name_parts
        if has_oname:
            id_suspects.append(_repeats(np.concatenate(id_parts) if id_parts else np.empty(0, np.uint64)))
    names = np.concatenate(name_suspects)
    ids = np.concatenate(id_suspects) if has_oname else names
    if len(ids):
        dups = _confirm(m, ids, lambda b: _hashes(b, has_oname)[0], lambda b: b.column("id").to_pylist())
        if dups:
            values = list(dups)[:SHOW_ROWS]
            rows = sorted(r for v in values for r in dups[v])[:SHOW_ROWS]
            raise ManifestError(f"manifest column 'id' has duplicate value(s) {values} at {_where(m, rows)}")
    if len(names):

        def folded(b):
            return _folded_names(
                b.column("id").combine_chunks(),
                b.column("output_name").combine_chunks() if has_oname else None,
            ).to_pylist()

        clashes = _confirm(m, names, lambda b: _hashes(b, has_oname)[1], folded)
        if clashes:
            _report_name_clash(m, sorted(next(iter(clashes.values())))[:2], has_oname)


def _confirm(m: Manifest, suspects: np.ndarray, hash_of, key) -> dict:
    """Another pass, keeping only rows whose hash is a suspect: {value: [rows]} of real repeats."""
    seen: dict = {}
    columns = ["id"] + (["output_name"] if "output_name" in m.schema.names else [])
    offset = 0
    for b in m.batches(columns):
        local = np.flatnonzero(np.isin(hash_of(b), suspects))
        if len(local):
            for row, v in zip((local + offset).tolist(), key(b.take(pa.array(local)))):
                seen.setdefault(v, []).append(row)
        offset += b.num_rows
    return {v: rows for v, rows in seen.items() if len(rows) > 1}


def _report_name_clash(m: Manifest, rows: list[int], has_oname: bool) -> None:
    cols = ["id"] + (["output_name"] if has_oname else [])
    picked, offset = [], 0
    for b in m.batches(cols):
        picked += [b.slice(r - offset, 1) for r in rows if offset <= r < offset + b.num_rows]
        offset += b.num_rows
    t = pa.concat_tables(picked)
    ids = t.column("id").to_pylist()
    onames = t.column("output_name").to_pylist() if has_oname else [None, None]
    a, b = (safe_name(o or i) for i, o in zip(ids, onames))
    if has_oname and onames[0] and onames[0] == onames[1]:
        raise ManifestError(
            f"manifest column 'output_name' has duplicate value(s) {[onames[0]]} at {_where(m, rows)}"
        )
    col = "output_name" if has_oname and (onames[0] or onames[1]) else "id"
    raise ManifestError(
        f"manifest column {col!r}: rows {rows[0]} and {rows[1]} give output names that differ only in case "
        f"({a!r} and {b!r})"
        if a != b
        else f"manifest column {col!r}: rows {rows[0]} and {rows[1]} give the same output name {a!r}",
        hint="they would overwrite each other on a case-insensitive filesystem; make them differ in more than case",
    )


# ---------------------------------------------------------------- output names


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 120
_HASHED = re.compile(r"-[0-9a-f]{8}$")
# names Windows reserves for devices, with or without an extension: OUT may be read on Windows
_RESERVED = r"(?i)^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$"
# an id that safe_name leaves as it is (checked in Arrow, so only odd ids reach Python)
_CLEAN = r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,118}[A-Za-z0-9])?$"


def safe_name(raw: str) -> str:
    """A file name that stays inside OUT/images whatever the id holds ('../', '/', NUL,
    unicode, 10 kB). A name that had to change gets 8 hex of the raw id's sha256 appended,
    so two ids never collide: 'a/b' -> 'a_b-1a2b3c4d', while a clean 'a_b' stays 'a_b'.
    A clean id that already ends like such a suffix gets one too, so no id can take the
    name another id was given."""
    clean = _UNSAFE.sub("_", raw).strip("._-")[:MAX_NAME] or "image"
    if clean != raw or _HASHED.search(clean) or re.match(_RESERVED, clean):
        clean = f"{clean}-{hashlib.sha256(raw.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"
    return clean


def _folded_names(ids: pa.Array, onames: pa.Array | None) -> pa.Array:
    """Each row's output file name, case-folded (safe names are ASCII, so lower() folds)."""
    raw = ids if onames is None else pc.coalesce(pc.if_else(pc.equal(onames, ""), None, onames), ids)
    clean = pc.and_(
        pc.and_(
            pc.match_substring_regex(raw, _CLEAN), pc.invert(pc.match_substring_regex(raw, r"-[0-9a-f]{8}$"))
        ),
        pc.invert(pc.match_substring_regex(raw, _RESERVED)),
    )
    odd = pc.indices_nonzero(pc.invert(clean)).to_pylist()
    if odd:
        fixed = raw.to_pylist()
        for i in odd:
            fixed[i] = safe_name(fixed[i])
        raw = pa.array(fixed, pa.string())
    return pc.utf8_lower(raw)


def expand_manifests(sources: list[str], storage_options: dict | None = None) -> list[str]:
    """`submit`'s arguments -> one manifest each. A file or a directory is one manifest (a
    directory is a partitioned dataset); a glob is one manifest per file it matches."""
    urls: list[str] = []
    for src in sources:
        if has_wildcard(src):
            fs, root, files = locate(src, storage_options)
            proto = "" if is_local(fs) else f"{src.split('://', 1)[0]}://"
            urls += [f"{proto}{p}" for p in files]
        else:
            urls.append(src)
    return urls
