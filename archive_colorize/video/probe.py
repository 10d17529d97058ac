"""What a reel holds, read from its packets (no decoding): streams, the rational frame rate,
the exact frame count and every frame's PTS, field order, duration and timecode.

The PTS list is the reel's frame index: frame k is the k-th smallest PTS, which is what the
output keeps, frame for frame. A reel this module refuses becomes a failed row with the reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from archive_colorize.errors import ColorizeError


FIELD_ORDERS = {0: "unknown", 1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}


class ReelError(ColorizeError):
    """A reel that cannot be colorized as it is: the row fails with this reason."""


@dataclass
class Reel:
    uri: str
    width: int
    height: int
    codec: str
    pix_fmt: str
    rate: Fraction  # frames per second, exactly as the container says (24000/1001, not 23.976)
    time_base: Fraction
    pts: list[int]  # every frame's presentation time, sorted, in time_base units
    field_order: str
    colorspace: str  # the Y'CbCr matrix the chroma is written in: "bt709" or "bt601"
    full_range: bool
    timecode: str | None
    duration_s: float
    streams: list[dict] = field(default_factory=list)  # every stream: index, type, codec

    @property
    def bits(self) -> int:
        return 10 if self.pix_fmt.endswith("10le") else 8

    @property
    def frames(self) -> int:
        return len(self.pts)

    def describe(self) -> str:
        others = ", ".join(f"{s['type']} {s['codec']}" for s in self.streams if s["type"] != "video")
        tc = f", timecode {self.timecode}" if self.timecode else ""
        return (
            f"{self.width}x{self.height} {self.codec} {self.pix_fmt}, {self.rate} fps, {self.frames} frames, "
            f"{self.duration_s:.2f} s, {self.field_order}{tc}"
            + (f"; kept as they are: {others}" if others else "")
        )


SUPPORTED_PIX_FMTS = (
    "yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "gray",
    "yuv420p10le", "yuv422p10le", "yuv444p10le", "gray10le",  # ProRes 422 and 10-bit masters
)  # fmt: skip


def probe(uri: str, fs=None) -> Reel:
    """`uri`: a local path, or a path on the fsspec filesystem `fs` (read through it)."""
    import av

    from archive_colorize.core.storage import is_local

    try:
        container = av.open(uri if fs is None or is_local(fs) else fs.open(uri, "rb"), "r")
    except (av.FFmpegError, OSError) as e:
        raise ReelError(f"unreadable reel: {e}") from None
    with container:
        if not container.streams.video:
            raise ReelError("no video stream in the reel")
        v = container.streams.video[0]
        cc = v.codec_context
        if not cc.pix_fmt or not cc.width:
            raise ReelError(
                "truncated or unreadable reel: its video stream has no readable header (no pixel format)"
            )
        if cc.pix_fmt not in SUPPORTED_PIX_FMTS:
            raise ReelError(
                f"pixel format {cc.pix_fmt} is not supported yet (8- or 10-bit planar Y'CbCr or gray: "
                f"{', '.join(SUPPORTED_PIX_FMTS)})"
            )
        rate = v.average_rate or v.guessed_rate
        if not rate:
            raise ReelError("the reel gives no frame rate")
        pts, truncated = [], None
        try:
            for packet in container.demux(v):
                if packet.size and packet.pts is not None:
                    pts.append(packet.pts)
        except av.FFmpegError as e:
            truncated = str(e)
        if not pts:
            raise ReelError("the reel's video stream holds no frames")
        pts.sort()
        tb = Fraction(v.time_base)
        rate = Fraction(rate)
        step = 1 / (rate * tb)  # one frame in time_base units
        duration = float((pts[-1] - pts[0] + step) * tb)
        declared = container.duration / 1e6 if container.duration else None
        if truncated or (declared and declared - duration > 2 * float(1 / rate) + 0.5):
            why = truncated or f"the container says {declared:.2f} s, its frames cover {duration:.2f} s"
            raise ReelError(f"truncated reel: {why}")
        drift = max(abs(p - pts[0] - i * step) for i, p in enumerate(pts))
        if drift > step / 2 + 1:
            raise ReelError(
                f"frame times drift {float(drift * tb):.3f} s from a constant {rate} fps: a variable frame rate, "
                "or frames missing from a damaged reel (conform it to a constant rate first, e.g. ffmpeg -fps_mode cfr)"
            )
        timecode = None  # Matroska spells it TIMECODE, MOV keeps it on its tmcd stream
        for md in [container.metadata] + [x.metadata for x in container.streams]:
            timecode = timecode or next((val for k, val in md.items() if k.lower() == "timecode"), None)
        space = {1: "bt709", 5: "bt601", 6: "bt601"}.get(int(cc.colorspace or 2))
        if space is None:  # unspecified: what the size implies (Rec. 709 for HD, 601 below)
            space = "bt709" if cc.height >= 720 else "bt601"
        return Reel(
            uri=uri,
            width=cc.width,
            height=cc.height,
            codec=cc.name,
            pix_fmt=cc.pix_fmt,
            rate=rate,
            time_base=tb,
            pts=pts,
            field_order=FIELD_ORDERS.get(int(cc.field_order or 0), "unknown"),
            colorspace=space,
            full_range=cc.pix_fmt.startswith("yuvj") or int(cc.color_range or 0) == 2,
            timecode=timecode,
            duration_s=duration,
            streams=[
                {"index": s.index, "type": s.type, "codec": s.codec_context.name if s.codec_context else "?"}
                for s in container.streams
            ],
        )
