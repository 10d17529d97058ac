"""Film reels in a run: a reel is a manifest row, a chunk of a shot is a unit of work.

Ray tasks probe each reel and find its shots; Ray Data hands the chunks to a pool of model
actors planned as the scans' pool is (plan_resources: never every CPU on a small machine);
the driver writes each finished chunk as a row of the shot log, OUT/_progress_shots/, and
once every chunk of a reel is there, joins its segments into the outputs and writes the
reel's row into the run's progress log. A rerun after a crash redoes only the chunks whose
row, or whose segment with the bytes the row names, is missing."""

from __future__ import annotations

import time
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from archive_colorize.core.formats import KINDS, VIDEO_SUFFIXES
from archive_colorize.core.storage import abs_uri, atomic_write_bytes, is_local, pa_filesystem, resolve
from archive_colorize.errors import ConfigError, one_line
from archive_colorize.core.secrets import scrub_uri
from archive_colorize.run import progress
from archive_colorize.run.faults import armed, crash_point
from archive_colorize.sources.manifest import safe_name

SHOT_LOG = "_progress_shots"
SHOT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("chunk", pa.int64()),
        ("shot", pa.int64()),
        ("first_frame", pa.int64()),
        ("stop_frame", pa.int64()),
        ("frames", pa.int64()),
        ("sha256", pa.string()),
        ("warp_error_sum", pa.float64()),
        ("warp_pairs", pa.int64()),
        ("mean_chroma", pa.float64()),
        ("seconds", pa.float64()),
        ("error", pa.string()),
        # what made the chunk: a rerun with other weights or settings redoes it, not reuses it
        ("settings", pa.string()),
    ]
)


def reel_rows(m, skip: pa.Array | None) -> pa.Table:
    """The manifest's reels not yet settled: id, uri, output_name; a `kind` column says, else
    the file name. An unknown kind refuses the run before any work, naming the column."""
    cols = ["id", "uri"] + [c for c in ("kind", "output_name") if c in m.schema.names]
    t = pads.dataset(m.files, filesystem=pa_filesystem(m.fs), format="parquet").to_table(columns=cols)
    t = t.cast(pa.schema([pa.field(c, pa.string()) for c in cols]))
    suffix = "(" + "|".join(x.replace(".", r"\.") for x in VIDEO_SUFFIXES) + r")([?#]|$)"
    by_name = pc.match_substring_regex(pc.utf8_lower(t.column("uri")), suffix)
    is_reel = by_name
    if "kind" in cols:
        bad = pc.invert(pc.is_in(pc.fill_null(t.column("kind"), "image"), value_set=pa.array(KINDS)))
        if pc.any(bad).as_py():
            v = t.filter(bad).column("kind")[0].as_py()
            raise ConfigError(f"manifest column 'kind': {v!r} is neither of {', '.join(KINDS)}")
        is_reel = pc.if_else(pc.is_null(t.column("kind")), by_name, pc.equal(t.column("kind"), "video"))
    t = t.filter(is_reel)
    if skip is not None and len(skip):
        t = t.filter(pc.invert(pc.is_in(t.column("id"), value_set=skip)))
    return t


