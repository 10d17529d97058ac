"""The stages as plain functions of Arrow tables, without a cluster: the two places where
full-resolution colour can be made (the model actor, on its device, or `finish`) give the
same files."""

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from archive_colorize.imaging.provenance import Provenance
from archive_colorize.core.arrays import pack, unpack_numpy
from archive_colorize.run import schema as S
from archive_colorize.run.stages import Colorizer, finish, prepare, unpack

from .conftest import sample


def _through(batch, weights_path, out, ship, fmt):
    common = {"base_dir": "/", "storage_options": {}}
    b = prepare(batch, working_size=128, max_pixels=10**9, ship=ship, **common)
    model = Colorizer(str(weights_path), "cpu", 128, threads=1, fmt=fmt if ship else None)
    b = model(b)
    assert (
        S.RGB in b.column_names
    ) == ship and S.FULL not in b.column_names  # the full L* stops at the actor
    assert b.schema.names[-len(S.COLORIZED) :] == S.COLORIZED.names
    done = finish(b, out_url=str(out), fmt=fmt, max_pixels=10**9, provenance=Provenance("0" * 64), **common)
    assert done.schema.names == [
        *batch.schema.names,
        S.WIDTH,
        S.HEIGHT,
        S.INPUT_SHA,
        *S.COLORIZED.names[1:5],
        *S.FINISHED.names,
    ]  # the stages' declarations, nothing left over
    return done


@pytest.mark.parametrize("fmt", ["png", "jpeg"])
def test_colour_made_in_the_actor_gives_the_files_finish_gives(weights_path, tmp_path, fmt):
    exif = Image.Exif()
    exif[0x013B] = "Dorothea Lange"
    exif[0x0112] = 6  # rotate on display: the pixels come out upright, the tag says 1
    rotated = tmp_path / "rotated.jpg"
    Image.open(sample("chelsea.jpg")).save(rotated, quality=90, exif=exif.tobytes())
    a16 = np.asarray(Image.open(sample("coins.png")).convert("L"), np.uint16) * 257
    Image.fromarray(a16).save(tmp_path / "sixteen.png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    uris = [
        str(rotated),
        str(tmp_path / "sixteen.png"),
        str(sample("coffee.jpg")),
        str(tmp_path / "empty.jpg"),
    ]
    batch = pa.table({"id": ["rotated", "sixteen", "coffee", "empty"], "uri": uris})
    shipped = _through(batch, weights_path, tmp_path / "actor", True, fmt).to_pylist()
    again = _through(batch, weights_path, tmp_path / "finish", False, fmt).to_pylist()
    assert (
        [r["status"] for r in shipped] == ["done", "done", "done", "failed"] == [r["status"] for r in again]
    )
    assert shipped[3]["error"] == again[3]["error"] == "empty file (0 bytes)"
    for a, b in zip(shipped[:3], again[:3]):
        assert a["output_sha256"] == b["output_sha256"], a["id"]
        assert open(a["output_uri"], "rb").read() == open(b["output_uri"], "rb").read()
    im = Image.open(shipped[0]["output_uri"])
    assert (
        im.size == (300, 451) and im.getexif()[0x013B] == "Dorothea Lange" and im.getexif().get(0x0112) == 1
    )
    assert b"archive-colorize" in open(shipped[0]["output_uri"], "rb").read()  # our XMP/Software tag
    if fmt == "png":
        import cv2

        assert (
            cv2.imread(shipped[1]["output_uri"], cv2.IMREAD_UNCHANGED).dtype == np.uint16
        )  # 16 bits in, 16 out


def test_packed_arrays_keep_shape_dtype_and_nulls():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.arange(6, dtype=np.uint16).reshape(1, 2, 3) * 1000
    odd = np.arange(15, dtype=np.uint8).reshape(5, 3)  # 15 bytes: what follows must still be aligned
    col = pack([odd, a, None, b])
    back = unpack_numpy(pa.chunked_array([col]))
    assert back[2] is None and [x.dtype for x in (back[0], back[1], back[3])] == [
        np.uint8,
        np.float32,
        np.uint16,
    ]
    assert np.array_equal(back[0], odd) and np.array_equal(back[1], a) and np.array_equal(back[3], b)
    assert not back[1].flags.owndata and back[1].ctypes.data % 16 == 0  # an aligned view: nothing copied
    # Ray hands a stage zero-copy slices of a block: offsets into the same buffers
    sliced = unpack_numpy(pa.table({"x": col}).slice(2, 2).column("x"))
    assert sliced[0] is None and np.array_equal(sliced[1], b)
    t = unpack(pack([a]))[0]
    t += 1  # the small arrays are writable copies
    assert float(t[0, 0]) == 1.0 and a[0, 0] == 0


def test_a_grey_result_refused_by_the_actor_still_records_its_chroma(tmp_path):
    """On a GPU the model actor refuses a grey result; results.parquet must still say how
    grey it was, as it does when finish refuses it."""
    grey = "the model produced no colour (mean chroma 0.00); nothing written"
    batch = S.rows(
        S.FINISH_INPUT,
        {"id": ["g"], "uri": ["/nowhere.jpg"]},
        **{
            S.ERROR: [grey],
            S.INPUT_SHA: ["0" * 64],
            S.WIDTH: [8],
            S.HEIGHT: [6],
            S.T: [0.5],
            S.AB: pack([np.zeros((2, 3, 4), np.float32)]),
        },
    )
    out = finish(
        batch,
        base_dir="/",
        out_url=str(tmp_path),
        storage_options={},
        fmt="png",
        max_pixels=10**9,
        provenance=Provenance("0" * 64),
    ).to_pylist()[0]
    assert (out["status"], out["error"], out["mean_chroma"], out["output_uri"]) == ("failed", grey, 0.0, None)
    assert not (tmp_path / "images").exists()  # nothing written


def test_an_input_over_max_bytes_fails_its_row_without_being_read(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(sample("coins.png").read_bytes())
    size = big.stat().st_size
    batch = pa.table({"id": ["big", "ok"], "uri": [str(big), str(sample("coffee.jpg"))]})
    out = prepare(
        batch, base_dir="/", storage_options={}, working_size=64, max_pixels=10**9, max_bytes=size - 1
    )
    assert out.column("error").to_pylist() == [f"{size} bytes, larger than --max-bytes {size - 1}", None]
