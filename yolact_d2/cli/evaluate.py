"""COCO evaluation (mask and box AP, per class) of PyTorch weights and exported ONNX files (float32
or int8) on one dataset, with the agreement of each ONNX model's detections with the first model's:
``yolact-evaluate`` (in a clone also ``python tools/evaluate.py``).

    yolact-evaluate --config-file configs/Synthetic/yolact_R_18_FPN_synthetic.yaml \\
        --weights model_final.pth [--precision fp32,bf16] --onnx model.float32.onnx --onnx model_int8.onnx \\
        [--dataset yolact_synthetic_val] [--threads 2] [--max-images N] [--json OUT] [KEY VALUE ...]

Models: the PyTorch model of ``--weights`` (``YolactPredictor``, once per ``--precision``: e.g.
``--precision fp32,bf16`` evaluates both, MODEL.YOLACT.PRECISION_TEST; omit ``--weights`` to evaluate
ONNX files only, the post-processing then uses cfg ``MODEL.WEIGHTS`` or a random init, which only
matters for YOLACT++'s mask re-scoring) and every ``--onnx`` file (``YolactONNXPredictor``), in
that order. Every image of ``--dataset`` (default ``DATASETS.TEST[0]``; your own data through
``DATASETS.COCO_INSTANCES``) goes through the YOLACT test mapper once and then through every model;
each model has its own Detectron2 ``COCOEvaluator`` (``YolactCOCOEvaluator``).

Agreement with the first model (the reference, normally float32): its detections scoring
>= ``--agreement-score`` (default 0.3) are matched one to one to the other model's (same class,
box IoU >= 0.5, ``yolact_d2.quantization.match_detections``); reported: the fraction matched, the
mean / 5th percentile / minimum mask IoU of the matches and the largest score difference.
"""
import argparse
import json
import os

import numpy as np
import torch

from detectron2.data import DatasetCatalog

from ..data.dataset_mapper import YolactDatasetMapper
from ..data.datasets import register_datasets_from_config
from ..evaluation import YolactCOCOEvaluator
from ..export import YolactONNXPredictor
from ..predictor import YolactPredictor
from ..quantization import detection_agreement
from ..runtime.cli_args import float_in, positive_int
from ..runtime.command_line_keys import mark_set_on_command_line
from ..runtime.config_loading import setup_cfg
from ..runtime.reporting import run_cli
from ..runtime.run_checks import check_class_names, check_num_classes
from ..utils.atomic_io import atomic_open, prepare_output_file
from ..utils.errors import ConfigError


def parse_args(argv=None, prog=None):
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default=None, help="PyTorch checkpoint to evaluate (and to build the predictors)")
    parser.add_argument("--onnx", action="append", default=[], help="exported model (repeat for several)")
    parser.add_argument(
        "--precision", default=None,
        help="with --weights: comma-separated PyTorch precisions to evaluate, each a model (fp32, bf16, auto; "
        "default: cfg MODEL.YOLACT.PRECISION_TEST), e.g. fp32,bf16")
    parser.add_argument("--dataset", default=None, help="registered dataset (default: DATASETS.TEST[0])")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch / onnxruntime threads")
    parser.add_argument("--max-images", type=positive_int, default=None, help="evaluate the first N images only")
    parser.add_argument("--agreement-score", type=float_in(0.0, 1.0), default=0.3)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def build(args):
    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    cfg.MODEL.DEVICE = "cpu"
    if args.weights is not None:
        cfg.MODEL.WEIGHTS = args.weights
        mark_set_on_command_line(cfg, "MODEL.WEIGHTS")  # --weights random: untrained on purpose
    register_datasets_from_config(cfg)
    dataset = args.dataset or (cfg.DATASETS.TEST[0] if len(cfg.DATASETS.TEST) else None)
    if not dataset:
        raise ConfigError("--dataset", "not given and DATASETS.TEST is empty", "give --dataset, a registered dataset")
    if args.weights is None and not args.onnx:
        raise ConfigError("models", "none given", "pass --weights and/or --onnx FILE")
    if args.threads:
        torch.set_num_threads(args.threads)
    models = []
    if args.weights is not None:
        for precision in (args.precision or cfg.MODEL.YOLACT.PRECISION_TEST).split(","):
            torch_predictor = YolactPredictor(cfg, precision=precision.strip())
            label = "torch" if torch_predictor.precision == "fp32" else f"torch {torch_predictor.precision}"
            models.append((label, lambda d, p=torch_predictor: p.model([d])[0]))
            check_dataset_classes(torch_predictor, dataset)
    for path in args.onnx:
        if not os.path.isfile(path):
            raise ConfigError("--onnx", f"file not found: {path}", "give a file that yolact-export wrote")
        predictor = YolactONNXPredictor(cfg, path, num_threads=args.threads)
        check_dataset_classes(predictor, dataset)
        label = os.path.basename(path) + (" (int8)" if predictor.quantization else "")
        models.append((label, predictor.predict_inputs))
    return cfg, dataset, models


