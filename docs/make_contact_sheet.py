"""Before/after contact sheet of a folder of scans, for looking at a model's colours.

    python docs/make_contact_sheet.py ../shared/data/historical /tmp/sheet.jpg [--weights W]

Do not commit sheets made from images the project may not redistribute."""

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from archive_colorize.engine import Engine
from archive_colorize.images import decode_image
from archive_colorize.lab import lab_to_rgb
from archive_colorize.render import recombine
from archive_colorize.weights import load_weights

THUMB = 256


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--columns", type=int, default=3)
    a = ap.parse_args()
    eng = Engine(load_weights(a.weights), device="cpu")
    files = sorted(p for p in Path(a.folder).iterdir() if p.suffix.lower() in (".jpg", ".png", ".tif", ".tiff"))
    cells = []
    for f in files:
        d = decode_image(f.read_bytes())
        pred = eng.predict(d.lightness)
        after = Image.fromarray(recombine(d.lightness, pred.ab))
        import torch

        grey = lab_to_rgb(torch.stack([d.lightness, torch.zeros_like(d.lightness), torch.zeros_like(d.lightness)])[None])
        before = Image.fromarray((grey[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8"))
        for im in (before, after):
            im.thumbnail((THUMB, THUMB))
        cell = Image.new("RGB", (2 * THUMB + 8, THUMB + 34), "white")
        cell.paste(before, (0, 0))
        cell.paste(after, (THUMB + 8, 0))
        top = ", ".join(f"{n} {p:.0%}" for n, p in eng.top5(pred.probs)[:3])
        ImageDraw.Draw(cell).text((2, THUMB + 2), f"{f.stem[:40]}\n{top[:70]}", fill="black")
        cells.append(cell)
    cols = a.columns
    rows = (len(cells) + cols - 1) // cols
    w, h = cells[0].size
    sheet = Image.new("RGB", (cols * (w + 12), rows * (h + 12)), "white")
    for i, c in enumerate(cells):
        sheet.paste(c, ((i % cols) * (w + 12), (i // cols) * (h + 12)))
    sheet.save(a.out, quality=90)
    print(f"wrote {a.out} ({len(cells)} images)")


if __name__ == "__main__":
    main()
