"""The ``Yolact`` meta-architecture: backbone + FPN, shared prediction head, protonet and, in
training, the semantic-segmentation head and the YOLACT losses (Bolya et al., ICCV 2019).

It follows Detectron2's model contract: ``forward(list[dict])`` returns a loss dict in training and
``[{"instances": Instances}]`` at each input's ``height`` x ``width`` in inference. Images of
different sizes are padded into one batch; anchors and prototype crops are computed from the
padded size, which for YOLACT's square 550 input is exactly the original model (docs/MODEL.md).

YOLACT++ (``MODEL.YOLACT.MASK_IOU_ON``) adds the mask re-scoring net: ``loss_mask_iou`` in
training and, in inference, ``Instances.mask_scores`` = class score x predicted mask IoU (used for
mask AP by :class:`yolact_d2.evaluation.YolactCOCOEvaluator`; ``scores`` stays the class score).
"""
import contextlib
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import record_function

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import BitMasks, ImageList, Instances, PolygonMasks

from ..utils.errors import ConfigError
from .anchor_generator import YolactAnchorGenerator, build_yolact_anchor_generator
from .box_ops import MIN_BOX_SIDE, decode
from .config_checks import COUNT, FRACTION, POSITIVE, check_value_ranges
from .head import build_yolact_head
from .inference import check_nms_type, detect, detections_to_instances
from .losses import YolactLoss
from .maskiou import build_maskiou_net
from .protonet import build_protonet
from .semantic_seg import SemanticSegHead

__all__ = ["Yolact"]


def _stage(name: str):
    """A profiler range named after a stage of ``Yolact.forward`` (tools/benchmark.py times them);
    none while a graph is traced, scripted or exported, which must not contain profiler ops."""
    if (
        torch.jit.is_scripting()
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
        or torch.compiler.is_compiling()
    ):
        return contextlib.nullcontext()
    return record_function(name)

# The keys Yolact itself reads (its parts check theirs when they are built). A list value is checked
# entry by entry.
_VALUE_RANGES = {
    "MODEL.YOLACT.BBOX_VARIANCES": POSITIVE,
    "MODEL.YOLACT.SCORE_THRESH_TEST": FRACTION,
    "MODEL.YOLACT.NMS_THRESH_TEST": FRACTION,
    "MODEL.YOLACT.TOPK_CANDIDATES_TEST": COUNT,
    "MODEL.YOLACT.MASK_THRESHOLD": FRACTION,
    "INPUT.IMAGE_SIZE": COUNT,
    "TEST.DETECTIONS_PER_IMAGE": COUNT,
    "MODEL.PIXEL_STD": POSITIVE,
}


def _check_pixel_channels(cfg) -> None:
    """``MODEL.PIXEL_MEAN`` / ``PIXEL_STD`` one value per channel of ``INPUT.FORMAT`` (the backbone's
    input channels are ``len(PIXEL_MEAN)``): otherwise a conv shape error at the first image, or a
    grey image silently broadcast to three channels."""
    channels = 1 if cfg.INPUT.FORMAT == "L" else 3
    for key in ("PIXEL_MEAN", "PIXEL_STD"):
        values = list(getattr(cfg.MODEL, key))
        if len(values) != channels:
            raise ConfigError(
                f"MODEL.{key} {values}", f"has {len(values)} values but INPUT.FORMAT {cfg.INPUT.FORMAT!r} has "
                f"{channels} channel(s)", fix="give one value per channel, in INPUT.FORMAT order",
            )


