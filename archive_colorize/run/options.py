"""What a run is asked to do, checked before any work: options, manifest, weights, output.

`RunOptions` is the one definition of a run option: each field carries its flag, default
and help, and which commands offer it. The CLI builds `run`'s, `submit`'s and
`colorize`'s options from these fields (apps/cli.py), `submit` turns them back into a
command line with `to_argv()`, and `check_options` validates them. Adding an option is
adding a field here.

No torch and no Ray here, so `submit` and `run --dry-run` answer quickly: the manifest is
checked with pyarrow and the weights are known by their header and sha256. `run` itself
then loads and verifies the weights in full (pipeline.py).
"""

from __future__ import annotations

import json
import typing
from dataclasses import MISSING, Field, asdict, dataclass, field, fields

import pyarrow.compute as pc

from archive_colorize.run import progress
from archive_colorize.errors import ConfigError, OptionError, StorageError
from archive_colorize.core.defaults import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_WORKING_SIZE,
    PRECISIONS,
    check_chroma_gain,
    check_precision,
)
from archive_colorize.core.formats import FORMATS
from archive_colorize.sources.manifest import Manifest, default_out, load_manifest
from archive_colorize.core.storage import CREDENTIALS_HINT, is_local, no_credentials, resolve
from archive_colorize.core.secrets import redact, scrub_uri  # noqa: F401  (jobs.py checks submit's options with redact)

LOCK = "_lock.json"

RUN, SUBMIT, COLORIZE, CALIBRATE = "run", "submit", "colorize", "calibrate"
JOBS = (RUN, SUBMIT)  # what a scheduled job can ask for is what a run can
RECOMBINE_ON = ("auto", "actor", "finish")