def _plan(row: dict, base_dir: str, opts_d: dict, out_url: str, so: dict):
    """Probe a reel and cut it into chunks (a Ray task: it reads the whole reel once)."""
    from archive_colorize.video.probe import ReelError, probe
    from archive_colorize.video.reel import ReelPlan
    from archive_colorize.video.encode import VIDEO_FORMATS
    from archive_colorize.video.shots import chunks, detect_shots

    import os
    import tempfile

    uri = abs_uri(row["uri"], base_dir)
    scratch = None
    try:
        if opts_d["untrusted"]:  # fetching hop by hop under the URI policy is the scans' path only
            raise ReelError(
                "reels named by a remote document are not fetched (give the operator's own manifest)"
            )
        fs, path = resolve(uri, so)
        local = is_local(fs)
        if not fs.exists(path):
            raise ReelError(f"not found: {row['uri']}")
        size = fs.size(path)
        if size is not None and size > opts_d["max_bytes"]:
            raise ReelError(f"{size} bytes, over --max-bytes {opts_d['max_bytes']}")
        if not local:
            # shot detection reads every frame, in order: one download, on this node only;
            # the model actors then seek into the remote file for their chunk alone
            fd, scratch = tempfile.mkstemp(prefix="archive-colorize-reel-", suffix=os.path.splitext(path)[1])
            os.close(fd)
            fs.get_file(path, scratch)
        reel = probe(path if local else scratch)
        shots = detect_shots(path if local else scratch, reel.frames)
        plan = ReelPlan(
            id=row["id"],
            source=path if local else uri,
            reel=reel,
            chunks=chunks(shots, opts_d["chunk_frames"]),
            name=safe_name(row.get("output_name") or row["id"]),
            temporal=opts_d["temporal"],
            formats=VIDEO_FORMATS[opts_d["video_format"]],
            out_url=out_url,
        )
        return plan, len(shots), None
    except ReelError as e:
        return None, 0, str(e)
    except Exception as e:  # an unreadable reel fails its row, whatever FFmpeg says
        return None, 0, f"unreadable reel: {one_line(e)}"
    finally:
        if scratch:
            os.unlink(scratch)


class ReelActor:
    """The model actor for reels: the same construction as the scans' (stages.Colorizer), so
    the same weights, device, precision and threads; it colours one chunk per call."""

    def __init__(self, plans: dict, storage_options: dict, style: str | None, faults: dict, **engine_kw):
        import torch

        from archive_colorize.run.stages import Colorizer

        self.inner = Colorizer(storage_options=storage_options, faults=faults, **engine_kw)
        self.plans, self.so, self.faults = plans, storage_options, faults
        self.style = None
        if style:
            from archive_colorize.core.storage import read_bytes
            from archive_colorize.imaging.images import decode_image

            fs, path = resolve(style, storage_options)
            self.style = decode_image(read_bytes(fs, path)).lightness
        torch.set_grad_enabled(False)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from archive_colorize.video.reel import colour_chunk

        rows = []
        for reel_id, k in zip(batch.column("id").to_pylist(), batch.column("chunk").to_pylist()):
            plan = self.plans[reel_id]
            try:
                row = colour_chunk(self.inner.engine, plan, plan.chunks[k], self.so, self.style)
                row["error"] = None
            except Exception as e:
                row = {"id": reel_id, "chunk": k, "error": f"chunk {k}: {one_line(e)}"}
            crash_point("chunk-coloured", self.faults)
            rows.append(row)
        return pa.Table.from_pylist(rows, schema=SHOT_SCHEMA)


def settings_key(ctx) -> str:
    """Everything a chunk's bytes depend on besides the reel itself."""
    import hashlib
    import json

    o = ctx.opts
    made_by = {
        "weights": ctx.weights.file_sha256,
        "working_size": o.working_size,
        "precision": o.precision,
        "chroma_gain": o.chroma_gain,
        "temporal": o.temporal,
        "video_format": o.video_format,
        "chunk_frames": o.chunk_frames,
        "style_from": o.style_from,
    }
    return hashlib.sha256(json.dumps(made_by, sort_keys=True).encode()).hexdigest()[:16]


def _read_shot_log(fs, root: str, settings: str) -> dict:
    d = f"{root}/{SHOT_LOG}"
    if not fs.exists(d):
        return {}
    done = {}
    for p in sorted(fs.ls(d, detail=False)):
        if p.endswith(".parquet") and p.rsplit("/", 1)[-1].startswith("part-"):
            with fs.open(p, "rb") as f:
                for r in pq.read_table(f).to_pylist():
                    if r["error"] is None and r.get("settings") == settings:
                        done[(r["id"], r["chunk"])] = r
    return done


def _append_shot(fs, root: str, row: dict) -> None:
    path = f"{root}/{SHOT_LOG}/part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([row], schema=SHOT_SCHEMA), sink)
    atomic_write_bytes(path, sink.getvalue().to_pybytes(), fs=fs)


