"""Config keys of yolact_d2.

Everything YOLACT-specific lives under ``MODEL.YOLACT``; the few generic input keys YOLACT needs
(square training size, mapper selection, test-time resize mode) sit next to Detectron2's own
``INPUT.*`` keys, as Mask2Former does. Standard keys (``MODEL.BACKBONE.NAME``, ``MODEL.RESNETS.*``,
``MODEL.PIXEL_MEAN/STD``, ``INPUT.FORMAT``, ``TEST.DETECTIONS_PER_IMAGE``, ``MODEL.DEVICE``,
``MODEL.WEIGHTS``, ``SOLVER.*``) are re-used, never duplicated. Defaults are those of the original
``yolact_base_config``; docs/MODEL.md explains each of them.
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_yolact_config"]


def add_yolact_config(cfg):
    """Add the yolact_d2 keys to a Detectron2 config (in place). Safe to call once per cfg."""
    _add_model_keys(cfg)
    _add_inference_keys(cfg)
    _add_data_and_solver_keys(cfg)


def _add_model_keys(_C):
    """The network, the anchors, the training targets and the losses."""
    # True: load MODEL.WEIGHTS with the unrestricted pickle loaders (runs any code in the file; only for files
    # you trust). Default: tensors / numpy arrays / plain data only (docs/RELIABILITY.md).
    _C.MODEL.WEIGHTS_TRUSTED = False
    _C.MODEL.YOLACT = CN()
    # Number of foreground classes (COCO: 80). The classifier has NUM_CLASSES + 1 outputs, index 0
    # being background, as the original's softmax does; predicted classes are contiguous 0..NUM_CLASSES-1.
    _C.MODEL.YOLACT.NUM_CLASSES = 80
    # FPN levels fed to the prediction head, finest first; the protonet and the semantic-seg head
    # read the first one (P3: the protonet and the semantic-segmentation head sit there).
    _C.MODEL.YOLACT.IN_FEATURES = ["p3", "p4", "p5", "p6", "p7"]
    # Registry names of the swappable parts.
    _C.MODEL.YOLACT.HEAD_NAME = "YolactHead"
    _C.MODEL.YOLACT.PROTONET_NAME = "ProtoNet"
    # Number of prototype masks k.
    _C.MODEL.YOLACT.NUM_PROTOTYPES = 32
    # Normalisation after the hidden convs of the prediction head and the protonet ("", "GN", ...;
    # Detectron2's get_norm names). YOLACT has none; together with MODEL.FPN.NORM "GN" it keeps
    # training from scratch stable (without it the ReLU'd FPN outputs die; docs/DEVELOPMENT_NOTES.md).
    _C.MODEL.YOLACT.NORM = ""

    # ---- Anchors. Scales are anchor sides in pixels of the network input, one list per
    # level; aspect ratios are width / height (the opposite of Detectron2's h/w convention).
    _C.MODEL.YOLACT.ANCHOR_SCALES = [[24], [48], [96], [192], [384]]
    _C.MODEL.YOLACT.ANCHOR_ASPECT_RATIOS = [[1.0, 0.5, 2.0]]
    # YOLACT v1 configs set h = w for every anchor ("backward compatibility with a bug", in the original's words), so
    # the three anchors per location are squares of side s, s/sqrt(2), s*sqrt(2). YOLACT++: False.
    _C.MODEL.YOLACT.SQUARE_ANCHORS = True

    # ---- Training targets.
    _C.MODEL.YOLACT.POSITIVE_IOU_THRESHOLD = 0.5
    _C.MODEL.YOLACT.NEGATIVE_IOU_THRESHOLD = 0.4
    # Non-positive anchors whose intersection-over-anchor-area with a crowd box exceeds this
    # become neutral. 1.0 disables crowd handling.
    _C.MODEL.YOLACT.CROWD_IOA_THRESHOLD = 0.7
    # SSD box-coding variances: weights (1/0.1, 1/0.1, 1/0.2, 1/0.2) with no dw/dh clamp.
    _C.MODEL.YOLACT.BBOX_VARIANCES = [0.1, 0.2]

    # ---- Losses. All but the semantic-seg loss are divided by the number of positive
    # anchors in the whole batch.
    _C.MODEL.YOLACT.OHEM_NEG_POS_RATIO = 3
    _C.MODEL.YOLACT.LOSS_CLS_WEIGHT = 1.0
    _C.MODEL.YOLACT.LOSS_BOX_WEIGHT = 1.5
    _C.MODEL.YOLACT.LOSS_MASK_WEIGHT = 6.125
    _C.MODEL.YOLACT.LOSS_SEM_SEG_WEIGHT = 1.0
    # At most this many positive anchors per image get a mask loss (random subset, rescaled).
    _C.MODEL.YOLACT.MASKS_TO_TRAIN = 100
    # Auxiliary semantic-segmentation head on P3 (training only).
    _C.MODEL.YOLACT.SEM_SEG_ON = True


def _add_inference_keys(_C):
    """Post-processing and the YOLACT++ parts."""
    # ---- Inference.
    # Anchors whose best foreground score is <= this are dropped before NMS. There is no second
    # threshold after Fast NMS, so final scores can be lower than this.
    _C.MODEL.YOLACT.SCORE_THRESH_TEST = 0.05
    # "fast" (per-class Fast NMS, the original's evaluation setting), "cross_class" (class-agnostic
    # Fast NMS) or "standard" (per-class greedy NMS).
    _C.MODEL.YOLACT.NMS_TYPE = "fast"
    _C.MODEL.YOLACT.NMS_THRESH_TEST = 0.5
    # Candidates per class entering NMS.
    _C.MODEL.YOLACT.TOPK_CANDIDATES_TEST = 200
    # Final masks are sigmoid(P C^T) upsampled to the image size and compared with this (strict >).
    _C.MODEL.YOLACT.MASK_THRESHOLD = 0.5
    # The original truncates final pixel boxes to integers; False keeps sub-pixel boxes.
    _C.MODEL.YOLACT.TRUNCATE_BOXES_TEST = True
    # The maximum number of detections is TEST.DETECTIONS_PER_IMAGE (100, as the original).
    # No longer a key: the post-processing is always the fast one (Fast NMS on topk candidates, masks
    # upsampled only where they can be non-zero), which gives the detections and masks of the original's
    # literal algorithm (that algorithm is the tests' oracle, tests/reference_postprocess.py). A config
    # that still sets it, such as the config.yaml an earlier version wrote into each OUTPUT_DIR, loads
    # with a warning naming the key instead of failing.
    _C.register_deprecated_key("MODEL.YOLACT.FAST_POSTPROCESS_TEST")
    # Inference-only rewrites applied by YolactPredictor (and the tools built on it: demo,
    # benchmark, export), not by the trainer's evaluation: fold BN / FrozenBN into the preceding
    # convs, and run in channels-last memory format. Same function, float rounding differences
    # only (~1e-6 relative); about 25% faster on CPU (yolact_d2/modeling/optimize.py).
    _C.MODEL.YOLACT.FUSE_BN_TEST = True
    _C.MODEL.YOLACT.CHANNELS_LAST_TEST = True
    # Precision of the network (backbone, FPN, head, protonet) in YolactPredictor: "fp32", "bf16" (weights
    # converted once after BN folding; box decoding, softmax, NMS and masks stay float32) or "auto" (bf16
    # on CPUs with AMX / AVX512-BF16, else fp32). Why: bf16 ran R-101-550 3.1x faster on a Xeon with AMX
    # (issue 32) with the same AP (docs/EXPORT.md, "bf16"); on CPUs without native bf16 it is slower.
    _C.MODEL.YOLACT.PRECISION_TEST = "fp32"

    # ---- YOLACT++: deformable backbone, mask re-scoring. The ++ configs also set
    # MODEL.RESNETS.DEFORM_ON_PER_STAGE [False, True, True, True], MODEL.RESNETS.DEFORM_MODULATED
    # True, three anchor scales per level and SQUARE_ANCHORS False.
    # In a stage with deform on (MODEL.RESNETS.DEFORM_ON_PER_STAGE), bottleneck i gets a DCNv2
    # 3x3 conv iff i % DEFORM_INTERVAL == 0 (original: 3 for R-101, 1 for R-50).
    _C.MODEL.YOLACT.DEFORM_INTERVAL = 1
    # Mask re-scoring network (FastMaskIoUNet): predicts the IoU of every mask with its
    # object; at inference the mask score is class score x predicted IoU (Instances.mask_scores,
    # used for mask AP; box AP keeps the class score).
    _C.MODEL.YOLACT.MASK_IOU_ON = False
    _C.MODEL.YOLACT.MASK_IOU_NET_NAME = "FastMaskIoUNet"
    # loss_mask_iou: smooth-L1 x this weight, divided by the number of positives.
    _C.MODEL.YOLACT.LOSS_MASK_IOU_WEIGHT = 25.0
    # Only positives whose GT mask covers more than this many prototype pixels train the net.
    _C.MODEL.YOLACT.MASK_IOU_MIN_AREA = 25


def _add_data_and_solver_keys(_C):
    """The input keys next to Detectron2's ``INPUT.*``, datasets, solver, reliability and evaluation."""
    # ---- Input. YOLACT squashes every image to a square of IMAGE_SIZE pixels, at training and at test time.
    _C.INPUT.IMAGE_SIZE = 550
    # Training augmentations of the YOLACT mapper, applied in the original order before the
    # square resize; the original's augment_* flags. Small images (e.g. the synthetic dataset) may
    # drop "expand", which shrinks objects up to 4x.
    _C.INPUT.YOLACT_AUGMENTATIONS = ["photometric_distort", "expand", "random_sample_crop", "mirror"]
    # Which mapper train_net.py uses: "yolact" (SSD augmentation + square resize) or
    # "detectron2" (Detectron2's stock DatasetMapper with ResizeShortestEdge).
    _C.INPUT.DATASET_MAPPER_NAME = "yolact"
    # Test-time resize of the YOLACT mapper and YolactPredictor: "squash" (the original protocol,
    # IMAGE_SIZE x IMAGE_SIZE) or "keep_aspect" (longer side = IMAGE_SIZE, aspect kept).
    _C.INPUT.TEST_RESIZE_MODE = "squash"
    # Ground-truth boxes for training (anchor matching, mask-loss crop): "json" (each annotation's bbox, as the
    # original) or "mask" (the extent of the annotation's mask). Loading a DATASETS.COCO_INSTANCES json warns when
    # boxes and masks disagree (IoU < 0.5, docs/RELIABILITY.md).
    _C.INPUT.GT_BOX_SOURCE = "json"

    # COCO-format datasets to register by name before training, so that custom data needs no code:
    # a list of [name, json_file, image_root], e.g. on the command line
    #   DATASETS.COCO_INSTANCES "[['my_train', 'train.json', 'images/'], ['my_val', 'val.json', 'images/']]"
    # then use the names in DATASETS.TRAIN / DATASETS.TEST.
    _C.DATASETS.COCO_INSTANCES = []
    # Names of COCO_INSTANCES entries allowed to replace a dataset already registered under that name with other
    # data (a Detectron2 built-in such as coco_2017_train, yolact_synthetic_train): re-registered with a warning.
    # Without this, such a name is an error naming both sources (an entry with the same json and images is fine).
    _C.DATASETS.COCO_INSTANCES_REPLACE = []

    # ---- Solver. "SGD" is the original's (momentum SOLVER.MOMENTUM, weight decay
    # SOLVER.WEIGHT_DECAY*); "ADAMW" (betas 0.9/0.999, decoupled SOLVER.WEIGHT_DECAY*) trains a
    # from-scratch model faster in a short schedule, as Mask2Former does. Both honour
    # SOLVER.CLIP_GRADIENTS and Detectron2's per-parameter-type weight decay keys.
    _C.SOLVER.OPTIMIZER = "SGD"
    # ---- The original's recipe at any batch size; Base-YOLACT.yaml sets the original's values.
    # The total batch the schedule keys are written for. Another SOLVER.IMS_PER_BATCH B (total over all processes)
    # scales them as the original's --autoscale: BASE_LR x B/REF, MAX_ITER and STEPS // (B/REF), the warm-up
    # unchanged (same iterations, same starting LR); "WarmupMultiStepLR" then gives the original's LR at every
    # iteration (yolact_d2/solver/lr_scheduler.py). 0: the keys as written and Detectron2's scheduler (and its
    # SOLVER.REFERENCE_WORLD_SIZE rule, which cannot be combined with this one).
    _C.SOLVER.REFERENCE_IMS_PER_BATCH = 0
    # BatchNorm statistics are noise on a few images: below this many images per process every BatchNorm layer
    # (MODEL.*.NORM "BN") is frozen, running statistics and affine, as the original does below 6 per GPU.
    # "SyncBN" and "FrozenBN" are used as set. 0: BN is always trained.
    _C.SOLVER.FREEZE_BN_BELOW_IMS_PER_DEVICE = 0
    # A non-finite loss skips that optimizer step (the original does) and is logged and counted
    # ("nonfinite_loss_skipped" in metrics.json). Training stops with NonFiniteLossError at MAX_CONSECUTIVE
    # non-finite losses in a row (1: at the first) or when more than MAX_SKIPPED_FRACTION of the last WINDOW
    # iterations were skipped: a diverged run (LR far too high) stops within MAX_CONSECUTIVE iterations.
    _C.SOLVER.NONFINITE_LOSS = CN()
    _C.SOLVER.NONFINITE_LOSS.MAX_CONSECUTIVE = 10
    _C.SOLVER.NONFINITE_LOSS.MAX_SKIPPED_FRACTION = 0.1
    _C.SOLVER.NONFINITE_LOSS.WINDOW = 100

    # ---- reliability: bad inputs and faults (docs/RELIABILITY.md).
    # A training image that cannot be used (missing, empty, truncated, not an image, or a size that
    # differs from the dataset's height/width): False stops training with an error naming the file;
    # True skips it with a warning naming the file, and the trainer logs a running count of the
    # skipped images and the total at the end (also in metrics.json as "bad_images_skipped").
    # Evaluation never skips images (that would change the metrics).
    _C.DATALOADER.SKIP_BAD_IMAGES = False

    # COCOeval used by the evaluator (YolactCOCOEvaluator): "auto" (faster-coco-eval when installed,
    # else Detectron2's choice: its compiled COCOeval_opt, else pycocotools), "pycocotools" or
    # "faster_coco_eval" (an error if it is not installed). Same AP, 3.5-9x faster (docs/BENCHMARKS.md).
    _C.TEST.COCO_EVAL_BACKEND = "auto"