def option(
    default, flag: str, help: str, *, commands=JOBS, pinned: bool = False, choices=None, factory=None
) -> Field:
    """A run option. `commands`: the CLI commands that offer it. `pinned`: always written
    into a submitted job's command line, so that a job's bytes do not depend on the
    defaults of the version that runs it. `choices`: the values --help and the check know."""
    meta = {"flag": flag, "help": help, "commands": tuple(commands), "pinned": pinned, "choices": choices}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class RunOptions:
    # the manifest and --out are each command's own arguments (their help differs)
    manifest: str
    out: str | None = None
    weights: str | None = option(
        None,
        "--weights",
        "Weights file or URL (s3://...) that every worker can read (default: the shipped one).",
        commands=(*JOBS, COLORIZE),
    )
    fmt: str = option(
        "png",
        "--format",
        "Output format. 16-bit inputs stay 16-bit in png/tiff.",
        commands=(*JOBS, COLORIZE),
        pinned=True,
        choices=tuple(FORMATS),
    )
    working_size: int = option(
        DEFAULT_WORKING_SIZE,
        "--working-size",
        "Long side (px) at which the network predicts colour.",
        commands=(*JOBS, COLORIZE, CALIBRATE),
        pinned=True,
    )
    batch_size: int = option(
        8,
        "--batch-size",
        "Scans per model call: a model actor colorizes this many working copies together.",
        pinned=True,
    )
    precision: str = option(
        "fp32",
        "--precision",
        "fp32 (exact, TF32 is turned off on GPUs); opt-in and lossy: int8 (CPU), bf16, fp16 (GPU).",
        commands=(*JOBS, COLORIZE),
        choices=PRECISIONS,
    )
    device: str = option("auto", "--device", "cpu, cuda or auto.", commands=(*JOBS, COLORIZE, CALIBRATE))
    recombine_on: str = option(
        "auto",
        "--recombine-on",
        "Where full-resolution colour is made: actor (on the model's "
        "device; the scan is decoded once and shipped at 4 bytes a pixel), finish (CPU tasks "
        "decode the scan again), or auto: actor on a GPU, finish on CPUs.",
        choices=RECOMBINE_ON,
    )
    progress_every: float = option(
        2.0,
        "--progress-every",
        "Seconds between progress-log writes (a crash redoes at most this much work).",
    )
    iiif_base: str | None = option(
        None,
        "--iiif-base",
        "Where OUT will be published (https://...), for the ids in "
        "OUT/iiif/manifest.json (default: OUT's own file:// or s3:// location).",
    )
    iiif_label: str | None = option(
        None,
        "--label",
        "The title of OUT/iiif/manifest.json, as viewers show it (default: the manifest's file name).",
    )
    # the credentials by path: each node reads them itself, they never enter a job's text
    c2pa_cert: str | None = option(
        None,
        "--c2pa-cert",
        "Sign each output with C2PA content credentials: the PEM "
        "certificate chain, signing certificate first (needs pip install "
        "'archive-colorize[c2pa]').",
        commands=(*JOBS, COLORIZE),
    )
    c2pa_key: str | None = option(
        None, "--c2pa-key", "The PEM private key for --c2pa-cert.", commands=(*JOBS, COLORIZE)
    )
    # a*b* is scaled by this before recombination; None: the weights' calibrated gain. A
    # manifest column `chroma_gain` overrides both, row by row.
    chroma_gain: float | None = option(
        None,
        "--chroma-gain",
        "Scale the predicted a*b* by this before recombination "
        "(default: the gain the weights were calibrated with; 1 is the model's own "
        "colour). A manifest column chroma_gain overrides it per row.",
        commands=(*JOBS, COLORIZE),
    )
    max_pixels: int = option(
        DEFAULT_MAX_PIXELS,
        "--max-pixels",
        "Refuse images larger than this (decompression bombs).",
        commands=(*JOBS, COLORIZE),
    )
    max_bytes: int = option(
        DEFAULT_MAX_BYTES,
        "--max-bytes",
        "Refuse input files larger than this many bytes (the row fails; nothing larger is read).",
        commands=(*JOBS, COLORIZE),
    )
    no_web_copies: bool = option(
        False,
        "--no-web-copies",
        "Write no thumbnails and browser copies (OUT/thumbs, OUT/web, OUT/originals) for IIIF viewers.",
    )
    temporal: str = option(
        "shot",
        "--temporal",
        "Film reels: 'shot' fuses one global feature per shot with every frame (measured: warp error "
        "-35 to -44 %, docs/video.md); 'flow' also blends a*b* along optical flow (-84 to -92 %, up to "
        "4 % less chroma); 'none' colours each frame alone.",
        pinned=True,
        choices=("shot", "flow", "none"),
    )
    video_format: str = option(
        "both",
        "--video-format",
        "Film reels: 'mkv' (FFV1 lossless mezzanine), 'mp4' (H.264 access copy) or 'both'.",
        pinned=True,
        choices=("both", "mkv", "mp4"),
    )
    style_from: str | None = option(
        None,
        "--style-from",
        "Film reels: an image (path or URL) whose global feature every shot takes, instead of the shot's own.",
    )
    chunk_frames: int = option(
        240,
        "--chunk-frames",
        "Film reels: the most frames in one unit of work (longer shots are split, one frame overlapping).",
    )
    retry_failed: bool = option(False, "--retry-failed", "Retry rows that failed in earlier runs.")
    limit: int | None = option(None, "--limit", "Process at most this many pending rows.")
    actors: int | None = option(None, "--actors", "Model actors (default: from the cluster's GPUs/CPUs).")
    cpus_per_actor: float | None = option(None, "--cpus-per-actor", "CPUs reserved by each model actor.")
    gpus_per_actor: float | None = option(
        None, "--gpus-per-actor", "GPUs per model actor (fractions share a GPU)."
    )
    threads_per_actor: int | None = option(
        None,
        "--threads-per-actor",
        "Torch threads in each model actor (default: "
        "on CPUs its share of all the node's CPUs, on GPUs its CPUs).",
    )
    storage_options: dict = option(
        None,
        "--storage-options",
        "fsspec options as JSON, e.g. '{\"anon\": true}'. A "
        "submitted job carries them in its command line: give it no credentials, the "
        "cluster brings its own.",
        factory=dict,
    )
    allow_uri: list = option(
        None,
        "--allow-uri",
        "Let rows that a remote document named (IIIF, NARA by URL) fetch URIs under this prefix, "
        "which the URI policy refuses otherwise (another scheme, a private or loopback address), "
        "e.g. http://iiif.internal/. Repeatable.",
        factory=list,
    )
    shared_fs: list = option(
        None,
        "--shared-fs",
        "On a cluster of several nodes: a local path prefix mounted on every node at the same place "
        "(NFS, Lustre...), so that a local OUT, scans or --weights under it are allowed; the run "
        "proves it with a marker file each node reads back. Repeatable.",
        factory=list,
    )
    # run only: submit has its own --address (the Jobs API), and a job's logs are Ray's
    address: str | None = option(
        None,
        "--address",
        "Ray cluster address (default: RAY_ADDRESS, else a local cluster).",
        commands=(RUN,),
    )
    verbose: bool = option(False, "--verbose", "Show Ray's own logs and progress bars.", commands=(RUN,))

    @classmethod
    def options(cls, command: str) -> list[Field]:
        """The fields `command` offers as options, in the order --help lists them."""
        return [f for f in fields(cls) if command in f.metadata.get("commands", ())]

    @classmethod
    def types(cls) -> dict:
        return typing.get_type_hints(cls)

    def to_argv(self) -> list[str]:
        """The `run` command line that asks for exactly these options (what `submit` runs):
        the manifest, --out, the pinned options, and every other one that is not its default."""
        args = [self.manifest] + (["--out", self.out] if self.out else [])
        ordered = sorted(self.options(SUBMIT), key=lambda f: not f.metadata["pinned"])
        for f in ordered:
            value = getattr(self, f.name)
            default = f.default_factory() if f.default is MISSING else f.default
            if value == default and not f.metadata["pinned"]:
                continue
            flag = f.metadata["flag"]
            if isinstance(value, bool):
                args.append(flag)
            elif isinstance(value, list):
                for item in value:
                    args += [flag, str(item)]
            elif isinstance(value, dict):
                args += [flag, json.dumps(value, sort_keys=True)]
            elif isinstance(value, float):
                args += [flag, repr(value)]
            else:
                args += [flag, str(value)]
        return args


