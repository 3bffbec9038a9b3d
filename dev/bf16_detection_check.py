#!/usr/bin/env python
"""Developer tool: how the bf16 network's detections agree with float32's, on a COCO-size model.

    PYTHONPATH=. python dev/bf16_detection_check.py \\
        [--config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml] [--weights W.pth] \\
        [--synthetic 10 | --images DIR] [--min-scores 0.05 0.3 0.5] [--seed 0] [--threads 2] [--json OUT] \\
        [KEY VALUE ...]

Two ``YolactPredictor`` of the same weights, ``MODEL.YOLACT.PRECISION_TEST`` fp32 and bf16, run on the
same images, with a third as the control: float32 arithmetic on the network's weights rounded to bf16
(after BN folding, as the bf16 cast does). When the control moves the detections as much as bf16 does,
the network is that sensitive to changing each weight by at most 0.4 %, whatever the arithmetic.
Without ``--weights`` the weights are the benchmarks' conditioned random initialisation
(``yolact_d2.testing.save_conditioned_random_weights`` on the first two images, as tools/benchmark.py
does): no trained COCO weights are needed, but such a network is not a trained one, so the figures show
how much bf16 moves the outputs of this architecture with such weights, not the AP a trained model would
lose. ``--weights`` runs the same check on a checkpoint.

Per score threshold, the float32 detections scoring at least that much are matched to the other
model's detections of the same image (``yolact_d2.quantization.match_detections``: same class, box
IoU >= 0.5, greedy in decreasing float32 score); the table gives how many are matched, the box IoU and
mask IoU of the matched pairs and their score differences, pooled over the images. Then how far each
network stage moves (relative L2 error of the FPN levels and of the four outputs, mean over the first
``--stage-images`` images), and bf16's matches per image at the middle threshold. ``--images DIR``
reads .jpg/.png files instead of rendering ``--synthetic N`` 480x640 images of the synthetic shapes'
val split.
"""
import argparse
import glob
import json
import os
import sys
import tempfile

import cv2
import numpy as np
import torch

from detectron2.structures import pairwise_iou

from yolact_d2 import YolactPredictor
from yolact_d2.data.datasets.synthetic import render_synthetic_sample
from yolact_d2.modeling.optimize import NETWORK_PARTS
from yolact_d2.quantization import match_detections
from yolact_d2.runtime.command_line_keys import mark_set_on_command_line
from yolact_d2.runtime.config_loading import setup_cfg
from yolact_d2.runtime.reporting import run_cli
from yolact_d2.testing import save_conditioned_random_weights


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", default="configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml")
    parser.add_argument("--weights", default="", help="checkpoint (default: conditioned random init)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--synthetic", type=int, default=10, help="render N 480x640 synthetic val images")
    src.add_argument("--images", help="a folder of .jpg/.png images instead")
    parser.add_argument("--min-scores", type=float, nargs="+", default=[0.05, 0.3, 0.5],
                        help="float32 detections scoring at least this much are checked, one table row each")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation (without --weights)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--stage-images", type=int, default=2,
                        help="the relative error of every network stage is averaged over the first N images")
    parser.add_argument("--json", help="write the pooled and per-image figures here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, KEY VALUE ...")
    return parser.parse_args(argv)


def load_images(args):
    if args.images:
        paths = sorted(p for p in glob.glob(os.path.join(args.images, "*"))
                       if p.lower().endswith((".jpg", ".jpeg", ".png")) and os.path.isfile(p))
        images = [cv2.imread(p) for p in paths]
        if not images or any(im is None for im in images):
            sys.exit(f"error: --images {args.images}: no readable .jpg/.png images there")
        return images
    return [render_synthetic_sample(0, "val", i, image_size=(480, 640))["image"] for i in range(args.synthetic)]


def build_predictors(args, images, tmp):
    """float32 and bf16 predictors of the same weights (--weights, else conditioned random ones), and the
    control: float32 arithmetic with the network's weights rounded to bf16 (what the bf16 network starts
    from), which tells the weights' rounding apart from bf16's arithmetic."""

    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    if "MODEL.DEVICE" not in args.opts:
        cfg.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    if args.weights:
        cfg.MODEL.WEIGHTS = args.weights
    else:
        torch.manual_seed(args.seed)  # the same random weights in every run
        cfg.MODEL.WEIGHTS = save_conditioned_random_weights(cfg, images[:2], os.path.join(tmp, "conditioned.pth"))
    mark_set_on_command_line(cfg, "MODEL.WEIGHTS")  # the weights of this run, chosen here
    rounded = YolactPredictor(cfg, precision="fp32")
    with torch.no_grad():  # after BN folding, as the bf16 cast
        for part in NETWORK_PARTS:
            for t in list(getattr(rounded.model, part).parameters()) + list(getattr(rounded.model, part).buffers()):
                if t.is_floating_point():
                    t.copy_(t.to(torch.bfloat16).float())
    return cfg, YolactPredictor(cfg, precision="fp32"), {
        "bf16": YolactPredictor(cfg, precision="bf16"), "fp32 with bf16-rounded weights": rounded}


def pair_figures(reference, other, min_score):
    """The float32 detections >= min_score, how many bf16 matches, and per match box IoU, mask IoU, score diff."""
    reference = reference[reference.scores >= min_score]
    pairs = match_detections(reference, other)
    box_iou, mask_iou, score_diff = [], [], []
    for i, j in pairs:
        box_iou.append(float(pairwise_iou(reference.pred_boxes[[i]], other.pred_boxes[[j]])[0, 0]))
        a, b = reference.pred_masks[i], other.pred_masks[j]
        union = (a | b).sum().item()
        mask_iou.append(1.0 if union == 0 else (a & b).sum().item() / union)
        score_diff.append(abs(float(reference.scores[i]) - float(other.scores[j])))
    return {"fp32": len(reference), "other": int((other.scores >= min_score).sum()), "matched": len(pairs),
            "box_iou": box_iou, "mask_iou": mask_iou, "score_diff": score_diff}


