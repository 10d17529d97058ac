"""Temporaries that a SIGKILL leaves between mkstemp and the rename are swept on resume."""

from archive_colorize.core.storage import atomic_write_bytes, remove_stale_temps, resolve


def test_stale_temporaries_are_removed_and_real_files_kept(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / ".tmp-abc123").write_bytes(b"half a progress file")
    (tmp_path / "images" / ".tmp-xyz").write_bytes(b"half a PNG")
    atomic_write_bytes(str(tmp_path / "images" / "a.png"), b"whole")
    (tmp_path / "notes.tmp-keep").write_text("not ours")
    fs, root = resolve(str(tmp_path))
    assert remove_stale_temps(fs, root) == 2
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "images/a.png",
        "notes.tmp-keep",
    ]
    assert (tmp_path / "images" / "a.png").read_bytes() == b"whole"
