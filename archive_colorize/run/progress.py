"""The append-only progress log: one small Parquet file per finished batch.

OUT/_progress/part-<time_ns>-<random>.parquet. Files are written atomically and never
modified, so a crash at any moment leaves a readable log; names sort chronologically,
so when an id appears twice (failed, then retried) the later row wins.
"""

from __future__ import annotations

import time
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archive_colorize.core.secrets import scrub_text, scrub_uri
from archive_colorize.core.storage import atomic_write_bytes, with_retries

PROGRESS = "_progress"
RESULTS = "results.parquet"
FLUSH_ROWS = 2048

RESULT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("uri", pa.string()),
        ("status", pa.string()),  # "done" | "failed"
        ("error", pa.string()),
        ("output_uri", pa.string()),
        ("width", pa.int64()),
        ("height", pa.int64()),
        ("input_sha256", pa.string()),
        ("output_sha256", pa.string()),
        ("scene_top5", pa.list_(pa.string())),
        ("scene_top5_prob", pa.list_(pa.float32())),
        ("weights_sha256", pa.string()),
        ("seconds", pa.float64()),
        ("mean_chroma", pa.float32()),
        ("chroma_gain", pa.float64()),  # what the a*b* was scaled by: row, run or weights
        ("node", pa.string()),  # the Ray node (id and host) that wrote the output
    ]
)


def _to_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def append(fs, out_root: str, table: pa.Table) -> str:
    path = f"{out_root}/{PROGRESS}/part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    atomic_write_bytes(path, _to_bytes(table), fs=fs)
    return path


def _parts(fs, out_root: str) -> list[str]:
    d = f"{out_root}/{PROGRESS}"
    if not fs.exists(d):
        return []
    return sorted(
        p
        for p in fs.ls(d, detail=False)
        if p.rsplit("/", 1)[-1].startswith("part-") and p.endswith(".parquet")
    )


def read_log(fs, out_root: str, columns: list[str] | None = None) -> pa.Table | None:
    tables = []
    for i, p in enumerate(_parts(fs, out_root)):
        with fs.open(p, "rb") as f:
            t = with_retries(lambda: pq.read_table(f, columns=columns), f"reading {p}")
        tables.append(t.append_column("_seq", pa.array([i] * t.num_rows, pa.int64())))
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive")


def latest_rows(log: pa.Table) -> pa.Table:
    """One row per id: the last one written."""
    log = log.append_column("_row", pa.array(range(log.num_rows), pa.int64()))
    last = log.group_by("id").aggregate([("_row", "max")]).column("_row_max")
    keep = pc.is_in(log.column("_row"), value_set=last)
    return log.filter(keep).drop_columns(["_row", "_seq"])


def status_by_id(fs, out_root: str) -> tuple[pa.Array, pa.Array]:
    """(ids whose latest row is done, ids whose latest row is failed)."""
    log = read_log(fs, out_root, columns=["id", "status"])
    if log is None:
        return pa.array([], pa.string()), pa.array([], pa.string())
    last = latest_rows(log)
    st = last.column("status")
    return (
        last.filter(pc.equal(st, "done")).column("id").combine_chunks(),
        last.filter(pc.equal(st, "failed")).column("id").combine_chunks(),
    )


def compact(fs, out_root: str, manifest_ids: pa.ChunkedArray | None = None) -> pa.Table:
    """Rebuild OUT/results.parquet from the log: exactly one row per processed id,
    restricted to the ids of the current manifest, sorted by id."""
    log = read_log(fs, out_root)
    if log is None:
        table = RESULT_SCHEMA.empty_table()
    else:
        table = latest_rows(log)
        if manifest_ids is not None:
            table = table.filter(pc.is_in(table.column("id"), value_set=manifest_ids.combine_chunks()))
        table = table.sort_by("id")
    atomic_write_bytes(f"{out_root}/{RESULTS}", _to_bytes(table), fs=fs)
    return table


def scrubbed(table: pa.Table) -> pa.Table:
    """No userinfo or signature parameter in what is written down (core/secrets.py): the
    progress log is what results.parquet, the IIIF manifest and the report are made from."""
    for name, fn in (
        ("uri", scrub_uri),
        ("style_uri", scrub_uri),
        ("output_uri", scrub_uri),
        ("error", scrub_text),
    ):
        if name in table.column_names:
            values = table.column(name).to_pylist()
            clean = [fn(v) for v in values]
            if clean != values:
                i = table.column_names.index(name)
                table = table.set_column(
                    i, table.schema.field(i), pa.array(clean, table.schema.field(i).type)
                )
    return table


class ProgressWriter:
    """Buffers finished rows; writes a progress file every FLUSH_ROWS rows or `every`
    seconds, whichever comes first: a file per batch would leave 100,000 small files on a
    big run (slow to resume from on S3), while a crash costs at most those seconds of work,
    redone with byte-identical results. `on_flush` runs after each file (the lock's refresh)."""

    def __init__(self, fs, out_root: str, out_url: str, every: float, on_flush=None):
        self.fs, self.out_root, self.out_url, self.every, self.on_flush = (
            fs,
            out_root,
            out_url,
            every,
            on_flush,
        )
        self.tables: list[pa.Table] = []
        self.rows = 0
        self.last = time.monotonic()

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        table = scrubbed(table)
        self.tables.append(table)
        self.rows += table.num_rows
        if self.rows >= FLUSH_ROWS or time.monotonic() - self.last >= self.every:
            self.flush()

    def flush(self) -> None:
        from archive_colorize.errors import RESUME_HINT, StorageError, one_line
        from archive_colorize.run.faults import crash_point

        if not self.tables:
            return
        table = pa.concat_tables(self.tables, promote_options="permissive")
        try:
            append(self.fs, self.out_root, table)
            if self.on_flush:
                self.on_flush()
        except (OSError, StorageError) as e:
            raise StorageError(
                f"cannot write to the output location {self.out_url} (progress log): {one_line(e)}",
                hint=RESUME_HINT,
            ) from None
        self.tables, self.rows, self.last = [], 0, time.monotonic()
        crash_point("progress-written")
