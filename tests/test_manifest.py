import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from archive_colorize.apps.cli import app
from archive_colorize.errors import ManifestError
from archive_colorize.sources.manifest import load_manifest, safe_name
from archive_colorize.sources.manifest_build import build_manifest

from .conftest import ROOT, sample

runner = CliRunner()


def write(tmp_path, **cols):
    p = tmp_path / "m.parquet"
    pq.write_table(pa.table(cols), p)
    return p


def run_cli(*args):
    r = runner.invoke(app, list(map(str, args)))
    return r.exit_code, r.output.splitlines()[0] if r.output else ""


@pytest.mark.parametrize(
    "cols,message",
    [
        ({"uri": ["a.jpg"]}, "is missing required column(s) 'id' (it has: uri)"),
        (
            {"id": ["a", "b", "a", "c"], "uri": ["1", "2", "3", "4"]},
            "manifest column 'id' has duplicate value(s) ['a'] at row(s) [0, 2]",
        ),
        (
            {"id": ["a", None, "c"], "uri": ["1", "2", "3"]},
            "manifest column 'id' has 1 null value(s), first at row(s) [1]",
        ),
        (
            {"id": ["a", "b"], "uri": ["1", None]},
            "manifest column 'uri' has null or empty value(s) at row(s) [1]",
        ),
        (
            {"id": [1.0, 2.0], "uri": ["1", "2"]},
            "manifest column 'id' has type double; accepted: string, large_string, "
            "string_view or dictionary<string>, or an integer type",
        ),
        (
            {"id": ["a"], "uri": [b"1"]},
            "manifest column 'uri' has type binary; accepted: string, large_string, "
            "string_view or dictionary<string>",
        ),
        (
            {"id": ["a"], "uri": ["1"], "status": ["x"]},
            "manifest column(s) 'status' clash with result columns; rename them",
        ),
    ],
)
def test_bad_manifests_are_refused_before_work(tmp_path, cols, message):
    p = write(tmp_path, **cols)
    code, line = run_cli("run", p, "--out", tmp_path / "out")
    assert code == 1
    assert (
        line == f"Error: manifest {p} {message}"
        if message.startswith("is missing")
        else line.endswith(message)
    ), line
    assert not (tmp_path / "out").exists()  # nothing started


def test_unreadable_parquet(tmp_path):
    p = tmp_path / "m.parquet"
    p.write_bytes(b"PAR1 this is not parquet")
    code, line = run_cli("run", p)
    assert code == 1 and line.startswith(f"Error: manifest {p} is not a readable Parquet file")


def test_missing_manifest(tmp_path):
    code, line = run_cli("manifest", "check", tmp_path / "nope.parquet")
    assert (code, line) == (1, f"Error: manifest not found: {tmp_path / 'nope.parquet'}")


def test_sample_manifest_is_valid():
    m = load_manifest(str(ROOT / "manifests" / "sample.parquet"))
    assert m.num_rows == 5 and {"title", "creator", "rights"} <= set(m.metadata_columns)


def test_safe_names_stay_inside_and_never_collide():
    hostile = ["../../etc/passwd", "/abs/path", "a\x00b", "é" * 300, "a/b", "a_b", "a?b", ".", ""]
    names = [safe_name(h) for h in hostile]
    assert len(set(names)) == len(names)
    for n in names:
        assert "/" not in n and "\x00" not in n and not n.startswith(".") and 0 < len(n) <= 130
    assert safe_name("a_b") == "a_b" and safe_name("a/b").startswith("a_b-")
    assert safe_name("../../etc/passwd") == safe_name("../../etc/passwd")  # deterministic


def test_build_from_folder_with_catalog(tmp_path):
    scans = tmp_path / "scans"
    scans.mkdir()
    for name in ("astronaut.jpg", "chelsea.jpg", "coins.png"):
        shutil.copy(sample(name), scans / name)
    (scans / "notes.txt").write_text("not an image")
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("filename,naId,title\nchelsea.jpg,1234,Chelsea the cat\n")
    out = tmp_path / "m.parquet"
    code, line = run_cli("manifest", "build", scans, "--out", out, "--catalog", catalog, "--key", "filename")
    assert code == 0, line
    t = pq.read_table(out)
    rows = {r["id"]: r for r in t.to_pylist()}
    assert sorted(rows) == ["astronaut", "chelsea", "coins"]
    assert rows["chelsea"]["naId"] == 1234
    assert rows["chelsea"]["title"] == "Chelsea the cat"
    assert rows["coins"]["title"] is None
    assert rows["coins"]["uri"] == str(scans / "coins.png")
    load_manifest(str(out))  # what build writes, run accepts


def test_build_from_s3_prefix(s3, s3_server, tmp_path):
    s3.mkdir("buildsrc")
    s3.pipe("buildsrc/scans/box1/a.jpg", sample("chelsea.jpg").read_bytes())
    s3.pipe("buildsrc/scans/box2/a.jpg", sample("rocket.jpg").read_bytes())
    s3.pipe("buildsrc/scans/notes.txt", b"not an image")
    t = build_manifest("s3://buildsrc/scans/", str(tmp_path / "m.parquet"), storage_options=s3_server)
    assert t.column("id").to_pylist() == ["box1/a", "box2/a"]
    assert t.column("uri").to_pylist() == ["s3://buildsrc/scans/box1/a.jpg", "s3://buildsrc/scans/box2/a.jpg"]


def test_build_refuses_empty_source(tmp_path):
    with pytest.raises(ManifestError, match="no images"):
        build_manifest(str(tmp_path), str(tmp_path / "m.parquet"))


def test_submit_arguments_a_folder_is_one_manifest_a_glob_is_one_per_file(tmp_path):
    from archive_colorize.errors import ManifestError
    from archive_colorize.sources.manifest import expand_manifests

    for name in ("b.parquet", "a.parquet"):
        pq.write_table(pa.table({"id": ["x"], "uri": ["x.jpg"]}), tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a manifest")
    single = str(tmp_path / "b.parquet")
    assert expand_manifests([str(tmp_path), single]) == [str(tmp_path), single]
    assert expand_manifests([str(tmp_path / "*.parquet")]) == [
        str(tmp_path / "a.parquet"),
        str(tmp_path / "b.parquet"),
    ]
    with pytest.raises(ManifestError, match=r"no Parquet files match$"):
        expand_manifests([str(tmp_path / "none-*.parquet")])


def test_device_names_windows_reserves_are_never_output_names():
    from archive_colorize.sources.manifest import safe_name

    for raw in ("CON", "nul", "COM1", "lpt9", "aux.tif", "Prn"):
        name = safe_name(raw)
        assert (
            name != raw and name.startswith(raw.split(".")[0].replace(".", "_")) and len(name) == len(raw) + 9
        ), raw
    assert safe_name("console") == "console" and safe_name("com10") == "com10"
