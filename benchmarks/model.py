"""The engine against the naive eager fp32 baseline (benchmarks/naive.py), same
architecture and weights, one image per forward, side by side in one run.

    python benchmarks/model.py [--sizes 224 512 1024 2048] [--repeats 3] [--width 1.0] [--compile] [--nchw]

Reports s/image (median), images/s, GFLOP/s (FLOPs counted by torch's FlopCounterMode),
peak RSS during each variant, and the fp32 matmul peak of this machine measured in the
same run. Writes benchmarks/results/model.json."""

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from common import PeakRSS, full_width_model, machine, matmul_peak_gflops, median_time, table, write  # noqa: E402
from naive import NaiveColorizer  # noqa: E402

from archive_colorize.engine import Engine  # noqa: E402
from archive_colorize.weights import Weights  # noqa: E402


def engine_for(model, precision: str) -> Engine:
    from archive_colorize.lab import AB_NORM

    w = Weights(model=model, config=model.config, categories=[f"c{i}" for i in range(model.config.num_classes)],
                metadata={"lab": {"ab_norm": AB_NORM}}, path="(benchmark)", file_sha256="0" * 64)
    return Engine(w, device="cpu", working_size=10_000, precision=precision)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 1024, 2048])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    ap.add_argument("--batch-global", type=int, default=8, help="images in the batched-global-branch trial")
    ap.add_argument("--nchw", action="store_true", help="also time the engine without channels-last")
    ap.add_argument("--out", default="model", help="results file name under benchmarks/results/")
    a = ap.parse_args()
    model = full_width_model(width=a.width)
    variants = {"naive fp32": NaiveColorizer(model), "engine fp32": engine_for(model, "fp32"),
                "engine int8 (opt-in)": engine_for(model, "int8")}
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
    peak = matmul_peak_gflops()
    rows = []
    for size in a.sizes:
        x = torch.rand(1, 1, size, size)
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(x)
        gflop = fc.get_total_flops() / 1e9
        base = None
        for name, v in variants.items():
            fn = (lambda v=v: v(x)) if name.startswith("naive") else (lambda v=v: v.predict_working(x))
            with PeakRSS() as mem:
                t, times = median_time(fn, a.repeats)
            base = base or t
            rows.append({"size": size, "variant": name, "s_per_image": t, "images_per_s": 1 / t, "gflop": gflop,
                         "gflops": gflop / t, "of_matmul_peak": gflop / t / peak, "speedup": base / t,
                         "peak_rss_mb": mem.peak, "times": times})
            print(f"{size:>5} {name:<28} {t:8.3f} s  {gflop / t:6.1f} GFLOP/s  x{base / t:4.2f}  {mem.peak:7.0f} MB", flush=True)

    # batching across images: the 224x224 global branch of 8 images, one forward vs eight
    e = variants["engine fp32"]
    g = torch.rand(a.batch_global, 1, 224, 224).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        one_by_one, _ = median_time(lambda: [e.model.global_path(g[i:i + 1]) for i in range(len(g))], a.repeats)
        batched, _ = median_time(lambda: e.model.global_path(g), a.repeats)
        diff = max((e.model.global_path(g)[0][i] - e.model.global_path(g[i:i + 1])[0][0]).abs().max().item()
                   for i in range(len(g)))
    batching = {"images": a.batch_global, "one_by_one_s": one_by_one, "batched_s": batched,
                "speedup": one_by_one / batched, "max_abs_diff": diff}
    print(f"global branch x{a.batch_global}: one by one {one_by_one:.3f} s, batched {batched:.3f} s "
          f"(x{one_by_one / batched:.2f}), max |diff| {diff:.2e}")

    cols = [("size", "size", "d"), ("variant", "variant", "s"), ("s_per_image", "s/image", ".3f"),
            ("images_per_s", "images/s", ".2f"), ("gflops", "GFLOP/s", ".1f"), ("of_matmul_peak", "of matmul peak", ".0%"),
            ("speedup", "vs naive", ".2f"), ("peak_rss_mb", "peak RSS MB", ".0f")]
    print(f"\nfp32 matmul peak (2048², {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s\n")
    print(table(rows, cols))
    path = write(a.out, {"machine": machine(), "width": a.width, "matmul_peak_gflops": peak, "rows": rows,
                           "global_batching": batching})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
