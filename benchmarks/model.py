"""The engine against the naive eager fp32 baseline (benchmarks/naive.py), same
architecture and weights (the shipped ones, unless --random), one image per forward.

    python benchmarks/model.py [--sizes 224 512 1024 2048] [--rounds 5] [--random] [--compile] [--nchw]

Every variant at every size is timed once per round and the rounds are interleaved, so a
slow spell of this shared machine hits all variants alike; the table gives the median
and the spread (min-max) over rounds. Also: GFLOP/s (FLOPs counted by torch's
FlopCounterMode), peak RSS, and the machine's fp32 peak as the best 4096² `torch.mm` of
each round (a peak is a maximum: the table divides by the best round's). Writes
benchmarks/results/model.json."""

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import PeakRSS, full_width_model, machine, median_time, table, write  # noqa: E402
from naive import NaiveColorizer  # noqa: E402

from archive_colorize import Engine  # noqa: E402
from archive_colorize import Weights  # noqa: E402


def engine_for(model, precision: str) -> Engine:
    from archive_colorize.imaging.lab import AB_NORM

    w = Weights(
        model=model,
        config=model.config,
        categories=[f"c{i}" for i in range(model.config.num_classes)],
        metadata={"lab": {"ab_norm": AB_NORM}},
        path="(benchmark)",
        file_sha256="0" * 64,
    )
    return Engine(w, device="cpu", working_size=10_000, precision=precision)


def sgemm_gflops(n: int = 4096, tries: int = 3) -> float:
    """The best of `tries` n x n fp32 matrix products, in GFLOP/s."""
    import time

    a, b = torch.rand(n, n), torch.rand(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def main():
    import statistics
    import time

    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 1024, 2048])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument(
        "--random",
        action="store_true",
        help="a seeded random full-width model instead of the shipped weights",
    )
    ap.add_argument("--width", type=float, default=1.0, help="with --random")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--batch-global", type=int, default=8, help="images in the batched-global-branch trial")
    ap.add_argument("--nchw", action="store_true", help="also time the engine without channels-last")
    ap.add_argument("--out", default="model", help="results file name under benchmarks/results/")
    a = ap.parse_args()
    if a.random:
        model, source = full_width_model(width=a.width), f"seeded random, width {a.width}"
    else:
        from archive_colorize import load_weights

        shipped = load_weights(None)
        model, source = (
            shipped.model,
            f"shipped weights {shipped.file_sha256[:12]} ({shipped.metadata.get('storage')})",
        )
    variants = {
        "naive fp32": NaiveColorizer(model),
        "engine fp32": engine_for(model, "fp32"),
        "engine int8 (opt-in)": engine_for(model, "int8"),
    }
    if "avx512_bf16" in machine()["isa"] or "amx_tile" in machine()["isa"]:
        variants["engine bf16 (opt-in)"] = engine_for(model, "bf16")
    if a.nchw:
        e = engine_for(model, "fp32")
        e.model, e.channels_last = e.model.to(memory_format=torch.contiguous_format), False
        variants["engine fp32, NCHW"] = e
    if a.compile:
        e = engine_for(model, "fp32")
        e.model = torch.compile(e.model, dynamic=False)
        variants["engine fp32 + torch.compile"] = e
    inputs, gflop = {}, {}
    for size in a.sizes:
        inputs[size] = torch.rand(1, 1, size, size)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(inputs[size])
        gflop[size] = fc.get_total_flops() / 1e9

    def call(name, v, x):
        return v(x) if name.startswith("naive") else v.predict_working(x)

    for size in a.sizes:  # warm-up: first calls allocate, and int8 builds its kernels
        for name, v in variants.items():
            call(name, v, inputs[size])
    times = {(size, name): [] for size in a.sizes for name in variants}
    mem = {(size, name): 0.0 for size in a.sizes for name in variants}
    peaks = []
    for r in range(a.rounds):
        peaks.append(sgemm_gflops())
        for size in a.sizes:
            for name, v in variants.items():
                with PeakRSS() as m:
                    t = time.perf_counter()
                    call(name, v, inputs[size])
                    times[size, name].append(time.perf_counter() - t)
                mem[size, name] = max(mem[size, name], m.peak)
        print(f"round {r + 1}/{a.rounds}: sgemm {peaks[-1]:.1f} GFLOP/s", flush=True)
    peak = max(peaks)
    rows = []
    for size in a.sizes:
        for name in variants:
            ts = times[size, name]
            t = statistics.median(ts)
            rows.append(
                {
                    "size": size,
                    "variant": name,
                    "s_per_image": t,
                    "s_min": min(ts),
                    "s_max": max(ts),
                    "images_per_s": 1 / t,
                    "gflop": gflop[size],
                    "gflops": gflop[size] / t,
                    "of_matmul_peak": gflop[size] / t / peak
                    if "fp32" in name
                    else None,  # int8/bf16: other arithmetic "speedup": base / t, "vs_engine_fp32": fp32 / t,
                    "peak_rss_mb": mem[size, name],
                    "times": ts,
                }
            )

    # batching across images: the 224x224 global branch of 8 images, one forward vs eight
    e = variants["engine fp32"]
    g = torch.rand(a.batch_global, 1, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        one_by_one, _ = median_time(
            lambda: [e.model.global_path(g[i : i + 1]) for i in range(len(g))], a.rounds
        )
        batched, _ = median_time(lambda: e.model.global_path(g), a.rounds)
        diff = max(
            (e.model.global_path(g)[0][i] - e.model.global_path(g[i : i + 1])[0][0]).abs().max().item()
            for i in range(len(g))
        )
    batching = {
        "images": a.batch_global,
        "one_by_one_s": one_by_one,
        "batched_s": batched,
        "speedup": one_by_one / batched,
        "max_abs_diff": diff,
    }
    print(
        f"global branch x{a.batch_global}: one by one {one_by_one:.3f} s, batched {batched:.3f} s "
        f"(x{one_by_one / batched:.2f}), max |diff| {diff:.2e}"
    )

    cols = [
        ("size", "size", "d"),
        ("variant", "variant", "s"),
        ("s_per_image", "s/image", ".3f"),
        ("s_min", "min", ".3f"),
        ("s_max", "max", ".3f"),
        ("gflops", "GFLOP/s", ".1f"),
        ("of_matmul_peak", "of sgemm peak", ".0%"),
        ("speedup", "vs naive", ".2f"),
        ("vs_engine_fp32", "vs engine fp32", ".2f"),
        ("peak_rss_mb", "peak RSS MB", ".0f"),
    ]
    print(f"\nmodel: {source}")
    print(
        f"fp32 sgemm (4096², {torch.get_num_threads()} threads), best of each round: "
        f"{', '.join(f'{p:.1f}' for p in peaks)} GFLOP/s; peak {peak:.1f}\n"
    )
    print(table(rows, cols))
    path = write(
        a.out,
        {
            "machine": machine(),
            "model": source,
            "rounds": a.rounds,
            "sgemm_gflops_by_round": peaks,
            "matmul_peak_gflops": peak,
            "rows": rows,
            "global_batching": batching,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
