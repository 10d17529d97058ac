"""One scan through every step of the pipeline at 1, 6, 24 and 100 megapixels (the 100 MP
one a 16-bit TIFF), each in a fresh process so memory figures are its own.

    python benchmarks/scan.py [--sizes 1 6 24 100] [--repeats 3] [--working-size 512]

Steps, as `run` does them: read (bytes) and decode (to full-resolution L*) and working
copy in `prepare`; predict (the network at the working size) in the model actor; read
again and decode again in `finish` (the full scan is not shipped between stages,
stages.py), recombine (chroma upsampled and joined with the original L*), encode (PNG,
16-bit for the 16-bit input), write. Reports the median time and the peak
RSS of each step. Inputs are a real historical scan resized up, written once to a temp
folder. Writes benchmarks/results/scan.json."""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, PeakRSS, machine, median_time, rss_mb, table, write  # noqa: E402

SOURCE = SHARED / "data" / "historical" / "lange_migrant_mother_1936.jpg"
KINDS = {1: "jpeg", 6: "jpeg", 24: "png", 100: "tiff16"}


def make_input(mpx: int, folder: Path) -> Path:
    from PIL import Image

    kind = KINDS.get(mpx, "jpeg")
    path = folder / f"scan_{mpx}mp.{'tif' if kind == 'tiff16' else kind.replace('jpeg', 'jpg')}"
    if path.exists():
        return path
    im = Image.open(SOURCE).convert("L")
    scale = (mpx * 1e6 / (im.width * im.height)) ** 0.5
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
    if kind == "tiff16":
        import tifffile

        tifffile.imwrite(path, (np.asarray(im, np.uint16) * 257), compression="zlib")
    elif kind == "png":
        im.save(path)
    else:
        im.save(path, quality=92)
    return path


def one(path: Path, working_size: int, repeats: int, code: str = "now") -> dict:
    """Runs in its own process. code="before": decoding, recombination and PNG encoding as
    they were before issue 13 (benchmarks/legacy.py)."""
    import torch

    from archive_colorize import Engine
    from archive_colorize import working_copy
    from archive_colorize import recombine
    from archive_colorize import decode_image, encode_image
    from archive_colorize.imaging.images import output_bit_depth
    from archive_colorize.core.storage import atomic_write_bytes
    from archive_colorize import load_weights
    from legacy import encode_png_before, recombine_before, use_decode_before

    if code == "before":
        use_decode_before()

    torch.set_num_threads(2)
    engine = Engine(load_weights(None), device="cpu", working_size=working_size)
    start_rss = rss_mb()
    steps, state = [], {}

    def step(name, fn):
        with PeakRSS() as mem:
            t, _ = median_time(fn, repeats, warmup=0)
        steps.append({"step": name, "seconds": t, "peak_rss_mb": mem.peak})

    def read():
        state["data"] = path.read_bytes()

    def decode():
        state.pop("decoded", None)
        state["decoded"] = decode_image(state["data"], max_pixels=10**9)

    def work():
        state["x"] = working_copy(state["decoded"].lightness, working_size)

    def predict():
        state["pred"] = engine.predict_working(state["x"])

    def combine():
        state.pop("rgb", None)
        d = state["decoded"]
        fn = recombine_before if code == "before" else recombine
        state["rgb"] = fn(d.lightness, state["pred"].ab, output_bit_depth(d.bit_depth, "png"))

    def encode():
        state.pop("blob", None)
        if code == "before":
            from PIL import Image

            state["blob"] = encode_png_before(state["rgb"], Image.Exif(), None)
        else:
            state["blob"] = encode_image(state["rgb"], "png")

    out = Path(tempfile.mkdtemp()) / "out.png"

    def write_out():
        atomic_write_bytes(str(out), state["blob"])

    for name, fn in (
        ("read", read),
        ("decode", decode),
        ("working copy", work),
        ("predict", predict),
        ("read again", read),
        ("decode again", decode),
        ("recombine", combine),
        ("encode", encode),
        ("write", write_out),
    ):
        step(name, fn)
    d = state["decoded"]
    return {
        "code": code,
        "file": path.name,
        "megapixels": d.width * d.height / 1e6,
        "bit_depth": d.bit_depth,
        "bytes_in": len(state["data"]),
        "bytes_out": len(state["blob"]),
        "start_rss_mb": start_rss,
        "steps": steps,
        "total_s": sum(s["seconds"] for s in steps),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in steps),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 6, 24, 100])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--working-size", type=int, default=512)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--code", default="now", help=argparse.SUPPRESS)
    ap.add_argument(
        "--compare", action="store_true", help="also run the code of before the parallel strips, interleaved"
    )
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(Path(a.one), a.working_size, a.repeats, a.code)))
        return
    folder = Path(tempfile.gettempdir()) / "archive-colorize-scan-bench"
    folder.mkdir(exist_ok=True)
    results = []
    before = []
    for mpx in a.sizes:
        path = make_input(mpx, folder)
        for code in ("now", "before") if a.compare else ("now",):
            r = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    str(path),
                    "--repeats",
                    str(a.repeats),
                    "--working-size",
                    str(a.working_size),
                    "--code",
                    code,
                ],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                sys.exit(r.stderr[-3000:])
            res = json.loads(r.stdout.strip().splitlines()[-1])
            (results if code == "now" else before).append(res)
            print(
                f"{mpx:>4} MP {res['bit_depth']:>2}-bit ({code}): {res['total_s']:.2f} s, peak RSS {res['peak_rss_mb']:.0f} MB",
                flush=True,
            )
    base = results[0]["total_s"]
    if before:
        print()
        print(
            table(
                [
                    {
                        "image": f"{n['megapixels']:.0f} MP {n['bit_depth']}-bit",
                        "before": b["total_s"],
                        "now": n["total_s"],
                        "ratio": n["total_s"] / b["total_s"],
                        "bytes": n["bytes_out"] / b["bytes_out"],
                    }
                    for n, b in zip(results, before)
                ],
                [
                    ("image", "image", "s"),
                    ("before", "before s", ".2f"),
                    ("now", "now s", ".2f"),
                    ("ratio", "now / before", ".2f"),
                    ("bytes", "PNG size now / before", ".2f"),
                ],
            )
        )
    rows = []
    for res in results:
        for s in res["steps"]:
            rows.append({"image": f"{res['megapixels']:.0f} MP {res['bit_depth']}-bit", **s})
        rows.append(
            {
                "image": f"{res['megapixels']:.0f} MP {res['bit_depth']}-bit",
                "step": "**total**",
                "seconds": res["total_s"],
                "peak_rss_mb": res["peak_rss_mb"],
                "x_1mp": res["total_s"] / base,
            }
        )
    print()
    print(
        table(
            rows,
            [
                ("image", "image", "s"),
                ("step", "step", "s"),
                ("seconds", "seconds", ".3f"),
                ("peak_rss_mb", "peak RSS MB", ".0f"),
                ("x_1mp", "time vs 1 MP", ".2f"),
            ],
        )
    )
    print(
        f"\nwrote {write('scan', {'machine': machine(), 'working_size': a.working_size, 'results': results, 'before': before})}"
    )


if __name__ == "__main__":
    main()
