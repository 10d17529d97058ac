"""GPU figures for the model stage and recombination (issue 13, item 5), and training
throughput. Plain PyTorch, no Ray:

    python benchmarks/gpu.py [--sections model recombine train] [--compile] [--out FILE]
    python benchmarks/gpu.py --device cpu --quick      # a smoke run of the same code here

model      the product's model stage, `Engine.predict_batch`, on the shipped weights at working
           size 512 (512x384 working copies, as a 4:3 scan gives): images/s for fp32 (TF32
           off, what --precision fp32 means), TF32 and bf16, batch 1 to 64; host copies in and
           out included, as the actor does them. Then the batch-independence check: one scan in batches with different
           neighbours and at different positions gives identical a*b* bytes.
recombine  `render.recombine` at 6, 24 and 100 MP (8-bit, and 16-bit at 100 MP) on the
           device against the CPU: seconds, and how far the outputs differ in code values
           (the contract: at most 1).
train      training steps/s at batch 128, 224², the joint loss, ADADELTA, fp32 and bf16.
--compile  last: torch.compile of the sub-networks at fixed batch shapes (default, and
           "reduce-overhead", i.e. CUDA graphs), at --compile-batches only; a variant that
           fails to compile is recorded with its error.

Times are medians of CUDA-synchronised repeats. Writes JSON and prints tables."""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, full_width_model, machine, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, dev, repeats=5, warmup=2):
    for _ in range(warmup):
        fn()
    sync(dev)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(dev)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def scans(n: int, h: int = 512, w: int = 384) -> list[tuple[torch.Tensor, None]]:
    """n distinct working copies (L*/100) cut from the committed sample photographs."""
    from archive_colorize import decode_image, working_copy

    files = sorted((ROOT / "manifests" / "sample").glob("*.jpg"))
    base = [working_copy(decode_image(f.read_bytes()).lightness, 1024)[0, 0] for f in files]
    out = []
    for i in range(n):
        b = base[i % len(base)]
        y, x = (i * 7) % max(1, b.shape[0] - h + 1), (i * 13) % max(1, b.shape[1] - w + 1)
        crop = b[y : y + h, x : x + w]
        if crop.shape != (h, w):
            crop = torch.nn.functional.interpolate(
                b[None, None], size=(h, w), mode="bilinear", align_corners=False
            )[0, 0]
        out.append((crop.contiguous()[None, None], None))
    return out


def engine_for(dev, precision: str, batch: int, compile_mode: str | None = None):
    from archive_colorize import Engine
    from archive_colorize import load_weights

    e = Engine(
        load_weights(None),
        device=dev.type,
        working_size=512,
        precision="fp32" if precision == "tf32" else precision,
        batch=batch,
    )
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    if compile_mode:
        m = e.model
        for name in ("low_level", "mid_level", "fusion", "colorization"):
            setattr(m, name, torch.compile(getattr(m, name), mode=compile_mode, dynamic=False))
    return e


def model_section(dev, batches, precisions, quick):
    rows = []
    items = scans(2 * max(batches))
    for prec in precisions:
        for b in batches:
            e = engine_for(dev, prec, b)
            chunk = items[: 2 * b]  # two full forwards per call, as a steady actor sees
            t = timed(
                lambda: e.predict_batch(chunk), dev, repeats=2 if quick else 5, warmup=1 if quick else 2
            )
            rows.append(
                {
                    "precision": prec,
                    "batch": b,
                    "compile": "-",
                    "images_per_s": len(chunk) / t,
                    "s_per_image": t / len(chunk),
                }
            )
            print(f"model 512x384 {prec:>4} batch {b:>2}: {len(chunk) / t:8.1f} images/s", flush=True)
    # batch independence: one scan among different neighbours, at different positions
    checks = []
    for prec in precisions:
        b = max(2, min(8, max(batches)))
        e = engine_for(dev, prec, b)
        scan, others = items[0], items[1:]
        runs = [
            [scan] + others[: b - 1],
            others[b : 2 * b - 1] + [scan],
            others[:3] + [scan] + others[3 : b + 2],
        ]
        outs = []
        for r in runs:
            preds = e.predict_batch(r)
            k = next(i for i, it in enumerate(r) if it is scan)
            outs.append(preds[k].ab.numpy().tobytes())
        same = all(o == outs[0] for o in outs)
        checks.append({"precision": prec, "batch": b, "identical": same})
        print(f"batch independence {prec}: {'identical bytes' if same else 'DIFFERENT BYTES'}", flush=True)
    return rows, checks


