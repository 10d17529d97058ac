"""Manifests as the data world writes them: DuckDB (a Hive-partitioned directory, BIGINT
ids, timestamps with time zone), polars (large strings, lists, structs, all-null columns)
and pandas (categorical columns), each written by the real library, then checked and run
locally and on S3 (moto), with their metadata types intact in results.parquet."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from archive_colorize.apps.cli import app
from archive_colorize.errors import ManifestError
from archive_colorize.sources.manifest import default_out, load_manifest
from archive_colorize.run.pipeline import RunOptions, run

from .reliability.conftest import tiny_scans

duckdb = pytest.importorskip("duckdb", reason="a test dependency: pip install -e '.[test]'")
pl = pytest.importorskip("polars", reason="a test dependency: pip install -e '.[test]'")
pd = pytest.importorskip("pandas", reason="a test dependency: pip install -e '.[test]'")

N = 6
WORKING = 64


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("writer-scans")
    t = pq.read_table(tiny_scans(d, N, seed=17))
    return [str(d / u) for u in t.column("uri").to_pylist()]


def duckdb_dataset(folder, scans) -> None:
    """`COPY ... (PARTITION_BY (box))`: box=0/, box=1/ folders of part files."""
    con = duckdb.connect()
    con.execute("CREATE TABLE scans (naId BIGINT, uri VARCHAR, box INTEGER, catalogued TIMESTAMPTZ)")
    con.executemany(
        "INSERT INTO scans VALUES (?, ?, ?, TIMESTAMPTZ '2026-11-30 10:00:00+00' + INTERVAL (?) HOUR)",
        [(5_000_000_000 + i, u, i % 2, i) for i, u in enumerate(scans)],
    )
    con.execute(
        f"COPY (SELECT naId AS id, uri, box, catalogued FROM scans) TO '{folder}' (FORMAT parquet, PARTITION_BY (box))"
    )
    con.close()


def polars_file(path, scans) -> None:
    pl.DataFrame(
        {
            "id": [f"p{i}" for i in range(len(scans))],
            "uri": scans,
            "subjects": [["farm", "people"] if i % 2 else [] for i in range(len(scans))],
            "physical": [{"width_cm": 20.3 + i, "medium": "gelatin silver"} for i in range(len(scans))],
            "notes": [None] * len(scans),
        }
    ).write_parquet(path)


def pandas_file(path, scans) -> None:
    pd.DataFrame(
        {
            "id": pd.Categorical([f"c{i}" for i in range(len(scans))]),
            "uri": pd.Categorical(scans),
            "series": pd.Categorical(["FSA"] * len(scans)),
            "year": [1936 + i for i in range(len(scans))],
        }
    ).to_parquet(path)


def written(kind: str, folder, scans):
    if kind == "duckdb":
        target = folder / "duck"
        duckdb_dataset(target, scans)
    elif kind == "polars":
        target = folder / "polars.parquet"
        polars_file(target, scans)
    else:
        target = folder / "pandas.parquet"
        pandas_file(target, scans)
    return target


EXPECT = {
    # column -> type in results.parquet (the writer's own type; partitions as pyarrow infers them)
    "duckdb": {"box": pa.int32(), "catalogued": pa.timestamp("us", tz="UTC")},
    "polars": {
        "subjects": pa.large_list(pa.large_string()),
        "notes": pa.null(),
        "physical": pa.struct([("width_cm", pa.float64()), ("medium", pa.large_string())]),
    },
    "pandas": {"series": pa.dictionary(pa.int8(), pa.string()), "year": pa.int64()},
}


def check_results(kind: str, results: pa.Table, scans) -> None:
    assert results.num_rows == N and set(results.column("status").to_pylist()) == {"done"}
    assert results.schema.field("id").type == pa.string()
    for col, t in EXPECT[kind].items():
        assert results.schema.field(col).type == t, (col, results.schema.field(col).type)
    rows = {r["id"]: r for r in results.to_pylist()}
    if kind == "duckdb":
        assert sorted(rows) == [str(5_000_000_000 + i) for i in range(N)]  # BIGINT ids, as decimal strings
        assert all(rows[str(5_000_000_000 + i)]["box"] == i % 2 for i in range(N))
        assert rows["5000000003"]["catalogued"].hour == 13
    elif kind == "polars":
        assert rows["p1"]["subjects"] == ["farm", "people"] and rows["p2"]["subjects"] == []
        assert rows["p3"]["physical"] == {"width_cm": 23.3, "medium": "gelatin silver"}
    else:
        assert rows["c2"]["series"] == "FSA" and rows["c2"]["year"] == 1938
        assert rows["c2"]["uri"] == scans[2]


@pytest.mark.parametrize("kind", ["duckdb", "polars", "pandas"])
def test_real_writers_check_and_run_locally(kind, ray_cluster, weights_path, scans, tmp_path):
    target = written(kind, tmp_path, scans)
    r = CliRunner().invoke(app, ["manifest", "check", str(target)])
    assert r.exit_code == 0, r.output
    files = " in 2 files" if kind == "duckdb" else ""
    ids = " (integer ids, used as their decimal strings)" if kind == "duckdb" else ""
    assert r.output.startswith(f"{target}: {N} rows{files} OK{ids}; metadata columns: "), r.output
    s = run(RunOptions(manifest=str(target), weights=str(weights_path), working_size=WORKING, batch_size=4))
    assert s.out == default_out(str(target)) and (s.done, s.failed) == (N, 0)
    check_results(kind, pq.read_table(f"{s.out}/results.parquet"), scans)
    if kind == "duckdb":
        import json

        assert s.out == str(tmp_path / "duck-out")
        assert json.loads((tmp_path / "duck-out" / "run.json").read_text())["ids"].startswith("integers")


def test_real_writers_on_s3(ray_cluster, weights_path, scans, s3, s3_server, tmp_path):
    s3.mkdir("writers")
    for kind in ("duckdb", "polars", "pandas"):
        local = written(kind, tmp_path, scans)
        url = f"s3://writers/manifests/{local.name}"
        s3.put(str(local), url, recursive=True)
        s3.invalidate_cache()
        assert load_manifest(url, s3_server).num_rows == N
        s = run(
            RunOptions(
                manifest=url,
                weights=str(weights_path),
                working_size=WORKING,
                batch_size=4,
                storage_options=s3_server,
            )
        )
        assert s.out == default_out(url) and (s.done, s.failed) == (N, 0)
        s3.invalidate_cache()
        with s3.open(f"{s.out}/results.parquet", "rb") as f:
            check_results(kind, pq.read_table(f), scans)


def test_resume_on_a_directory_manifest(ray_cluster, weights_path, scans, tmp_path):
    target = written("duckdb", tmp_path, scans)
    first = run(RunOptions(manifest=str(target), weights=str(weights_path), working_size=WORKING, limit=2))
    assert first.processed_now == 2
    rest = run(RunOptions(manifest=str(target), weights=str(weights_path), working_size=WORKING))
    assert (rest.processed_now, rest.skipped, rest.done) == (N - 2, 2, N)


def test_partitioned_directory_from_spark_layout(tmp_path):
    """Spark's layout: _SUCCESS and .crc files beside the parts are not part of the data;
    string partition values stay strings."""
    d = tmp_path / "spark"
    for coll in ("fsa", "owi"):
        (d / f"collection={coll}").mkdir(parents=True)
        pq.write_table(
            pa.table({"id": [f"{coll}-1", f"{coll}-2"], "uri": ["a.jpg", "b.jpg"]}),
            d / f"collection={coll}" / "part-00000-1f2e.snappy.parquet",
        )
        (d / f"collection={coll}" / ".part-00000-1f2e.snappy.parquet.crc").write_bytes(b"crc")
    (d / "_SUCCESS").write_bytes(b"")
    m = load_manifest(str(d))
    assert m.num_rows == 4 and len(m.files) == 2 and m.metadata_columns == ["collection"]
    assert m.schema.field("collection").type == pa.string()
    assert m.base_dir == str(d)  # relative uris resolve against the dataset's folder
    assert default_out(str(d) + "/") == str(d) + "-out"


def test_dataset_errors_name_the_row_across_part_files(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    pq.write_table(pa.table({"id": ["a", "b"], "uri": ["1", "2"]}), d / "part-0.parquet")
    pq.write_table(pa.table({"id": ["c", "a"], "uri": ["3", "4"]}), d / "part-1.parquet")
    with pytest.raises(
        ManifestError,
        match=r"^manifest column 'id' has duplicate value\(s\) \['a'\] at row\(s\) \[0, 3\] "
        r"\(counted across the part files in name order\)$",
    ):
        load_manifest(str(d))
    shutil.rmtree(d)
    d.mkdir()
    (d / "README").write_text("no parquet here")
    with pytest.raises(ManifestError, match="is a directory with no \\*.parquet files in it$"):
        load_manifest(str(d))
    pq.write_table(pa.table({"id": ["a"], "uri": ["1"]}), d / "part-0.parquet")
    pq.write_table(pa.table({"id": [1.5], "uri": ["2"]}), d / "part-1.parquet")
    with pytest.raises(ManifestError, match="part files have conflicting schemas"):
        load_manifest(str(d))


def test_the_check_in_several_passes_finds_the_same_faults(tmp_path, monkeypatch):
    """Big manifests are checked a slice of hash space at a time; force many passes here."""
    import archive_colorize.sources.manifest as manifest

    monkeypatch.setattr(manifest, "HASHES_PER_PASS", 3)
    ids = [f"NARA-{i}" for i in range(40)]
    p = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ids, "uri": ["u"] * 40}), p)
    assert load_manifest(str(p)).num_rows == 40
    pq.write_table(pa.table({"id": ids + ["NARA-7"], "uri": ["u"] * 41}), p)
    with pytest.raises(ManifestError, match=r"duplicate value\(s\) \['NARA-7'\] at row\(s\) \[7, 40\]$"):
        load_manifest(str(p))
    pq.write_table(pa.table({"id": ids + ["nara-7"], "uri": ["u"] * 41}), p)
    with pytest.raises(
        ManifestError,
        match=r"^manifest column 'id': rows 7 and 40 give output names that differ only in case",
    ):
        load_manifest(str(p))
    pq.write_table(pa.table({"id": ids, "uri": ["u"] * 40, "output_name": [None] * 39 + ["NARA-3"]}), p)
    with pytest.raises(
        ManifestError,
        match=r"^manifest column 'output_name': rows 3 and 39 give the same output name 'NARA-3'",
    ):
        load_manifest(str(p))
