"""The columns the stages of `run` add to a manifest's rows, in one place.

A manifest row (id, uri, metadata...) travels through the stages and gains columns; each
stage declares the ones it appends (`PREPARED`, `SHIPPED`, `COLORIZED`, `FINISHED`), and
drops the ones it consumed. Underscore columns exist between stages only and never reach
results.parquet; the others are results (progress.RESULT_SCHEMA).

    prepare    + PREPARED (+ SHIPPED with --recombine-on actor)
    Colorizer  - WORK STYLE ERROR T FULL        + COLORIZED (+ RGB when it recombined)
    finish     - AB ERROR T (+ the SHIPPED ones) + FINISHED
"""

from __future__ import annotations

import pyarrow as pa

from archive_colorize.core.arrays import ARRAY

# between stages only
WORK = "_work"  # the working-size L* the network sees
STYLE = "_style"  # a style_uri's working-size L*, for its global features
T = "_t"  # seconds spent on the row so far (results: `seconds`)
FULL = "_full"  # full-resolution L*, shipped to an actor that recombines on its device
DEPTH = "_depth"  # the scan's bit depth, for the encoder
EXIF = "_exif"
XMP = "_xmp"
FORMAT = "_format"  # the scan's own format name, for the encoder
AB = "_ab"  # the predicted a*b* at working size
RGB = "_rgb"  # the full-resolution result, when the actor made it
FATAL = "_fatal"  # the output location refused a write: a value, since Ray loses exception types

# results
ERROR, STATUS, WIDTH, HEIGHT, INPUT_SHA = "error", "status", "width", "height", "input_sha256"
OUTPUT_URI, OUTPUT_SHA, MEAN_CHROMA, SECONDS = "output_uri", "output_sha256", "mean_chroma", "seconds"
TOP5, TOP5_PROB, WEIGHTS_SHA = "scene_top5", "scene_top5_prob", "weights_sha256"
GAIN = "chroma_gain"  # also a manifest column: a row's own gain (sources.manifest.GAIN_COLUMN)

PREPARED = pa.schema(
    [
        (WORK, ARRAY),
        (STYLE, ARRAY),
        (WIDTH, pa.int64()),
        (HEIGHT, pa.int64()),
        (INPUT_SHA, pa.string()),
        (ERROR, pa.string()),
        (T, pa.float64()),
    ]
)
SHIPPED = pa.schema(
    [(FULL, ARRAY), (DEPTH, pa.int8()), (EXIF, pa.binary()), (XMP, pa.binary()), (FORMAT, pa.string())]
)
COLORIZED = pa.schema(
    [
        (AB, ARRAY),
        (TOP5, pa.list_(pa.string())),
        (TOP5_PROB, pa.list_(pa.float32())),
        (WEIGHTS_SHA, pa.string()),
        (GAIN, pa.float64()),
        (ERROR, pa.string()),
        (T, pa.float64()),
    ]
)
FINISHED = pa.schema(
    [
        (STATUS, pa.string()),
        (ERROR, pa.string()),
        (OUTPUT_URI, pa.string()),
        (OUTPUT_SHA, pa.string()),
        (SECONDS, pa.float64()),
        (MEAN_CHROMA, pa.float32()),
        (FATAL, pa.string()),
    ]
)
# what finish receives: what prepare measured, and what the model said
FINISH_INPUT = pa.schema(
    [PREPARED.field(WIDTH), PREPARED.field(HEIGHT), PREPARED.field(INPUT_SHA), *COLORIZED]
)
# what finish leaves for the next finish stage (one for larger scans): its own results so far
FINISH_CARRIED = (STATUS, OUTPUT_URI, OUTPUT_SHA, MEAN_CHROMA, FATAL)
# the encoder's inputs when the actor recombined (RGB replaces FULL)
ENCODER = (RGB, DEPTH, EXIF, XMP, FORMAT)


def append(table: pa.Table, schema: pa.Schema, columns: dict) -> pa.Table:
    """Append `schema`'s columns, in its order and with its types, from Python lists or
    Arrow arrays: a stage's output is its declaration."""
    for f in schema:
        value = columns[f.name]
        table = table.append_column(
            f, value if isinstance(value, (pa.Array, pa.ChunkedArray)) else pa.array(value, f.type)
        )
    return table


def rows(schema: pa.Schema, base: dict, **columns) -> pa.Table:
    """A stage's input for a test or a tool: the manifest columns in `base`, then `schema`'s
    columns (None where not given)."""
    n = len(next(iter(base.values())))
    table = pa.table(base)
    return append(table, schema, {f.name: columns.get(f.name, [None] * n) for f in schema})