def compile_section(dev, precisions, modes, batches, quick):
    """torch.compile of the sub-networks at fixed batch shapes; each variant compiles anew
    (tens of seconds), so a few batch sizes only, and a variant that fails to compile is
    recorded, not fatal: it runs last, after every other figure is saved."""
    rows = []
    items = scans(2 * max(batches))
    for mode in modes:
        for prec in precisions:
            for b in batches:
                chunk = items[: 2 * b]
                try:
                    e = engine_for(dev, prec, b, mode)
                    t0 = time.perf_counter()
                    e.predict_batch(chunk)  # the compilation itself
                    first = time.perf_counter() - t0
                    t = timed(lambda: e.predict_batch(chunk), dev, repeats=2 if quick else 5, warmup=1)
                    rows.append(
                        {
                            "precision": prec,
                            "batch": b,
                            "compile": mode,
                            "images_per_s": len(chunk) / t,
                            "s_per_image": t / len(chunk),
                            "first_call_s": first,
                        }
                    )
                    print(
                        f"model 512x384 {prec:>4} batch {b:>2} compile {mode}: {len(chunk) / t:8.1f} images/s "
                        f"(first call {first:.0f} s)",
                        flush=True,
                    )
                except Exception as exc:  # noqa: BLE001 - a compiler failure is a finding, not a crash
                    msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                    rows.append({"precision": prec, "batch": b, "compile": mode, "error": msg})
                    print(f"model {prec} batch {b} compile {mode}: FAILED {msg}", flush=True)
    return rows


def recombine_section(dev, sizes, quick):
    from archive_colorize import recombine

    rows = []
    g = torch.Generator().manual_seed(0)
    for mpx, bits in sizes:
        H = int((mpx * 1e6 * 4 / 3) ** 0.5)
        W = int(mpx * 1e6 / H)
        # a real photograph's L* and a*b*, stretched to this size: realistic gamut and edges
        from archive_colorize import Engine
        from archive_colorize import decode_image
        from archive_colorize import load_weights

        d = decode_image((ROOT / "manifests" / "sample" / "astronaut.jpg").read_bytes())
        ab = Engine(load_weights(None), device="cpu").predict(d.lightness).ab
        L = torch.nn.functional.interpolate(
            d.lightness[None, None], size=(H, W), mode="bilinear", align_corners=False
        )[0, 0]
        L = (L + torch.randn(H, W, generator=g) * 0.5).clamp(0, 100)
        cpu = recombine(L, ab, bits)
        t_cpu = timed(
            lambda: recombine(L, ab, bits), torch.device("cpu"), repeats=1 if quick else 3, warmup=0
        )
        on = recombine(L, ab, bits, device=dev)
        t_dev = timed(lambda: recombine(L, ab, bits, device=dev), dev, repeats=1 if quick else 5, warmup=1)
        diff = np.abs(on.astype(np.int64) - cpu.astype(np.int64))
        rows.append(
            {
                "megapixels": H * W / 1e6,
                "bits": bits,
                "device_s": t_dev,
                "cpu_s": t_cpu,
                "speedup": t_cpu / t_dev,
                "max_code_diff": int(diff.max()),
                "share_differing": float((diff > 0).mean()),
            }
        )
        print(
            f"recombine {H * W / 1e6:.0f} MP {bits}-bit: {dev.type} {t_dev:.3f} s, cpu {t_cpu:.3f} s, "
            f"max difference {int(diff.max())} code value(s), {float((diff > 0).mean()):.2e} of values differ",
            flush=True,
        )
    return rows


