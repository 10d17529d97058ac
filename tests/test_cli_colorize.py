import shutil

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from archive_colorize.apps.cli import app

from .conftest import sample

runner = CliRunner()


def test_colorize_files_and_prints_top5(weights_path, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample("chelsea.jpg"), src / "a.jpg")
    shutil.copy(sample("coins.png"), src / "b.png")  # 16-bit
    out = tmp_path / "out"
    r = runner.invoke(
        app, ["colorize", str(src), "--out", str(out), "--weights", str(weights_path), "--format", "jpeg"]
    )
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if "->" in line]
    assert len(lines) == 2
    assert lines[0].startswith(f"{src / 'a.jpg'} -> {out / 'a.jpg'}")
    assert lines[0].count("%") == 5  # five scene classes with probabilities
    a = Image.open(out / "a.jpg")
    assert a.size == (451, 300) and a.mode == "RGB"
    rgb = np.asarray(a).astype(int)
    assert np.abs(rgb[..., 0] - rgb[..., 2]).mean() > 1  # not grey
    assert Image.open(out / "b.jpg").size == (384, 303)


def test_style_from_changes_colours(weights_path, tmp_path):
    src = sample("chelsea.jpg")
    r1 = runner.invoke(
        app, ["colorize", str(src), "--out", str(tmp_path / "plain"), "--weights", str(weights_path)]
    )
    r2 = runner.invoke(
        app,
        [
            "colorize",
            str(src),
            "--out",
            str(tmp_path / "styled"),
            "--weights",
            str(weights_path),
            "--style-from",
            str(sample("astronaut.jpg")),
        ],
    )
    assert r1.exit_code == 0 and r2.exit_code == 0, r2.output
    a = np.asarray(Image.open(tmp_path / "plain" / "chelsea.png")).astype(int)
    b = np.asarray(Image.open(tmp_path / "styled" / "chelsea.png")).astype(int)
    assert np.abs(a - b).mean() > 0.5
    # ...but not the lightness: both recombine the same original L*
    from .test_images import lightness_of

    assert float((lightness_of(a.astype(np.uint8)) - lightness_of(b.astype(np.uint8))).abs().max()) < 1.0


def test_bad_file_is_reported_and_others_still_done(weights_path, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sample("chelsea.jpg"), src / "good.jpg")
    (src / "bad.jpg").write_bytes(b"<html>404</html>")
    r = runner.invoke(
        app, ["colorize", str(src), "--out", str(tmp_path / "out"), "--weights", str(weights_path)]
    )
    assert r.exit_code == 1
    assert f"failed {src / 'bad.jpg'}: an HTML/XML page, not an image" in r.output
    assert (tmp_path / "out" / "good.png").exists() and not (tmp_path / "out" / "bad.png").exists()


def test_tampered_weights_one_line_error(weights_path, tmp_path):
    bad = tmp_path / "w.safetensors"
    data = bytearray(weights_path.read_bytes())
    data[-10] ^= 1
    bad.write_bytes(bytes(data))
    r = runner.invoke(app, ["colorize", str(sample("chelsea.jpg")), "--weights", str(bad)])
    assert r.exit_code == 1
    assert (
        r.output.splitlines()[0]
        == f"Error: {bad} failed its sha256 check: the file was modified or damaged after export"
    )
    assert "Traceback" not in r.output


def test_weights_inspect(weights_path):
    r = runner.invoke(app, ["weights", "inspect", str(weights_path), "--json"])
    assert r.exit_code == 0, r.output
    import json

    meta = json.loads(r.output)
    assert meta["config"]["num_classes"] == 100 and meta["categories"][0] == "class_0"
    assert meta["file_sha256"] == __import__("hashlib").sha256(weights_path.read_bytes()).hexdigest()
