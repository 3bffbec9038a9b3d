#!/usr/bin/env python
"""PyTorch float32, ONNX Runtime float32 and ONNX Runtime int8, end to end, in one run, interleaved.

    python tools/benchmark_int8.py --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml \\
        [--weights W.pth] [--synthetic 10] [--threads 2] [--calibration-dataset yolact_synthetic_train] \\
        [--calibration-images 16] [--calibration-method percentile] [--keep-float [SCOPE ...]] [--work-dir DIR] \\
        [--json OUT] [KEY VALUE ...]

The three predictors share the weights (``--weights``, or conditioned random weights as in
``tools/benchmark.py``: ``yolact_d2.testing.condition_random_model``). The float32 model is
exported and quantised (``yolact_d2.quantization``) in ``--work-dir``; the file names carry a hash
of the weights' bytes and of the config, so a later run with other weights or settings exports
again instead of reusing the files of the old ones (the int8 file is reused only when its metadata
also matches these settings and the quantiser's version). Each of the
``--synthetic`` rendered 480x640 images runs through the three predictors' ``__call__``
(image in, instances out) in a rotating order, so that drift of a shared machine's
speed affects all alike; reported: the median per backend and the ratios of the medians, and the
agreement of int8 (and ORT float32) detections with the PyTorch float32 ones
(``yolact_d2.quantization.detection_agreement``: what int8 changes on these images, NOT accuracy).
"""
import argparse
import hashlib
import json
import os
import statistics
import sys
import time

import numpy as np
import torch


def parse_args(argv=None):
    from yolact_d2.runtime.cli_args import non_negative_int, positive_int

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default="")
    parser.add_argument("--synthetic", type=positive_int, default=10)
    parser.add_argument("--threads", type=positive_int, default=2)
    parser.add_argument("--warmup", type=non_negative_int, default=2)
    parser.add_argument("--calibration-dataset", default="yolact_synthetic_train")
    parser.add_argument("--calibration-images", type=positive_int, default=16)
    parser.add_argument("--calibration-method", default="percentile")
    parser.add_argument("--keep-float", nargs="*", default=None, metavar="SCOPE",
                        help="module scopes whose convolutions stay float (default: "
                             "yolact_d2.quantization.DEFAULT_EXCLUDED_SCOPES; no SCOPE: quantise them all)")
    parser.add_argument("--work-dir", default="output/benchmark_int8")
    parser.add_argument("--json")
    parser.add_argument("opts", nargs=argparse.REMAINDER)
    return parser.parse_args(argv)


