"""`archive-colorize run`: the archive job on Ray Data.

    manifest ──validate──> minus ids already in OUT/_progress (resume = anti-join, before any work)
      └─ prepare    stateless CPU tasks   fetch, sha256, decode, working-size L* (small)
      └─ Colorizer  actor pool            working-size L* -> a*b* + scene top-5, model loaded once
      └─ finish     stateless CPU tasks   re-fetch + decode at full res, recombine with the
                                          ORIGINAL L*, encode, atomic write
      └─ driver     a progress file every 2 s or 2,048 rows, live counts; at the end
                                          results.parquet, run.json

On a GPU node `prepare` runs as CPU tasks beside the GPU actors. On a CPU-only cluster Ray
Data fuses `prepare` into the actor (same resources): measured on 2 CPUs that is faster
than keeping them apart (98% of the engine's own throughput against 72%,
docs/performance.md), because the model and the encoder then each own a core.

Only small arrays cross between stages: the full-resolution scan is decoded twice (in
`prepare` and `finish`) rather than shipped through the object store, which keeps memory
bounded on 100-megapixel scans. The sha256 taken in both places guards against an input
that changed in between.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
import platform
import socket
import time
from dataclasses import asdict, dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import torch

from . import __version__, progress
from .engine import DEFAULT_WORKING_SIZE, Engine, mean_chroma, render, software_tag, working_copy
from .errors import ColorizeError, ConfigError, ImageError, ManifestError, StorageError
from .faults import armed, crash_point
from .images import DEFAULT_MAX_PIXELS, FORMATS, decode_image
from .manifest import Manifest, default_out, load_manifest, normalize, safe_name
from .storage import atomic_write_bytes, is_local, pa_filesystem, read_bytes, remove_stale_temps, resolve, write_json

log = logging.getLogger(__name__)
LOCK = "_lock.json"
STALE_LOCK_S = 600  # a lock whose holder has not written for this long is considered dead
# The driver writes one progress file per FLUSH_ROWS rows or `progress_every` seconds,
# whichever comes first: a file per batch would leave 100,000 small files on a big run
# (slow to resume from on S3), while a crash costs at most those seconds of work, redone
# with byte-identical results.
FLUSH_ROWS = 2048


@dataclass
class RunOptions:
    manifest: str
    out: str | None = None
    weights: str | None = None
    batch_size: int = 8
    progress_every: float = 2.0  # seconds between progress-log writes
    fmt: str = "png"
    working_size: int = DEFAULT_WORKING_SIZE
    precision: str = "fp32"  # fp32 | bf16 | fp16 | int8 (the last three: opt-in, lossy)
    limit: int | None = None
    retry_failed: bool = False
    address: str | None = None
    actors: int | None = None
    cpus_per_actor: float | None = None
    gpus_per_actor: float | None = None
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    storage_options: dict = field(default_factory=dict)
    verbose: bool = False


@dataclass
class RunSummary:
    out: str
    total: int
    done: int
    failed: int
    skipped: int
    processed_now: int
    failed_now: int
    seconds: float
    pending: int
    fidelity: dict | None = None  # a lossy --precision against fp32 (fast.fidelity)


# ---------------------------------------------------------------- stateless steps


def _abs_uri(uri: str, base_dir: str) -> str:
    if "://" in uri or os.path.isabs(uri):
        return uri
    return f"{base_dir.rstrip('/')}/{uri}"


def _fetch(uri: str, storage_options: dict) -> tuple[bytes, str]:
    try:
        fs, path = resolve(uri, storage_options)
        data = read_bytes(fs, path)
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


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:500]


def prepare(batch: pa.Table, *, base_dir: str, storage_options: dict, working_size: int, max_pixels: int) -> pa.Table:
    """Fetch, hash and decode each scan; keep only the small working-size L*."""
    n = batch.num_rows
    uris = batch.column("uri").to_pylist()
    styles = batch.column("style_uri").to_pylist() if "style_uri" in batch.column_names else [None] * n
    cols = {k: [None] * n for k in ("_work", "_work_h", "_work_w", "_style", "_style_h", "_style_w",
                                     "width", "height", "input_sha256", "error", "_t")}
    for i in range(n):
        t0 = time.perf_counter()
        try:
            data, sha = _fetch(_abs_uri(uris[i], base_dir), storage_options)
            cols["input_sha256"][i] = sha
            d = decode_image(data, max_pixels)
            cols["width"][i], cols["height"][i] = d.width, d.height
            w = working_copy(d.lightness, working_size)[0, 0].numpy()
            cols["_work"][i], (cols["_work_h"][i], cols["_work_w"][i]) = w.tobytes(), w.shape
            if styles[i]:
                s = decode_image(_fetch(_abs_uri(styles[i], base_dir), storage_options)[0], max_pixels)
                sw = working_copy(s.lightness, working_size)[0, 0].numpy()
                cols["_style"][i], (cols["_style_h"][i], cols["_style_w"][i]) = sw.tobytes(), sw.shape
        except ImageError as e:
            cols["error"][i] = _one_line(e)
        except Exception as e:  # never let one odd file take the batch down
            cols["error"][i] = f"unexpected {type(e).__name__}: {_one_line(e)}"
        cols["_t"][i] = time.perf_counter() - t0
    types = {"_work": pa.binary(), "_style": pa.binary(), "width": pa.int64(), "height": pa.int64(),
             "input_sha256": pa.string(), "error": pa.string(), "_t": pa.float64()}
    for k, v in cols.items():
        batch = batch.append_column(k, pa.array(v, types.get(k, pa.int64())))
    return batch


class Colorizer:
    """The one stateful step: holds the model, loaded once per actor."""

    def __init__(self, weights: str, device: str, working_size: int, threads: int | None = None,
                 storage_options: dict | None = None, expect_sha256: str | None = None, precision: str = "fp32",
                 faults: dict | None = None):
        from .weights import load_weights

        self.faults = faults or {}
        if threads:
            torch.set_num_threads(threads)
        # A path or URL, not the bytes: constructor arguments that live in the object store
        # make Ray warn on every actor start, and a URL works on any node of a cluster.
        loaded = load_weights(weights, storage_options=storage_options)
        if expect_sha256 and loaded.file_sha256 != expect_sha256:
            raise StorageError(f"weights {weights} changed since the run started (sha256 differs)")
        self.engine = Engine(loaded, device=device, working_size=working_size, precision=precision)
        self.weights_sha256 = loaded.file_sha256

    def __call__(self, batch: pa.Table) -> pa.Table:
        crash_point("model-batch", self.faults)
        n = batch.num_rows
        errors = batch.column("error").to_pylist()
        work, wh, ww = (batch.column(c).to_pylist() for c in ("_work", "_work_h", "_work_w"))
        style, sh, sw = (batch.column(c).to_pylist() for c in ("_style", "_style_h", "_style_w"))
        t = batch.column("_t").to_pylist()
        ab_col, abh, abw, names, probs = [None] * n, [None] * n, [None] * n, [None] * n, [None] * n
        for i in range(n):
            if errors[i] is not None:
                continue
            t0 = time.perf_counter()
            try:
                x = torch.frombuffer(bytearray(work[i]), dtype=torch.float32).view(1, 1, wh[i], ww[i])
                s = None
                if style[i] is not None:
                    s = torch.frombuffer(bytearray(style[i]), dtype=torch.float32).view(1, 1, sh[i], sw[i])
                # One image per forward pass on purpose: results must not depend on how
                # rows happen to be batched, so a resumed run writes identical bytes.
                pred = self.engine.predict_working(x, s)
                ab = pred.ab.float().numpy()
                ab_col[i], abh[i], abw[i] = ab.tobytes(), ab.shape[1], ab.shape[2]
                top = self.engine.top5(pred.probs)
                names[i], probs[i] = [c for c, _ in top], [p for _, p in top]
            except Exception as e:
                errors[i] = f"model failed: {type(e).__name__}: {_one_line(e)}"
            t[i] += time.perf_counter() - t0
        batch = batch.drop_columns(["_work", "_work_h", "_work_w", "_style", "_style_h", "_style_w", "error", "_t"])
        return (
            batch.append_column("_ab", pa.array(ab_col, pa.binary()))
            .append_column("_ab_h", pa.array(abh, pa.int64()))
            .append_column("_ab_w", pa.array(abw, pa.int64()))
            .append_column("scene_top5", pa.array(names, pa.list_(pa.string())))
            .append_column("scene_top5_prob", pa.array(probs, pa.list_(pa.float32())))
            .append_column("weights_sha256", pa.array([self.weights_sha256] * n, pa.string()))
            .append_column("error", pa.array(errors, pa.string()))
            .append_column("_t", pa.array(t, pa.float64()))
        )


RESUME_HINT = "free space or fix permissions there, then run the same command again: it resumes where it stopped"


def finish(batch: pa.Table, *, base_dir: str, out_url: str, storage_options: dict, fmt: str,
           max_pixels: int, software: str) -> pa.Table:
    """Recombine the predicted chroma with the original full-resolution L*, encode, write."""
    n = batch.num_rows
    ids, uris = batch.column("id").to_pylist(), batch.column("uri").to_pylist()
    onames = batch.column("output_name").to_pylist() if "output_name" in batch.column_names else [None] * n
    errors, shas = batch.column("error").to_pylist(), batch.column("input_sha256").to_pylist()
    ab_b, abh, abw = (batch.column(c).to_pylist() for c in ("_ab", "_ab_h", "_ab_w"))
    t = batch.column("_t").to_pylist()
    out_fs, out_root = resolve(out_url, storage_options)  # the URL, not the bare path: keep the protocol
    status, out_uris, out_shas, chroma = ["failed"] * n, [None] * n, [None] * n, [None] * n
    ext = FORMATS[fmt]
    fatal = None  # the output location refused a write: this batch stops, and so will the run
    for i in range(n):
        if errors[i] is not None:
            continue
        if fatal is not None:
            status[i] = None  # not attempted: unsettled, so the resumed run does it
            continue
        t0 = time.perf_counter()
        try:
            data, sha = _fetch(_abs_uri(uris[i], base_dir), storage_options)
            if sha != shas[i]:
                raise ImageError("input changed while it was being processed (sha256 differs); retry it")
            d = decode_image(data, max_pixels)
            ab = torch.frombuffer(bytearray(ab_b[i]), dtype=torch.float32).view(2, abh[i], abw[i])
            chroma[i] = mean_chroma(ab)  # recorded for failed (grey) rows too
            blob = render(d, ab, fmt, software)
            name = f"{safe_name(onames[i] or ids[i])}.{ext}"
            try:
                atomic_write_bytes(f"{out_root}/images/{name}", blob, fs=out_fs)
            except (OSError, StorageError) as e:
                fatal, status[i] = f"cannot write to the output location {out_url}: {_one_line(e)}", None
                continue
            status[i], out_uris[i], out_shas[i] = "done", f"{out_url}/images/{name}", hashlib.sha256(blob).hexdigest()
        except ImageError as e:
            errors[i] = _one_line(e)
        except Exception as e:
            errors[i] = f"unexpected {type(e).__name__}: {_one_line(e)}"
        t[i] += time.perf_counter() - t0
    batch = batch.drop_columns(["_ab", "_ab_h", "_ab_w", "error", "_t"])
    return (
        batch.append_column("status", pa.array(status, pa.string()))
        .append_column("error", pa.array(errors, pa.string()))
        .append_column("output_uri", pa.array(out_uris, pa.string()))
        .append_column("output_sha256", pa.array(out_shas, pa.string()))
        .append_column("seconds", pa.array(t, pa.float64()))
        .append_column("mean_chroma", pa.array(chroma, pa.float32()))
        # A value, not an exception: Ray Data hands the driver a UserCodeException that has
        # lost the original's type, so an error that must stop the run travels as data.
        .append_column("_fatal", pa.array([fatal] * n, pa.string()))
    )


_SKIP_CACHE: dict = {}


def select(batch: pa.Table, *, schema: pa.Schema, skip_ref) -> pa.Table:
    """Each writer's types -> the manifest's one schema (integer ids as strings); then
    resume as an anti-join: drop rows whose id is already settled in the progress log."""
    import ray

    batch = normalize(batch, schema)
    if skip_ref is None:
        return batch
    key = skip_ref[0].hex()
    if key not in _SKIP_CACHE:
        _SKIP_CACHE.clear()
        _SKIP_CACHE[key] = ray.get(skip_ref[0])
    return batch.filter(pc.invert(pc.is_in(batch.column("id"), value_set=_SKIP_CACHE[key])))


# ---------------------------------------------------------------- lock


def _acquire_lock(fs, out_root: str) -> dict:
    path = f"{out_root}/{LOCK}"
    me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    if fs.exists(path):
        try:
            with fs.open(path, "rb") as f:
                held = json.loads(f.read())
        except Exception:
            held = {}
        alive = False
        if held.get("host") == me["host"]:
            try:
                os.kill(int(held.get("pid", -1)), 0)
                alive = True
            except (ProcessLookupError, ValueError):
                alive = False
            except PermissionError:
                alive = True
        else:
            alive = time.time() - float(held.get("time", 0)) < STALE_LOCK_S
        if alive and held.get("pid") != me["pid"]:
            raise ConfigError(
                f"another run (pid {held.get('pid')} on {held.get('host')}) is writing to {out_root}",
                hint="wait for it to finish; a lock left by a dead run is taken over automatically",
            )
    write_json(fs, path, me)
    return me


def _refresh_lock(fs, out_root: str, me: dict) -> None:
    me["time"] = time.time()
    write_json(fs, f"{out_root}/{LOCK}", me)


def _release_lock(fs, out_root: str) -> None:
    try:
        fs.rm(f"{out_root}/{LOCK}")
    except Exception:
        pass


# ---------------------------------------------------------------- the run


_SECRET_WORDS = ("key", "secret", "token", "password", "session", "credential", "auth")


def redact(obj):
    """Storage options as they may be written down: every value under a key that names a
    secret is replaced, at any depth (config_kwargs, client_kwargs...)."""
    if isinstance(obj, dict):
        return {k: ("***" if any(w in str(k).lower() for w in _SECRET_WORDS) and not isinstance(v, (dict, list))
                    else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def _redact(opts: RunOptions) -> dict:
    d = asdict(opts)
    d["storage_options"] = redact(opts.storage_options or {})
    return d


def _init_ray(opts: RunOptions):
    import ray

    address = opts.address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=opts.verbose,
                 logging_level=logging.INFO if opts.verbose else logging.ERROR, configure_logging=True)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = opts.verbose
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = opts.verbose
    for name in ("ray", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.INFO if opts.verbose else logging.ERROR)
    return ray


def plan_resources(cluster: dict, opts: RunOptions) -> dict:
    """Actor count and resources from the cluster, so the defaults never starve the decode
    and encode tasks of CPUs (Ray on 2 CPUs deadlocks if the actors hold them all)."""
    cpus = float(cluster.get("CPU", 1))
    gpus = float(cluster.get("GPU", 0))
    use_gpu = gpus >= 1 and opts.device != "cpu" if opts.gpus_per_actor is None else opts.gpus_per_actor > 0
    if use_gpu:
        per_gpu = opts.gpus_per_actor or 1.0
        actors = opts.actors or max(1, int(gpus / per_gpu))
        per_cpu = opts.cpus_per_actor or 1.0
        plan = {"actors": actors, "num_gpus": per_gpu, "num_cpus": per_cpu, "device": "cuda"}
    else:
        per_cpu = opts.cpus_per_actor or (2.0 if cpus >= 8 else 1.0)
        reserve = max(1.0, cpus // 4)  # for prepare/finish tasks
        actors = opts.actors or max(1, int((cpus - reserve) // per_cpu))
        plan = {"actors": actors, "num_gpus": 0, "num_cpus": per_cpu, "device": "cpu"}
    if plan["actors"] * plan["num_cpus"] > cpus - 0.5:
        raise ConfigError(
            f"{plan['actors']} actors x {plan['num_cpus']} CPUs leaves no CPU for decoding on a {cpus:g}-CPU cluster (it would hang)",
            hint="lower --actors or --cpus-per-actor",
        )
    plan["threads"] = max(1, int(plan["num_cpus"]))
    return plan


def _validated(opts: RunOptions):
    """Everything checked before any work, for `run` and `inspect` alike: options, manifest,
    output names, weights. -> (manifest, weights, out_fs, out_root, out_url)."""
    from .engine import check_precision
    from .weights import load_weights

    if opts.fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, not {opts.fmt!r}")
    check_precision(opts.precision)
    if opts.batch_size < 1 or opts.working_size < 8:
        raise ConfigError("--batch-size must be >= 1 and --working-size >= 8",
                          hint="--batch-size counts images per model call (default 8); --working-size is the long side in pixels (default 512)")
    manifest = load_manifest(opts.manifest, opts.storage_options)
    weights = load_weights(opts.weights, storage_options=opts.storage_options)
    out_url = (opts.out or default_out(opts.manifest)).rstrip("/")
    out_fs, out_root = resolve(out_url, opts.storage_options)
    if is_local(out_fs):
        out_url = out_root
    return manifest, weights, out_fs, out_root, out_url


def run(opts: RunOptions, console=None) -> RunSummary:
    t_start = time.time()
    manifest, weights, out_fs, out_root, out_url = _validated(opts)
    try:
        out_fs.makedirs(out_root, exist_ok=True)
        lock = _acquire_lock(out_fs, out_root)
        remove_stale_temps(out_fs, out_root)  # a killed run's half-written files; the lock means no writer is live
        crash_point("lock-acquired")
    except ColorizeError:
        raise
    except OSError as e:
        raise StorageError(f"cannot write to the output location {out_url}: {_one_line(e)}", hint=RESUME_HINT) from None

    try:
        return _run_locked(opts, manifest, weights, out_fs, out_root, out_url, lock, console, t_start)
    finally:
        _release_lock(out_fs, out_root)


@dataclass
class RunPlan:
    """What a run would do, worked out without Ray and without writing anything."""

    manifest: str
    out: str
    weights_sha256: str
    total: int
    done: int
    failed: int
    pending: int  # rows a run would process now (failed ones too with retry_failed)
    lock: dict | None  # the live lock's holder, if a run is writing to OUT


def inspect(opts: RunOptions) -> RunPlan:
    """Validate everything `run` validates (manifest, names, weights, options) and read the
    progress log: `run --dry-run`, and how `submit` knows a finished job from an unfinished one."""
    manifest, weights, out_fs, out_root, out_url = _validated(opts)
    done_ids, failed_ids = progress.status_by_id(out_fs, out_root)
    ids = manifest.ids.combine_chunks()

    def count(s):
        return int(pc.sum(pc.is_in(ids, value_set=s)).as_py() or 0) if len(s) else 0

    n_done, n_failed = count(done_ids), count(failed_ids)
    pending = manifest.num_rows - n_done - (0 if opts.retry_failed else n_failed)
    if opts.limit is not None:
        pending = min(pending, opts.limit)
    lock = None
    if out_fs.exists(f"{out_root}/{LOCK}"):
        try:
            with out_fs.open(f"{out_root}/{LOCK}", "rb") as f:
                lock = json.loads(f.read())
        except Exception:
            lock = {"unreadable": True}
    return RunPlan(opts.manifest, out_url, weights.file_sha256, manifest.num_rows, n_done, n_failed, pending, lock)


def _run_locked(opts, manifest, weights, out_fs, out_root, out_url, lock, console, t_start) -> RunSummary:
    done_ids, failed_ids = progress.status_by_id(out_fs, out_root)
    ids = manifest.ids.combine_chunks()
    skip = done_ids if opts.retry_failed else pa.concat_arrays([done_ids, failed_ids])
    n_skip = int(pc.sum(pc.is_in(ids, value_set=skip)).as_py() or 0) if len(skip) else 0
    todo = manifest.num_rows - n_skip
    if opts.limit is not None:
        todo = min(todo, opts.limit)
    counts = {"done": 0, "failed": 0}
    fid = None
    if opts.precision != "fp32" and todo > 0:
        from .fast import fidelity

        fid = fidelity(weights, opts.precision, opts.working_size)
    if todo > 0:
        _execute(opts, manifest, weights, out_fs, out_root, out_url, lock, skip, todo, counts, console)
    crash_point("before-compact")
    try:
        results = progress.compact(out_fs, out_root, manifest.ids)
    except OSError as e:
        raise StorageError(f"cannot write {out_url}/{progress.RESULTS}: {_one_line(e)}") from None
    crash_point("compacted")
    st = results.column("status")
    n_done = int(pc.sum(pc.equal(st, "done")).as_py() or 0)
    n_failed = int(pc.sum(pc.equal(st, "failed")).as_py() or 0)
    summary = RunSummary(out_url, manifest.num_rows, n_done, n_failed, n_skip, counts["done"] + counts["failed"],
                         counts["failed"], round(time.time() - t_start, 2), manifest.num_rows - n_done - n_failed, fid)
    import ray

    write_json(out_fs, f"{out_root}/run.json", {
        "archive_colorize": __version__,
        "manifest": opts.manifest,
        "manifest_files": len(manifest.files),
        "ids": "integers in the manifest, used as their decimal strings" if manifest.int_ids else "strings",
        "options": _redact(opts),
        "weights": {"path": weights.path, "sha256": weights.file_sha256, "storage": weights.metadata.get("storage"),
                    "training": weights.metadata.get("training"), "data": weights.metadata.get("data", {}).get("description")},
        "counts": {k: v for k, v in asdict(summary).items() if k != "fidelity"},
        "precision": {"name": opts.precision, **(fid or {})},
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
                     "pyarrow": pa.__version__},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    return summary


@contextlib.contextmanager
def _native_stderr_to(path: str | None):
    """Send what Ray's C++ core writes to fd 2 into `path`; yield a stream on the real
    terminal for our own progress display. Python-level errors still reach the user."""
    if path is None:
        yield sys.stderr
        return
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 2)
    os.close(fd)
    term = os.fdopen(os.dup(saved), "w", buffering=1)
    try:
        yield term
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        term.close()


def _execute(opts, manifest, weights, out_fs, out_root, out_url, lock, skip, todo, counts, console):
    import tempfile

    log_path = None if opts.verbose else os.path.join(tempfile.gettempdir(), f"archive-colorize-ray-{os.getpid()}.log")
    tty = console.is_terminal if console else sys.stderr.isatty()  # asked before fd 2 is redirected
    with _native_stderr_to(log_path) as term:
        from rich.console import Console

        on_stderr = console is None or console.file in (sys.stderr, sys.__stderr__) or getattr(console, "stderr", False)
        live = Console(file=term, force_terminal=tty, soft_wrap=True) if on_stderr else console
        _execute_quietly(opts, manifest, weights, out_fs, out_root, out_url, lock, skip, todo, counts, live)


def _execute_quietly(opts, manifest, weights, out_fs, out_root, out_url, lock, skip, todo, counts, console):
    ray = _init_ray(opts)
    from ray.data import ActorPoolStrategy

    plan = plan_resources(ray.cluster_resources(), opts)
    so = opts.storage_options or {}
    ds = ray.data.read_parquet(manifest.files, filesystem=pa_filesystem(manifest.fs),
                               partitioning=manifest.ray_partitioning(), file_extensions=None)
    ds = ds.map_batches(select, fn_kwargs={"schema": manifest.schema, "skip_ref": [ray.put(skip)] if len(skip) else None},
                        batch_format="pyarrow", batch_size=None)
    if opts.limit is not None:
        ds = ds.limit(opts.limit)
    # One block per batch (streaming, not a shuffle): a manifest file is often a single
    # block, which would serialise all decoding in one task and deliver results, and so
    # progress files, only when the whole file is done.
    ds = ds.repartition(target_num_rows_per_block=opts.batch_size)
    common = {"batch_format": "pyarrow", "batch_size": opts.batch_size, "zero_copy_batch": True}
    ds = ds.map_batches(prepare, fn_kwargs={"base_dir": manifest.base_dir, "storage_options": so,
                                            "working_size": opts.working_size, "max_pixels": opts.max_pixels}, **common)
    ds = ds.map_batches(
        Colorizer,
        fn_constructor_kwargs={"weights": weights.source, "device": plan["device"], "working_size": opts.working_size,
                               "threads": plan["threads"], "storage_options": so, "expect_sha256": weights.file_sha256,
                               "precision": opts.precision, "faults": armed()},
        compute=ActorPoolStrategy(size=plan["actors"]), num_cpus=plan["num_cpus"], num_gpus=plan["num_gpus"], **common,
    )
    software = software_tag(weights.file_sha256, opts.precision)
    ds = ds.map_batches(finish, fn_kwargs={"base_dir": manifest.base_dir, "out_url": out_url,
                                           "storage_options": so, "fmt": opts.fmt, "max_pixels": opts.max_pixels,
                                           "software": software}, **common)
    meta_cols = manifest.metadata_columns + [c for c in ("style_uri", "output_name") if c in manifest.schema.names]
    from .progress_view import RunProgress

    with RunProgress(todo, console) as bar:
        log = _ProgressWriter(out_fs, out_root, out_url, lock, opts.progress_every)
        try:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                if batch.num_rows == 0:
                    continue
                fatal = batch.column("_fatal")[0].as_py()
                if fatal is not None:
                    batch = batch.filter(pc.is_valid(batch.column("status")))
                core = [batch.column(f.name).cast(f.type) for f in progress.RESULT_SCHEMA]
                table = pa.Table.from_arrays(core, schema=progress.RESULT_SCHEMA)
                for c in meta_cols:
                    table = table.append_column(c, batch.column(c))
                log.add(table)
                st = table.column("status")
                d = int(pc.sum(pc.equal(st, "done")).as_py() or 0)
                counts["done"] += d
                counts["failed"] += table.num_rows - d
                bar.advance(d, table.num_rows - d)
                if fatal is not None:
                    raise StorageError(fatal, hint=RESUME_HINT)
        finally:
            log.flush()  # rows finished before a failure are kept: their images exist


class _ProgressWriter:
    """Buffers finished rows; writes a progress file every FLUSH_ROWS rows or `every` s."""

    def __init__(self, fs, out_root: str, out_url: str, lock: dict, every: float):
        self.fs, self.out_root, self.out_url, self.lock, self.every = fs, out_root, out_url, lock, every
        self.tables: list[pa.Table] = []
        self.rows = 0
        self.last = time.monotonic()

    def add(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self.tables.append(table)
        self.rows += table.num_rows
        if self.rows >= FLUSH_ROWS or time.monotonic() - self.last >= self.every:
            self.flush()

    def flush(self) -> None:
        if not self.tables:
            return
        table = pa.concat_tables(self.tables, promote_options="permissive")
        try:
            progress.append(self.fs, self.out_root, table)
            _refresh_lock(self.fs, self.out_root, self.lock)
        except (OSError, StorageError) as e:
            raise StorageError(f"cannot write to the output location {self.out_url} (progress log): {_one_line(e)}",
                               hint=RESUME_HINT) from None
        self.tables, self.rows, self.last = [], 0, time.monotonic()
        crash_point("progress-written")
