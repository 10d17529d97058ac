"""`archive-colorize run`: the archive job on Ray Data, orchestrated.

    check        options, manifest, weights, output (options.py), before any work
    lock         one writer per OUT (lock.py)
    resume       ids already settled in OUT/_progress are skipped: an anti-join, not a rerun
    stream       select -> prepare -> Colorizer (actor pool) -> finish (stages.py)
    record       a progress file every 2 s or 2,048 rows (progress.py), live counts
    compact      results.parquet and run.json at the end

On a GPU node `prepare` runs as CPU tasks beside the GPU actors. On a CPU-only cluster
Ray Data fuses `prepare` into the actor (same resources), so that the model and the
encoder each own a core (docs/performance.md, "The pipeline").
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from archive_colorize.run import progress

if TYPE_CHECKING:  # torch and the signer load only when a run starts
    import fsspec
    from rich.console import Console

    from archive_colorize.imaging.c2pa_sign import Credentials
    from archive_colorize.model.weights import Weights
from archive_colorize.run import schema as S
from archive_colorize.core.uripolicy import UriPolicy
from archive_colorize.errors import RESUME_HINT, ClusterError, ColorizeError, StorageError, one_line
from archive_colorize.run.faults import armed, crash_point
from archive_colorize.run.cluster import NodeWatch
from archive_colorize.run.lock import OutputLock
from archive_colorize.sources.manifest import Manifest
from archive_colorize.run.options import (
    RunOptions,
    RunSummary,
    c2pa_credentials,
    check,
    count_in,
    finish_line,
    plan_resources,
)
from archive_colorize.run.progress_view import native_stderr_to
from archive_colorize.run.records import previous_devices, write_iiif, write_run_json
from archive_colorize.core.storage import is_local, pa_filesystem, remove_stale_temps

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """Everything one run knows, handed to each step instead of a dozen arguments."""

    opts: RunOptions
    manifest: Manifest
    weights: Weights  # loaded and verified
    out_fs: fsspec.AbstractFileSystem
    out_root: str
    out_url: str
    lock: OutputLock
    console: Console | None = None
    t_start: float = field(default_factory=time.time)
    c2pa: Credentials | None = None  # checked
    skip: pa.Array | None = None  # ids settled in the progress log that this run leaves alone
    todo: int = 0
    counts: dict = field(default_factory=lambda: {"done": 0, "failed": 0})
    devices: set = field(default_factory=set)  # what the model actors ran on (stages.device_label)
    earlier_devices: list = field(default_factory=list)  # what earlier runs into OUT ran on (their run.json)
    actors: set = field(default_factory=set)  # each model actor: device, host, node, pid (run.json)
    nodes: int = 1  # alive Ray nodes at the start
    reels: pa.Table | None = None  # the manifest's pending film reels (run/reels.py)


def run(opts: RunOptions, console=None) -> RunSummary:
    from archive_colorize.model.weights import load_weights

    t_start = time.time()
    c = check(opts)
    credentials = c2pa_credentials(opts.c2pa_cert, opts.c2pa_key, opts.fmt, opts.storage_options)
    weights = load_weights(opts.weights, storage_options=opts.storage_options)  # verified in full, once
    # Ray first, before the lock: the cluster (--address or RAY_ADDRESS) may have several
    # nodes, and every one must see what the run reads and writes (the shipped weights are
    # in the package, on every node)
    from archive_colorize.run.cluster import check_placement

    if is_local(c.out_fs) and opts.shared_fs:
        c.out_fs.makedirs(c.out_root, exist_ok=True)  # the marker of the share goes here
    check_placement(
        _init_ray(opts), c.out_root, is_local(c.out_fs), c.manifest, opts.weights or "", opts.shared_fs or ()
    )
    lock = OutputLock(c.out_fs, c.out_root)
    try:
        c.out_fs.makedirs(c.out_root, exist_ok=True)
        lock.acquire()
        remove_stale_temps(
            c.out_fs, c.out_root
        )  # a killed run's half-written files; the lock means no writer is live
        crash_point("lock-acquired")
    except ColorizeError:
        raise
    except OSError as e:
        raise StorageError(
            f"cannot write to the output location {c.out_url}: {one_line(e)}", hint=RESUME_HINT
        ) from None
    ctx = RunContext(
        opts, c.manifest, weights, c.out_fs, c.out_root, c.out_url, lock, console, t_start, credentials
    )
    try:
        return _run_locked(ctx)
    finally:
        lock.release()


def _run_locked(ctx: RunContext) -> RunSummary:
    opts, manifest = ctx.opts, ctx.manifest
    ctx.earlier_devices = previous_devices(ctx)
    done_ids, failed_ids = progress.status_by_id(ctx.out_fs, ctx.out_root)
    ctx.skip = done_ids if opts.retry_failed else pa.concat_arrays([done_ids, failed_ids])
    n_skip = count_in(manifest.ids.combine_chunks(), ctx.skip)
    from archive_colorize.run.reels import reel_rows

    # reels go their own way (per shot, run/reels.py): the scans' pass leaves them alone
    ctx.reels = reel_rows(manifest, ctx.skip)
    if ctx.reels.num_rows:
        ctx.skip = pa.concat_arrays([ctx.skip.cast(pa.string()), ctx.reels.column("id").combine_chunks()])
    ctx.todo = manifest.num_rows - n_skip - ctx.reels.num_rows
    if opts.limit is not None:
        ctx.todo = min(ctx.todo, opts.limit)
    fid = None
    if opts.precision != "fp32" and ctx.todo > 0:
        from archive_colorize.model.engine import fidelity

        fid = fidelity(ctx.weights, opts.precision, opts.working_size)
    if ctx.todo > 0:
        _execute(ctx)
    if ctx.reels.num_rows:
        _reels(ctx)
    crash_point("before-compact")
    try:
        results = progress.compact(ctx.out_fs, ctx.out_root, manifest.ids)
    except OSError as e:
        raise StorageError(f"cannot write {ctx.out_url}/{progress.RESULTS}: {e}") from None
    crash_point("compacted")
    unpublished = write_iiif(ctx, results)
    st = results.column("status")
    n_done = int(pc.sum(pc.equal(st, "done")).as_py() or 0)
    n_failed = int(pc.sum(pc.equal(st, "failed")).as_py() or 0)
    summary = RunSummary(
        ctx.out_url,
        manifest.num_rows,
        n_done,
        n_failed,
        n_skip,
        sum(ctx.counts.values()),
        ctx.counts["failed"],
        round(time.time() - ctx.t_start, 2),
        manifest.num_rows - n_done - n_failed,
        fid,
        unpublished,
    )
    write_run_json(ctx, summary, fid)
    return summary


def _execute(ctx: RunContext) -> None:
    verbose = ctx.opts.verbose
    log_path = (
        None if verbose else os.path.join(tempfile.gettempdir(), f"archive-colorize-ray-{os.getpid()}.log")
    )
    console = ctx.console
    tty = console.is_terminal if console else sys.stderr.isatty()  # asked before fd 2 is redirected
    with native_stderr_to(log_path) as term:
        from rich.console import Console

        on_stderr = (
            console is None
            or console.file in (sys.stderr, sys.__stderr__)
            or getattr(console, "stderr", False)
        )
        live = Console(file=term, force_terminal=tty, soft_wrap=True, markup=False) if on_stderr else console
        ds, plan, cluster = _dataset(ctx)
        gpus = f", {plan.num_gpus:g} GPU" if plan.num_gpus else ""
        nodes = f"{ctx.nodes} nodes, " if ctx.nodes > 1 else ""
        live.print(
            f"model actors: {plan.actors} on {plan.device}, {plan.num_cpus:g} CPU{gpus} each "
            f"(cluster: {nodes}{cluster.get('CPU', 0):g} CPUs, {cluster.get('GPU', 0):g} GPUs)",
            highlight=False,
        )
        where = f"; the model actors make the colour on {plan.device}" if plan.recombine_on == "actor" else ""
        live.print(finish_line(plan.finish, ctx.opts.max_pixels) + where, highlight=False)
        _stream(ctx, ds, live)
        before = ctx.earlier_devices
        if before and ctx.devices and set(before) != ctx.devices:
            live.print(
                f"note: earlier rows here were made on {', '.join(before)}; the rows made now on "
                f"{', '.join(sorted(ctx.devices))} may differ from them in their last bits",
                highlight=False,
            )


def _init_ray(opts: RunOptions):
    import ray

    # a cluster only when asked for (--address, or RAY_ADDRESS, which Ray sets for a job's
    # driver); else a local one of our own. Left to itself ray.init joins whatever cluster
    # /tmp/ray/ray_current_cluster names: a developer's `ray start`, or one that died and
    # left the file behind, which it then waits on for ever, printing GCS timeouts
    address = opts.address or os.environ.get("RAY_ADDRESS") or "local"
    if not ray.is_initialized():
        try:
            ray.init(
                address=address,
                include_dashboard=False,
                log_to_driver=opts.verbose,
                logging_level=logging.INFO if opts.verbose else logging.ERROR,
                configure_logging=True,
            )
        except Exception as e:
            from archive_colorize.run.jobs import driver_hint

            hint = driver_hint(e)
            if hint is None:
                raise
            raise ClusterError(
                f"cannot join the Ray cluster at {address}: {one_line(e, 300)}", hint=hint
            ) from None
    dctx = ray.data.DataContext.get_current()
    dctx.enable_progress_bars = opts.verbose
    if hasattr(dctx, "print_on_execution_start"):
        dctx.print_on_execution_start = opts.verbose
    for name in ("ray", "ray.data", "ray.train"):
        logging.getLogger(name).setLevel(logging.INFO if opts.verbose else logging.ERROR)
    return ray


def _resource_plan(ctx: RunContext):
    """The model actors' pool, from the cluster as it is now: the scans' and the reels'."""
    ray = _init_ray(ctx.opts)
    cluster = ray.cluster_resources()
    alive = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    ctx.nodes = len(alive)
    plan = plan_resources(
        cluster,
        ctx.opts,
        max((r.get("memory", 0) for r in alive), default=0),
        [float(r.get("CPU", 0)) for r in alive],
    )
    return plan, cluster