def parse_storage_options(text: str | None) -> dict:
    """--storage-options' JSON text -> a dict, or an OptionError naming the flag."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise OptionError(f"--storage-options is not valid JSON: {e.msg}") from None
    if not isinstance(value, dict):
        raise OptionError("--storage-options must be a JSON object, e.g. '{\"anon\": true}'")
    return value


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
    unpublished_originals: int = 0  # --iiif-base: local/s3 originals with no web copy, left out


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
    for f in fields(opts):
        choices, value = f.metadata.get("choices"), getattr(opts, f.name)
        if choices and value not in choices and f.name != "precision":
            raise OptionError(f"{f.metadata['flag']} must be one of {', '.join(choices)}, not {value!r}")
    check_precision(opts.precision)  # its message explains the lossy choices
    for prefix in opts.allow_uri or ():
        if "://" not in prefix or prefix.split("://", 1)[1] == "":
            raise OptionError(
                f"--allow-uri must be a URL prefix with a scheme and host, e.g. http://iiif.internal/, not {prefix!r}"
            )
    if opts.chroma_gain is not None:
        check_chroma_gain(opts.chroma_gain)
    if opts.threads_per_actor is not None and opts.threads_per_actor < 1:
        raise OptionError(f"--threads-per-actor must be >= 1, not {opts.threads_per_actor}")
    if opts.chunk_frames < 2:
        raise OptionError(
            f"--chunk-frames must be >= 2 (one frame overlaps the chunk before), not {opts.chunk_frames}"
        )
    if opts.batch_size < 1 or opts.working_size < 8:
        raise OptionError(
            "--batch-size must be >= 1 and --working-size >= 8",
            hint="--batch-size counts images per model call (default 8); --working-size is the long side in pixels (default 512)",
        )


def c2pa_credentials(cert: str | None, key: str | None, fmt: str, storage_options: dict):
    """--c2pa-cert/--c2pa-key -> checked credentials (a tiny file is signed), or None."""
    if not cert and not key:
        return None
    if not (cert and key):
        raise ConfigError(
            "--c2pa-cert and --c2pa-key go together",
            hint="give the PEM certificate chain and its private key",
        )
    from archive_colorize.imaging.c2pa_sign import Credentials, check

    creds = Credentials(cert, key, storage_options or {})
    check(creds, fmt)
    return creds


def check(opts: RunOptions) -> Checked:
    """Options, manifest (columns, types, ids, output names) and output location."""
    check_options(opts)
    try:
        manifest = load_manifest(opts.manifest, opts.storage_options)
    except Exception as e:
        if no_credentials(e):
            raise StorageError(
                f"cannot read manifest {scrub_uri(opts.manifest)}: {e}", hint=CREDENTIALS_HINT
            ) from None
        raise
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


@dataclass(frozen=True)
class FinishStage:
    """One finish stage: the scans of [low, high) pixels (high None: no bound), and the
    memory each of its tasks declares."""

    low: int
    high: int | None
    memory: int


@dataclass(frozen=True)
class ResourcePlan:
    """How a run uses the cluster (plan_resources)."""

    actors: int  # the model actor pool's largest size
    min_actors: int  # and its smallest: GPU pools grow as GPU nodes join
    num_cpus: float  # per model actor
    num_gpus: float
    device: str  # "cuda" | "cpu"
    threads: int  # torch threads in each model actor
    finish: tuple[FinishStage, ...]
    recombine_on: str  # "actor" | "finish"


def plan_finish(max_pixels: int, node_memory: float = 0) -> list[FinishStage]:
    """The finish stages: each takes scans of [low, high) pixels, one at a time per task,
    and declares the memory the largest of them needs (capped at the largest node's memory,
    so that the stage can always be scheduled)."""

    def memory(pixels: int) -> int:
        need = pixels * FINISH_BYTES_PER_PIXEL
        return int(min(need, 0.8 * node_memory)) if node_memory else need

    small = min(max_pixels, LARGE_SCAN_PIXELS)
    stages = [FinishStage(0, small + 1, memory(small))]
    if max_pixels > small:
        stages.append(FinishStage(small + 1, None, memory(max_pixels)))
    return stages


def finish_line(stages: list[FinishStage], max_pixels: int) -> str:
    def size(b: float) -> str:
        return f"{b / 1e9:.2f} GB" if b >= 1e9 else f"{b / 1e6:.0f} MB"

    parts = [
        f"scans to {(s.high - 1 if s.high else max_pixels) / 1e6:g} Mpx declare {size(s.memory)} each"
        for s in stages
    ]
    return "finish tasks, one scan at a time: " + "; larger ".join(parts)


def _cpu_pool(cpus: float, node_cpus: list[float], per_cpu: float | None) -> tuple[int, float, int]:
    """CPU actors, CPUs per actor and torch threads per actor. Each node keeps a quarter of
    its CPUs (at least one) for decoding and encoding, and gives the rest to actors: on a
    cluster, each node's share, so no node is left with actors and nothing to feed them, and
    the threads are what the smallest share's node has per actor. Nodes of one CPU share
    nothing: then the cluster's CPUs are pooled, keeping a quarter (at least one) free."""
    per = per_cpu or (2.0 if min(node_cpus or [cpus]) >= 8 else 1.0)
    shares = [(c, int((c - max(1.0, c // 4)) // per)) for c in node_cpus]
    if len(node_cpus) > 1 and sum(a for _, a in shares):
        return sum(a for _, a in shares), per, max(1, min(int(c // a) for c, a in shares if a))
    actors = max(1, int((cpus - max(1.0, cpus // 4)) // per))
    return actors, per, _pooled_threads(cpus, actors, node_cpus)


def _pooled_threads(cpus: float, actors: int, node_cpus: list[float]) -> int:
    """Each actor's share of the cluster's CPUs, never more than a node has."""
    return max(1, int(min([cpus // actors, *node_cpus])))


def plan_resources(
    cluster: dict, opts: RunOptions, node_memory: float = 0, node_cpus: list[float] | None = None
) -> ResourcePlan:
    """Actor count and resources from the cluster, so the defaults never starve the decode
    and encode tasks of CPUs (Ray on 2 CPUs deadlocks if the actors hold them all).

    GPU actors form a pool of 1 to `actors`: on an autoscaling cluster it grows as GPU nodes
    join. `--device cuda --actors N` plans N GPU actors even before any GPU node has joined
    (a head with 0 CPUs and no GPU); without --actors that is an error, not a CPU run.
    `node_cpus`: each alive node's CPUs (nodes without CPUs left out), to plan a CPU pool
    node by node (_cpu_pool)."""
    cpus = float(cluster.get("CPU", 1))
    node_cpus = [c for c in (node_cpus or []) if c > 0]
    gpus = float(cluster.get("GPU", 0))
    if opts.device == "cuda" and gpus < 1 and not opts.gpus_per_actor and not opts.actors:
        raise ConfigError(
            f"--device cuda was asked for, but the Ray cluster has no GPU ({cpus:g} CPUs, 0 GPUs)",
            hint="start Ray on a GPU node, or give --actors N to wait for N GPU actors on an autoscaling "
            "cluster, or use --device auto or cpu",
        )
    waiting = opts.device == "cuda" and gpus < 1  # the autoscaler will bring the GPUs (and their CPUs)
    use_gpu = waiting or (
        gpus >= 1 and opts.device != "cpu" if opts.gpus_per_actor is None else opts.gpus_per_actor > 0
    )
    if use_gpu:
        per_gpu = opts.gpus_per_actor or 1.0
        actors = opts.actors or max(1, int(gpus / per_gpu))
        per_cpu = opts.cpus_per_actor or 1.0
        actors, min_actors, num_gpus, num_cpus, device = actors, 1, per_gpu, per_cpu, "cuda"
    else:
        planned, per_cpu, cpu_threads = _cpu_pool(cpus, node_cpus, opts.cpus_per_actor)
        actors = opts.actors or planned
        if opts.actors:  # the operator's count: threads are its share of the CPUs, as on one node
            cpu_threads = _pooled_threads(cpus, actors, node_cpus)
        actors, min_actors, num_gpus, num_cpus, device = actors, actors, 0, per_cpu, "cpu"
    if not waiting and actors * num_cpus > cpus - 0.5:
        raise ConfigError(
            f"{actors} actors x {num_cpus} CPUs leaves no CPU for decoding on a {cpus:g}-CPU cluster (it would hang)",
            hint="lower --actors or --cpus-per-actor",
        )
    # torch threads per actor. On CPUs the model is the bottleneck and the CPUs kept for
    # decoding are often idle, so each actor's threads are its share of all the CPUs:
    # 1.33x the throughput of one thread on 2 CPUs (benchmarks/pipeline.py), and 7% faster
    # still on 12 MP scans, where the decoding CPU is busy (docs/performance.md).
    threads = opts.threads_per_actor or (max(1, int(num_cpus)) if use_gpu else cpu_threads)
    recombine_on = (
        opts.recombine_on if opts.recombine_on != "auto" else ("actor" if device == "cuda" else "finish")
    )
    return ResourcePlan(
        actors,
        min_actors,
        num_cpus,
        num_gpus,
        device,
        threads,
        tuple(plan_finish(opts.max_pixels, node_memory)),
        recombine_on,
    )


def redacted(opts: RunOptions) -> dict:
    """The options as run.json records them: no credential, no signed or userinfo URI."""
    return redact(asdict(opts))
