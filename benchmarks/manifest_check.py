"""`manifest check` on big generated manifests: time and peak memory at 1M and 10M rows.

    python benchmarks/manifest_check.py [--rows 1000000 10000000] [--repeats 3]

Each manifest is written once (NARA-like ids and S3 uris plus two metadata columns, the
10M one as 10 part files in a directory, as Spark writes it). Each measurement runs in a
fresh process, and memory is its peak RSS above what the process held once everything was
imported. The baseline, in the same run, is what a check that
holds the columns does: read `id` and `uri` whole and count values
(`pyarrow.compute.value_counts`). Writes benchmarks/results/manifest_check.json."""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, write  # noqa: E402

CHILD = r"""
import json, sys, time
kind, path, bench = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, bench)
from common import PeakRSS, rss_mb
import pyarrow.compute as pc, pyarrow.dataset as ds
from archive_colorize import load_manifest
import pandas.util
before = rss_mb()  # everything imported
t = time.perf_counter()
with PeakRSS() as peak:
    if kind == "streaming":
        rows = load_manifest(path).num_rows
    else:
        cols = ds.dataset(path, format="parquet").to_table(columns=["id", "uri"])
        counts = pc.value_counts(cols.column("id"))
        assert pc.max(counts.field("counts")).as_py() == 1 and cols.column("uri").null_count == 0
        rows = cols.num_rows
print(json.dumps({"rows": rows, "s": time.perf_counter() - t, "peak_mb": peak.peak, "above_imports_mb": peak.peak - before}))
"""


def make(rows: int, folder: Path) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    parts = 10 if rows >= 10_000_000 else 1
    target = folder / f"m{rows}" if parts > 1 else folder / f"m{rows}.parquet"
    if target.exists():
        return target
    per = rows // parts
    for p in range(parts):
        n = np.arange(p * per, (p + 1) * per, dtype=np.int64)
        num = pa.array(n).cast(pa.string())
        t = pa.table(
            {
                "id": pc.binary_join_element_wise("NARA-", num, ""),
                "uri": pc.binary_join_element_wise(
                    "s3://archive/scans/box-", pa.array(n // 1000).cast(pa.string()), "/", num, ".tif", ""
                ),
                "record_group": pa.array(n % 500, pa.int32()),
                "title": pc.binary_join_element_wise("Photograph ", num, ""),
            }
        )
        if parts > 1:
            target.mkdir(exist_ok=True)
            pq.write_table(t, target / f"part-{p:05d}.parquet", row_group_size=1 << 20)
        else:
            pq.write_table(t, target, row_group_size=1 << 20)
    return target


def measure(kind: str, path: Path) -> dict:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(path), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    results, rows_out = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            path = make(n, Path(tmp))
            runs = {"streaming": [], "hold_columns": []}
            for _ in range(args.repeats):  # interleaved, so drift hits both alike
                for kind in runs:
                    runs[kind].append(measure(kind, path))
            for kind, rs in runs.items():
                assert all(r["rows"] == n for r in rs)
                rec = {
                    "rows": n,
                    "check": kind,
                    "seconds_median": statistics.median(r["s"] for r in rs),
                    "seconds_all": [round(r["s"], 3) for r in rs],
                    "peak_mb_median": statistics.median(r["peak_mb"] for r in rs),
                    "above_imports_mb": statistics.median(r["above_imports_mb"] for r in rs),
                }
                results.append(rec)
            s, h = (
                next(r for r in results if r["rows"] == n and r["check"] == k)
                for k in ("streaming", "hold_columns")
            )
            rows_out.append(
                {
                    "rows": n,
                    "s": s["seconds_median"],
                    "s_mb": s["above_imports_mb"],
                    "h": h["seconds_median"],
                    "h_mb": h["above_imports_mb"],
                    "t_ratio": s["seconds_median"] / h["seconds_median"],
                    "m_ratio": s["above_imports_mb"] / h["above_imports_mb"],
                }
            )
    print(
        table(
            rows_out,
            [
                ("rows", "rows", ","),
                ("s", "streaming check s", ".1f"),
                ("s_mb", "MB above imports", ".0f"),
                ("h", "hold-columns s", ".1f"),
                ("h_mb", "MB above imports", ".0f"),
                ("t_ratio", "time ratio", ".2f"),
                ("m_ratio", "memory ratio", ".2f"),
            ],
        )
    )
    write("manifest_check", {"machine": machine(), "repeats": args.repeats, "results": results})


if __name__ == "__main__":
    main()