def _result(row: dict, status: str, error: str | None, t0: float, **extra) -> dict:
    base = {f.name: None for f in progress.RESULT_SCHEMA}
    base.update({"id": row["id"], "uri": row["uri"], "status": status, "error": error, "kind": "video"})
    base["seconds"] = round(time.time() - t0, 3)
    base.update(extra)
    return base


def run_reels(ctx, plan_resources_for, writer, console) -> None:
    """Every pending reel of the manifest, through probe, the actor pool and the join."""
    import ray
    from ray.data import ActorPoolStrategy

    from archive_colorize.imaging.provenance import Provenance
    from archive_colorize.video.reel import chunk_is_done, finish_reel, remove_segments

    opts, m, so = ctx.opts, ctx.manifest, ctx.opts.storage_options or {}
    rows = ctx.reels.to_pylist()
    if opts.limit is not None:
        rows = rows[: max(0, opts.limit - sum(ctx.counts.values()))]
    if not rows:
        return
    t0 = time.time()
    opts_d = {
        "chunk_frames": opts.chunk_frames,
        "temporal": opts.temporal,
        "video_format": opts.video_format,
        "max_bytes": opts.max_bytes,
        "untrusted": bool(m.untrusted_origin),
    }
    task = ray.remote(num_cpus=1)(_plan)
    planned = ray.get([task.remote(r, m.base_dir, opts_d, ctx.out_url, so) for r in rows])
    plans, shots, results = {}, {}, []
    for r, (plan, n_shots, error) in zip(rows, planned):
        if plan is None:
            results.append(_result(r, "failed", error, t0))
        else:
            plans[r["id"]], shots[r["id"]] = plan, n_shots
            console.print(
                f"reel {r['id']}: {plan.reel.describe()}; {n_shots} shots, {len(plan.chunks)} chunks",
                highlight=False,
            )
    settings = settings_key(ctx)
    log = _read_shot_log(ctx.out_fs, ctx.out_root, settings)
    done = {k: v for k, v in log.items() if k[0] in plans and chunk_is_done(plans[k[0]], v, so)}
    todo = [
        {"id": i, "chunk": c.index} for i, p in plans.items() for c in p.chunks if (i, c.index) not in done
    ]
    failed: dict[str, str] = {}
    if todo:
        rp = plan_resources_for()
        ds = ray.data.from_items(todo, override_num_blocks=len(todo)).map_batches(
            ReelActor,
            fn_constructor_kwargs={
                "plans": plans,
                "storage_options": so,
                "style": opts.style_from,
                "faults": armed(),
                "weights": ctx.weights.source,
                "device": rp.device,
                "working_size": opts.working_size,
                "threads": rp.threads,
                "expect_sha256": ctx.weights.file_sha256,
                "precision": opts.precision,
                "chroma_gain": opts.chroma_gain,
            },
            compute=ActorPoolStrategy(min_size=rp.min_actors, max_size=rp.actors),
            num_cpus=rp.num_cpus,
            num_gpus=rp.num_gpus,
            batch_size=1,
            batch_format="pyarrow",
        )
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for row in batch.to_pylist():
                if row["error"]:
                    failed.setdefault(row["id"], row["error"])
                    continue
                row["settings"] = settings
                _append_shot(ctx.out_fs, ctx.out_root, row)  # the segment was written before
                done[(row["id"], row["chunk"])] = row
                crash_point("shot-written")
            ctx.lock.refresh()
    provenance = Provenance(ctx.weights.file_sha256, opts.precision, ctx.c2pa)
    by_id = {r["id"]: r for r in rows}
    for i, plan in plans.items():
        r = by_id[i]
        if i in failed:
            results.append(_result(r, "failed", failed[i], t0))
            continue
        mine = [done[(i, c.index)] for c in plan.chunks]
        try:
            shas = finish_reel(plan, provenance, so)
        except Exception as e:
            results.append(_result(r, "failed", f"cannot join the reel's segments: {one_line(e)}", t0))
            continue
        crash_point("reel-joined")
        pairs = sum(x["warp_pairs"] for x in mine)
        warp = sum(x["warp_error_sum"] for x in mine) / pairs if pairs else None
        frames = sum(x["frames"] for x in mine)
        main = plan.formats[0]
        results.append(
            _result(
                r,
                "done",
                None,
                t0,
                output_uri=plan.output(main),
                width=plan.reel.width,
                height=plan.reel.height,
                input_sha256=_sha_of(plan.source, so),
                output_sha256=shas[main],
                weights_sha256=ctx.weights.file_sha256,
                mean_chroma=sum(x["mean_chroma"] * x["frames"] for x in mine) / max(1, frames),
                chroma_gain=ctx.opts.chroma_gain,
                frames=frames,
                shots=shots[i],
                fps=str(plan.reel.rate),
                temporal=plan.temporal,
                warp_error=warp,
                # the writer scrubs uri and output_uri; this column names OUT's URLs too
                video_outputs=";".join(f"{f}:{scrub_uri(plan.output(f))}" for f in plan.formats),
                frames_per_second=round(frames / max(1e-9, sum(x["seconds"] for x in mine)), 3),
            )
        )
    keys = list(dict.fromkeys(k for r in results for k in r))  # from_pylist would take the first row's
    table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in results])
    table = pa.Table.from_arrays(
        [table.column(f.name).cast(f.type) for f in progress.RESULT_SCHEMA]
        + [table.column(c) for c in table.column_names if c not in progress.RESULT_SCHEMA.names],
        names=progress.RESULT_SCHEMA.names
        + [c for c in table.column_names if c not in progress.RESULT_SCHEMA.names],
    )
    writer.add(table)
    writer.flush()
    for r in results:
        if r["status"] == "done":
            remove_segments(plans[r["id"]], so)
    d = sum(1 for r in results if r["status"] == "done")
    ctx.counts["done"] += d
    ctx.counts["failed"] += len(results) - d
    for r in results:
        line = f"reel {r['id']}: {r['status']}" + (
            f" ({r['error']})" if r["error"] else f", {r['frames']} frames"
        )
        console.print(line, highlight=False)