def check_dataset_classes(predictor, dataset):
    """The classes the checkpoint records are the dataset's, in the same order (else every AP is
    of other classes); a COCO json is loaded here to read its classes."""
    check_num_classes(predictor.cfg, [dataset], "--dataset")  # also loads a json dataset's classes
    check_class_names(predictor.class_names, f"the checkpoint {predictor.cfg.MODEL.WEIGHTS}", [dataset], "--dataset")


def evaluate(cfg, dataset, models, max_images=None, agreement_score=0.3):
    """{label: {"bbox": {...}, "segm": {...}, "agreement": {...}}} for every model."""
    dicts = DatasetCatalog.get(dataset)[:max_images]
    mapper = YolactDatasetMapper(cfg, is_train=False)
    evaluators = []
    for _ in models:
        evaluator = YolactCOCOEvaluator(dataset, tasks=("bbox", "segm"), distributed=False,
                                        max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE)
        evaluator.reset()
        evaluators.append(evaluator)
    pooled = [{"detections": 0, "matched": 0, "mask_iou": [], "score_diff": []} for _ in models]
    with torch.inference_mode():
        for d in dicts:
            inputs = mapper(d)
            outputs = [run(inputs) for _, run in models]
            for k, (evaluator, output) in enumerate(zip(evaluators, outputs)):
                evaluator.process([inputs], [output])
                if k:
                    a = detection_agreement(outputs[0]["instances"], output["instances"], agreement_score)
                    for key in pooled[k]:
                        pooled[k][key] += a[key]
    for note in sorted({e.ground_truth_note for e in evaluators if e.ground_truth_note}):
        print(note)  # what the AP below is computed against (annotations dropped at load are not)
    results = {}
    for (label, _), evaluator, agree in zip(models, evaluators, pooled):
        results[label] = dict(evaluator.evaluate(img_ids=[d["image_id"] for d in dicts]))
        if agree["detections"]:
            iou = np.array(agree["mask_iou"] or [0.0])
            results[label]["agreement"] = {
                "reference": models[0][0], "min_score": agreement_score, "detections": agree["detections"],
                "matched_fraction": agree["matched"] / agree["detections"],
                "mask_iou_mean": float(iou.mean()), "mask_iou_p5": float(np.percentile(iou, 5)),
                "mask_iou_min": float(iou.min()), "score_diff_max": float(max(agree["score_diff"] or [0.0])),
            }
    return results


def print_table(results):
    labels = list(results)
    classes = sorted({k[3:] for r in results.values() for k in r["segm"] if k.startswith("AP-")})
    width = max(12, *(len(x) for x in labels))
    print(f"{'':18}" + "".join(f"{x:>{width + 2}}" for x in labels))
    for task, name in (("segm", "mask"), ("bbox", "box")):
        for metric in ["AP", "AP50", "AP75"] + [f"AP-{c}" for c in classes]:
            row = [results[x][task].get(metric, float("nan")) for x in labels]
            print(f"{name + ' ' + metric:18}" + "".join(f"{v:>{width + 2}.2f}" for v in row))
    for label in labels[1:]:
        a = results[label].get("agreement")
        if a:
            print(f"{label} vs {a['reference']} (score >= {a['min_score']}): {a['matched_fraction']:.1%} of "
                  f"{a['detections']} matched, mask IoU mean {a['mask_iou_mean']:.3f} p5 {a['mask_iou_p5']:.3f} "
                  f"min {a['mask_iou_min']:.3f}, max score diff {a['score_diff_max']:.3f}")


def main(argv=None, prog=None):
    args = parse_args(argv, prog)
    if args.json:
        prepare_output_file(args.json, "--json")  # before the evaluation, not after it
    cfg, dataset, models = build(args)
    results = evaluate(cfg, dataset, models, args.max_images, args.agreement_score)
    print(f"dataset {dataset}, {len(models)} models")
    print_table(results)
    if args.json:
        with atomic_open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


def cli_main(argv=None, prog=None) -> int:
    """The command line: one ``error: ...`` line and status 1 for a known user error."""
    return run_cli(lambda: main(argv, prog), argv)
