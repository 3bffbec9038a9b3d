#!/usr/bin/env python
"""Developer tool: choose the int8 calibration method and the float-kept layers by measurement.

    PYTHONPATH=. python dev/int8_study.py --config-file configs/Synthetic/yolact_R_18_FPN_synthetic.yaml \\
        --weights output/synthetic/model_final.pth [--calibration-dataset yolact_synthetic_train] \\
        [--calibration-images 64] [--methods minmax percentile entropy] [--work-dir DIR] [--threads 2]

Exports the float32 model once, quantises it once per (calibration method, float-kept layer set)
with :func:`yolact_d2.quantization.quantize_onnx`, then evaluates PyTorch float32 and every int8
file on ``DATASETS.TEST[0]`` in one ``tools/evaluate.py`` run (COCO mask / box AP per class and the
agreement of each model's detections with PyTorch float32). Prints one row per variant: mask and
box AP, their difference to float32, and the matched mask IoU. The results behind the defaults of
``yolact_d2.quantization`` are in docs/EXPORT.md ("int8").
"""
import argparse
import json
import os
import subprocess
import sys

from yolact_d2.quantization import DEFAULT_EXCLUDED_SCOPES

# Float-kept layer sets compared: the network's output convolutions (the default), nothing, the
# default plus the whole protonet (the prototypes decide the mask quality), the whole head, the FPN
# (its features feed every box), the FPN with the whole head, the ResNet's stem (it reads the raw
# image), the whole ResNet, and everything but the ResNet (only the ResNet int8).
_FPN = ("model.backbone.lateral_convs", "model.backbone.output_convs", "model.backbone.downsample_convs")
LAYER_SETS = {
    "outputs": DEFAULT_EXCLUDED_SCOPES,
    "none": (),
    "outputs+protonet": ("model.head.bbox_pred", "model.head.cls_score", "model.head.coeff_pred", "model.protonet"),
    "outputs+head": ("model.head", "model.protonet.predictor"),
    "outputs+fpn": DEFAULT_EXCLUDED_SCOPES + _FPN,
    "outputs+fpn+head": ("model.head", "model.protonet.predictor") + _FPN,
    "outputs+stem": DEFAULT_EXCLUDED_SCOPES + ("model.backbone.bottom_up.stem",),
    "outputs+bottom_up": DEFAULT_EXCLUDED_SCOPES + ("model.backbone.bottom_up",),
    "all_but_bottom_up": ("model.backbone.lateral_convs", "model.backbone.output_convs",
                          "model.backbone.downsample_convs", "model.head", "model.protonet"),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--calibration-dataset", default="yolact_synthetic_train")
    parser.add_argument("--calibration-images", type=int, default=64)
    parser.add_argument("--methods", nargs="+", default=["minmax", "percentile", "entropy"])
    parser.add_argument("--layer-sets", nargs="+", default=list(LAYER_SETS), choices=list(LAYER_SETS))
    parser.add_argument("--work-dir", default="output/int8_study")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the evaluation results here (default: WORK_DIR/results.json)")
    return parser.parse_args(argv)


def export_variants(args):
    """The float32 export and one int8 file per variant; returns [(label, path)]."""
    from yolact_d2 import YolactPredictor
    from yolact_d2.export import DEFAULT_ONNX_OPSET, export_onnx
    from yolact_d2.quantization import DatasetCalibrationReader, is_quantized_as, quantize_onnx
    from yolact_d2.runtime.config_loading import setup_cfg

    cfg = setup_cfg(args.config_file, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", args.weights])
    os.makedirs(args.work_dir, exist_ok=True)
    float_path = os.path.join(args.work_dir, "float32.onnx")
    if not os.path.isfile(float_path):
        model = YolactPredictor(cfg, precision="fp32").model
        export_onnx(model, float_path, int(cfg.INPUT.IMAGE_SIZE), opset_version=DEFAULT_ONNX_OPSET)
    reader = DatasetCalibrationReader(cfg, args.calibration_dataset, args.calibration_images)
    variants = []
    for method in args.methods:
        for layer_set in args.layer_sets:
            path = os.path.join(args.work_dir, f"int8_{method}_{layer_set}.onnx")
            if not is_quantized_as(path, method, args.calibration_images, args.calibration_dataset,
                                   LAYER_SETS[layer_set]):
                reader.rewind()
                quantize_onnx(float_path, path, reader, method=method, dataset_name=args.calibration_dataset,
                              excluded_scopes=LAYER_SETS[layer_set])
            variants.append((f"{method}/{layer_set}", path))
    return float_path, variants


def main(argv=None):
    args = parse_args(argv)
    float_path, variants = export_variants(args)
    out = args.json or os.path.join(args.work_dir, "results.json")
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, os.path.join(here, "tools", "evaluate.py"), "--config-file", args.config_file,
               "--weights", args.weights, "--threads", str(args.threads), "--json", out, "--onnx", float_path]
    for _, path in variants:
        command += ["--onnx", path]
    subprocess.run(command, check=True)
    with open(out) as f:
        results = json.load(f)
    reference = results["torch"]
    labels = {os.path.basename(float_path): "ORT float32"}
    labels.update({os.path.basename(p): label for label, p in variants})
    print(f"\n{'model':32}{'mask AP':>9}{'d mask':>8}{'box AP':>9}{'d box':>8}{'matched':>9}{'mask IoU':>10}")
    for key, result in results.items():
        name = "PyTorch float32" if key == "torch" else labels.get(key.replace(" (int8)", ""), key)
        mask, box = result["segm"]["AP"], result["bbox"]["AP"]
        agree = result.get("agreement") or {}
        print(f"{name:32}{mask:9.2f}{mask - reference['segm']['AP']:8.2f}{box:9.2f}{box - reference['bbox']['AP']:8.2f}"
              f"{agree.get('matched_fraction', 1.0):9.1%}{agree.get('mask_iou_mean', 1.0):10.3f}")


if __name__ == "__main__":
    main()
