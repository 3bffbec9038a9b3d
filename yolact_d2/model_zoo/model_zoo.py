"""Configs and models by name (docs/MODEL_ZOO.md). The configs are package data, found with
``importlib.resources`` (Detectron2's own ``model_zoo`` imports ``pkg_resources``, which recent
setuptools no longer ship, so it is not used here)."""
import importlib.resources
import pathlib
from typing import List, Optional

import torch

from detectron2.config import CfgNode, LazyConfig, instantiate

from ..engine.trainer import YolactTrainer
from ..runtime.checkpointer import AtomicDetectionCheckpointer
from ..runtime.config_loading import setup_cfg
from ..runtime.safe_load import trusted_weights_file
from ..runtime.weights_catalog import SCHEME
from ..utils.errors import ConfigError

__all__ = ["get_config_file", "get_config", "get", "list_configs", "trained_weights"]

# config (without extension) -> the original's COCO checkpoint it matches (its README, "Evaluation")
TRAINED_WEIGHTS = {
    "COCO-InstanceSegmentation/yolact_R_101_FPN_550": "yolact_base_54_800000",
    "COCO-InstanceSegmentation/yolact_R_50_FPN_550": "yolact_resnet50_54_800000",
    "COCO-InstanceSegmentation/yolact_R_101_FPN_700": "yolact_im700_54_800000",
    "COCO-InstanceSegmentation/yolact_plus_R_101_FPN_550": "yolact_plus_base_54_800000",
    "COCO-InstanceSegmentation/yolact_plus_R_50_FPN_550": "yolact_plus_resnet50_54_800000",
}
_CONFIG_SUFFIXES = (".yaml", ".py")
_NOT_CONFIGS = ("common/",)  # LazyConfig pieces imported by the configs, not configs themselves


def _configs_root() -> pathlib.Path:
    root = importlib.resources.files(__package__) / "configs"
    if not isinstance(root, pathlib.Path):  # a zipped install: yacs and LazyConfig need real files
        raise ConfigError(f"yolact_d2 configs {root}", "not on the file system (a zipped install)",
                          fix="install yolact_d2 as a regular (unzipped) package")
    return root


def list_configs() -> List[str]:
    """The names of the configs, relative to the zoo's ``configs/`` folder."""
    root = _configs_root()
    names = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in _CONFIG_SUFFIXES]
    return sorted(n for n in names if not n.startswith(_NOT_CONFIGS) and not n.endswith("__init__.py"))


def get_config_file(config_path: str) -> str:
    """The file of the zoo config ``config_path`` (e.g. ``COCO-InstanceSegmentation/yolact_R_50_FPN_550.yaml``)."""
    known = list_configs()
    if config_path not in known:
        raise ConfigError(f"model zoo config {config_path!r}", "unknown", fix="known: " + ", ".join(known))
    return str(_configs_root() / config_path)


def trained_weights(config_path: str) -> str:
    """``yolact://`` name of the original's COCO checkpoint that matches a zoo config."""
    stem = config_path.rsplit(".", 1)[0]
    if stem not in TRAINED_WEIGHTS:
        with_weights = [n for n in list_configs() if n.rsplit(".", 1)[0] in TRAINED_WEIGHTS]
        raise ConfigError(f"model zoo config {config_path!r}", "no published trained weights match it",
                          fix="trained=True works for: " + ", ".join(with_weights))
    return SCHEME + TRAINED_WEIGHTS[stem]


def get_config(config_path: str, trained: bool = False):
    """The config of a zoo name: a yacs ``CfgNode`` with the yolact_d2 keys for a ``.yaml`` name, a
    LazyConfig (``detectron2.config.LazyConfig.load``) for a ``.py`` one. ``trained=True`` sets the
    weights (``MODEL.WEIGHTS`` / ``train.init_checkpoint``) to the original's COCO checkpoint, otherwise
    the config's own start (the ImageNet backbone for the COCO configs)."""
    path = get_config_file(config_path)
    weights = trained_weights(config_path) if trained else None
    if path.endswith(".py"):
        cfg = LazyConfig.load(path)
        if weights is not None:
            cfg.train.init_checkpoint = weights
        return cfg
    cfg = setup_cfg(path, freeze=False)
    if weights is not None:
        cfg.MODEL.WEIGHTS = weights
    return cfg


def get(config_path: str, trained: bool = False, device: Optional[str] = None):
    """A model of a zoo config, with its weights loaded (downloaded once for ``yolact://`` names), as
    ``detectron2.model_zoo.get``: on ``device`` (default: the config's, or "cpu" without CUDA), in
    training mode (call ``.eval()`` for inference, or use ``YolactPredictor``)."""
    cfg = get_config(config_path, trained)
    if device is None and not torch.cuda.is_available():
        device = "cpu"
    if isinstance(cfg, CfgNode):
        if device is not None:
            cfg.MODEL.DEVICE = device
        model = YolactTrainer.build_model(cfg)
        AtomicDetectionCheckpointer(model, trusted_file=trusted_weights_file(cfg)).load(cfg.MODEL.WEIGHTS)
        return model
    model = instantiate(cfg.model)
    if device is not None:
        model = model.to(device)
    if "train" in cfg and "init_checkpoint" in cfg.train:
        AtomicDetectionCheckpointer(model).load(cfg.train.init_checkpoint)
    return model