def file_hash(path: str, chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def work_files(args, cfg, weights: str):
    """``(float32 onnx, int8 onnx)`` paths in ``--work-dir`` for these weights (their content, not their
    name), this config and these quantisation settings."""
    from yolact_d2.quantization import DEFAULT_EXCLUDED_SCOPES

    name = os.path.splitext(os.path.basename(args.config_file))[0]
    keep_float = DEFAULT_EXCLUDED_SCOPES if args.keep_float is None else tuple(args.keep_float)
    # the model the files hold: the weights' bytes and the config (without MODEL.WEIGHTS, a path)
    model_cfg = cfg.clone()
    model_cfg.defrost()
    model_cfg.MODEL.WEIGHTS = ""
    model_key = hashlib.sha256((file_hash(weights) + model_cfg.dump()).encode()).hexdigest()[:12]
    # one file per setting (its name says which scopes stayed float); reused only when its metadata
    # shows it was made by this quantiser version with these settings
    scopes_tag = ""
    if args.keep_float is not None:
        scopes_tag = "_float" + hashlib.sha1(",".join(keep_float).encode()).hexdigest()[:8]
    int8_kind = f"int8_{args.calibration_method}{scopes_tag}"
    return tuple(os.path.join(args.work_dir, f"{name}.{model_key}.{kind}.onnx") for kind in ("float32", int8_kind))


def prepare(args, images):
    from yolact_d2 import YolactPredictor
    from yolact_d2.export import YolactONNXPredictor, export_onnx
    from yolact_d2.quantization import DEFAULT_EXCLUDED_SCOPES, DatasetCalibrationReader, is_quantized_as, quantize_onnx
    from yolact_d2.runtime.config_loading import setup_cfg
    from yolact_d2.testing import save_conditioned_random_weights
    from yolact_d2.utils.atomic_io import make_output_dir

    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    cfg.MODEL.DEVICE = "cpu"
    make_output_dir(args.work_dir, "--work-dir")
    name = os.path.splitext(os.path.basename(args.config_file))[0]
    weights = os.path.join(args.work_dir, f"{name}.pth")
    if args.weights:
        weights = args.weights
    elif not os.path.exists(weights):
        save_conditioned_random_weights(cfg, images[:2], weights)
    cfg.MODEL.WEIGHTS = weights
    torch_predictor = YolactPredictor(cfg, precision="fp32")  # the float32 baseline, and what is exported
    keep_float = DEFAULT_EXCLUDED_SCOPES if args.keep_float is None else tuple(args.keep_float)
    fp32, int8 = work_files(args, cfg, weights)
    if not os.path.exists(fp32):
        export_onnx(torch_predictor.model, fp32, int(cfg.INPUT.IMAGE_SIZE))
    if not is_quantized_as(int8, args.calibration_method, args.calibration_images, args.calibration_dataset,
                           keep_float):
        t0 = time.perf_counter()
        reader = DatasetCalibrationReader(cfg, args.calibration_dataset, args.calibration_images)
        quantize_onnx(fp32, int8, reader, method=args.calibration_method, dataset_name=args.calibration_dataset,
                      excluded_scopes=keep_float)
        print(f"quantised in {time.perf_counter() - t0:.0f} s: {int8}")
    return {
        "torch_fp32": torch_predictor,
        "ort_fp32": YolactONNXPredictor(cfg, fp32, num_threads=args.threads),
        "ort_int8": YolactONNXPredictor(cfg, int8, num_threads=args.threads),
    }


def main(argv=None):
    args = parse_args(argv)
    if args.json:
        from yolact_d2.utils.atomic_io import prepare_output_file

        prepare_output_file(args.json, "--json")  # before the benchmark, not after it
    from yolact_d2.data.datasets.synthetic import render_synthetic_sample
    from yolact_d2.quantization import detection_agreement

    torch.set_num_threads(args.threads)
    images = [render_synthetic_sample(0, "val", i, image_size=(480, 640))["image"] for i in range(args.synthetic)]
    predictors = prepare(args, images)
    names = list(predictors)
    times = {n: [] for n in names}
    agree = {n: {"detections": 0, "matched": 0, "mask_iou": [], "score_diff": []} for n in names[1:]}
    for k in range(args.warmup + len(images)):
        image = images[k % len(images)]
        order = names[k % 3:] + names[: k % 3]
        outputs = {}
        with torch.inference_mode():
            for n in order:
                t0 = time.perf_counter()
                outputs[n] = predictors[n](image)["instances"]
                if k >= args.warmup:
                    times[n].append((time.perf_counter() - t0) * 1000)
        if k >= args.warmup:
            for n in names[1:]:
                a = detection_agreement(outputs["torch_fp32"], outputs[n], 0.3)
                for key in agree[n]:
                    agree[n][key] += a[key]
    medians = {n: statistics.median(v) for n, v in times.items()}
    result = {"config": args.config_file, "threads": args.threads, "images": len(images), "median_ms": medians,
              "speedup_vs_torch_fp32": {n: medians["torch_fp32"] / m for n, m in medians.items()},
              "agreement_vs_torch_fp32": {}}
    for n, a in agree.items():
        iou = np.array(a["mask_iou"] or [0.0])
        result["agreement_vs_torch_fp32"][n] = {
            "detections": a["detections"], "matched_fraction": a["matched"] / max(a["detections"], 1),
            "mask_iou_mean": float(iou.mean()), "mask_iou_p5": float(np.percentile(iou, 5)),
            "score_diff_max": float(max(a["score_diff"] or [0.0])),
        }
    print(json.dumps(result, indent=1))
    if args.json:
        from yolact_d2.utils.atomic_io import atomic_open

        with atomic_open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    from yolact_d2.runtime.reporting import run_cli

    sys.exit(run_cli(main))
