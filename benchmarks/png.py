"""PNG zlib level for 8-bit outputs: encode time against file size on one 24 Mpx colour
image (a historical scan resized up and colorized by the shipped weights).

    python benchmarks/png.py [--levels 1 3 6 9] [--repeats 3]

Writes benchmarks/results/png.json. The default (images.PNG_LEVEL) was chosen from this."""

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from common import SHARED, machine, median_time, table, write  # noqa: E402

from archive_colorize.engine import Engine  # noqa: E402
from archive_colorize.render import recombine  # noqa: E402
from archive_colorize.images import decode_image  # noqa: E402
from archive_colorize.weights import load_weights  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 3, 6, 9])
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    src = Image.open(SHARED / "data" / "historical" / "lange_migrant_mother_1936.jpg").convert("L")
    scale = (24e6 / (src.width * src.height)) ** 0.5
    src = src.resize((round(src.width * scale), round(src.height * scale)), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    src.save(buf, "PNG")
    d = decode_image(buf.getvalue(), max_pixels=10**9)
    rgb = recombine(d.lightness, Engine(load_weights(None), device="cpu").predict(d.lightness).ab)
    im = Image.fromarray(rgb, "RGB")
    rows = []
    for level in a.levels:
        out = io.BytesIO()

        def enc():
            out.seek(0)
            out.truncate()
            im.save(out, "PNG", compress_level=level)

        t, _ = median_time(enc, a.repeats, warmup=0)
        rows.append({"level": level, "seconds": t, "mb": out.tell() / 1e6})
    base = next((r for r in rows if r["level"] == 6), rows[0])
    for r in rows:
        r["speed_vs_6"], r["size_vs_6"] = base["seconds"] / r["seconds"], r["mb"] / base["mb"]
    print(f"{im.width}x{im.height} RGB, 8-bit")
    print(table(rows, [("level", "zlib level", "d"), ("seconds", "seconds", ".2f"), ("mb", "MB", ".1f"),
                       ("speed_vs_6", "speed vs 6", ".2f"), ("size_vs_6", "size vs 6", ".2f")]))
    print(f"wrote {write('png', {'machine': machine(), 'size': [im.width, im.height], 'rows': rows})}")


if __name__ == "__main__":
    main()
