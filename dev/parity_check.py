#!/usr/bin/env python
"""Developer tool: numerical parity of yolact_d2 against the ORIGINAL YOLACT code (dbolya/yolact).

This is not part of the library and no test imports it. It needs a checkout of the original
repository, given with ``--original-repo`` (nothing of it is copied into this project):

    git clone https://github.com/dbolya/yolact /tmp/yolact     # or any copy of it
    PYTHONPATH=. python dev/parity_check.py --original-repo /tmp/yolact --json parity.json

For every variant (``--variants``, default: all of them) it

1. builds the original ``Yolact`` from its config (``set_cfg``) with random weights, *conditioned*
   so that the network behaves like a trained one where it matters for the comparison: BN running
   statistics calibrated on the test images, thousands of anchors above the 0.05 score threshold
   (so Fast NMS has real work and returns 100 detections), box deltas of realistic size,
   prototypes and coefficients that give non-trivial masks, non-zero DCN offsets / modulation and
   mask re-scoring outputs for YOLACT++;
2. saves its ``state_dict`` as an original-format ``.pth`` (plus the unused
   ``fpn.downsample_layers.2`` the released files carry), converts it with
   ``tools/convert_yolact_weights.py`` and loads the result into our model built from the matching
   config, checking that there are no missing / unexpected / mis-shaped keys;
3. runs both on the same images with the original evaluation protocol -- ``BaseTransform``
   (squash resize, BGR mean/std, RGB), ``Yolact.forward`` -> ``Detect`` with per-class Fast NMS
   (top 200 per class, IoU 0.5, at most 100 detections), ``postprocess(crop_masks=True,
   score_threshold=0)`` -- versus ``YolactPredictor``, and compares the raw network outputs before
   NMS (priors, box deltas, class probabilities, coefficients, prototypes), the detections
   (number, classes, scores, boxes, per-detection mask IoU; YOLACT++ mask scores) and, to isolate
   the post-processing, our ``detect`` + ``detections_to_instances`` run on the *original's* raw
   tensors.

Detections are compared position by position (both lists are sorted by score). Where positions
disagree they are matched by class and box instead and reported as order differences: with
random weights different anchors can have almost equal scores, and a last-bit difference then
swaps them.

The original code cannot run unmodified on a CPU-only machine with a current PyTorch; the
following is patched at run time, in this process only (the checkout is not touched):

* P1 ``torch.cuda.current_device()`` (called when ``yolact.py`` is imported) is a no-op without CUDA;
* P2 a ``dcn_v2`` module is registered whose ``DCN`` has the parameters and forward of the
  original DCNv2 module (offset/mask conv, ``o1, o2, m = chunk(3)``, ``offset = cat(o1, o2)``,
  ``mask = sigmoid(m)``) computed with ``torchvision.ops.deform_conv2d``. With ``--dcn-reference``
  every DCN call is also computed by a plain-PyTorch transcription of DCNv2's ``modulated
  deformable im2col`` (its bilinear sampling and out-of-range rules) and the largest difference is
  reported, so the YOLACT++ numbers do not rest on torchvision alone;
* P3 ``cfg.mask_proto_debug = False`` (otherwise set by ``eval.py``);
* P4 ``Detect.use_fast_nms = True``, ``use_cross_class_nms = False`` (as ``eval.py`` sets them).

Every variant runs in its own subprocess (the original keeps its config and caches in globals).
CPU only; ``--threads`` (default 1) limits torch's threads. Our side runs ``YolactPredictor``
with the unmodified forward (``FUSE_BN_TEST`` / ``CHANNELS_LAST_TEST`` off).

Running the original (patches, conditioning, conversion) lives in ``dev/original_yolact.py``, which
``dev/benchmark_original.py`` shares to time the original side by side with ours.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from original_yolact import (  # dev/ is on sys.path when this file runs as a script
    CONFIG_DIR,
    DEFAULT_VARIANTS,
    REPO_ROOT,
    SAME_BOX_TOL,
    SCORE_THRESH,
    VARIANTS,
    import_original,
    load_weights_checked,
    original_input,
    prepare_original,
    test_images,
)


def build_ours(config_file: str, weights: str):
    from detectron2.modeling import build_model

    from yolact_d2.predictor import YolactPredictor
    from yolact_d2.runtime.config_loading import setup_cfg

    cfg = setup_cfg(os.path.join(CONFIG_DIR, config_file), freeze=False)
    cfg.MODEL.DEVICE = "cpu"
    # the unmodified forward (no BN folding / channels-last, which change outputs by rounding)
    cfg.MODEL.YOLACT.FUSE_BN_TEST = False
    cfg.MODEL.YOLACT.CHANNELS_LAST_TEST = False
    # the converted keys are checked on a fresh model with the stock DetectionCheckpointer ...
    cfg.MODEL.WEIGHTS = ""
    keys = load_weights_checked(build_model(cfg), weights)
    # ... and the predictor loads them itself
    cfg.MODEL.WEIGHTS = weights
    predictor = YolactPredictor(cfg)
    return predictor, keys


def _maxdiff(a: torch.Tensor, b: torch.Tensor) -> Dict[str, float]:
    a, b = a.double(), b.double()
    d = (a - b).abs().max().item() if a.numel() else 0.0
    scale = max(a.abs().max().item() if a.numel() else 0.0, 1e-30)
    return {"max_abs": d, "max_rel": d / scale}


def _mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def compare_detections(orig: Dict[str, torch.Tensor], ours: Dict[str, torch.Tensor]) -> Dict[str, Any]:
    """``orig`` / ``ours``: classes (N,), scores (N,), rel_boxes (N, 4), boxes (N, 4) integer pixels,
    masks (N, h, w), optionally mask_scores (N,). Positional comparison, then matching by class +
    relative box for positions that disagree."""
    n_o, n_u = len(orig["classes"]), len(ours["classes"])
    pairs = [
        (i, i) for i in range(min(n_o, n_u))
        if int(orig["classes"][i]) == int(ours["classes"][i])
        and float((orig["rel_boxes"][i] - ours["rel_boxes"][i]).abs().max()) < SAME_BOX_TOL
    ]
    # order differences: match the rest by class and box
    free_o = set(range(n_o)) - {p for p, _ in pairs}
    reordered, unmatched = [], []
    for j in [q for q in range(n_u) if q not in {u for _, u in pairs}]:
        best = None
        for i in sorted(free_o):
            if int(orig["classes"][i]) == int(ours["classes"][j]):
                d = float((orig["rel_boxes"][i] - ours["rel_boxes"][j]).abs().max())
                if d < SAME_BOX_TOL and (best is None or d < best[1]):
                    best = (i, d)
        if best is None:
            unmatched.append(j)
        else:
            free_o.discard(best[0])
            reordered.append((best[0], j))
    all_pairs = pairs + reordered
    result: Dict[str, Any] = {
        "n_orig": n_o,
        "n_ours": n_u,
        "positions_same": len(pairs),
        "order_differences": len(reordered),
        "unmatched_ours": len(unmatched),
        "unmatched_orig": len(free_o),
    }
    if reordered:
        gaps = [abs(float(orig["scores"][i]) - float(orig["scores"][j])) for i, j in reordered]
        result["reorder_max_score_gap_in_orig"] = max(gaps)
    if unmatched or free_o:
        lows = [float(ours["scores"][j]) for j in unmatched] + [float(orig["scores"][i]) for i in free_o]
        result["unmatched_scores"] = sorted(lows)
        result["score_at_cap_orig"] = float(orig["scores"][-1]) if n_o else None
    if all_pairs:
        io = torch.tensor([i for i, _ in all_pairs])
        iu = torch.tensor([j for _, j in all_pairs])
        result["class_agreement"] = float((orig["classes"][io] == ours["classes"][iu]).float().mean())
        result["score_max_abs"] = float((orig["scores"][io].double() - ours["scores"][iu].double()).abs().max())
        result["rel_box_max_abs"] = float((orig["rel_boxes"][io].double() - ours["rel_boxes"][iu].double()).abs().max())
        box_diff = (orig["boxes"][io].double() - ours["boxes"][iu].double()).abs()
        result["int_box_max_abs_px"] = float(box_diff.max())
        result["int_box_coords_differing"] = int((box_diff > 0).sum())
        ious = [_mask_iou(orig["masks"][i], ours["masks"][j]) for i, j in all_pairs]
        result["mask_iou_min"] = min(ious)
        result["mask_iou_mean"] = sum(ious) / len(ious)
        result["mask_pixels_differing"] = int(sum(
            int((orig["masks"][i].bool() ^ ours["masks"][j].bool()).sum()) for i, j in all_pairs))
        result["mask_pixels_total_fg"] = int(sum(int(orig["masks"][i].bool().sum()) for i, _ in all_pairs))
        result["masks_empty_orig"] = int(sum(int(not orig["masks"][i].bool().any()) for i, _ in all_pairs))
        if "mask_scores" in orig and "mask_scores" in ours:
            result["mask_score_max_abs"] = float(
                (orig["mask_scores"][io].double() - ours["mask_scores"][iu].double()).abs().max())
    return result


def run_original(net, orig_mods, image: np.ndarray):
    """Original protocol on one BGR image. Returns (input tensor, raw dict, detections dict)."""
    h, w = image.shape[:2]
    x = original_input(orig_mods, image)
    captured = {}
    detect = net.detect

    class Capture:
        def __call__(self, predictions, net_):
            captured.update({k: v.clone() for k, v in predictions.items() if torch.is_tensor(v)})
            out = detect(predictions, net_)
            det = out[0]["detection"]
            captured["det"] = None if det is None else {k: v.clone() for k, v in det.items()}
            return out

    net.detect = Capture()
    try:
        with torch.no_grad():
            t0 = time.perf_counter()
            preds = net(x)
            t_net = time.perf_counter() - t0
            classes, scores, boxes, masks = orig_mods["postprocess"](preds, w, h, crop_masks=True, score_threshold=0)
    finally:
        net.detect = detect
    mask_scores = None
    if isinstance(scores, list):  # YOLACT++: [box score, box score x predicted mask IoU]
        scores, mask_scores = scores
    det = captured["det"]
    out = {
        "classes": classes, "scores": scores, "boxes": boxes, "masks": masks,
        "rel_boxes": det["box"] if det is not None else torch.zeros(0, 4),
    }
    if mask_scores is not None:
        out["mask_scores"] = mask_scores
    return x, captured, out, t_net


def run_ours(predictor, image: np.ndarray):
    model = predictor.model
    captured = {}
    extract_features, head_outputs = model.extract_features, model.head_outputs

    def extract_features_hook(images):
        captured["input"] = images.clone()
        features = extract_features(images)
        captured["p3"] = features[0]
        return features

    def head_outputs_hook(features, image_shape):
        out = head_outputs(features, image_shape)
        captured["raw"] = (*out, captured["p3"])  # as Yolact.predict_raw
        return out

    model.extract_features, model.head_outputs = extract_features_hook, head_outputs_hook
    try:
        with torch.inference_mode():
            t0 = time.perf_counter()
            instances = predictor(image)["instances"]
            t_net = time.perf_counter() - t0
    finally:
        del model.extract_features, model.head_outputs
    return captured, instances, t_net


def ours_from_tensors(model, class_probs, boxes, coefficients, prototypes, image_hw, input_hw):
    """Our detect + detections_to_instances on given (one image) tensors, as Yolact.inference does."""
    from yolact_d2.modeling.inference import detect, detections_to_instances

    dets = detect(
        class_probs, boxes, coefficients, score_threshold=model.score_threshold, nms_type=model.nms_type,
        iou_threshold=model.nms_threshold, top_k=model.topk_candidates,
        max_detections=model.max_detections_per_image, image_size=input_hw,
    )
    inst = detections_to_instances(
        dets, prototypes, image_size=input_hw, padded_size=input_hw, output_size=image_hw,
        mask_threshold=model.mask_threshold, truncate_boxes=model.truncate_boxes, maskiou_net=model.maskiou_net,
    )
    return dets, inst


def _instances_dict(inst, rel_boxes) -> Dict[str, torch.Tensor]:
    d = {
        "classes": inst.pred_classes, "scores": inst.scores, "boxes": inst.pred_boxes.tensor,
        "masks": inst.pred_masks, "rel_boxes": rel_boxes,
    }
    if inst.has("mask_scores"):
        d["mask_scores"] = inst.mask_scores
    return d


def check_variant(variant: str, original_repo: str, work_dir: str, seed: int, dcn_reference: bool) -> Dict[str, Any]:
    from yolact_d2.modeling.box_ops import decode

    config_name, our_config, file_name = VARIANTS[variant]
    dcn_stats: Optional[List[float]] = [] if dcn_reference else None
    orig_mods = import_original(original_repo, dcn_stats)
    images = test_images()
    net, ocfg, conditioning, original_path, converted_path = prepare_original(
        orig_mods, variant, [original_input(orig_mods, img) for img in images], work_dir, seed)
    from yolact_d2.converters import yolact_converter as conv

    _, info = conv.convert_yolact_state_dict(torch.load(original_path), filename=original_path)
    suggested = os.path.basename(info["config_file"] or "")
    predictor, keys = build_ours(our_config, converted_path)
    model = predictor.model

    result: Dict[str, Any] = {
        "variant": variant,
        "original_config": config_name,
        "our_config": our_config,
        "converter_suggests": " ".join([suggested, *map(str, info["config_overrides"])]),
        "converter_suggestion_matches": suggested == our_config and not info["config_overrides"],
        "load_keys": keys,
        "load_clean": not any(keys.values()),
        "num_params_original": sum(p.numel() for p in net.parameters()),
        "num_params_ours": sum(p.numel() for n, p in model.named_parameters()),
        "conditioning": conditioning,
        "images": [],
    }
    for img in images:
        h, w = img.shape[:2]
        if dcn_stats is not None:
            dcn_stats.clear()
        x_o, raw_o, det_o, t_o = run_original(net, orig_mods, img)
        dcn_max = max(dcn_stats) if dcn_stats else None
        raw_u, inst_u, t_u = run_ours(predictor, img)
        logits_u, deltas_u, coef_u, proto_u, anchors_u, _ = raw_u["raw"]
        x_u = raw_u["input"]
        input_hw = tuple(x_u.shape[-2:])
        probs_u = F.softmax(logits_u, -1)[0]
        boxes_u = decode(deltas_u, anchors_u[None], model.bbox_variances)[0]
        # our relative boxes: re-run our detect on our own tensors (what inference did inside)
        with torch.inference_mode():
            dets_u, inst_u2 = ours_from_tensors(model, probs_u, boxes_u, coef_u[0], proto_u[0], (h, w), input_hw)
        ours = _instances_dict(inst_u, dets_u["boxes"])
        # post-processing alone: ours on the ORIGINAL's raw tensors
        boxes_o_dec = decode(raw_o["loc"][0], raw_o["priors"], model.bbox_variances)
        with torch.inference_mode():
            dets_x, inst_x = ours_from_tensors(
                model, raw_o["conf"][0], boxes_o_dec, raw_o["mask"][0], raw_o["proto"][0].permute(2, 0, 1),
                (h, w), input_hw,
            )
        above_o = raw_o["conf"][0][:, 1:].max(-1)[0] > SCORE_THRESH
        above_u = probs_u[:, 1:].max(-1)[0] > SCORE_THRESH
        entry = {
            "image_hw": [h, w],
            "input": _maxdiff(x_o, x_u),
            "priors": _maxdiff(raw_o["priors"], anchors_u),
            "num_priors": int(anchors_u.shape[0]),
            "loc": _maxdiff(raw_o["loc"], deltas_u),
            "conf": _maxdiff(raw_o["conf"], F.softmax(logits_u, -1)),
            "coefficients": _maxdiff(raw_o["mask"], coef_u),
            "prototypes": _maxdiff(raw_o["proto"], proto_u.permute(0, 2, 3, 1)),
            "above_thresh_orig": int(above_o.sum()),
            "above_thresh_ours": int(above_u.sum()),
            "above_thresh_disagree": int((above_o ^ above_u).sum()),
            "detections": compare_detections(det_o, ours),
            "postprocess_on_original_tensors": compare_detections(det_o, _instances_dict(inst_x, dets_x["boxes"])),
            "inference_consistent": bool(
                len(inst_u2) == len(inst_u) and torch.equal(inst_u2.pred_boxes.tensor, inst_u.pred_boxes.tensor)
                and torch.equal(inst_u2.pred_masks, inst_u.pred_masks)),
            "seconds_original": t_o,
            "seconds_ours": t_u,
        }
        if dcn_max is not None:
            entry["dcn_torchvision_vs_reference_max_rel"] = dcn_max
            entry["dcn_calls"] = len(dcn_stats)
        result["images"].append(entry)
        print(f"  {variant} {h}x{w}: done ({t_o:.1f}s original, {t_u:.1f}s ours)", file=sys.stderr, flush=True)
    return result


def _fmt(x, spec=".1e"):
    return "-" if x is None else format(x, spec)


def print_table(results: List[Dict[str, Any]]) -> None:
    head = (
        f"{'variant':22} {'image':8} {'keys':5} {'input':7} {'priors':7} {'loc':7} {'conf':7} {'coef':7} "
        f"{'proto':7} {'>0.05 o/u':11} {'dets o/u':8} {'same':4} {'reord':5} {'unm':3} {'cls':4} "
        f"{'score':7} {'relbox':7} {'px':3} {'IoU min':7} {'IoU mean':8} {'mscore':7} {'pp-only':13}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        for e in r["images"]:
            d = e["detections"]
            p = e["postprocess_on_original_tensors"]
            pp = (
                "exact" if p["positions_same"] == p["n_orig"] == p["n_ours"] and p.get("score_max_abs", 0) == 0
                and p.get("int_box_max_abs_px", 0) == 0 and p.get("mask_pixels_differing", 0) == 0
                else f"{p['positions_same']}/{p['n_orig']} {_fmt(p.get('mask_iou_min'), '.4f')}"
            )
            print(
                f"{r['variant']:22} {e['image_hw'][0]}x{e['image_hw'][1]:<4} {'ok' if r['load_clean'] else 'BAD':5} "
                f"{_fmt(e['input']['max_abs']):7} {_fmt(e['priors']['max_abs']):7} {_fmt(e['loc']['max_abs']):7} "
                f"{_fmt(e['conf']['max_abs']):7} {_fmt(e['coefficients']['max_abs']):7} "
                f"{_fmt(e['prototypes']['max_abs']):7} "
                f"{str(e['above_thresh_orig']) + '/' + str(e['above_thresh_ours']):11} "
                f"{str(d['n_orig']) + '/' + str(d['n_ours']):8} {d['positions_same']:<4} {d['order_differences']:<5} "
                f"{d['unmatched_ours']:<3} {_fmt(d.get('class_agreement'), '.2f'):4} {_fmt(d.get('score_max_abs')):7} "
                f"{_fmt(d.get('rel_box_max_abs')):7} {_fmt(d.get('int_box_max_abs_px'), '.0f'):3} "
                f"{_fmt(d.get('mask_iou_min'), '.4f'):7} {_fmt(d.get('mask_iou_mean'), '.5f'):8} "
                f"{_fmt(d.get('mask_score_max_abs')):7} {pp:13}"
            )
    print()
    print("keys: converted checkpoint loads with no missing/unexpected/mis-shaped keys; input..proto: max abs "
          "difference of the network input and of the raw outputs before NMS (conf = softmax probabilities); "
          ">0.05 o/u: anchors above the score threshold (original/ours); dets: detections; same: equal class and "
          f"box (< {SAME_BOX_TOL} relative) at the same rank; reord: found at another rank; unm: unmatched; "
          "score/relbox: max abs difference over matched detections (relative box units); px: max difference of "
          "the integer pixel boxes; IoU: per-detection mask IoU; mscore: YOLACT++ mask score difference; "
          "pp-only: our post-processing on the original's raw tensors.")
    for r in results:
        extras = []
        if not r["converter_suggestion_matches"]:
            extras.append(f"converter suggests {r['converter_suggests']}")
        if not r["load_clean"]:
            extras.append(f"load keys {r['load_keys']}")
        if r["num_params_original"] != r["num_params_ours"]:
            extras.append(f"params {r['num_params_original']} vs {r['num_params_ours']}")
        dcn = [e.get("dcn_torchvision_vs_reference_max_rel") for e in r["images"] if "dcn_calls" in e]
        if dcn:
            extras.append(f"DCN torchvision vs DCNv2-im2col reference: max rel diff {max(dcn):.1e}")
        for e in r["images"]:
            d = e["detections"]
            if d.get("unmatched_scores"):
                extras.append(f"{e['image_hw']}: unmatched scores {d['unmatched_scores']} (last kept score "
                              f"{d.get('score_at_cap_orig')})")
        if extras:
            print(f"{r['variant']}: " + "; ".join(extras))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original-repo", required=True, help="path of a dbolya/yolact checkout")
    parser.add_argument("--variants", nargs="+", default=DEFAULT_VARIANTS, choices=sorted(VARIANTS))
    parser.add_argument("--json", help="write all results to this JSON file")
    parser.add_argument("--work-dir", help="where to keep the generated checkpoints (default: a temporary directory)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    parser.add_argument("--dcn-reference", action="store_true",
                        help="also check every DCN call against a plain-PyTorch DCNv2 im2col (slow)")
    parser.add_argument("--single", help=argparse.SUPPRESS)  # internal: run one variant, write JSON
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.single:
        result = check_variant(args.single, args.original_repo, args.work_dir, args.seed, args.dcn_reference)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
        return 0

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir or tmp
        os.makedirs(work_dir, exist_ok=True)
        for variant in args.variants:
            out = os.path.join(tmp, f"{variant}.json")
            cmd = [sys.executable, os.path.abspath(__file__), "--original-repo", args.original_repo,
                   "--single", variant,
                   "--json", out, "--work-dir", work_dir, "--seed", str(args.seed), "--threads", str(args.threads)]
            if args.dcn_reference:
                cmd.append("--dcn-reference")
            env = dict(os.environ)
            env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
            print(f"== {variant}", file=sys.stderr, flush=True)
            t0 = time.time()
            proc = subprocess.run(cmd, env=env)
            if proc.returncode != 0:
                print(f"error: {variant} failed (exit code {proc.returncode})", file=sys.stderr)
                return 1
            with open(out) as f:
                results.append(json.load(f))
            print(f"   {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    print_table(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
