#!/usr/bin/env python
"""Per-stage CPU/GPU latency of YOLACT inference.

    python tools/benchmark.py --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml \\
        --synthetic 10 --threads 2 [--weights W.pth] [--images DIR] [--all-detections] [--json OUT]

Stages, each timed separately on every image after warm-up, with the device synchronised:
preprocess (BGR image -> resized float tensor, as YolactPredictor), backbone+FPN, head+protonet
(+ anchors, box decoding, softmax), NMS (score threshold + Fast NMS), masks (assembly, crop,
upsampling to the image size, binarisation, boxes), and end to end (``YolactPredictor.__call__``
measured on its own, not the sum). Prints median, min and max per stage in ms, the number of
detections per image and the process's peak resident memory.

``--all-detections`` sets the score threshold to 0 so that every image yields the maximum number of
detections (100), as in COCO evaluation: post-processing cost depends on the number of detections.
Random weights give meaningless detections but representative timings; with ``--all-detections``
the count is always the maximum.
"""
import argparse
import glob
import json
import os
import resource
import statistics
import sys
import time

import cv2
import numpy as np
import torch

STAGES = ["preprocess", "backbone+fpn", "head+protonet", "nms", "masks", "end_to_end"]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default="", help="checkpoint for MODEL.WEIGHTS (default: random init)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--images", help="folder of images (all .jpg/.png in it)")
    src.add_argument("--synthetic", type=int, default=10, help="number of random 480x640 images (default)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="passes over the images")
    parser.add_argument("--all-detections", action="store_true", help="score threshold 0: always the maximum detections")
    parser.add_argument("--device", default=None, help="override MODEL.DEVICE")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def load_images(args):
    if args.images:
        paths = sorted(p for p in glob.glob(os.path.join(args.images, "*")) if p.lower().endswith((".jpg", ".jpeg", ".png")))
        if not paths:
            sys.exit(f"error: no .jpg/.png images in {args.images}")
        images = [cv2.imread(p) for p in paths]
        bad = [p for p, im in zip(paths, images) if im is None]
        if bad:
            sys.exit(f"error: cannot read {bad[0]}")
        return images
    rng = np.random.RandomState(0)
    # smooth random images rather than white noise, so activations look like natural images'
    small = [rng.randint(0, 256, (30, 40, 3)).astype(np.uint8) for _ in range(args.synthetic)]
    return [cv2.resize(s, (640, 480), interpolation=cv2.INTER_CUBIC) for s in small]


def build_predictor(args):
    from detectron2.config import get_cfg

    from yolact_d2 import YolactPredictor, add_yolact_config

    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    if args.weights:
        cfg.MODEL.WEIGHTS = args.weights
    if args.device:
        cfg.MODEL.DEVICE = args.device
    if args.all_detections:
        cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.0
    cfg.freeze()
    return cfg, YolactPredictor(cfg)


def timed_stages(predictor, image, sync):
    """One image through the same calls as Yolact.inference, timing each stage."""
    from yolact_d2.modeling.box_ops import decode
    from yolact_d2.modeling.inference import detect, detections_to_instances

    model = predictor.model
    times = {}

    def clock(name, fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times[name] = (time.perf_counter() - t0) * 1000
        return out

    with torch.inference_mode():
        inputs = clock("preprocess", lambda: predictor.preprocess(image))
        images = model.preprocess_image([inputs])
        features = clock("backbone+fpn", lambda: model.backbone(images.tensor))

        def head():
            levels = [features[f] for f in model.in_features]
            logits, deltas, coeffs = model.head(levels)
            protos = model.protonet(levels[0])
            anchors = model.anchor_generator(
                [tuple(f.shape[-2:]) for f in levels], tuple(images.tensor.shape[-2:]), device=images.tensor.device
            )
            boxes = decode(deltas, anchors[None], model.bbox_variances)
            return torch.softmax(logits, dim=-1), boxes, coeffs, protos

        probs, boxes, coeffs, protos = clock("head+protonet", head)
        padded = tuple(images.tensor.shape[-2:])
        dets = clock(
            "nms",
            lambda: detect(
                probs[0], boxes[0], coeffs[0], score_threshold=model.score_threshold, nms_type=model.nms_type,
                iou_threshold=model.nms_threshold, top_k=model.topk_candidates,
                max_detections=model.max_detections_per_image, image_size=padded,
            ),
        )
        instances = clock(
            "masks",
            lambda: detections_to_instances(
                dets, protos[0], tuple(images.image_sizes[0]), padded, (inputs["height"], inputs["width"]),
                model.mask_threshold, model.truncate_boxes,
            ),
        )
        clock("end_to_end", lambda: predictor(image))
    return times, len(instances)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, predictor = build_predictor(args)
    device = predictor.model.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    images = load_images(args)
    for image in images[: args.warmup]:
        timed_stages(predictor, image, sync)
    records, counts = {s: [] for s in STAGES}, []
    for _ in range(args.repeat):
        for image in images:
            times, n = timed_stages(predictor, image, sync)
            for s in STAGES:
                records[s].append(times[s])
            counts.append(n)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20

    h, w = images[0].shape[:2]
    print(f"config: {args.config_file}  weights: {args.weights or 'random init'}  device: {device}  "
          f"threads: {torch.get_num_threads()}  images: {len(images)} x {args.repeat} ({w}x{h} first)  "
          f"score threshold: {cfg.MODEL.YOLACT.SCORE_THRESH_TEST}")
    print(f"detections per image: median {statistics.median(counts):.0f}, min {min(counts)}, max {max(counts)}")
    print(f"{'stage':<15}{'median ms':>11}{'min ms':>9}{'max ms':>9}")
    summary = {}
    for s in STAGES:
        v = records[s]
        summary[s] = {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v)}
        print(f"{s:<15}{summary[s]['median_ms']:>11.1f}{summary[s]['min_ms']:>9.1f}{summary[s]['max_ms']:>9.1f}")
    post = [a + b for a, b in zip(records["nms"], records["masks"])]
    print(f"{'nms+masks':<15}{statistics.median(post):>11.1f}{min(post):>9.1f}{max(post):>9.1f}")
    print(f"peak memory: {peak_mb:.0f} MB ({'CUDA allocated' if device.type == 'cuda' else 'process max RSS'})")
    if args.json:
        result = {
            "config": args.config_file, "weights": args.weights, "device": str(device),
            "threads": torch.get_num_threads(), "num_images": len(images) * args.repeat,
            "image_size": [h, w], "score_threshold": cfg.MODEL.YOLACT.SCORE_THRESH_TEST,
            "detections": {"median": statistics.median(counts), "min": min(counts), "max": max(counts)},
            "stages": summary, "peak_memory_mb": peak_mb,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
