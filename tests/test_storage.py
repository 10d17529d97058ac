"""Temporaries that a SIGKILL leaves between mkstemp and the rename are swept on resume."""

from archive_colorize.core.storage import atomic_write_bytes, remove_stale_temps, resolve


def test_stale_temporaries_are_removed_and_real_files_kept(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / ".tmp-archive-colorize-abc123").write_bytes(b"half a progress file")
    (tmp_path / "images" / ".tmp-archive-colorize-xyz").write_bytes(b"half a PNG")
    atomic_write_bytes(str(tmp_path / "images" / "a.png"), b"whole")
    (tmp_path / "notes.tmp-keep").write_text("not ours")
    (tmp_path / ".tmp-rsync-4711").write_text("another program's, in a shared OUT")
    fs, root = resolve(str(tmp_path))
    assert remove_stale_temps(fs, root) == 2
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        ".tmp-rsync-4711",
        "images/a.png",
        "notes.tmp-keep",
    ]
    assert (tmp_path / "images" / "a.png").read_bytes() == b"whole"


def test_one_glob_rule_for_manifests_builds_and_training_data():
    from archive_colorize.core.storage import glob_root, has_wildcard
    from archive_colorize.sources.manifest import default_out

    assert [glob_root(p) for p in ("scans/19*/a?.tif", "s3://b/m/*.parquet", "x[12].png", "/a/b/c*")] == [
        "scans", "s3://b/m", "x", "/a/b"]  # fmt: skip
    assert has_wildcard("a/[ab].tif") and not has_wildcard("a/b.tif")
    assert default_out("s3://b/m/part-*.parquet") == "s3://b/m-out"
