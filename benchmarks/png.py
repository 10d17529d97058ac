"""The deflate behind png.py's parallel strips: ISA-L (python-isal, what ships) against
zlib and zlib-ng (python-zlib-ng), at several levels, on one colorized 24 MP 8-bit scan
and one 100 MP 16-bit scan (benchmarks/scan.py's inputs, recombined with the shipped
weights). Encode time (2 threads, interleaved rounds, medians) against file size:

    pip install zlib-ng      # for the zlib-ng rows; they are left out without it
    python benchmarks/png.py [--rounds 3]

Writes benchmarks/results/png.json."""

import argparse
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import machine, table, write  # noqa: E402

from archive_colorize.imaging import png  # noqa: E402

FILES = {"24 MP 8-bit": "scan_24mp.png", "100 MP 16-bit": "scan_100mp.tif"}


def backends():
    from isal import isal_zlib

    out = [("isal", isal_zlib, lvl) for lvl in (1, 2, 3)] + [("zlib", zlib, lvl) for lvl in (1, 3, 6)]
    try:
        from zlib_ng import zlib_ng

        out += [("zlib-ng", zlib_ng, lvl) for lvl in (1, 3, 6)]
    except ImportError:
        print("zlib-ng not installed: its rows are left out", file=sys.stderr)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    from archive_colorize import Engine
    from archive_colorize import decode_image, working_copy
    from archive_colorize import recombine
    from archive_colorize import load_weights

    torch.set_num_threads(2)
    folder = Path(tempfile.gettempdir()) / "archive-colorize-scan-bench"
    engine = Engine(load_weights(None), device="cpu", working_size=512)
    rows = []
    for label, name in FILES.items():
        if not (folder / name).exists():
            sys.exit(f"{folder / name} is missing: run python benchmarks/scan.py first")
        d = decode_image((folder / name).read_bytes(), 10**9)
        rgb = recombine(d.lightness, engine.predict_working(working_copy(d.lightness, 512)).ab, d.bit_depth)
        times, sizes = {}, {}
        for _ in range(a.rounds):
            for lib, mod, level in backends():
                png._deflate, png.LEVEL = mod, level
                t = time.perf_counter()
                blob = png.encode_png(rgb, threads=2)
                times.setdefault((lib, level), []).append(time.perf_counter() - t)
                sizes[(lib, level)] = len(blob)
        base = statistics.median(times[("isal", 2)])
        for (lib, level), ts in times.items():
            rows.append(
                {
                    "image": label,
                    "deflate": lib,
                    "level": level,
                    "seconds": statistics.median(ts),
                    "mb": sizes[(lib, level)] / 1e6,
                    "vs_shipped": statistics.median(ts) / base,
                    "size_vs_shipped": sizes[(lib, level)] / sizes[("isal", 2)],
                }
            )
        print(f"{label}: done", flush=True)
    print(
        table(
            rows,
            [
                ("image", "image", "s"),
                ("deflate", "deflate", "s"),
                ("level", "level", "d"),
                ("seconds", "seconds", ".3f"),
                ("mb", "MB", ".1f"),
                ("vs_shipped", "time / isal 2", ".2f"),
                ("size_vs_shipped", "size / isal 2", ".3f"),
            ],
        )
    )
    print(f"\nwrote {write('png', {'machine': machine(), 'rows': rows})}")


if __name__ == "__main__":
    main()
