"""A chunk's segment, and the reel's outputs joined from the segments.

Each chunk is encoded on its own into a NUT segment of intra-coded frames (FFV1 for the
mezzanine; for the access copy H.264 that opens with an IDR frame and has no B-frames), so
that segments made in any order, on any worker, after any crash, join into the same bytes.
The join takes the segments' packets in order and gives the k-th one the source's k-th PTS;
the source's audio and subtitle packets are copied bit for bit, merged in time order; the
muxers run bit-exact, so that no date or random id differs between two runs."""

from __future__ import annotations

import heapq
import os
from fractions import Fraction

from archive_colorize.video.probe import Reel

MEZZANINE, ACCESS = "mkv", "mp4"
VIDEO_FORMATS = {"both": (MEZZANINE, ACCESS), "mkv": (MEZZANINE,), "mp4": (ACCESS,)}
# what an MP4 holds as it is; any other audio is re-encoded to AAC in the access copy only
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}
XMP_UUID = bytes.fromhex("be7acfcb97a942e89c71999491e3afac")  # XMP's top-level box in ISO BMFF
BITEXACT = {"fflags": "+bitexact"}


def _video_stream(out, fmt: str, reel: Reel, pix_fmt: str):
    if fmt == MEZZANINE:
        s = out.add_stream("ffv1", rate=reel.rate, options={"level": "3", "slicecrc": "1", "g": "1"})
        s.pix_fmt = pix_fmt
    else:
        s = out.add_stream(
            "libx264",
            rate=reel.rate,
            options={"crf": "18", "preset": "medium", "x264-params": "bframes=0:keyint=infinite:scenecut=0"},
        )
        s.pix_fmt = "yuv420p"  # what every player decodes
    s.width, s.height = reel.width, reel.height
    s.time_base = reel.time_base
    cc = s.codec_context
    cc.flags |= 1 << 23  # AV_CODEC_FLAG_BITEXACT: no encoder version string that differs by build
    cc.thread_count = 1  # the same bytes whatever the worker's core count
    cc.field_order = _field_order(reel)
    cc.color_range = 2 if reel.full_range else 1
    cc.colorspace = 1 if reel.colorspace == "bt709" else 6
    return s


def _field_order(reel: Reel) -> int:
    return {"progressive": 1, "tt": 2, "bb": 3, "tb": 4, "bt": 5}.get(reel.field_order, 0)


def write_segment(path: str, frames: list, fmt: str, reel: Reel, pix_fmt: str) -> None:
    """Encode `frames` (av.VideoFrame, source PTS) into the NUT file `path`."""
    import av
    import av.logging

    av.logging.set_level(av.logging.ERROR)  # x264's statistics are not the operator's business

    with av.open(path, "w", format="nut", options=BITEXACT) as out:
        s = _video_stream(out, fmt, reel, pix_fmt)
        for frame in frames:
            if fmt == ACCESS and frame.format.name != "yuv420p":  # 8-bit 4:2:0, what players decode
                frame = frame.reformat(format="yuv420p")
            for packet in s.encode(frame):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)


def _segment_packets(paths: list[str], reel: Reel):
    """The segments' video packets in order, each with the source's PTS for its frame."""
    import av

    k, step = 0, max(1, round(1 / (reel.rate * reel.time_base)))
    for path in paths:
        with av.open(path) as seg:
            for packet in seg.demux(seg.streams.video[0]):
                if not packet.size:
                    continue
                packet.time_base = reel.time_base
                packet.pts = packet.dts = reel.pts[k]
                packet.duration = reel.pts[k + 1] - reel.pts[k] if k + 1 < reel.frames else step
                k += 1
                yield packet
    if k != reel.frames:
        raise ValueError(f"the segments hold {k} frames, the reel {reel.frames}")


def join(
    paths: list[str], source_path: str, reel: Reel, fmt: str, out_path: str, tags: dict, xmp: bytes
) -> None:
    """Segments + the source's other streams -> `out_path` (the caller renames it into place)."""
    import av

    options = dict(BITEXACT)
    if fmt == ACCESS:
        options["movflags"] = "+use_metadata_tags+faststart"
    with (
        av.open(source_path) as src,
        av.open(out_path, "w", format="matroska" if fmt == MEZZANINE else "mp4", options=options) as out,
    ):
        with av.open(paths[0]) as first:
            video = out.add_stream_from_template(first.streams.video[0])
        video.time_base = reel.time_base
        video.codec_context.field_order = _field_order(reel)  # NUT does not carry it
        copied, encoders = {}, {}
        for s in src.streams:
            if s.type == "audio" or (s.type == "subtitle" and fmt == MEZZANINE):
                name = s.codec_context.name
                if fmt == ACCESS and s.type == "audio" and name not in MP4_AUDIO:
                    encoders[s.index] = out.add_stream("aac", rate=s.codec_context.sample_rate)
                else:
                    copied[s.index] = out.add_stream_from_template(s)
                (copied.get(s.index) or encoders[s.index]).metadata.update(s.metadata)
        out.metadata.update(
            {k: v for k, v in src.metadata.items() if k.lower() not in ("encoder", "creation_time")}
        )
        video.metadata.update(
            {k: v for k, v in src.streams.video[0].metadata.items() if k.lower() == "timecode"}
        )
        out.metadata.update(tags)

        def others():
            for packet in src.demux([src.streams[i] for i in (*copied, *encoders)]):
                if packet.size and packet.pts is not None:
                    yield packet

        def when(packet) -> Fraction:
            return Fraction(packet.pts) * Fraction(packet.time_base)

        merged = heapq.merge(
            ((when(p), 0, n, p) for n, p in enumerate(_segment_packets(paths, reel))),
            ((when(p), 1, n, p) for n, p in enumerate(others())),
            key=lambda t: t[:3],
        )
        for _, _, _, packet in merged:
            i = packet.stream.index if packet.stream.type != "video" else None
            if i is None:
                packet.stream = video
                out.mux(packet)
            elif i in copied:
                packet.stream = copied[i]
                out.mux(packet)
            else:
                for frame in packet.decode():
                    frame.pts = None
                    for p in encoders[i].encode(frame):
                        out.mux(p)
        for enc in encoders.values():
            for p in enc.encode():
                out.mux(p)
    if fmt == ACCESS:
        _append_xmp(out_path, xmp)


def _append_xmp(path: str, xmp: bytes) -> None:
    """XMP in an MP4: a top-level `uuid` box, which readers (exiftool, Adobe's) find anywhere
    in the file; appended, so that no offset in the moov box moves."""
    box = (8 + 16 + len(xmp)).to_bytes(4, "big") + b"uuid" + XMP_UUID + xmp
    with open(path, "ab") as f:
        f.write(box)
        f.flush()
        os.fsync(f.fileno())
