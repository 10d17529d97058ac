"""Training throughput, side by side in one run: where does a training step's time go?

    python benchmarks/train.py                       # this CPU: 1/8-width network, batch 32
    python benchmarks/train.py --device cuda --batch 128 --width 1 --precisions fp32,bf16

For each precision it reports images/s of
  step   the optimisation step alone, on synthetic tensors already on the device;
  loop   data + step, the data coming from device-resident images (device_data);
and, once per run, the data path alone (augmented batches ready for the step) for
  data_resident   DeviceDataset.batch: gather + one grid_sample on the device;
  data_streaming  the loader used before (train._local_batches(workers=1): Parquet, Pillow
                  decode and per-image augmentation on the main thread);
  data_streaming_threads  the same with a thread per CPU preparing batches ahead, which a
                  machine without Ray now uses when the data does not fit.
Each figure is the median of --rounds rounds. fp32 on CUDA means TF32 matrix units (the
torch default for convolutions); bf16 is autocast.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from archive_colorize import load_config  # noqa: E402
from archive_colorize.train.device_data import DeviceDataset  # noqa: E402
from archive_colorize import ColorizationModel, ModelConfig  # noqa: E402
from archive_colorize.train.loop import _local_batches, make_optimizer, train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def rounds(fn, n_rounds: int, device) -> list[float]:
    """Seconds per call of fn (which does its own work units), one figure per round."""
    fn()  # warm-up: cuDNN autotuning, allocator, first-touch
    sync(device)
    out = []
    for _ in range(n_rounds):
        t = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--width", type=float, default=0.125)
    ap.add_argument("--precisions", default="fp32")
    ap.add_argument("--steps", type=int, default=5, help="steps (or batches) per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--streaming-steps", type=int, default=0, help="batches per round for the old loader (0 = --steps)"
    )
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/miniplaces/train-00.parquet"))
    ap.add_argument("--limit", type=int, default=2048, help="images made resident")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/train.json"))
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    cfg = load_config(
        None, [f"data.train={a.data}", f"train.batch_size={a.batch}", f"data.train_limit={a.limit}"]
    )
    result = {
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else a.device,
        "batch": a.batch,
        "width": a.width,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "steps_per_round": a.steps,
        "rounds": a.rounds,
        "images_per_s": {},
    }
    ips = result["images_per_s"]

    t = time.perf_counter()
    ds = DeviceDataset(a.data, None, dev, limit=a.limit)
    result["resident_load_s"] = round(time.perf_counter() - t, 2)
    result["resident_images"] = len(ds)
    gen = torch.Generator().manual_seed(0)
    draws = torch.Generator(device=dev).manual_seed(1)

    def batches():
        while True:
            yield from ds.epoch(a.batch, gen)

    idx_stream = batches()

    def resident(n=a.steps):
        for _ in range(n):
            b = ds.batch(next(idx_stream), draws)
        return b

    ips["data_resident"] = statistics.median(a.steps * a.batch / s for s in rounds(resident, a.rounds, dev))
    n_old = a.streaming_steps or a.steps
    for name, workers in (("data_streaming", 1), ("data_streaming_threads", 0)):
        loader = _local_batches(cfg, a.batch, 0, workers=workers)

        def streaming(n=n_old, loader=loader):
            for _ in range(n):
                b = next(loader)
                {k: torch.as_tensor(b[k][b["keep"]]).to(dev) for k in ("L", "ab", "label")}

        ips[name] = statistics.median(n_old * a.batch / s for s in rounds(streaming, a.rounds, dev))
    result["data_speedup"] = ips["data_resident"] / ips["data_streaming"]

    for prec in a.precisions.split(","):
        torch.manual_seed(0)
        model = ColorizationModel(ModelConfig(num_classes=100, width=a.width)).to(dev)
        if dev.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        opt = make_optimizer(model, cfg.train)
        fwd = torch.compile(model) if a.compile else model
        bf16 = prec == "bf16"
        fixed = resident(1)

        def step(n=a.steps):
            for _ in range(n):
                m = train_step(fwd, opt, fixed, cfg.train.alpha, dev, bf16)
            return m

        def loop(n=a.steps):
            for _ in range(n):
                m = train_step(fwd, opt, ds.batch(next(idx_stream), draws), cfg.train.alpha, dev, bf16)
            return m

        name = "tf32" if prec == "fp32" and dev.type == "cuda" else prec
        ips[f"step_{name}"] = statistics.median(a.steps * a.batch / s for s in rounds(step, a.rounds, dev))
        ips[f"loop_{name}"] = statistics.median(a.steps * a.batch / s for s in rounds(loop, a.rounds, dev))
        result[f"loop_over_step_{name}"] = ips[f"loop_{name}"] / ips[f"step_{name}"]
        if dev.type == "cuda":
            result[f"peak_gib_{name}"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        del model

    for k, v in ips.items():
        print(f"{k:>16}: {v:9.1f} images/s")
    for k in [k for k in result if k.startswith(("loop_over", "data_speedup"))]:
        print(f"{k:>16}: {result[k]:.2f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
