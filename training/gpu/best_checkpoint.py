"""Print the retained checkpoint of RUN with the lowest monitored val a*b* MSE.

    python training/gpu/best_checkpoint.py RUN

Monitoring uses val rows 0-499 only, so the held-out evaluation (rows 500-4999) stays
untouched by the choice. Falls back to the latest checkpoint when none was evaluated."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from archive_colorize.train.checkpoints import list_checkpoints, read_metrics  # noqa: E402


def best(run: str) -> str:
    ckpts = dict(list_checkpoints(run))
    scored = [
        (r["val_ab_mse"], int(r["step"]))
        for r in read_metrics(run)
        if r.get("val_ab_mse") is not None and int(r["step"]) in ckpts
    ]
    if not scored:
        return ckpts[max(ckpts)]
    return ckpts[min(scored)[1]]


if __name__ == "__main__":
    print(best(sys.argv[1]))
