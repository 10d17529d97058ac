"""Film reels: frames, PTS, rate, audio and the Y plane kept exactly; per-shot colour that
holds still; a crash mid-reel resumed to the same bytes; bad reels as failed rows."""

from __future__ import annotations

import hashlib
import json
import signal
from fractions import Fraction

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archive_colorize.run.pipeline import RunOptions, run
from archive_colorize.video.frames import plane
from archive_colorize.video.probe import ReelError, probe

from .clips import RATE, make_clip
from .reliability.conftest import cli

WORKING = 64


def _streams(path) -> dict:
    """What must survive: every frame's PTS and Y plane, the rate, field order, the audio's
    packets, byte for byte, and the tags."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        ys = {f.pts: hashlib.sha256(plane(f, 0).tobytes()).hexdigest() for f in c.decode(v)}
    with av.open(str(path)) as c:
        audio = [hashlib.sha256(bytes(p)).hexdigest() for p in c.demux(c.streams.audio[0]) if p.size]
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return {
            "pts_s": [float(Fraction(p) * v.time_base) for p in sorted(ys)],
            "y": [ys[p] for p in sorted(ys)],
            "rate": v.average_rate,
            "field_order": v.codec_context.field_order,
            "audio": audio,
            "codec": v.codec_context.name,
            "tags": {k.upper(): val for k, val in c.metadata.items()},
        }


def _colourfulness(path) -> float:
    with av.open(str(path)) as c:
        rgb = [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]
    return float(np.mean([np.abs(x[..., 0] - x[..., 2]).mean() for x in rgb]))


@pytest.fixture(scope="module")
def reel_run(ray_cluster, weights_path, tmp_path_factory):
    d = tmp_path_factory.mktemp("reels")
    make_clip(d / "cuts.mkv", interlaced=True)
    (d / "broken.mkv").write_bytes((d / "cuts.mkv").read_bytes()[:3000])
    (d / "scan.jpg").write_bytes(
        open(__file__.replace("test_reels.py", "../archive_colorize/calibration/coins.jpg"), "rb").read()
    )
    r = cli("manifest", "build", str(d), "-o", str(d / "m.parquet"))
    assert r.returncode == 0, r.stderr
    out = d / "out"
    s = run(
        RunOptions(
            manifest=str(d / "m.parquet"),
            out=str(out),
            weights=str(weights_path),
            working_size=WORKING,
            chunk_frames=8,
        )
    )
    return d, out, s


def test_a_reel_with_cuts_and_audio_keeps_frames_pts_rate_audio_and_its_y_plane(reel_run):
    d, out, s = reel_run
    assert (s.done, s.failed) == (2, 1)
    src, mezz, access = (
        _streams(d / "cuts.mkv"),
        _streams(out / "video" / "cuts.mkv"),
        _streams(out / "video" / "cuts.mp4"),
    )
    assert len(src["y"]) == 36 and src["rate"] == RATE
    assert mezz["codec"] == "ffv1" and access["codec"] == "h264"
    for k in ("pts_s", "y", "rate", "audio"):
        assert mezz[k] == src[k], k  # the Y plane of every frame, bit for bit; audio packets too
    assert mezz["field_order"] == src["field_order"] == 2  # tt: top field first, not de-interlaced
    assert access["pts_s"] == pytest.approx(src["pts_s"], abs=1e-3) and len(access["y"]) == 36
    assert access["audio"] == src["audio"]  # FLAC goes into an MP4 as it is
    assert mezz["tags"]["TIMECODE"] == "01:00:00:00"
    assert mezz["tags"]["DIGITAL_SOURCE_TYPE"].endswith("/compositeWithTrainedAlgorithmicMedia")
    assert access["tags"]["DIGITAL_SOURCE_TYPE"].endswith("/compositeWithTrainedAlgorithmicMedia")
    data = (out / "video" / "cuts.mp4").read_bytes()
    assert b"compositeWithTrainedAlgorithmicMedia" in data[data.rindex(b"uuid") :]  # the XMP box
    assert _colourfulness(out / "video" / "cuts.mkv") > 2.0  # not grey called colour
    row = next(r for r in pq.read_table(out / "results.parquet").to_pylist() if r["id"] == "cuts")
    assert (row["status"], row["kind"], row["frames"], row["shots"], row["fps"], row["temporal"]) == (
        "done", "video", 36, 3, "24000/1001", "shot",
    )  # fmt: skip
    assert row["output_sha256"] == hashlib.sha256((out / "video" / "cuts.mkv").read_bytes()).hexdigest()
    assert not list((out / "_segments").glob("*/*")), "a finished reel's segments are removed"
    canvas = next(
        c
        for c in json.loads((out / "iiif" / "manifest.json").read_text())["items"]
        if c["id"].endswith("/cuts")
    )
    colour = canvas["items"][0]["items"][0]["body"]["items"][0]
    assert (colour["type"], colour["format"], canvas["duration"]) == (
        "Video",
        "video/mp4",
        pytest.approx(36 / RATE),
    )


def test_a_truncated_reel_is_a_failed_row_and_the_rest_completes(reel_run):
    _, out, _ = reel_run
    rows = {r["id"]: r for r in pq.read_table(out / "results.parquet").to_pylist()}
    assert rows["broken"]["status"] == "failed"
    assert rows["broken"]["error"].startswith("truncated or unreadable reel")
    assert rows["scan"]["status"] == "done" and rows["cuts"]["status"] == "done"
    assert not (out / "video" / "broken.mkv").exists()


def _one_reel_run(reel_run, ray_cluster, weights_path, tmp_path):
    """The reel of `reel_run` alone, as a `run` command line into a new OUT, in 6 chunks."""
    d, reference, _ = reel_run
    m = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["cuts"], "uri": [str(d / "cuts.mkv")]}), m)
    out = tmp_path / "out"
    args = ("run", str(m), "--out", str(out), "--weights", str(weights_path), "--working-size", str(WORKING),
            "--chunk-frames", "8", "--address", ray_cluster)  # fmt: skip
    return reference, out, args


def test_sigkill_during_a_reel_then_the_same_command_gives_the_same_bytes(
    reel_run, ray_cluster, weights_path, tmp_path
):
    reference, out, args = _one_reel_run(reel_run, ray_cluster, weights_path, tmp_path)
    r = cli(*args, env={"ARCHIVE_COLORIZE_CRASH_AT": "shot-written:2"})
    assert r.returncode == -signal.SIGKILL, r.stderr[-1500:]
    assert len(list((out / "_progress_shots").glob("part-*.parquet"))) == 2
    assert not (out / "video").exists()  # nothing half-written is left as done
    r = cli(*args)
    assert r.returncode == 0, r.stderr[-2000:]
    parts = [
        pq.read_table(p).to_pylist()[0] for p in sorted((out / "_progress_shots").glob("part-*.parquet"))
    ]
    chunks = [p["chunk"] for p in parts]
    assert sorted(chunks) == list(range(6)) and len(chunks) == 6  # the rerun did only the other four
    for fmt in ("mkv", "mp4"):
        assert (out / "video" / f"cuts.{fmt}").read_bytes() == (
            reference / "video" / f"cuts.{fmt}"
        ).read_bytes()


@pytest.mark.slow  # seconds of model time
def test_per_shot_colour_lowers_the_warp_error_at_no_loss_of_chroma(tmp_path):
    """The shipped weights on a clip of three panned shots: one global feature per shot
    against each frame alone (benchmarks/video.py measures it on more, side by side)."""
    from archive_colorize.model.engine import Engine
    from archive_colorize.model.weights import load_weights
    from archive_colorize.video.reel import ReelPlan, colour_chunk
    from archive_colorize.video.shots import chunks, detect_shots

    clip = make_clip(tmp_path / "pan.mkv", frames_per_shot=10, size=(160, 112), step=3, audio=None)
    reel = probe(str(clip))
    shots = detect_shots(str(clip), reel.frames)
    assert shots == [(0, 10), (10, 20), (20, 30)]
    engine = Engine(load_weights(None), working_size=160)
    measured = {}
    for mode in ("none", "shot"):
        plan = ReelPlan("pan", str(clip), reel, chunks(shots), "pan", mode, ("mkv",), str(tmp_path / mode))
        rows = [colour_chunk(engine, plan, c) for c in plan.chunks]
        warp = sum(r["warp_error_sum"] for r in rows) / sum(r["warp_pairs"] for r in rows)
        measured[mode] = (warp, float(np.mean([r["mean_chroma"] for r in rows])))
    (warp_none, chroma_none), (warp_shot, chroma_shot) = measured["none"], measured["shot"]
    assert warp_shot < 0.65 * warp_none, measured
    assert chroma_shot > 0.97 * chroma_none, measured


def test_a_reel_without_video_or_with_a_variable_rate_is_refused_with_its_reason(tmp_path):
    with av.open(str(tmp_path / "sound.mkv"), "w") as o:
        a = o.add_stream("flac", rate=48000, layout="mono")
        f = av.AudioFrame.from_ndarray(np.zeros((1, 4608), np.int16), format="s16", layout="mono")
        f.sample_rate, f.pts = 48000, 0
        for p in [*a.encode(f), *a.encode()]:
            o.mux(p)
    with pytest.raises(ReelError, match="^no video stream in the reel$"):
        probe(str(tmp_path / "sound.mkv"))
    with av.open(str(tmp_path / "vfr.mkv"), "w") as o:
        v = o.add_stream("ffv1", rate=25)
        v.width, v.height, v.pix_fmt = 32, 32, "yuv420p"
        for i, t in enumerate((0, 1, 2, 5, 6, 9, 10)):  # frames at irregular times
            f = av.VideoFrame.from_ndarray(np.full((48, 32), 16 + 20 * i, np.uint8), format="yuv420p")
            f.pts, f.time_base = t, Fraction(1, 25)
            for p in v.encode(f):
                o.mux(p)
        for p in v.encode():
            o.mux(p)
    with pytest.raises(ReelError, match="a variable frame rate"):
        probe(str(tmp_path / "vfr.mkv"))


def test_manifest_check_says_what_each_reel_holds_and_what_a_run_writes(tmp_path):
    make_clip(tmp_path / "cuts.mkv", interlaced=True)
    (tmp_path / "empty.mp4").write_bytes(b"")
    pq.write_table(
        pa.table({"id": ["cuts", "empty"], "uri": ["cuts.mkv", "empty.mp4"]}), tmp_path / "m.parquet"
    )
    r = cli("manifest", "check", str(tmp_path / "m.parquet"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1:] == [
        "reel cuts: 160x112 h264 yuv420p, 24000/1001 fps, 36 frames, 1.50 s, tt, timecode 01:00:00:00; kept as "
        "they are: audio flac; will write video/cuts.mkv FFV1 mezzanine (.mkv), video/cuts.mp4 H.264 access copy (.mp4)",
        "reel empty: will fail: unreadable reel: [Errno 1094995529] Invalid data found when processing input: "
        f"'{tmp_path / 'empty.mp4'}'",
    ]


def test_the_report_shows_a_strip_of_frames_per_reel_original_against_colour(reel_run, tmp_path):
    import base64
    import io
    import re

    from PIL import Image

    from archive_colorize.apps.report import ReportOptions, write_report

    _, out, _ = reel_run
    page = tmp_path / "report.html"
    write_report(ReportOptions(out=str(out), html=str(page)))
    text = page.read_text()
    card = text[text.rindex("<article", 0, text.index('alt="original reel, 4 frames of cuts"')) :]
    card = card.split("</article>", 1)[0]
    grey, colour = (
        np.asarray(Image.open(io.BytesIO(base64.b64decode(u))).convert("RGB"), np.float32)
        for u in re.findall(r'src="data:image/jpeg;base64,([^"]+)"', card)[-2:]
    )
    assert grey.shape == colour.shape and grey.shape[1] > 3 * grey.shape[0]  # four frames side by side
    assert np.abs(grey[..., 0] - grey[..., 2]).mean() < 1.5 < np.abs(colour[..., 0] - colour[..., 2]).mean()
    assert "36 frames · 3 shots · 24000/1001 fps · temporal shot · warp error" in card


@pytest.mark.slow  # seconds of model time
def test_an_mp4_reel_keeps_its_exact_ticks_and_aac_audio_in_the_access_copy(tmp_path):
    """No Ray: the library's own steps. An MP4 source counts 1/24000 s ticks; its access
    copy keeps them, tick for tick, and the AAC packets as they are."""
    from archive_colorize.imaging.provenance import Provenance
    from archive_colorize.model.engine import Engine
    from archive_colorize.model.weights import load_weights
    from archive_colorize.video.reel import ReelPlan, colour_chunk, finish_reel
    from archive_colorize.video.shots import chunks, detect_shots

    clip = make_clip(tmp_path / "access.mp4", frames_per_shot=6, fmt="mp4", audio="aac")
    reel = probe(str(clip))
    assert reel.time_base == Fraction(1, 24000) and reel.pts[:3] == [0, 1001, 2002]
    weights = load_weights(None)
    plan = ReelPlan(
        "a",
        str(clip),
        reel,
        chunks(detect_shots(str(clip), reel.frames), 4),
        "a",
        "shot",
        ("mp4",),
        str(tmp_path / "out"),
    )
    for c in plan.chunks:
        colour_chunk(Engine(weights, working_size=WORKING), plan, c)
    finish_reel(plan, Provenance(weights.file_sha256))
    src, out = _streams(clip), _streams(tmp_path / "out" / "video" / "a.mp4")
    with av.open(str(tmp_path / "out" / "video" / "a.mp4")) as c:
        v = c.streams.video[0]
        ticks = sorted(f.pts for f in c.decode(v))
        assert (v.time_base, v.average_rate) == (Fraction(1, 24000), RATE)
    assert ticks == reel.pts
    assert out["audio"] == src["audio"] and len(out["y"]) == len(
        src["y"]
    )  # (H.264 is lossy: Y is the mezzanine's promise)


def test_a_reel_on_s3_is_coloured_to_the_same_bytes_as_a_local_one(
    reel_run, ray_cluster, weights_path, s3, s3_server, tmp_path
):
    d, reference, _ = reel_run
    s3.mkdir("reels-s3")
    s3.put_file(str(d / "cuts.mkv"), "reels-s3/in/cuts.mkv")
    m = tmp_path / "m.parquet"
    pq.write_table(pa.table({"id": ["cuts"], "uri": ["s3://reels-s3/in/cuts.mkv"]}), m)
    s = run(RunOptions(manifest=str(m), out="s3://reels-s3/out", weights=str(weights_path), working_size=WORKING,
                       chunk_frames=8, storage_options=s3_server))  # fmt: skip
    assert (s.done, s.failed) == (1, 0)
    for fmt in ("mkv", "mp4"):
        assert (
            s3.cat_file(f"reels-s3/out/video/cuts.{fmt}")
            == (reference / "video" / f"cuts.{fmt}").read_bytes()
        )


def test_an_unknown_kind_is_refused_naming_the_column(tmp_path):
    pq.write_table(pa.table({"id": ["a"], "uri": ["a.mkv"], "kind": ["film"]}), tmp_path / "m.parquet")
    r = cli("manifest", "check", str(tmp_path / "m.parquet"))
    assert r.returncode == 1
    assert "Error: manifest column 'kind': 'film' is neither of image, video" in r.stdout + r.stderr


@pytest.mark.slow  # seconds of model time
def test_a_10_bit_prores_master_keeps_its_10_bit_y_plane_in_the_ffv1_mezzanine(tmp_path):
    """NARA's masters are ProRes or DPX: 10-bit 4:2:2. The mezzanine stays 10-bit 4:2:2, and
    its Y plane is the master's, code for code."""
    from archive_colorize.imaging.provenance import Provenance
    from archive_colorize.model.engine import Engine
    from archive_colorize.model.weights import load_weights
    from archive_colorize.video.reel import ReelPlan, colour_chunk, finish_reel
    from archive_colorize.video.shots import chunks, detect_shots

    clip = make_clip(tmp_path / "master.mov", frames_per_shot=5, fmt="mov", codec="prores_ks", audio="pcm_s16le",
                     pix_fmt="yuv422p10le")  # fmt: skip
    reel = probe(str(clip))
    assert (reel.codec, reel.pix_fmt, reel.frames) == ("prores", "yuv422p10le", 15)
    weights = load_weights(None)
    shots = chunks(detect_shots(str(clip), reel.frames))
    plan = ReelPlan("m", str(clip), reel, shots, "m", "shot", ("mkv", "mp4"), str(tmp_path / "out"))
    for c in plan.chunks:
        colour_chunk(Engine(weights, working_size=WORKING), plan, c)
    finish_reel(plan, Provenance(weights.file_sha256))
    src, out = _streams(clip), _streams(tmp_path / "out" / "video" / "m.mkv")
    assert (out["y"], out["audio"]) == (src["y"], src["audio"])
    assert out["pts_s"] == pytest.approx(src["pts_s"], abs=5.01e-4)  # rounded to Matroska's millisecond clock
    with av.open(str(tmp_path / "out" / "video" / "m.mkv")) as c:
        f = next(c.decode(video=0))
        assert f.format.name == "yuv422p10le"
        cb = plane(f, 1)
        assert cb.dtype == np.uint16 and abs(float(cb.mean()) - 512) > 2  # colour, in 10-bit codes
    with av.open(str(tmp_path / "out" / "video" / "m.mp4")) as c:
        assert (
            c.streams.video[0].codec_context.pix_fmt == "yuv420p"
            and c.streams.audio[0].codec_context.name == "aac"
        )


def test_a_rerun_with_other_settings_redoes_the_chunks_instead_of_reusing_them(
    reel_run, ray_cluster, weights_path, tmp_path
):
    """A killed run's chunks are reused only by a run that would make the same bytes: with
    another --temporal the rerun colours every chunk again, none is mixed in."""
    reference, out, args = _one_reel_run(reel_run, ray_cluster, weights_path, tmp_path)
    r = cli(*args, "--temporal", "none", env={"ARCHIVE_COLORIZE_CRASH_AT": "shot-written:3"})
    assert r.returncode == -signal.SIGKILL, r.stderr[-1500:]
    r = cli(*args)  # --temporal shot, the default
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((out / "_progress_shots").glob("part-*.parquet"))) == 3 + 6
    assert (out / "video" / "cuts.mkv").read_bytes() == (reference / "video" / "cuts.mkv").read_bytes()
