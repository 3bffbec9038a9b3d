"""yolact_d2's model zoo, as ``detectron2.model_zoo`` is Detectron2's: the configs shipped in the package
(``configs/``) and the weights they name, by name (docs/MODEL_ZOO.md).

    from yolact_d2 import model_zoo
    cfg = model_zoo.get_config("COCO-InstanceSegmentation/yolact_R_50_FPN_550.yaml", trained=True)
    model = model_zoo.get("COCO-InstanceSegmentation/yolact_R_50_FPN_550.yaml", trained=True)
"""
from .model_zoo import get, get_config, get_config_file, list_configs, trained_weights

__all__ = ["get", "get_config", "get_config_file", "list_configs", "trained_weights"]