def _reels(ctx: RunContext) -> None:
    from rich.console import Console

    from archive_colorize.run.reels import run_reels

    _init_ray(ctx.opts)
    writer = progress.ProgressWriter(
        ctx.out_fs, ctx.out_root, ctx.out_url, ctx.opts.progress_every, on_flush=ctx.lock.refresh
    )
    console = ctx.console or Console(stderr=True, soft_wrap=True)
    run_reels(ctx, lambda: _resource_plan(ctx)[0], writer, console)


def _dataset(ctx: RunContext):
    from ray.data import ActorPoolStrategy

    from archive_colorize.imaging.provenance import Provenance
    from archive_colorize.run.stages import prepare

    ray = _init_ray(ctx.opts)
    opts, m, so = ctx.opts, ctx.manifest, ctx.opts.storage_options or {}
    plan, cluster = _resource_plan(ctx)
    ds = ray.data.read_parquet(
        m.files, filesystem=pa_filesystem(m.fs), partitioning=ray_partitioning(m), file_extensions=None
    )
    skip_ref = [ray.put(ctx.skip)] if len(ctx.skip) else None
    ds = ds.map_batches(
        _select, fn_kwargs={"schema": m.schema, "skip_ref": skip_ref}, batch_format="pyarrow", batch_size=None
    )
    if opts.limit is not None:
        ds = ds.limit(opts.limit)
    # One block per batch (streaming, not a shuffle): a manifest file is often a single
    # block, which would serialise all decoding in one task and deliver results, and so
    # progress files, only when the whole file is done.
    ds = ds.repartition(target_num_rows_per_block=opts.batch_size)
    common = {"batch_format": "pyarrow", "batch_size": opts.batch_size, "zero_copy_batch": True}
    # the operator's manifest is trusted; rows a remote document named are not (uripolicy.py)
    policy = UriPolicy(bool(m.untrusted_origin), tuple(opts.allow_uri or ()), m.untrusted_origin)
    ship = plan.recombine_on == "actor"  # the actor recombines on its device: prepare ships the full L*
    ds = ds.map_batches(
        prepare,
        fn_kwargs={
            "base_dir": m.base_dir,
            "storage_options": so,
            "working_size": opts.working_size,
            "max_pixels": opts.max_pixels,
            "ship": ship,
            "policy": policy,
            "max_bytes": opts.max_bytes,
        },
        **common,
    )
    ds = ds.map_batches(
        _model_actor(),
        fn_constructor_kwargs={
            "weights": ctx.weights.source,
            "device": plan.device,
            "working_size": opts.working_size,
            "threads": plan.threads,
            "storage_options": so,
            "expect_sha256": ctx.weights.file_sha256,
            "precision": opts.precision,
            "faults": armed(),
            # batched forwards pay on a GPU; on a CPU one image at a time is as fast
            "batch": opts.batch_size if plan.device == "cuda" else 1,
            "fmt": opts.fmt if ship else None,
            "chroma_gain": opts.chroma_gain,
        },
        compute=ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.actors),
        num_cpus=plan.num_cpus,
        num_gpus=plan.num_gpus,
        **common,
    )
    provenance = Provenance(ctx.weights.file_sha256, opts.precision, ctx.c2pa)
    for k, stage in enumerate(plan.finish):  # small scans, then large ones, each with the memory it needs
        ds = ds.map_batches(
            _finish_on_node,
            fn_kwargs={
                "base_dir": m.base_dir,
                "out_url": ctx.out_url,
                "storage_options": so,
                "fmt": opts.fmt,
                "max_pixels": opts.max_pixels,
                "provenance": provenance,
                "pixels": (stage.low, stage.high),
                "last": k == len(plan.finish) - 1,
                "policy": policy,
                "max_bytes": opts.max_bytes,
                "web": not opts.no_web_copies,
            },
            memory=stage.memory,
            **common,
        )
    return ds, plan, cluster