@torch.no_grad()
def stage_errors(reference, other, image):
    """Relative L2 error ||other - reference|| / ||reference|| of the network's stages on one image: the
    FPN levels and the four outputs (class probabilities, boxes, coefficients, prototypes)."""
    def stages(predictor):
        model = predictor.model
        x = model.preprocess_image([predictor.preprocess(image)]).tensor
        features = model.extract_features(x)
        outputs = model.inference_tensors(x)
        names = [f"P{i + 3}" for i in range(len(features))] + ["class_probs", "boxes", "coeffs", "protos"]
        return dict(zip(names, [t.float() for t in list(features) + list(outputs)]))

    a, b = stages(reference), stages(other)
    return {k: float((b[k] - a[k]).norm() / a[k].norm().clamp(min=1e-12)) for k in a}


def summary(fig):
    def stat(values, fn, fmt="{:.3f}"):
        return fmt.format(fn(values)) if values else "-"

    matched = f"{fig['matched']}/{fig['fp32']}"
    if fig["fp32"]:
        matched += f" ({100 * fig['matched'] / fig['fp32']:.0f}%)"
    return [str(fig["fp32"]), str(fig["other"]), matched,
            stat(fig["box_iou"], np.mean), stat(fig["box_iou"], np.min),
            stat(fig["mask_iou"], np.mean), stat(fig["mask_iou"], lambda v: np.percentile(v, 5)),
            stat(fig["mask_iou"], np.min),
            stat(fig["score_diff"], np.mean, "{:.4f}"), stat(fig["score_diff"], np.max, "{:.4f}")]


HEADER = ["fp32 dets", "its dets", "matched", "box IoU mean", "min", "mask IoU mean", "5th pct", "min",
          "|score diff| mean", "max"]


def print_table(first, rows):
    print("| " + " | ".join([first] + HEADER) + " |")
    print("|" + "---|" * (len(HEADER) + 1))
    for label, fig in rows:
        print("| " + " | ".join([label] + summary(fig)) + " |")


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    images = load_images(args)
    with tempfile.TemporaryDirectory(prefix="yolact_bf16_check_") as tmp:
        cfg, fp32, others = build_predictors(args, images, tmp)
    if others["bf16"].precision != "bf16":  # the check would compare float32 with itself
        sys.exit(f"error: the bf16 predictor runs {others['bf16'].precision}")
    per_image = {name: [] for name in others}
    for n, image in enumerate(images, 1):
        a = fp32(image)["instances"].to("cpu")
        for name, predictor in others.items():
            b = predictor(image)["instances"].to("cpu")
            per_image[name].append({t: pair_figures(a, b, t) for t in args.min_scores})
        top = f"{float(a.scores.max()):.3f}" if len(a) else "-"
        print(f"image {n}: {len(a)} fp32 detections, best score {top}", flush=True)

    def pool(images_figures, t):
        first = images_figures[0][t]
        return {k: sum((img[t][k] for img in images_figures), [] if isinstance(first[k], list) else 0) for k in first}

    pooled = {name: {t: pool(figs, t) for t in args.min_scores} for name, figs in per_image.items()}
    h, w = images[0].shape[:2]
    weights = args.weights or f"conditioned random init, seed {args.seed}"
    print(f"\nconfig: {args.config_file}  weights: {weights}  "
          f"device: {cfg.MODEL.DEVICE}  threads: {torch.get_num_threads()}  images: {len(images)} ({w}x{h} first)  "
          f"score threshold: {cfg.MODEL.YOLACT.SCORE_THRESH_TEST}  detections per image: "
          f"{cfg.TEST.DETECTIONS_PER_IMAGE}")
    for name in others:
        print(f"\n{name} against fp32: the fp32 detections scoring >= min score that it reproduces "
              "(same class, box IoU >= 0.5), all images:\n")
        print_table("min score", [(f"{t:g}", pooled[name][t]) for t in args.min_scores])
    n = min(args.stage_images, len(images))
    if n:
        errors = {name: [stage_errors(fp32, p, im) for im in images[:n]] for name, p in others.items()}
        names = list(next(iter(errors.values()))[0])
        print(f"\nrelative L2 error against fp32 of each network stage, mean over the first {n} image(s):\n")
        print("| model | " + " | ".join(names) + " |")
        print("|" + "---|" * (len(names) + 1))
        for name, per in errors.items():
            print(f"| {name} | " + " | ".join(f"{sum(e[k] for e in per) / n:.4f}" for k in names) + " |")
        pooled_errors = {name: {k: sum(e[k] for e in per) / n for k in names} for name, per in errors.items()}
    middle = args.min_scores[len(args.min_scores) // 2]
    print(f"\nbf16 against fp32 per image, min score {middle:g}:\n")
    print_table("image", [(str(i + 1), img[middle]) for i, img in enumerate(per_image["bf16"])])
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config_file, "weights": weights, "stage_errors": pooled_errors if n else {},
                       "pooled": {name: {str(t): v for t, v in p.items()} for name, p in pooled.items()},
                       "per_image": {name: [{str(t): v for t, v in img.items()} for img in figs]
                                     for name, figs in per_image.items()}}, f)
    return pooled


if __name__ == "__main__":
    def cli() -> int:
        main()  # returns the pooled figures (for other scripts)
        return 0

    sys.exit(run_cli(cli))
