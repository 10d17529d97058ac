"""What a run is asked to do, checked before any work: options, manifest, weights, output.

No torch and no Ray here, so `submit` and `run --dry-run` answer quickly: the manifest is
checked with pyarrow and the weights are known by their header and sha256. `run` itself
then loads and verifies the weights in full (pipeline.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import pyarrow.compute as pc

from archive_colorize.run import progress
from archive_colorize.errors import ConfigError, OptionError
from archive_colorize.core.defaults import (DEFAULT_MAX_PIXELS, DEFAULT_WORKING_SIZE, check_chroma_gain,  # noqa: F401
                                            check_precision)
from archive_colorize.core.formats import FORMATS
from archive_colorize.sources.manifest import Manifest, default_out, load_manifest
from archive_colorize.core.storage import is_local, resolve

LOCK = "_lock.json"
_SECRET_WORDS = ("key", "secret", "token", "password", "session", "credential", "auth")


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
    threads_per_actor: int | None = None  # torch threads in each model actor (default: plan_resources)
    device: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS
    storage_options: dict = field(default_factory=dict)
    verbose: bool = False
    iiif_base: str | None = None  # where OUT will be published, for the ids of OUT/iiif/manifest.json
    c2pa_cert: str | None = None  # sign every output with C2PA content credentials (the c2pa extra)
    c2pa_key: str | None = None
    # where full-resolution recombination runs: in the model actor, on its device ("actor";
    # the scan is decoded once and travels to the actor at 4 bytes a pixel), or in the CPU
    # `finish` tasks, which decode the scan again ("finish"). auto: actor on a GPU.
    recombine_on: str = "auto"
    # a*b* is scaled by this before recombination; None: the weights' calibrated gain. A
    # manifest column `chroma_gain` overrides both, row by row.
    chroma_gain: float | None = None


RECOMBINE_ON = ("auto", "actor", "finish")


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
    fidelity: dict | None = None  # a lossy --precision against fp32 (engine.fidelity)


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


@dataclass
class Checked:
    """A run's inputs after every check: the manifest and where the output goes."""

    manifest: Manifest
    out_fs: object
    out_root: str
    out_url: str


def check_options(opts: RunOptions) -> None:
    if opts.fmt not in FORMATS:
        raise OptionError(f"--format must be one of {', '.join(FORMATS)}, not {opts.fmt!r}")
    check_precision(opts.precision)
    if opts.chroma_gain is not None:
        check_chroma_gain(opts.chroma_gain)
    if opts.threads_per_actor is not None and opts.threads_per_actor < 1:
        raise OptionError(f"--threads-per-actor must be >= 1, not {opts.threads_per_actor}")
    if opts.recombine_on not in RECOMBINE_ON:
        raise OptionError(f"--recombine-on must be one of {', '.join(RECOMBINE_ON)}, not {opts.recombine_on!r}")
    if opts.batch_size < 1 or opts.working_size < 8:
        raise OptionError("--batch-size must be >= 1 and --working-size >= 8",
                          hint="--batch-size counts images per model call (default 8); --working-size is the long side in pixels (default 512)")


