"""libvips (pyvips, with the pyvips-binary wheel) against our own code for the
full-resolution steps, on the 24 MP 8-bit PNG and the 100 MP 16-bit TIFF that
benchmarks/scan.py makes (run it first), 2 threads on both sides, interleaved rounds,
medians:

    pip install pyvips pyvips-binary
    python benchmarks/vips.py [--rounds 3]

decode     bytes -> full-resolution L*: images.decode_image against vips load + the
           scan's own L* (colourspace LAB of a grey image);
colour     L* + working-size a*b* -> 8/16-bit sRGB: render.recombine (gamut mapping that
           keeps L*) against vips (bilinear upsampling of a*b*, bandjoin, LAB -> sRGB,
           which clips out-of-gamut colour per channel and so changes L*);
encode     PNG: png.encode_png (parallel ISA-L strips) against vips pngsave (libspng) at
           its fastest compression;
streamed   the whole vips graph, decode to PNG bytes, run as one threaded stream.
Writes benchmarks/results/vips.json."""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, write  # noqa: E402

FILES = {"24 MP 8-bit PNG": "scan_24mp.png", "100 MP 16-bit TIFF": "scan_100mp.tif"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    import pyvips

    from archive_colorize import Engine
    from archive_colorize import decode_image, working_copy
    from archive_colorize.imaging.png import encode_png
    from archive_colorize import recombine
    from archive_colorize import load_weights

    torch.set_num_threads(2)
    pyvips.concurrency_set(2)
    pyvips.cache_set_max(0)  # no cached results between rounds
    folder = Path(tempfile.gettempdir()) / "archive-colorize-scan-bench"
    engine = Engine(load_weights(None), device="cpu", working_size=512)
    rows = []
    for label, name in FILES.items():
        path = folder / name
        if not path.exists():
            sys.exit(f"{path} is missing: run python benchmarks/scan.py first")
        data = path.read_bytes()
        d = decode_image(data, 10**9)
        bits = d.bit_depth
        ab = engine.predict_working(working_copy(d.lightness, 512)).ab.float()
        rgb = recombine(d.lightness, ab, bits)
        H, W = d.height, d.width

        def vips_lightness():
            im = pyvips.Image.new_from_buffer(data, "", access="sequential")
            return im.colourspace("lab")[0]

        def vips_colour(L):
            a_b = pyvips.Image.new_from_memory(
                np.ascontiguousarray(ab.permute(1, 2, 0).numpy()).tobytes(),
                ab.shape[2],
                ab.shape[1],
                2,
                "float",
            )
            a_b = a_b.resize(W / ab.shape[2], vscale=H / ab.shape[1], kernel="linear")
            lab = L.bandjoin(a_b.crop(0, 0, W, H)).copy(interpretation="lab")
            return lab.colourspace("rgb16" if bits == 16 else "srgb")

        def vips_streamed():
            return vips_colour(vips_lightness()).pngsave_buffer(compression=1)

        L_np = d.lightness.numpy()
        L_vips = pyvips.Image.new_from_memory(L_np.tobytes(), W, H, 1, "float")
        rgb_vips = pyvips.Image.new_from_memory(rgb.tobytes(), W, H, 3, "ushort" if bits == 16 else "uchar")
        cases = {
            "decode": (lambda: decode_image(data, 10**9), lambda: vips_lightness().numpy()),
            "colour": (lambda: recombine(d.lightness, ab, bits), lambda: vips_colour(L_vips).numpy()),
            "encode": (lambda: encode_png(rgb, threads=2), lambda: rgb_vips.pngsave_buffer(compression=1)),
            "streamed": (None, vips_streamed),
        }
        times: dict = {}
        for _ in range(a.rounds):
            for step, (ours, theirs) in cases.items():
                for who, fn in (("ours", ours), ("vips", theirs)):
                    if fn is None:
                        continue
                    t = time.perf_counter()
                    fn()
                    times.setdefault((step, who), []).append(time.perf_counter() - t)
        # how far vips's colour is from ours, and what its clipping does to L*
        theirs = vips_colour(L_vips).numpy().astype(np.int64)
        diff = np.abs(theirs - rgb.astype(np.int64))
        ours_total = sum(statistics.median(times[(s, "ours")]) for s in ("decode", "colour", "encode"))
        for step in cases:
            o = statistics.median(times[(step, "ours")]) if (step, "ours") in times else ours_total
            v = statistics.median(times[(step, "vips")])
            rows.append(
                {
                    "image": label,
                    "step": step if step != "streamed" else "streamed (ours: the 3 steps)",
                    "ours_s": o,
                    "vips_s": v,
                    "ratio": v / o,
                }
            )
        rows.append(
            {
                "image": label,
                "step": f"vips colour vs ours: max {int(diff.max())}, mean {diff.mean():.2f} code values",
                "ours_s": None,
                "vips_s": None,
                "ratio": None,
            }
        )
        print(f"{label}: done", flush=True)
    print(
        table(
            rows,
            [
                ("image", "image", "s"),
                ("step", "step", "s"),
                ("ours_s", "ours s", ".3f"),
                ("vips_s", "vips s", ".3f"),
                ("ratio", "vips / ours", ".2f"),
            ],
        )
    )
    print(
        "\nwrote "
        + write(
            "vips",
            {
                "machine": machine(),
                "libvips": ".".join(str(pyvips.version(i)) for i in range(3)),
                "rows": rows,
            },
        )
    )


if __name__ == "__main__":
    main()