@META_ARCH_REGISTRY.register()
class Yolact(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        head: nn.Module,
        protonet: nn.Module,
        sem_seg_head: nn.Module = None,
        maskiou_net: Optional[nn.Module] = None,
        anchor_generator: YolactAnchorGenerator,
        criterion: YolactLoss,
        in_features: Sequence[str],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        bbox_variances: Sequence[float] = (0.1, 0.2),
        score_threshold: float = 0.05,
        nms_type: str = "fast",
        nms_threshold: float = 0.5,
        topk_candidates: int = 200,
        max_detections_per_image: int = 100,
        mask_threshold: float = 0.5,
        truncate_boxes: bool = True,
    ):
        super().__init__()
        check_nms_type(nms_type)
        self.backbone = backbone
        self.head = head
        self.protonet = protonet
        self.sem_seg_head = sem_seg_head
        self.maskiou_net = maskiou_net
        self.anchor_generator = anchor_generator
        self.criterion = criterion
        self.in_features = list(in_features)
        self.input_format = input_format
        self.bbox_variances = tuple(bbox_variances)
        self.score_threshold = score_threshold
        self.nms_type = nms_type
        self.nms_threshold = nms_threshold
        self.topk_candidates = topk_candidates
        self.max_detections_per_image = max_detections_per_image
        self.mask_threshold = mask_threshold
        self.truncate_boxes = truncate_boxes
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        y = cfg.MODEL.YOLACT
        check_value_ranges(cfg, _VALUE_RANGES)
        _check_pixel_channels(cfg)
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        missing = [f for f in y.IN_FEATURES if f not in shapes]
        if missing:
            raise ConfigError(
                f"MODEL.YOLACT.IN_FEATURES {list(y.IN_FEATURES)}",
                f"{missing} not produced by backbone {cfg.MODEL.BACKBONE.NAME}, which outputs {list(shapes)}",
                fix=f"choose IN_FEATURES among {list(shapes)}",
            )
        level_shapes = [shapes[f] for f in y.IN_FEATURES]
        return {
            "backbone": backbone,
            "head": build_yolact_head(cfg, level_shapes),
            "protonet": build_protonet(cfg, level_shapes[0]),
            "sem_seg_head": SemanticSegHead(cfg, level_shapes[0]) if y.SEM_SEG_ON else None,
            "maskiou_net": build_maskiou_net(cfg) if y.MASK_IOU_ON else None,
            "anchor_generator": build_yolact_anchor_generator(cfg, level_shapes),
            "criterion": YolactLoss(cfg),
            "in_features": y.IN_FEATURES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
            "bbox_variances": y.BBOX_VARIANCES,
            "score_threshold": y.SCORE_THRESH_TEST,
            "nms_type": y.NMS_TYPE,
            "nms_threshold": y.NMS_THRESH_TEST,
            "topk_candidates": y.TOPK_CANDIDATES_TEST,
            "max_detections_per_image": cfg.TEST.DETECTIONS_PER_IMAGE,
            "mask_threshold": y.MASK_THRESHOLD,
            "truncate_boxes": y.TRUNCATE_BOXES_TEST,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ------------------------------------------------------------------ Detectron2 contract
    def forward(self, batched_inputs: List[Dict]):
        """Training: a dict of losses; inference: ``[{"instances": Instances}]`` per input."""
        images = self.preprocess_image(batched_inputs)
        features = self.extract_features(images.tensor)
        outputs = self.head_outputs(features, tuple(images.tensor.shape[-2:]))  # head, protonet, anchors
        if self.training:
            return self.losses(batched_inputs, images, outputs, features[0])
        return self.inference(batched_inputs, images, outputs)

    def losses(
        self, batched_inputs: List[Dict], images: ImageList, outputs, p3: torch.Tensor
    ) -> Dict[str, torch.Tensor]:
        """The YOLACT losses (matching, classes, boxes, masks) of :meth:`head_outputs`'s ``outputs``; ``p3``
        feeds the training-only semantic segmentation head."""
        if not all("instances" in x for x in batched_inputs):
            raise ValueError("Yolact training needs 'instances' in every input dict")
        class_logits, box_deltas, coefficients, prototypes, anchors = outputs
        targets = [
            self.prepare_targets(x["instances"].to(self.device), size, tuple(images.tensor.shape[-2:]))
            for x, size in zip(batched_inputs, images.image_sizes)
        ]
        sem_seg_logits = self.sem_seg_head(p3) if self.sem_seg_head is not None else None
        return self.criterion(
            class_logits, box_deltas, coefficients, prototypes, sem_seg_logits, anchors, targets,
            maskiou_net=self.maskiou_net,
        )

    def inference(self, batched_inputs: List[Dict], images: ImageList, outputs) -> List[Dict[str, Instances]]:
        """Detections of :meth:`head_outputs`'s ``outputs``: box decoding and class softmax, then
        per image score threshold + NMS and mask assembly, as the original's detection step."""
        padded_size = tuple(images.tensor.shape[-2:])
        with _stage("yolact.head"):
            predictions = self.decode_outputs(outputs)
        return self.postprocess_batch(batched_inputs, images.image_sizes, padded_size, predictions)

    # ------------------------------------------------------------------ the stages of forward
    # Each stage is a torch.profiler.record_function range ("yolact.<stage>", see _stage), which is
    # how tools/benchmark.py times them without a method per stage; outside a profiler they cost a
    # few microseconds per image.
    def preprocess_image(self, batched_inputs: List[Dict]) -> ImageList:
        """Normalise (``(x - mean) / std`` in ``INPUT.FORMAT`` order) and pad into one batch."""
        with _stage("yolact.preprocess"):
            images = [(x["image"].to(self.device).float() - self.pixel_mean) / self.pixel_std for x in batched_inputs]
            return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def extract_features(self, images: torch.Tensor) -> List[torch.Tensor]:
        """Backbone + FPN: the ``MODEL.YOLACT.IN_FEATURES`` levels of a normalised (B, 3, H, W)
        batch, finest first."""
        with _stage("yolact.backbone"):
            features = self.backbone(images)
            return [features[f] for f in self.in_features]

    def head_outputs(self, features: List[torch.Tensor], image_shape: Tuple[int, int]):
        """Raw head outputs: ``(class_logits (B, P, K+1), box_deltas (B, P, 4), coefficients
        (B, P, k), prototypes (B, k, H', W'), anchors (P, 4))`` for features of an input of
        (padded) size ``image_shape``."""
        with _stage("yolact.head"):
            class_logits, box_deltas, coefficients = self.head(features)
            prototypes = self.protonet(features[0])
            anchors = self.anchor_generator(
                [tuple(f.shape[-2:]) for f in features], tuple(image_shape), device=features[0].device
            )
            return class_logits, box_deltas, coefficients, prototypes, anchors

    def decode_outputs(self, outputs):
        """:meth:`head_outputs` -> ``(class_probs (B, P, K+1), boxes (B, P, 4) relative point form,
        coefficients (B, P, k), prototypes (B, k, H', W'))``."""
        class_logits, box_deltas, coefficients, prototypes, anchors = outputs
        boxes = decode(box_deltas, anchors[None], self.bbox_variances)
        return F.softmax(class_logits, dim=-1), boxes, coefficients, prototypes

    def postprocess_batch(self, batched_inputs: List[Dict], image_sizes, padded_size, predictions) -> List[Dict]:
        """Score threshold + NMS and masks (assembly, crop, upsampling, binarisation, pixel boxes)
        for every image of a batch, from :meth:`decode_outputs`'s ``predictions``; the output size
        is each input's ``height`` x ``width`` (default: its resized size)."""
        class_probs, boxes, coefficients, prototypes = predictions
        results = []
        for i, (x, image_size) in enumerate(zip(batched_inputs, image_sizes)):
            with _stage("yolact.nms"):
                detections = detect(
                    class_probs[i], boxes[i], coefficients[i], score_threshold=self.score_threshold,
                    nms_type=self.nms_type, iou_threshold=self.nms_threshold, top_k=self.topk_candidates,
                    max_detections=self.max_detections_per_image, image_size=padded_size,
                )
            output_size = (x.get("height", image_size[0]), x.get("width", image_size[1]))
            with _stage("yolact.masks"):
                instances = detections_to_instances(
                    detections, prototypes[i], image_size=tuple(image_size), padded_size=tuple(padded_size),
                    output_size=tuple(output_size), mask_threshold=self.mask_threshold,
                    truncate_boxes=self.truncate_boxes, maskiou_net=self.maskiou_net,
                )
            results.append({"instances": instances})
        return results

    # ------------------------------------------------------------------ tensor-only entry points
    def inference_tensors(self, images: torch.Tensor):
        """Tensor-in, tensors-out core for export: a normalised (B, 3, H, W) batch ->
        :meth:`decode_outputs`'s ``(class_probs, boxes, coefficients, prototypes)``."""
        features = self.extract_features(images)
        return self.decode_outputs(self.head_outputs(features, tuple(images.shape[-2:])))

    def predict_raw(self, images: torch.Tensor):
        """:meth:`head_outputs` of a normalised (B, 3, H, W) batch, plus the P3 features (what the
        losses see; for tests and tools)."""
        features = self.extract_features(images)
        return (*self.head_outputs(features, tuple(images.shape[-2:])), features[0])

    # ------------------------------------------------------------------ training targets
    @staticmethod
    def prepare_targets(
        instances: Instances, image_size: Tuple[int, int], padded_size: Tuple[int, int]
    ) -> Dict[str, torch.Tensor]:
        """Relative boxes, classes and padded binary masks of the non-crowd instances, plus the
        crowd boxes (``gt_is_crowd``, kept by YolactDatasetMapper; Detectron2's stock mapper drops
        crowds, in which case there are none). Boxes with a side of at most the original's
        ``MIN_BOX_SIDE`` are left out: YolactDatasetMapper drops them already (a no-op then), other
        mappers' instances may hold them (Detectron2's drops only sides under 1e-5 px)."""
        pad_h, pad_w = padded_size
        boxes = instances.gt_boxes.tensor
        device = boxes.device
        scale = boxes.new_tensor([pad_w, pad_h, pad_w, pad_h])
        if instances.has("gt_is_crowd"):
            crowd = instances.gt_is_crowd.to(torch.bool)
        else:
            crowd = torch.zeros(len(instances), dtype=torch.bool, device=device)
        widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = (widths > MIN_BOX_SIDE) & (heights > MIN_BOX_SIDE) & ~crowd
        masks = _masks_to_tensor(instances.gt_masks, image_size, device) if instances.has("gt_masks") else None
        if masks is None:
            raise ValueError("Yolact training needs instance masks ('gt_masks'); set MODEL.MASK_ON / check the mapper")
        masks = F.pad(masks[keep], (0, pad_w - masks.shape[-1], 0, pad_h - masks.shape[-2]))
        return {
            "boxes": boxes[keep] / scale,
            "classes": instances.gt_classes[keep].to(torch.int64),
            "masks": masks,
            "crowd_boxes": boxes[crowd] / scale,
        }


def _masks_to_tensor(gt_masks, image_size: Tuple[int, int], device) -> torch.Tensor:
    """PolygonMasks / BitMasks / tensor -> (N, h, w) uint8 tensor at the resized image size."""
    h, w = image_size
    if isinstance(gt_masks, PolygonMasks):
        gt_masks = BitMasks.from_polygon_masks(gt_masks, h, w)
    tensor = gt_masks.tensor if isinstance(gt_masks, BitMasks) else torch.as_tensor(gt_masks)
    return tensor[:, :h, :w].to(device=device, dtype=torch.uint8)
