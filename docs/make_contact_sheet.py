"""Before/after contact sheet of a folder of scans, for looking at a model's colours.

    python docs/make_contact_sheet.py ../shared/data/historical /tmp/sheet.jpg
    python docs/make_contact_sheet.py ../shared/data/historical /tmp/gains.jpg --variant default@1 --variant default
    python docs/make_contact_sheet.py ../shared/data/historical /tmp/new.jpg --variant default --variant new.safetensors

Each --variant is WEIGHTS[@GAIN] (WEIGHTS `default` is the shipped file; without @GAIN the
weights' own calibrated gain): one column per variant beside the grey original.
Do not commit sheets made from images the project may not redistribute."""

import argparse
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from archive_colorize.model.engine import Engine, scale_chroma
from archive_colorize.imaging.images import decode_image
from archive_colorize.imaging.lab import lab_to_rgb
from archive_colorize.imaging.render import recombine
from archive_colorize.model.weights import load_weights

THUMB = 256


def engine_for(variant: str) -> tuple[str, Engine]:
    path, _, gain = variant.partition("@")
    eng = Engine(
        load_weights(None if path == "default" else path),
        device="cpu",
        chroma_gain=float(gain) if gain else None,
    )
    return f"{Path(path).stem} x{eng.chroma_gain:g}", eng


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("out")
    ap.add_argument(
        "--variant", action="append", help="WEIGHTS[@GAIN], repeatable (default: the shipped weights)"
    )
    ap.add_argument(
        "--columns", type=int, default=0, help="cells per row (default: 3 for one variant, else 1)"
    )
    a = ap.parse_args()
    variants = [engine_for(v) for v in (a.variant or ["default"])]
    files = sorted(
        p for p in Path(a.folder).iterdir() if p.suffix.lower() in (".jpg", ".png", ".tif", ".tiff")
    )
    cells = []
    for f in files:
        d = decode_image(f.read_bytes())
        zeros = torch.zeros_like(d.lightness)
        grey = lab_to_rgb(torch.stack([d.lightness, zeros, zeros])[None])
        ims = [Image.fromarray((grey[0].permute(1, 2, 0).numpy() * 255).round().astype("uint8"))]
        labels = [f.stem[:40]]
        for name, eng in variants:
            pred = eng.predict(d.lightness)
            ims.append(Image.fromarray(recombine(d.lightness, scale_chroma(pred.ab, eng.chroma_gain))))
            labels.append(f"{name}: " + ", ".join(f"{n} {p:.0%}" for n, p in eng.top5(pred.probs)[:2])[:60])
        for im in ims:
            im.thumbnail((THUMB, THUMB))
        cell = Image.new("RGB", (len(ims) * (THUMB + 8), THUMB + 20), "white")
        for i, (im, label) in enumerate(zip(ims, labels)):
            cell.paste(im, (i * (THUMB + 8), 0))
            ImageDraw.Draw(cell).text((i * (THUMB + 8) + 2, THUMB + 4), label[:44], fill="black")
        cells.append(cell)
    cols = a.columns or (3 if len(variants) == 1 else 1)
    rows = (len(cells) + cols - 1) // cols
    w, h = cells[0].size
    sheet = Image.new("RGB", (cols * (w + 12), rows * (h + 12)), "white")
    for i, c in enumerate(cells):
        sheet.paste(c, ((i % cols) * (w + 12), (i // cols) * (h + 12)))
    sheet.save(a.out, quality=90)
    print(f"wrote {a.out} ({len(cells)} images)")


if __name__ == "__main__":
    main()