# Ray's share of the stage protocol (the stages themselves know nothing of Ray):
ACTOR = "_actor"  # the model actor's device and host, so the driver can say what each really got
_SETTLED: dict = {}  # per worker process: the settled ids, fetched from the object store once


def _select(batch: pa.Table, *, schema: pa.Schema, skip_ref) -> pa.Table:
    """stages.select, with the ids the progress log settled: one object shared by every task."""
    from archive_colorize.run.stages import select

    skip = None
    if skip_ref is not None:
        import ray

        key = skip_ref[0].hex()
        if key not in _SETTLED:
            _SETTLED.clear()
            _SETTLED[key] = ray.get(skip_ref[0])
        skip = _SETTLED[key]
    return select(batch, schema=schema, skip=skip)


def _finish_on_node(batch: pa.Table, **kw) -> pa.Table:
    """stages.finish, and which node wrote each output (results.parquet's `node`): on a
    misconfigured cluster, where the files went."""
    import socket

    import ray

    from archive_colorize.run.stages import PENDING, finish

    before = batch.column(S.STATUS).to_pylist() if S.STATUS in batch.column_names else None
    out = finish(batch, **kw)
    where = f"{ray.get_runtime_context().get_node_id()[:12]} {socket.gethostname()}"
    if "node" not in out.column_names:
        return out.append_column("node", pa.array([where] * out.num_rows, pa.string()))
    # a later finish stage: the rows an earlier one left pending are this node's
    nodes = [where if b == PENDING else n for b, n in zip(before, out.column("node").to_pylist())]
    return out.set_column(out.column_names.index("node"), "node", pa.array(nodes, pa.string()))


