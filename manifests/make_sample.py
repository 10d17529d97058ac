"""Regenerate manifests/sample/ and manifests/sample.parquet from scikit-image's bundled
public-domain / CC0 photographs (pip install scikit-image). Committed output; run only to
change the sample. Nothing here comes from ../shared."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import skimage.data as data
from PIL import Image

HERE = Path(__file__).parent
SAMPLE = HERE / "sample"

# name, loader, title, creator, rights (from scikit-image's own docstrings)
SOURCES = [
    (
        "astronaut",
        data.astronaut,
        "Astronaut Eileen Collins",
        "NASA",
        "public domain (NASA); no known copyright restrictions",
    ),
    (
        "rocket",
        data.rocket,
        "Falcon 9 carrying DSCOVR, Cape Canaveral",
        "SpaceX",
        "public domain (released by SpaceX)",
    ),
    ("coffee", data.coffee, "Coffee cup", "Rachel Michetti", "CC0"),
    ("chelsea", data.chelsea, "Chelsea the cat", "Stefan van der Walt", "CC0"),
    ("coins", data.coins, "Greek coins from Pompeii", "Brooklyn Museum", "no known copyright restrictions"),
]


def main():
    SAMPLE.mkdir(exist_ok=True)
    rows = []
    for name, load, title, creator, rights in SOURCES:
        arr = load()
        im = Image.fromarray(arr).convert("L")  # archives hold grayscale scans
        if name == "coins":  # one 16-bit scan, as a flatbed at 16 bits/channel would give
            g16 = np.asarray(im).astype(np.uint16) * 257
            fname = f"{name}.png"
            Image.fromarray(g16).save(SAMPLE / fname)
        else:
            fname = f"{name}.jpg"
            im.save(SAMPLE / fname, quality=88)
        rows.append(
            {
                "id": name,
                "uri": f"sample/{fname}",
                "title": title,
                "creator": creator,
                "rights": rights,
                "source": f"scikit-image {__import__('skimage').__version__}: skimage.data.{name}()",
            }
        )
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, HERE / "sample.parquet")
    with open(SAMPLE / "SOURCES.csv", "w") as f:
        f.write("file,title,creator,rights,source\n")
        for r in rows:
            f.write(",".join(f'"{r[k]}"' for k in ("uri", "title", "creator", "rights", "source")) + "\n")


if __name__ == "__main__":
    main()
