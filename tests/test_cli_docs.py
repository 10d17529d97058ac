"""The first hour: every command is in the README, has --help with an example, and fails
with one line and a hint, never a traceback (unless --debug)."""

import re

import typer
from typer.testing import CliRunner

from archive_colorize.apps.cli import app

from .conftest import ROOT

runner = CliRunner()


def commands(group=None, prefix: tuple = ()) -> list[tuple[str, ...]]:
    group = group or typer.main.get_command(app)
    found = []
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            found += commands(cmd, prefix + (name,))
        else:
            found.append(prefix + (name,))
    return found


def test_the_cli_has_the_commands_we_document():
    assert sorted(commands()) == sorted(
        [
            ("colorize",),
            ("run",),
            ("submit",),
            ("report",),
            ("train",),
            ("evaluate",),
            ("weights", "inspect"),
            ("weights", "export"),
            ("weights", "calibrate"),
            ("manifest", "build"),
            ("manifest", "check"),
        ]
    )


def test_every_command_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [" ".join(c) for c in commands() if f"archive-colorize {' '.join(c)}" not in readme]
    assert missing == []


def test_every_command_help_has_an_example_that_names_it():
    for c in commands():
        r = runner.invoke(app, [*c, "--help"], terminal_width=200)
        assert r.exit_code == 0, c
        text = " ".join(r.output.split())
        m = re.search(r"Example: (archive-colorize [^│]+)", text)
        assert m, f"{' '.join(c)} --help has no example"
        assert m.group(1).startswith(f"archive-colorize {' '.join(c)} "), m.group(1)


def test_errors_are_one_line_with_a_hint(tmp_path):
    cases = [
        (
            ["run", str(tmp_path / "missing.parquet")],
            f"Error: manifest not found: {tmp_path / 'missing.parquet'}",
        ),
        (["weights", "inspect", str(tmp_path / "w.safetensors")], "Error: weights file not found: "),
        (
            ["run", "manifests/sample.parquet", "--format", "bmp", "--dry-run"],
            "Error: --format must be one of jpeg, png, tiff, webp, not 'bmp'",
        ),
        (["report", str(tmp_path)], f"Error: no results in {tmp_path}"),
    ]
    for args, first in cases:
        r = runner.invoke(app, args, terminal_width=300)
        assert r.exit_code == 1, (args, r.output)
        lines = r.output.strip().splitlines()
        assert lines[0].startswith(first), (args, lines)
        assert len(lines) <= 2 and all(line.startswith(("Error: ", "Hint: ")) for line in lines), lines
        assert "Traceback" not in r.output


def test_debug_shows_the_traceback(tmp_path):
    r = runner.invoke(app, ["--debug", "run", str(tmp_path / "missing.parquet")])
    assert r.exit_code != 0 and r.exc_info is not None
    assert type(r.exception).__name__ == "ManifestError"


def test_dry_run_reports_without_working(tmp_path):
    r = runner.invoke(
        app,
        ["run", str(ROOT / "manifests" / "sample.parquet"), "--out", str(tmp_path / "o"), "--dry-run"],
        terminal_width=300,
    )
    assert r.exit_code == 0, r.output
    lines = r.output.strip().splitlines()
    assert (
        lines[0]
        == f"manifest {ROOT / 'manifests' / 'sample.parquet'}: 5 rows; in {tmp_path / 'o'}: 0 done, 0 failed"
    )
    assert lines[1].startswith("a run now would process 5 row(s) with weights sha256 ")
    assert not (tmp_path / "o").exists()
