"""Typed training configs: TOML files that are diffs from these defaults (the paper's recipe).

Unknown keys are refused with their full dotted name; `KEY=VALUE` overrides use the same
names (`train.steps=100`). The resolved config is stored in every checkpoint.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from archive_colorize.errors import ConfigError
from archive_colorize.model.network import ModelConfig


@dataclass
class DataConfig:
    train: str = ""  # Parquet glob/file or a Places list (train.txt, train_places205.csv, ...)
    val: str = ""  # same kinds; optional
    categories: str = ""  # a Places categories file: `/a/abbey 0` per line
    description: str = ""  # goes into the exported weights' metadata
    train_root: str = ""  # Places layouts: folder the list's paths are relative to ("" = guess)
    val_root: str = ""
    train_limit: int = 0  # 0 = all
    val_limit: int = 500
    scale: int = 256  # paper: scale to 256x256,
    crop: int = 224  # random 224x224 crops, flip p=0.5
    on_device: str = "auto"  # auto | true | false: decode once into device memory (auto: when it fits)


@dataclass
class TrainConfig:
    steps: int = 200_000  # paper: 200k iterations, ~11 epochs of Places205
    batch_size: int = 128  # global, split across workers
    alpha: float = 1 / 300  # weight of the classification loss
    optimizer: str = "adadelta"  # paper: ADADELTA, no schedule
    lr: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6
    seed: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    bf16: bool = True  # autocast on GPU only
    cpus_per_worker: float = 0.0  # 0 = leave one CPU for Ray Data on small machines
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    eval_every: int = 1000
    log_every: int = 50
    use_ray: bool = True  # false runs the same loop in this process (machines without Ray)
    max_minutes: float = 0.0  # >0: stop (with a checkpoint) after this much wall time, e.g. a GPU lease
    compile: bool = False  # torch.compile the network (a minute or so of compiling first)
    # sub-networks that do not learn (head.py); with the whole trunk frozen their outputs
    # are computed once into a feature cache and only the head trains
    freeze: list = field(default_factory=list)
    loss: str = "mse"  # mse (the paper) | rebalanced | colourfulness (losses.py)
    rebalance_lambda: float = 0.5  # rebalanced: the uniform share of the mix (Zhang et al.)
    rebalance_sigma: float = 5.0  # rebalanced: Gaussian smoothing of the colour histogram, a*b* units
    colourfulness_weight: float = 0.005  # colourfulness: beta, the weight of the shortfall term
    feature_cache: str = ""  # frozen trunk: where its outputs are kept ("" = RUN/features)
    feature_augmentations: int = 1  # frozen trunk: augmented copies of each image, drawn once


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return {"model": self.model.to_dict(), "data": asdict(self.data), "train": asdict(self.train)}


# The paper's sub-networks, as train.freeze names them (model.network).
TRUNK = ("low_level", "mid_level", "global_features")
HEAD = ("fusion", "colorization")
SUBNETWORKS = TRUNK + ("classification",) + HEAD


def check_freeze(names: list[str], global_branch: bool = True) -> None:
    unknown = [n for n in names if n not in SUBNETWORKS]
    if unknown:
        raise ConfigError(
            f"config key train.freeze names unknown sub-network(s) {unknown}",
            hint=f"the paper's sub-networks are {', '.join(SUBNETWORKS)}",
        )
    if set(HEAD) <= set(names) and ("classification" in names or not global_branch):
        raise ConfigError("config key train.freeze leaves nothing to train")


def trunk_frozen(cfg: Config) -> bool:
    need = TRUNK if cfg.model.global_branch else TRUNK[:2]
    return set(need) <= set(cfg.train.freeze) and not set(HEAD) & set(cfg.train.freeze)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


ON_DEVICE = ("auto", "true", "false")


def _coerce(section: str, key: str, value, typ):
    name = f"{section}.{key}"
    if name == "data.on_device":  # TOML's true/false and the strings alike
        value = str(value).lower() if isinstance(value, (bool, str)) else value
        if value not in ON_DEVICE:
            raise ConfigError(f"config key data.on_device must be auto, true or false, got {value!r}")
        return value
    if typ in (float, "float") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = {"int": int, "float": float, "bool": bool, "str": str}.get(
        typ if isinstance(typ, str) else typ.__name__
    )
    if expected is not None and (
        not isinstance(value, expected) or (expected is int and isinstance(value, bool))
    ):
        raise ConfigError(f"config key {name} must be {expected.__name__}, got {value!r}")
    return value


def config_from_dict(d: dict, base: Config | None = None) -> Config:
    cfg = base.to_dict() if base else Config().to_dict()
    for section, values in d.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config section [{section}] (known: {', '.join(_SECTIONS)})")
        if not isinstance(values, dict):
            raise ConfigError(f"config key {section} must be a table")
        types = {f.name: f.type for f in fields(_SECTIONS[section])}
        for key, value in values.items():
            if key not in types:
                raise ConfigError(f"unknown config key {section}.{key}")
            cfg[section][key] = _coerce(section, key, value, types[key])
    try:
        return Config(
            ModelConfig.from_dict(cfg["model"]), DataConfig(**cfg["data"]), TrainConfig(**cfg["train"])
        )
    except TypeError as e:
        raise ConfigError(f"bad config: {e}") from None


_PATH_KEYS = ("train", "val", "categories", "train_root", "val_root")


def parse_override(text: str) -> dict:
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    section, name = key.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # bare strings need no quotes on the command line
    return {section: {name: value}}


def load_config(path: str | Path | None, overrides: list[str] = ()) -> Config:
    cfg = Config()
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            doc = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        # Relative data paths are relative to the config file, so configs work from any cwd.
        for key in _PATH_KEYS:
            v = doc.get("data", {}).get(key)
            if isinstance(v, str) and v and "://" not in v and not Path(v).is_absolute():
                doc["data"][key] = str((p.parent / v).resolve())
        cfg = config_from_dict(doc)
    for o in overrides:
        d = parse_override(o)
        # data paths given on the command line are relative to where the command runs; made
        # absolute here, because Ray Train workers run in directories of their own
        for key, v in d.get("data", {}).items():
            if (
                key in _PATH_KEYS
                and isinstance(v, str)
                and v
                and "://" not in v
                and not Path(v).is_absolute()
            ):
                d["data"][key] = str(Path(v).resolve())
        cfg = config_from_dict(d, cfg)
    if cfg.train.batch_size % max(1, cfg.train.num_workers):
        raise ConfigError("train.batch_size must divide evenly across train.num_workers")
    from archive_colorize.train.losses import LOSSES

    if cfg.train.loss not in LOSSES:
        raise ConfigError(f"config key train.loss must be one of {', '.join(LOSSES)}, not {cfg.train.loss!r}")
    if not isinstance(cfg.train.freeze, list) or not all(isinstance(n, str) for n in cfg.train.freeze):
        raise ConfigError(
            f"config key train.freeze must be a list of sub-network names, got {cfg.train.freeze!r}"
        )
    check_freeze(cfg.train.freeze, cfg.model.global_branch)
    if cfg.train.feature_augmentations < 1:
        raise ConfigError("config key train.feature_augmentations must be >= 1")
    if cfg.model.global_branch is False and cfg.train.alpha != 0:
        raise ConfigError(
            "train.alpha must be 0 for the baseline without a global branch (model.global_branch = false)"
        )
    return cfg
