"""`evaluate`: colour and classification metrics against the grey and mean-colour baselines.

Colour: a*b* MSE (normalised units, the training loss), PSNR of the RGB result against
ground truth, Hasler-Suesstrunk colourfulness of outputs vs ground truth, and the AuC of
the cumulative per-pixel a*b* error curve over thresholds 0..150 (Zhang et al. 2016).
Classification: top-1 / top-5 on grayscale inputs (paper Table 2).
"""

from __future__ import annotations

import math

import torch

from archive_colorize.train.data import iter_raw_batches, prepare_batch, resolve_source
from archive_colorize.model.engine import scale_chroma
from archive_colorize.imaging.lab import denormalize_ab, normalize_ab
from archive_colorize.train.metrics import AUC_THRESHOLDS, colourfulness, psnr, rgb_from


def report_dropped(prepared: list[dict]) -> int:
    return sum(b["dropped"] for b in prepared)


class _Acc:
    def __init__(self):
        self.n = 0
        self.sums: dict[str, float] = {}
        self.hist = torch.zeros(len(AUC_THRESHOLDS))
        self.pixels = 0

    def add(self, name: str, per_image: torch.Tensor):
        self.sums[name] = self.sums.get(name, 0.0) + float(per_image.sum())

    def add_auc(self, pred_ab01, true_ab01):
        err = (denormalize_ab(pred_ab01) - denormalize_ab(true_ab01)).norm(dim=1).flatten()
        self.hist += (err[None, :] <= AUC_THRESHOLDS[:, None]).sum(1).float()
        self.pixels += err.numel()

    def result(self) -> dict:
        out = {k: v / self.n for k, v in self.sums.items()}
        out["auc"] = float((self.hist / max(self.pixels, 1)).mean())
        return out


def evaluate(
    weights,
    data: str,
    *,
    limit: int | None = None,
    batch_size: int = 32,
    size: int = 224,
    root: str | None = None,
    mean_ab: list[float] | None = None,
    device: str = "auto",
    rows: tuple[int, int | None] = (0, None),
) -> dict:
    """-> {"model": {...}, "grey": {...}, "mean_colour": {...}, "images": n, "filtered_out": k};
    with weights calibrated to a gain other than 1, also "model_calibrated": the same
    predictions with a*b* scaled by that gain. `rows`: [start, end) of the data, in order."""
    from archive_colorize.model.engine import pick_device

    dev = pick_device(device)
    model = weights.model.fold_batchnorm().to(dev).eval()
    src = resolve_source(data, root)
    if mean_ab is None:
        mean_ab = weights.metadata.get("data", {}).get("train_mean_ab")
    mean_source = "training set (from weights metadata)" if mean_ab is not None else "evaluation set itself"
    prepared = []
    start, end = rows
    if limit is not None:
        end = start + limit if end is None else min(end, start + limit)
    seen = 0
    for raw in iter_raw_batches(src, batch_size, limit=end):
        n_raw = len(raw["label"])
        if seen + n_raw <= start:
            seen += n_raw
            continue
        if seen < start:
            raw = {k: v[start - seen :] for k, v in raw.items()}
        seen += n_raw
        b = prepare_batch(raw, train=False, size=size)
        prepared.append(
            {k: torch.as_tensor(b[k][b["keep"]]) for k in ("L", "ab", "label")}
            | {"dropped": int((~b["keep"]).sum())}
        )
    if mean_ab is None:
        allab = torch.cat([b["ab"] for b in prepared])
        mean_ab = denormalize_ab(allab.mean(dim=(0, 2, 3))).tolist()
    mean01 = normalize_ab(torch.tensor(mean_ab, dtype=torch.float32)).view(1, 2, 1, 1)
    gain = weights.chroma_gain
    accs = {"model": _Acc(), "grey": _Acc(), "mean_colour": _Acc()} | (
        {"model_calibrated": _Acc()} if gain != 1 else {}
    )
    gt_colour = 0.0
    t1 = t5 = 0.0
    n = 0
    with torch.inference_mode():
        for b in prepared:
            L, ab, label = b["L"].to(dev), b["ab"].to(dev), b["label"].to(dev)
            if not len(label):
                continue
            pred, logits = model(L)
            pred = pred.float().cpu()
            L, ab = L.cpu(), ab.cpu()
            truth = rgb_from(L, ab)  # once per batch, shared by every baseline
            gt_colour += float(colourfulness(truth).sum())
            if logits is not None:
                top = logits.float().topk(min(5, logits.shape[1]), 1).indices.cpu()
                t1 += float((top[:, 0] == label.cpu()).sum())
                t5 += float((top == label.cpu()[:, None]).any(1).sum())
            candidates = [
                ("model", pred),
                ("grey", normalize_ab(torch.zeros(1, 2, 1, 1))),
                ("mean_colour", mean01.expand_as(ab)),
            ]
            if gain != 1:
                candidates.append(
                    ("model_calibrated", normalize_ab(scale_chroma(denormalize_ab(pred), gain)))
                )
            for name, p in candidates:
                p = p.expand_as(ab)
                a = accs[name]
                a.n += len(label)
                a.add("ab_mse", (p - ab).pow(2).flatten(1).mean(1))
                rgb = rgb_from(L, p)
                a.add("psnr", psnr(rgb, truth))
                a.add("colourfulness", colourfulness(rgb))
                a.add_auc(p, ab)
            n += len(label)
    if n == 0:
        from archive_colorize.errors import ConfigError

        raise ConfigError(f"no usable images in {data}")
    report = {name: a.result() for name, a in accs.items()}
    gt = gt_colour / n
    for r in report.values():
        r["colourfulness_ratio_to_truth"] = r["colourfulness"] / gt if gt else math.nan
    report["ground_truth"] = {"colourfulness": gt}
    for name in ("model", "model_calibrated")[: 2 if gain != 1 else 1]:  # the scene guess ignores the gain
        report[name]["top1"] = t1 / n if weights.config.global_branch else None
        report[name]["top5"] = t5 / n if weights.config.global_branch else None
    report["chroma_gain"] = gain
    report["rows"] = [start, start + n + report_dropped(prepared)] if (start or end is not None) else None
    report["images"] = n
    report["filtered_out"] = report_dropped(prepared)
    report["data"] = data
    report["mean_colour_source"] = mean_source
    report["weights_sha256"] = weights.file_sha256
    return report
