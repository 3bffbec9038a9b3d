"""Weights by name (docs/MODEL_ZOO.md): ``MODEL.WEIGHTS yolact://NAME`` names a published file, which
:mod:`.weights_cache` downloads once, converts to our parameter names and caches.

* ``yolact://ImageNetPretrained/R-50`` / ``R-101``: the ImageNet ResNets the original ``train.py``
  starts from (``resnet50-19c8e357.pth``, ``resnet101_reducedfc.pth``), as re-hosted by its authors.
* ``yolact://ImageNetPretrained/torchvision/R-18`` ... ``R-152``: torchvision's ImageNet ResNets
  (``IMAGENET1K_V1``), for the other depths.
* ``yolact://yolact_base_54_800000`` and the other COCO checkpoints of the original, re-hosted by its
  authors on Hugging Face in 2025-09 (dbolya/yolact issue 848).

``MODEL.WEIGHTS random`` asks for a randomly initialised model on purpose (:func:`is_random_weights`).
"""
import os
from dataclasses import dataclass
from typing import Dict
from urllib.parse import urlsplit

__all__ = [
    "SCHEME", "RANDOM_WEIGHTS", "PublishedWeights", "PUBLISHED_WEIGHTS", "UNSUPPORTED_WEIGHTS",
    "is_random_weights", "imagenet_weights_name",
]

SCHEME = "yolact://"
RANDOM_WEIGHTS = "random"  # MODEL.WEIGHTS value that asks for a randomly initialised model

_HF = "https://huggingface.co/dbolya/"
_TORCHVISION = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class PublishedWeights:
    """A file someone else publishes: where, and which converter turns it into our names."""

    url: str
    format: str  # "torchvision" (an ImageNet ResNet state dict) or "yolact" (an original YOLACT checkpoint)

    @property
    def file_name(self) -> str:
        return os.path.basename(urlsplit(self.url).path)


def _hf(repo: str, file_name: str, fmt: str) -> PublishedWeights:
    return PublishedWeights(f"{_HF}{repo}/resolve/main/{file_name}", fmt)


PUBLISHED_WEIGHTS: Dict[str, PublishedWeights] = {
    # the original's ImageNet initialisations (its README, "Training"; dbolya/yolact-initial-weights)
    "ImageNetPretrained/R-50": _hf("yolact-initial-weights", "resnet50-19c8e357.pth", "torchvision"),
    "ImageNetPretrained/R-101": _hf("yolact-initial-weights", "resnet101_reducedfc.pth", "torchvision"),
    # torchvision's ImageNet ResNets (torchvision.models.ResNet*_Weights.IMAGENET1K_V1)
    "ImageNetPretrained/torchvision/R-18": PublishedWeights(_TORCHVISION + "resnet18-f37072fd.pth", "torchvision"),
    "ImageNetPretrained/torchvision/R-34": PublishedWeights(_TORCHVISION + "resnet34-b627a593.pth", "torchvision"),
    "ImageNetPretrained/torchvision/R-50": PublishedWeights(_TORCHVISION + "resnet50-0676ba61.pth", "torchvision"),
    "ImageNetPretrained/torchvision/R-101": PublishedWeights(_TORCHVISION + "resnet101-63fe2227.pth", "torchvision"),
    "ImageNetPretrained/torchvision/R-152": PublishedWeights(_TORCHVISION + "resnet152-394f9c45.pth", "torchvision"),
    # the original's COCO checkpoints (its README, "Evaluation")
    "yolact_base_54_800000": _hf("yolact-base", "yolact_base_54_800000.pth", "yolact"),
    "yolact_resnet50_54_800000": _hf("yolact-resnet50", "yolact_resnet50_54_800000.pth", "yolact"),
    "yolact_im700_54_800000": _hf("yolact-im700", "yolact_im700_54_800000.pth", "yolact"),
    "yolact_plus_base_54_800000": _hf("yolact-plus-base", "yolact_plus_base_54_800000.pth", "yolact"),
    "yolact_plus_resnet50_54_800000": _hf("yolact-plus-resnet50", "yolact_plus_resnet50_54_800000.pth", "yolact"),
}

# Published, but not loadable here: the reason, given before anything is downloaded.
UNSUPPORTED_WEIGHTS: Dict[str, str] = {
    "yolact_darknet53_54_800000": "a DarkNet-53 checkpoint (dbolya/yolact-darknet53); yolact_d2 has ResNet "
    "backbones only and its converter refuses DarkNet-53 checkpoints",
}


def is_random_weights(path: str) -> bool:
    """``MODEL.WEIGHTS random``: no weights on purpose (a file of that name in the working folder wins)."""
    return path == RANDOM_WEIGHTS and not os.path.exists(path)


def imagenet_weights_name(depth: int) -> str:
    """The ``yolact://`` name of the ImageNet ResNet-``depth`` a COCO config starts from."""
    if depth in (50, 101):
        return f"{SCHEME}ImageNetPretrained/R-{depth}"
    return f"{SCHEME}ImageNetPretrained/torchvision/R-{depth}"