def c2pa_credentials(cert: str | None, key: str | None, fmt: str, storage_options: dict):
    """--c2pa-cert/--c2pa-key -> checked credentials (a tiny file is signed), or None."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError("--c2pa-cert and --c2pa-key go together", hint="give the PEM certificate chain and its private key")
    from archive_colorize.imaging.c2pa_sign import Credentials, check

    creds = Credentials(cert, key, storage_options or {})
    check(creds, fmt)
    return creds


def check(opts: RunOptions) -> Checked:
    """Options, manifest (columns, types, ids, output names) and output location."""
    check_options(opts)
    manifest = load_manifest(opts.manifest, opts.storage_options)
    out_url = (opts.out or default_out(opts.manifest)).rstrip("/")
    out_fs, out_root = resolve(out_url, opts.storage_options)
    return Checked(manifest, out_fs, out_root, out_root if is_local(out_fs) else out_url)


def count_in(ids, value_set) -> int:
    return int(pc.sum(pc.is_in(ids, value_set=value_set)).as_py() or 0) if len(value_set) else 0


def inspect(opts: RunOptions, checked: Checked | None = None) -> RunPlan:
    """Check everything `run` checks before work, and read the progress log: `run --dry-run`,
    and how `submit` knows a finished job from an unfinished one. `checked`: the result of
    `check(opts)`, when the caller already has it."""
    from archive_colorize.model.weights_header import read_header

    c = checked or check(opts)
    sha = read_header(opts.weights, opts.storage_options).sha256
    done_ids, failed_ids = progress.status_by_id(c.out_fs, c.out_root)
    ids = c.manifest.ids.combine_chunks()
    n_done, n_failed = count_in(ids, done_ids), count_in(ids, failed_ids)
    pending = c.manifest.num_rows - n_done - (0 if opts.retry_failed else n_failed)
    if opts.limit is not None:
        pending = min(pending, opts.limit)
    lock = None
    if c.out_fs.exists(f"{c.out_root}/{LOCK}"):
        try:
            with c.out_fs.open(f"{c.out_root}/{LOCK}", "rb") as f:
                lock = json.loads(f.read())
        except Exception:
            lock = {"unreadable": True}
    return RunPlan(opts.manifest, c.out_url, sha, c.manifest.num_rows, n_done, n_failed, pending, lock)


# What `finish` holds at its peak for one scan, per pixel: the L* (4 bytes), the RGB result
# (3 or 6), the decoder's image and its array copy, the compressed output. benchmarks/scan.py
# measures about 20 at 24 MP 8-bit and at 100 MP 16-bit alike; this leaves room.
FINISH_BYTES_PER_PIXEL = 24
# Scans above this go to a finish stage of their own whose tasks declare the memory of the
# largest scan allowed (--max-pixels), so that several 100 MP scans never share a node's
# memory by accident; the many small ones run with a small declaration.
LARGE_SCAN_PIXELS = 40_000_000


def plan_finish(max_pixels: int, node_memory: float = 0) -> list[dict]:
    """The finish stages: each takes scans of [low, high) pixels, one at a time per task,
    and declares the memory the largest of them needs (capped at the largest node's memory,
    so that the stage can always be scheduled)."""
    def memory(pixels: int) -> int:
        need = pixels * FINISH_BYTES_PER_PIXEL
        return int(min(need, 0.8 * node_memory)) if node_memory else need

    small = min(max_pixels, LARGE_SCAN_PIXELS)
    stages = [{"low": 0, "high": small + 1, "memory": memory(small)}]
    if max_pixels > small:
        stages.append({"low": small + 1, "high": None, "memory": memory(max_pixels)})
    return stages


def finish_line(stages: list[dict], max_pixels: int) -> str:
    def size(b: float) -> str:
        return f"{b / 1e9:.2f} GB" if b >= 1e9 else f"{b / 1e6:.0f} MB"

    parts = [f"scans to {(s['high'] - 1 if s['high'] else max_pixels) / 1e6:g} Mpx declare {size(s['memory'])} each"
             for s in stages]
    return "finish tasks, one scan at a time: " + "; larger ".join(parts)


def plan_resources(cluster: dict, opts: RunOptions, node_memory: float = 0) -> dict:
    """Actor count and resources from the cluster, so the defaults never starve the decode
    and encode tasks of CPUs (Ray on 2 CPUs deadlocks if the actors hold them all).

    GPU actors form a pool of 1 to `actors`: on an autoscaling cluster it grows as GPU nodes
    join. `--device cuda --actors N` plans N GPU actors even before any GPU node has joined
    (a head with 0 CPUs and no GPU); without --actors that is an error, not a CPU run."""
    cpus = float(cluster.get("CPU", 1))
    gpus = float(cluster.get("GPU", 0))
    if opts.device == "cuda" and gpus < 1 and not opts.gpus_per_actor and not opts.actors:
        raise ConfigError(f"--device cuda was asked for, but the Ray cluster has no GPU ({cpus:g} CPUs, 0 GPUs)",
                          hint="start Ray on a GPU node, or give --actors N to wait for N GPU actors on an autoscaling "
                               "cluster, or use --device auto or cpu")
    waiting = opts.device == "cuda" and gpus < 1  # the autoscaler will bring the GPUs (and their CPUs)
    use_gpu = waiting or (gpus >= 1 and opts.device != "cpu" if opts.gpus_per_actor is None else opts.gpus_per_actor > 0)
    if use_gpu:
        per_gpu = opts.gpus_per_actor or 1.0
        actors = opts.actors or max(1, int(gpus / per_gpu))
        per_cpu = opts.cpus_per_actor or 1.0
        plan = {"actors": actors, "min_actors": 1, "num_gpus": per_gpu, "num_cpus": per_cpu, "device": "cuda"}
    else:
        per_cpu = opts.cpus_per_actor or (2.0 if cpus >= 8 else 1.0)
        reserve = max(1.0, cpus // 4)  # for prepare/finish tasks
        actors = opts.actors or max(1, int((cpus - reserve) // per_cpu))
        plan = {"actors": actors, "min_actors": actors, "num_gpus": 0, "num_cpus": per_cpu, "device": "cpu"}
    if not waiting and plan["actors"] * plan["num_cpus"] > cpus - 0.5:
        raise ConfigError(
            f"{plan['actors']} actors x {plan['num_cpus']} CPUs leaves no CPU for decoding on a {cpus:g}-CPU cluster (it would hang)",
            hint="lower --actors or --cpus-per-actor",
        )
    # torch threads per actor. On CPUs the model is the bottleneck and the CPUs kept for
    # decoding are often idle, so each actor's threads are its share of all the CPUs:
    # 1.33x the throughput of one thread on 2 CPUs (benchmarks/pipeline.py), and 7% faster
    # still on 12 MP scans, where the decoding CPU is busy (docs/performance.md).
    plan["threads"] = opts.threads_per_actor or (max(1, int(plan["num_cpus"])) if use_gpu else max(1, int(cpus // plan["actors"])))
    plan["finish"] = plan_finish(opts.max_pixels, node_memory)
    plan["recombine_on"] = opts.recombine_on if opts.recombine_on != "auto" else ("actor" if plan["device"] == "cuda" else "finish")
    return plan


def redact(obj):
    """Storage options as they may be written down: every value under a key that names a
    secret is replaced, at any depth (config_kwargs, client_kwargs...)."""
    if isinstance(obj, dict):
        return {k: ("***" if any(w in str(k).lower() for w in _SECRET_WORDS) and not isinstance(v, (dict, list))
                    else redact(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def redacted(opts: RunOptions) -> dict:
    d = asdict(opts)
    d["storage_options"] = redact(opts.storage_options or {})
    return d