def train_section(dev):
    train_model = full_width_model(num_classes=205).to(dev).to(memory_format=torch.channels_last).train()
    opt = torch.optim.Adadelta(train_model.parameters())
    from archive_colorize.train.loop import joint_loss

    rows = []
    b = 128
    L = torch.rand(b, 1, 224, 224, device=dev).contiguous(memory_format=torch.channels_last)
    ab = torch.rand(b, 2, 112, 112, device=dev)
    y = torch.randint(0, 205, (b,), device=dev)
    for prec, dtype in (("fp32", None), ("bf16", torch.bfloat16)):

        def step():
            with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = joint_loss(train_model, L, ab, y, alpha=1 / 300)[0]  # the paper's alpha
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        t = timed(step, dev, repeats=10, warmup=3)
        rows.append({"precision": prec, "batch": b, "steps_per_s": 1 / t, "images_per_s": b / t})
        print(f"train 224² batch {b} {prec}: {1 / t:.2f} steps/s = {b / t:.0f} images/s", flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sections", nargs="+", default=["model", "recombine", "train"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 16, 32, 64])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16"])
    ap.add_argument("--compile", action="store_true", help="also torch.compile (default and reduce-overhead)")
    ap.add_argument("--compile-batches", type=int, nargs="+", default=[64])
    ap.add_argument("--quick", action="store_true", help="small sizes and few repeats: a smoke run")
    ap.add_argument("--out", default=str(RESULTS / "gpu.json"))
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "no CUDA GPU here: run this on the GPU machine, or give --device cpu --quick for a smoke run"
        )
    result = {
        "machine": {
            **machine(),
            "gpu": torch.cuda.get_device_name(0) if dev.type == "cuda" else None,
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
        }
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every section: a run cut short by its time limit keeps what it measured
        out.write_text(json.dumps(result, indent=1) + "\n")

    if "model" in a.sections:
        rows, checks = model_section(dev, a.batches, a.precisions, a.quick)
        result["model"], result["batch_independence"] = rows, checks
        save()
        print(
            table(
                rows,
                [
                    ("precision", "precision", "s"),
                    ("batch", "batch", "d"),
                    ("images_per_s", "images/s", ".1f"),
                ],
            )
        )
    if "recombine" in a.sections:
        sizes = [(1, 8), (1, 16)] if a.quick else [(6, 8), (24, 8), (100, 8), (100, 16)]
        result["recombine"] = recombine_section(dev, sizes, a.quick)
        save()
        print(
            table(
                result["recombine"],
                [
                    ("megapixels", "MP", ".0f"),
                    ("bits", "bits", "d"),
                    ("device_s", "device s", ".3f"),
                    ("cpu_s", "CPU s", ".3f"),
                    ("speedup", "CPU / device", ".1f"),
                    ("max_code_diff", "max difference (code values)", "d"),
                    ("share_differing", "share of values differing", ".2e"),
                ],
            )
        )
    if "train" in a.sections:
        result["train"] = train_section(dev)
        save()
    if a.compile:
        result["compiled"] = compile_section(
            dev, a.precisions, ["default", "reduce-overhead"], a.compile_batches, a.quick
        )
        save()
    print(f"wrote {out}")
    bad = [c for c in result.get("batch_independence", []) if not c["identical"]]
    over = [r for r in result.get("recombine", []) if r["max_code_diff"] > 1]
    if bad or over:
        sys.exit(
            f"contract broken: {len(bad)} batch-independence check(s) differ, "
            f"{len(over)} recombination(s) more than 1 code value from the CPU"
        )


if __name__ == "__main__":
    main()
