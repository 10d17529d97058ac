"""The Ray Data stages of `run`, as plain functions of Arrow tables (and one class), so
each can be called and tested without a cluster:

    select     each writer's types -> the manifest's schema; drop ids already settled
    prepare    fetch, sha256, decode; keep the working-size L* (small)
    Colorizer  the model, loaded once per actor: working-size L* -> a*b* + scene top-5
    finish     fetch and decode again at full size, recombine with the ORIGINAL L*,
               encode, atomic write; one stage for small scans and one for large, each
               declaring the memory of its largest scan (options.plan_finish)

On CPUs only small arrays cross between stages: the full-resolution scan is decoded twice
(in `prepare` and `finish`) rather than shipped through the object store, which keeps
memory bounded on 100-megapixel scans; the sha256 taken in both places guards against an
input that changed in between. On a GPU (`ship`, --recombine-on actor) `prepare` ships
the full L* to the Colorizer, which recombines on its device, and `finish` only encodes.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from archive_colorize.errors import ImageError, StorageError, one_line
from archive_colorize.model.engine import Engine, scale_chroma
from archive_colorize.run.faults import crash_point
from archive_colorize.imaging.images import decode_image, output_bit_depth, working_copy
from archive_colorize.sources.manifest import normalize, safe_name
from archive_colorize.imaging.provenance import Provenance
from archive_colorize.imaging.render import colour, encode_result, mean_chroma, render_pixels
from archive_colorize.core.formats import web_name
from archive_colorize.imaging.web import web_copies
from archive_colorize.core.secrets import scrub_uri
from archive_colorize.core.storage import abs_uri, read_bytes, resolve, with_retries
from archive_colorize.core.arrays import pack, unpack_numpy
from archive_colorize.run import schema as S
from archive_colorize.sinks.images import ImageFolder
from archive_colorize.core.defaults import DEFAULT_MAX_BYTES
from archive_colorize.core.uripolicy import HTTP, TRUSTED, UriPolicy, UriRefused, fetch_http

PENDING = "pending"  # between finish stages only: a scan left for the stage sized for it


def unpack(column: pa.ChunkedArray | pa.Array) -> list[torch.Tensor | None]:
    """Writable copies, as torch tensors: for the small arrays (working copies, a*b*)."""
    return [None if a is None else torch.from_numpy(a.copy()) for a in unpack_numpy(column)]


def fetch(
    uri: str, storage_options: dict, policy: UriPolicy = TRUSTED, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[bytes, str]:
    """The scan's bytes and their sha256. A row from a remote document goes through the URI
    policy: checked, fetched hop by hop, with credentials only for their own origin."""
    path = uri
    try:
        so = policy.credentials_for(uri, storage_options)
        if policy.untrusted and uri.split("://", 1)[0].lower() in HTTP:  # every hop checked, the first too
            data = fetch_http(uri, policy, so, max_bytes)
        else:
            policy.check(uri)
            fs, path = resolve(uri, so)
            # a stat or a HEAD, so nothing too large is read; retried like the read itself
            size = with_retries(lambda: fs.size(path), f"reading {path}")
            if size is not None and size > max_bytes:
                raise ImageError(f"{size} bytes, larger than --max-bytes {max_bytes}")
            data = read_bytes(fs, path)
            if len(data) > max_bytes:  # it grew, or the size was not known
                raise ImageError(f"{len(data)} bytes, larger than --max-bytes {max_bytes}")
    except UriRefused as e:
        raise ImageError(f"refused {uri}: {e}") from None
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"input not found: {uri}") from None
    except PermissionError:
        raise ImageError(f"permission denied reading {uri}") from None
    except IsADirectoryError:
        raise ImageError(f"input is a directory: {uri}") from None
    except StorageError as e:
        raise ImageError(str(e).replace(f"reading {path}", f"cannot read {uri}", 1)) from None
    except OSError as e:
        raise ImageError(f"cannot read {uri}: {e.strerror or e}") from None
    return data, hashlib.sha256(data).hexdigest()


def select(batch: pa.Table, *, schema: pa.Schema, skip: pa.Array | None = None) -> pa.Table:
    """Each writer's types -> the manifest's one schema (integer ids as strings); then
    resume as an anti-join: drop rows whose id is already settled (`skip`)."""
    batch = normalize(batch, schema)
    if skip is None or not len(skip):
        return batch
    return batch.filter(pc.invert(pc.is_in(batch.column("id"), value_set=skip)))


def prepare(
    batch: pa.Table,
    *,
    base_dir: str,
    storage_options: dict,
    working_size: int,
    max_pixels: int,
    ship: bool = False,
    policy: UriPolicy = TRUSTED,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> pa.Table:
    """Fetch, hash and decode each scan; keep the small working-size L*. With `ship`, also
    the full-resolution L* and the metadata the encoder needs, for a model actor that
    recombines on its GPU: the scan is then decoded once, here."""
    n = batch.num_rows
    uris = batch.column("uri").to_pylist()
    styles = batch.column("style_uri").to_pylist() if "style_uri" in batch.column_names else [None] * n
    work, style, width, height, sha, error, t = ([None] * n for _ in range(7))
    full, depth, exif, xmp, fmt = ([None] * n for _ in range(5))
    for i in range(n):
        t0 = time.perf_counter()
        try:
            data, sha[i] = fetch(abs_uri(uris[i], base_dir), storage_options, policy, max_bytes)
            d = decode_image(data, max_pixels)
            width[i], height[i] = d.width, d.height
            work[i] = working_copy(d.lightness, working_size)[0, 0].numpy()
            if ship:
                full[i], depth[i], fmt[i], xmp[i] = d.lightness.numpy(), d.bit_depth, d.format, d.xmp
                exif[i] = None if d.exif is None else d.exif.tobytes()
            if styles[i]:
                s = decode_image(
                    fetch(abs_uri(styles[i], base_dir), storage_options, policy, max_bytes)[0], max_pixels
                )
                style[i] = working_copy(s.lightness, working_size)[0, 0].numpy()
        except ImageError as e:
            error[i] = one_line(e)
        except Exception as e:  # never let one odd file take the batch down
            error[i] = f"unexpected {type(e).__name__}: {one_line(e)}"
        t[i] = time.perf_counter() - t0
    out = S.append(
        batch,
        S.PREPARED,
        {
            S.WORK: pack(work),
            S.STYLE: pack(style),
            S.WIDTH: width,
            S.HEIGHT: height,
            S.INPUT_SHA: sha,
            S.ERROR: error,
            S.T: t,
        },
    )
    if ship:
        out = S.append(
            out, S.SHIPPED, {S.FULL: pack(full), S.DEPTH: depth, S.EXIF: exif, S.XMP: xmp, S.FORMAT: fmt}
        )
    return out


class Colorizer:
    """The one stateful stage: holds the model, loaded once per actor."""

    def __init__(
        self,
        weights: str,
        device: str,
        working_size: int,
        threads: int | None = None,
        storage_options: dict | None = None,
        expect_sha256: str | None = None,
        precision: str = "fp32",
        faults: dict | None = None,
        batch: int = 1,
        fmt: str | None = None,
        chroma_gain: float | None = None,
    ):
        from archive_colorize.model.weights import load_weights

        self.faults = faults or {}
        self.fmt = fmt  # the output format: its bit depth, when this actor recombines (a `_full` column)
        if threads:
            torch.set_num_threads(threads)
        # A path or URL, not the bytes: constructor arguments that live in the object store
        # make Ray warn on every actor start, and a URL works on any node of a cluster.
        loaded = load_weights(weights, storage_options=storage_options)
        if expect_sha256 and loaded.file_sha256 != expect_sha256:
            raise StorageError(f"weights {weights} changed since the run started (sha256 differs)")
        self.engine = Engine(
            loaded,
            device=device,
            working_size=working_size,
            precision=precision,
            batch=batch,
            chroma_gain=chroma_gain,
        )
        self.weights_sha256 = loaded.file_sha256
        self.where = f"{device_label(self.engine.device)} on {socket.gethostname()} pid {os.getpid()}"

    def __call__(self, batch: pa.Table) -> pa.Table:
        crash_point("model-batch", self.faults)
        n = batch.num_rows
        errors = batch.column(S.ERROR).to_pylist()
        work, style = unpack(batch.column(S.WORK)), unpack(batch.column(S.STYLE))
        t = batch.column(S.T).to_pylist()
        gains = [self.engine.chroma_gain] * n  # the run's (or the weights'), unless the row names its own
        if S.GAIN in batch.column_names:
            gains = [
                self.engine.chroma_gain if g is None else float(g) for g in batch.column(S.GAIN).to_pylist()
            ]
            batch = batch.drop_columns([S.GAIN])
        ab, names, probs = [None] * n, [None] * n, [None] * n
        rows = [i for i in range(n) if errors[i] is None]
        items = [(work[i][None, None], None if style[i] is None else style[i][None, None]) for i in rows]
        t0 = time.perf_counter()
        # Results never depend on how rows happen to be batched (Engine.predict_batch), so a
        # resumed run writes identical bytes.
        try:
            crash_point("device-error", self.faults)
            if self.faults.get("ARCHIVE_COLORIZE_PASSTHROUGH_MODEL"):
                preds = [_passthrough(w, self.engine) for w, _ in items]
            else:
                preds = self.engine.predict_batch(items)
        except Exception as e:
            if is_device_error(e):
                self._die(e)
            preds = None  # a scan's own fault: find it by running each alone
        for k, i in enumerate(rows):
            try:
                pred = preds[k] if preds is not None else self.engine.predict_batch([items[k]])[0]
                if not (bool(torch.isfinite(pred.ab).all()) and bool(torch.isfinite(pred.probs).all())):
                    errors[i] = "the model produced non-finite values (NaN or Inf); nothing written"
                    continue
                ab[i] = scale_chroma(pred.ab.float(), gains[i]).numpy()
                top = self.engine.top5(pred.probs)
                names[i], probs[i] = [c for c, _ in top], [p for _, p in top]
            except Exception as e:
                if is_device_error(e):
                    self._die(e)
                errors[i] = f"model failed: {type(e).__name__}: {one_line(e)}"
        share = (time.perf_counter() - t0) / max(1, len(rows))
        for i in rows:
            t[i] += share
        full = S.FULL in batch.column_names  # this actor makes the colour, on its device
        rgb = pack(self._recombine(batch, ab, errors, t)) if full else None
        batch = batch.drop_columns([S.WORK, S.STYLE, S.ERROR, S.T] + ([S.FULL] if full else []))
        if full:
            batch = batch.append_column(S.RGB, rgb)
        return S.append(
            batch,
            S.COLORIZED,
            {
                S.AB: pack(ab),
                S.TOP5: names,
                S.TOP5_PROB: probs,
                S.WEIGHTS_SHA: [self.weights_sha256] * n,
                S.GAIN: gains,
                S.ERROR: errors,
                S.T: t,
            },
        )

    def _recombine(self, batch: pa.Table, ab: list, errors: list, t: list) -> list[np.ndarray | None]:
        """On this actor's device (its GPU), in strips sized to its free memory: the same
        torch function `finish` runs on the CPU (render.colour). Only encoding is left."""
        with warnings.catch_warnings():  # read-only views: recombine copies each strip it reads
            warnings.simplefilter("ignore", UserWarning)
            full = [None if f is None else torch.from_numpy(f) for f in unpack_numpy(batch.column(S.FULL))]
        depth = batch.column(S.DEPTH).to_pylist()
        rgb = [None] * batch.num_rows
        for i in range(batch.num_rows):
            if errors[i] is not None or ab[i] is None:
                continue
            t0 = time.perf_counter()
            try:
                rgb[i] = colour(
                    full[i],
                    torch.from_numpy(ab[i]),
                    output_bit_depth(depth[i], self.fmt),
                    device=self.engine.device,
                )
            except ImageError as e:
                errors[i] = one_line(e)
            except Exception as e:
                if is_device_error(e):
                    self._die(e)
                errors[i] = f"unexpected {type(e).__name__}: {one_line(e)}"
            t[i] += time.perf_counter() - t0
        return rgb

    def _die(self, e: BaseException) -> None:
        """A device fault (CUDA out of memory, an illegal address) is not the scan's fault and
        must never fail its row: the actor process ends, Ray starts a new one (a fresh CUDA
        context) and the batch is done again."""
        import sys

        print(
            f"archive-colorize: model actor {self.where}: device error, restarting: {one_line(e)}",
            file=sys.stderr,
            flush=True,
        )
        os._exit(DEVICE_FAULT_EXIT)


def _passthrough(work: torch.Tensor, engine: Engine):
    """A benchmark's stand-in for the network (faults.py): a constant, visible colour at
    the network's output size, and flat scene probabilities."""
    from archive_colorize.model.engine import Prediction

    h, w = work.shape[-2:]
    ab = torch.empty(2, (h + 1) // 2, (w + 1) // 2)
    ab[0], ab[1] = 8.0, 12.0
    n = len(engine.weights.categories)
    return Prediction(ab, torch.full((n,), 1.0 / n))


DEVICE_FAULT_EXIT = 75
_DEVICE_WORDS = (
    "CUDA error",
    "CUDA out of memory",
    "cuDNN error",
    "CUBLAS_STATUS",
    "CUDNN_STATUS",
    "device-side assert",
    "illegal memory access",
    "NCCL error",
)


def is_device_error(e: BaseException) -> bool:
    if isinstance(e, torch.cuda.OutOfMemoryError) or type(e).__name__ == "AcceleratorError":
        return True
    return isinstance(e, RuntimeError) and any(w in str(e) for w in _DEVICE_WORDS)


def device_label(device: torch.device) -> str:
    """The device and what decides its bytes: GPU, CUDA and cuDNN, torch."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return (
            f"cuda:{index} ({torch.cuda.get_device_name(index)}; CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()}; torch {torch.__version__})"
        )
    return f"{device.type} ({torch.get_num_threads()} threads; torch {torch.__version__})"


def finish(
    batch: pa.Table,
    *,
    base_dir: str,
    out_url: str,
    storage_options: dict,
    fmt: str,
    max_pixels: int,
    provenance: Provenance,
    pixels: tuple[int, int | None] = (0, None),
    last: bool = True,
    policy: UriPolicy = TRUSTED,
    max_bytes: int = DEFAULT_MAX_BYTES,
    web: bool = True,
) -> pa.Table:
    """Recombine the predicted chroma with the original full-resolution L*, encode, write
    (with `web`, the copies IIIF viewers show first: imaging/web.py).

    A finish stage takes the scans whose pixel count lies in `pixels` = [low, high) and
    leaves the others "pending" for a later stage, one declared with the memory that larger
    scans need (options.plan_finish); the `last` stage settles every row. A write the
    output location refuses stops this batch and (via `_fatal`) the run."""
    n = batch.num_rows
    ids, uris = batch.column("id").to_pylist(), batch.column("uri").to_pylist()
    onames = batch.column("output_name").to_pylist() if "output_name" in batch.column_names else [None] * n
    errors, shas = batch.column(S.ERROR).to_pylist(), batch.column(S.INPUT_SHA).to_pylist()
    sizes = [
        None if w is None else w * h
        for w, h in zip(batch.column(S.WIDTH).to_pylist(), batch.column(S.HEIGHT).to_pylist())
    ]
    t = batch.column(S.T).to_pylist()
    if S.STATUS in batch.column_names:  # an earlier finish stage did the smaller scans
        status, out_uris, out_shas, chroma = (
            batch.column(c).to_pylist() for c in (S.STATUS, S.OUTPUT_URI, S.OUTPUT_SHA, S.MEAN_CHROMA)
        )
        fatal = batch.column(S.FATAL)[0].as_py()
        batch = batch.drop_columns(list(S.FINISH_CARRIED))
    else:
        status = ["failed" if e is not None else PENDING for e in errors]
        out_uris, out_shas, chroma = [None] * n, [None] * n, None
        fatal = None  # the output location refused a write: this batch stops, and so will the run
    low, high = pixels
    todo = [
        i for i in range(n) if status[i] == PENDING and sizes[i] >= low and (high is None or sizes[i] < high)
    ]
    abs_ = unpack(batch.column(S.AB)) if todo or chroma is None else [None] * n
    if chroma is None:  # recorded for every row the model coloured, also one refused as grey
        chroma = [None if a is None else mean_chroma(a) for a in abs_]
    # a model actor that recombined on its GPU sent the RGB result: only encoding is left
    shipped = S.RGB in batch.column_names and bool(todo)
    if shipped:
        rgbs = unpack_numpy(batch.column(S.RGB))
        exifs, xmps, formats = (batch.column(c).to_pylist() for c in (S.EXIF, S.XMP, S.FORMAT))
    folder = ImageFolder(out_url, storage_options) if todo else None
    for i in todo:
        if fatal is not None:
            status[i] = None  # not attempted: unsettled, so the resumed run does it
            continue
        status[i] = "failed"
        t0 = time.perf_counter()
        try:
            name = ImageFolder.file_name(safe_name(onames[i] or ids[i]), fmt)
            ingredient = f"{ids[i]}: {scrub_uri(uris[i])}"  # the C2PA ingredient's title
            scan_uri = abs_uri(uris[i], base_dir)
            if shipped:
                # the scan is read again only for a C2PA ingredient, which is its bytes
                source = (
                    None
                    if provenance.c2pa is None
                    else fetch_unchanged(scan_uri, storage_options, shas[i], policy, max_bytes)
                )
                rgb = rgbs[i]
                blob = encode_result(
                    rgb,
                    fmt,
                    provenance,
                    exif_from(exifs[i]),
                    xmps[i],
                    source,
                    formats[i],
                    name,
                    ingredient,
                )
            else:
                data = fetch_unchanged(scan_uri, storage_options, shas[i], policy, max_bytes)
                blob, rgb = render_pixels(
                    decode_image(data, max_pixels), abs_[i], fmt, provenance, source=data, title=name,
                    ingredient=ingredient,
                )  # fmt: skip
            copies = web_copies(rgb, fmt, provenance, scan_uri) if web else {}
            try:
                for where, copy in copies.items():  # first, so that a done row has them all
                    folder.write(web_name(name), copy, where)
                uri = folder.write(name, blob)
            except (OSError, StorageError) as e:
                fatal, status[i] = f"cannot write to the output location {out_url}: {one_line(e)}", None
                continue
            status[i], out_uris[i], out_shas[i] = "done", uri, hashlib.sha256(blob).hexdigest()
        except ImageError as e:
            errors[i] = one_line(e)
        except Exception as e:
            errors[i] = f"unexpected {type(e).__name__}: {one_line(e)}"
        t[i] += time.perf_counter() - t0
    if last:
        status = [None if s == PENDING else s for s in status]  # none left when the classes cover every size
    done_with = [S.AB] + [c for c in S.ENCODER if c in batch.column_names]
    batch = batch.drop_columns([S.ERROR, S.T] + (done_with if last else []))
    # a later finish stage still counts this row's seconds: they stay an underscore column
    schema = (
        S.FINISHED
        if last
        else S.FINISHED.set(S.FINISHED.get_field_index(S.SECONDS), pa.field(S.T, pa.float64()))
    )
    return S.append(
        batch,
        schema,
        {
            S.STATUS: status,
            S.ERROR: errors,
            S.OUTPUT_URI: out_uris,
            S.OUTPUT_SHA: out_shas,
            S.SECONDS: t,
            S.T: t,
            S.MEAN_CHROMA: chroma,
            S.FATAL: [fatal] * n,
        },
    )


def fetch_unchanged(
    uri: str, storage_options: dict, sha: str, policy: UriPolicy = TRUSTED, max_bytes: int = DEFAULT_MAX_BYTES
) -> bytes:
    """The scan's bytes again, refused if they are not the ones `prepare` hashed."""
    data, now = fetch(uri, storage_options, policy, max_bytes)
    if now != sha:
        raise ImageError("input changed while it was being processed (sha256 differs); retry it")
    return data


def exif_from(data: bytes | None):
    if not data:
        return None
    from PIL import Image

    exif = Image.Exif()
    exif.load(data)
    return exif