def _model_actor():
    """stages.Colorizer as a Ray actor: it also says where it runs. A device fault ends the
    actor's process (Colorizer._die), and Ray's restart gives it a fresh CUDA context."""
    from archive_colorize.run.stages import Colorizer

    class ModelActor(Colorizer):
        def __init__(self, **kw):
            import ray

            super().__init__(**kw)
            # hosts repeat (containers, loopback clusters); the node id tells actors apart
            node = ray.get_runtime_context().get_node_id()[:12]
            self.where = self.where.replace(" pid ", f" node {node} pid ", 1)

        def __call__(self, batch: pa.Table) -> pa.Table:
            out = super().__call__(batch)
            return out.append_column(ACTOR, pa.array([self.where] * out.num_rows, pa.string()))

    return ModelActor


def ray_partitioning(m: Manifest):
    """The manifest's Hive partitions for Ray Data's reader, or None."""
    if not len(m.partitions):
        return None
    from ray.data.datasource.partitioning import Partitioning

    def py(t):
        return (
            int
            if pa.types.is_integer(t)
            else float
            if pa.types.is_floating(t)
            else bool
            if pa.types.is_boolean(t)
            else str
        )

    return Partitioning("hive", base_dir=m.root, field_types={f.name: py(f.type) for f in m.partitions})


def _stream(ctx: RunContext, ds, console) -> None:
    """Pull finished rows, record them in the progress log, show the counts."""
    import ray

    from archive_colorize.run.progress_view import RunProgress

    meta_cols = ctx.manifest.metadata_columns + [
        c for c in ("style_uri", "output_name") if c in ctx.manifest.schema.names
    ]
    writer = progress.ProgressWriter(
        ctx.out_fs, ctx.out_root, ctx.out_url, ctx.opts.progress_every, on_flush=ctx.lock.refresh
    )
    watch = NodeWatch(ray)
    with RunProgress(ctx.todo, console) as bar:
        try:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                for line in watch.changes():
                    bar.note(line)
                if batch.num_rows == 0:
                    continue
                for where in set(batch.column(ACTOR).to_pylist()) - ctx.actors:
                    ctx.actors.add(where)
                    ctx.devices.add(where.split(" on ")[0])
                    bar.note(f"model actor: {where}")
                fatal = batch.column(S.FATAL)[0].as_py()
                if fatal is not None:  # rows the refused write left unattempted are not recorded
                    batch = batch.filter(pc.is_valid(batch.column("status")))
                table = pa.Table.from_arrays(
                    [batch.column(f.name).cast(f.type) for f in progress.RESULT_SCHEMA],
                    schema=progress.RESULT_SCHEMA,
                )
                for c in meta_cols:
                    table = table.append_column(c, batch.column(c))
                writer.add(table)
                d = int(pc.sum(pc.equal(table.column("status"), "done")).as_py() or 0)
                ctx.counts["done"] += d
                ctx.counts["failed"] += table.num_rows - d
                bar.advance(d, table.num_rows - d)
                if fatal is not None:
                    raise StorageError(fatal, hint=RESUME_HINT)
            for line in watch.changes(now=True):
                bar.note(line)
        finally:
            writer.flush()  # rows finished before a failure are kept: their images exist
