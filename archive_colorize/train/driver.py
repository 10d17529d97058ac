"""`archive-colorize train`: the driver. Checks the config and the data, then runs the
training loop (loop.py) in this process or under Ray Train, or head-only training over a
frozen trunk (head.py)."""

from __future__ import annotations

from archive_colorize.core.storage import resolve
from archive_colorize.errors import ConfigError
from archive_colorize.train.checkpoints import list_checkpoints
from archive_colorize.train.config import Config, trunk_frozen
from archive_colorize.train.data import prepare_batch, ray_dataset, resolve_source
from archive_colorize.train.head import train_head
from archive_colorize.train.loop import check_init_architecture, train_loop


def default_run_dir(config_path: str | None) -> str:
    from pathlib import Path

    name = Path(config_path).stem if config_path else "default"
    return str(Path("runs") / name)


def run_training(
    cfg: Config,
    run_dir: str,
    resume: bool = False,
    categories: list[str] | None = None,
    init: str | None = None,
) -> str:
    """Train to cfg.train.steps; returns the path of the last checkpoint.

    init: a weights file of the same architecture to start from (fine-tuning)."""
    import os

    from archive_colorize.core.storage import write_json
    from archive_colorize.model.weights import load_categories

    if "://" not in run_dir:
        # Ray Train runs each worker in a directory of its own: a relative path would land there
        run_dir = os.path.abspath(run_dir)

    if not cfg.data.train:
        raise ConfigError("config key data.train is empty: point it at Parquet shards or a Places file list")
    if categories is None:
        if not cfg.data.categories:
            raise ConfigError("config key data.categories is empty: point it at a Places categories file")
        categories = load_categories(cfg.data.categories)
    if len(categories) != cfg.model.num_classes:
        raise ConfigError(
            f"data.categories has {len(categories)} names but model.num_classes is {cfg.model.num_classes}",
            hint=f"set model.num_classes = {len(categories)} (or pass model.num_classes={len(categories)})",
        )
    source = resolve_source(cfg.data.train, cfg.data.train_root or None)  # fail early on bad paths
    if cfg.data.val:
        resolve_source(cfg.data.val, cfg.data.val_root or None)
    fs, rd = resolve(run_dir)
    if not resume and list_checkpoints(run_dir):
        raise ConfigError(
            f"{run_dir} already holds checkpoints", hint="pass --resume to continue, or choose another --out"
        )
    if init:
        from archive_colorize.model.weights import load_weights

        # refuse a missing, damaged or mismatched file before anything is written or started
        check_init_architecture(cfg.model, load_weights(init).config, init)
        if "://" not in init:
            init = os.path.abspath(init)
    if cfg.train.loss == "rebalanced" and not trunk_frozen(cfg):
        raise ConfigError(
            "train.loss = 'rebalanced' needs a frozen trunk: the training colours are counted while its "
            "features are extracted",
            hint='set train.freeze = ["low_level", "mid_level", "global_features"] and --init WEIGHTS',
        )
    write_json(fs, f"{rd}/config.json", cfg.to_dict())
    loop_config = {
        "config": cfg.to_dict(),
        "run_dir": run_dir,
        "resume": resume,
        "categories": categories,
        "init": init,
    }
    tc = cfg.train
    if trunk_frozen(cfg):
        # the trunk's outputs, cached, are the data: one process, no Ray Data stream to feed
        train_head(cfg, run_dir, resume, categories, init)
    elif not tc.use_ray:
        train_loop(loop_config)
    else:
        _fit_with_ray(cfg, source, loop_config)
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else ""


def _fit_with_ray(cfg: Config, source, loop_config: dict) -> None:
    import os
    import tempfile

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tc = cfg.train
    if not ray.is_initialized():
        ray.init(
            # a cluster only when RAY_ADDRESS names one (as for a job's driver): never a stale
            # /tmp/ray/ray_current_cluster (run/pipeline.py:_init_ray)
            address=os.environ.get("RAY_ADDRESS") or "local",
            log_to_driver=True,
            include_dashboard=False,
            configure_logging=True,
            logging_level="WARNING",
        )
    total_cpus = ray.cluster_resources().get("CPU", 1)
    cpus = tc.cpus_per_worker or (
        1.0 if total_cpus - tc.num_workers >= 1 else max(0.25, (total_cpus - 1) / tc.num_workers)
    )
    loop_config["threads"] = max(1, int(cpus))
    # Ray Data gets what the workers leave; on a small machine that budget is split across
    # the read and transform operators, so 1-CPU tasks would never be scheduled (a hang).
    free = total_cpus - cpus * tc.num_workers
    task_cpus = 1.0 if free >= 4 else max(0.25, free / 4)
    ds = ray_dataset(source, cfg.data.train_limit or None, task_cpus).map_batches(
        prepare_batch,
        fn_kwargs={"train": True, "size": cfg.data.crop, "scale": cfg.data.scale},
        batch_format="numpy",
        batch_size=64,
        num_cpus=task_cpus,
    )
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=tc.num_workers,
            use_gpu=tc.use_gpu,
            resources_per_worker={"CPU": cpus} | ({"GPU": 1} if tc.use_gpu else {}),
        ),
        run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="ray-train-"), name="archive-colorize"),
        datasets={"train": ds},
    )
    trainer.fit()
