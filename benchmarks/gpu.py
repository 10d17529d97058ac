"""GPU figures (run on an H100/H200; plain PyTorch, no Ray needed):

    python benchmarks/gpu.py [--out benchmarks/results/gpu.json]

  inference at 224² with batch 1..256 and at 1024² (batch 1, 8), fp32 against bf16 and
  fp16 autocast, channels-last, BN folded; images/s from CUDA-synchronised medians;
  training steps/s and images/s at batch 128, 224², joint loss, ADADELTA (the paper's
  recipe), fp32 and bf16 autocast.
Writes JSON and prints a table."""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, full_width_model, machine  # noqa: E402


def timed(fn, repeats=10, warmup=3):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(RESULTS / "gpu.json"))
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: run this on the GPU machine")
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    base = full_width_model(num_classes=205)
    model = base.fold_batchnorm().to(dev).to(memory_format=torch.channels_last).eval()
    rows = []
    for size, batches in ((224, a.batches), (1024, [1, 8])):
        for b in batches:
            x = torch.rand(b, 1, size, size, device=dev).contiguous(memory_format=torch.channels_last)
            for prec, dtype in (("fp32", None), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
                def fwd():
                    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                        model(x)
                t = timed(fwd)
                rows.append({"kind": "inference", "size": size, "batch": b, "precision": prec, "s_per_batch": t,
                             "images_per_s": b / t})
                print(f"infer {size}² batch {b:>3} {prec}: {b / t:9.1f} images/s", flush=True)
    train_model = full_width_model(num_classes=205).to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adadelta(train_model.parameters())
    from archive_colorize.train import joint_loss

    b = 128
    L = torch.rand(b, 1, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
    ab = torch.rand(b, 2, 112, 112, device=dev)
    y = torch.randint(0, 205, (b,), device=dev)
    for prec, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        def step():
            with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = joint_loss(train_model, L, ab, y, alpha=1 / 300)[0]  # the paper's alpha
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        t = timed(step, repeats=10, warmup=3)
        rows.append({"kind": "train", "size": 224, "batch": b, "precision": prec, "s_per_batch": t,
                     "steps_per_s": 1 / t, "images_per_s": b / t})
        print(f"train 224² batch {b} {prec}: {1 / t:.2f} steps/s = {b / t:.0f} images/s", flush=True)
    result = {"machine": {**machine(), "gpu": torch.cuda.get_device_name(0)}, "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