def _sha_of(path: str, so: dict) -> str:
    import hashlib

    fs, p = resolve(path, so)
    h = hashlib.sha256()
    with fs.open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


MAX_DESCRIBED = 50  # `manifest check` and `run --dry-run` probe this many reels, then count the rest


def describe_reels(m, video_format: str = "both", storage_options: dict | None = None) -> list[str]:
    """One line per reel of the manifest: what it holds (probe.py: streams, rational rate,
    frames, field order, duration, timecode) and what a run will write; a reel that a run
    would fail says why. No shot detection: that reads every frame."""
    from archive_colorize.video.encode import VIDEO_FORMATS
    from archive_colorize.video.probe import ReelError, probe

    rows = reel_rows(m, None).to_pylist()
    what = {"mkv": "FFV1 mezzanine (.mkv)", "mp4": "H.264 access copy (.mp4)"}
    lines = []
    for r in rows[:MAX_DESCRIBED]:
        uri = abs_uri(r["uri"], m.base_dir)
        try:
            fs, path = resolve(uri, storage_options or {})
            reel = probe(path, fs)
            name = safe_name(r.get("output_name") or r["id"])
            outs = ", ".join(f"video/{name}.{f} {what[f]}" for f in VIDEO_FORMATS[video_format])
            lines.append(f"reel {r['id']}: {reel.describe()}; will write {outs}")
        except ReelError as e:
            lines.append(f"reel {r['id']}: will fail: {e}")
        except Exception as e:
            lines.append(f"reel {r['id']}: will fail: unreadable reel: {one_line(e)}")
    if len(rows) > MAX_DESCRIBED:
        lines.append(f"... and {len(rows) - MAX_DESCRIBED} more reels")
    return lines
