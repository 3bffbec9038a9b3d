#!/usr/bin/env python
"""Per-stage latency of YOLACT inference, PyTorch or ONNX Runtime.

    python tools/benchmark.py --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml \\
        [--weights W.pth] [--images DIR | --synthetic N] [--threads T] [--backend torch|onnxruntime] \\
        [--all-detections] [--faithful] [--json OUT] [--original-repo PATH] [KEY VALUE ...]

Every image goes through the stage methods of ``Yolact`` that ``Yolact.inference`` itself is made
of, each timed separately after warm-up:

==============  ===============================================================================
preprocess      BGR image -> resized float tensor (``YolactPredictor.preprocess``), normalisation
backbone+fpn    ``Yolact.extract_features``                        (torch backend)
head+protonet   ``Yolact.predict_from_features``: head, protonet, anchors, box decoding, softmax
network         the exported graph, backbone to softmax in one call    (onnxruntime backend)
nms             ``Yolact.detect_single``: score threshold + Fast NMS
masks           ``Yolact.postprocess_single``: mask assembly, crop, upsampling to the image
                size, binarisation, pixel boxes
end_to_end      the predictor's ``__call__`` on the same image, measured on its own
==============  ===============================================================================

It prints the median, min and max of every stage in ms, the number of detections per image and
the peak resident memory of the process (``ru_maxrss``, model building included).

``--all-detections`` sets the score threshold to 0, so that (with >= 100 candidates) every image
yields 100 detections, as in COCO evaluation: post-processing cost grows with the detections.
Without ``--weights`` the random initialisation is conditioned on the first two images
(``yolact_d2.utils.testing.condition_random_model``: BN statistics re-estimated, head outputs
scaled) so that activations, detections and masks look like a trained model's; timings of a
raw random init are meaningless (exploding activations, denormals). ``--synthetic N`` renders N
480x640 images of the bundled synthetic shapes dataset. ``--faithful`` uses the reference
post-processing (``MODEL.YOLACT.FAST_POSTPROCESS_TEST False``) for comparison.

``--original-repo PATH`` (developer only; CPU) also times the ORIGINAL YOLACT code (a dbolya/yolact
checkout at PATH, imported at run time with the patches of ``tools/parity_check.py``; nothing of it
is copied into this project) side by side, on the same images with the same weights: the original
model of the matching variant (yolact_base for ``yolact_R_101_FPN_550.yaml``, yolact_resnet50,
yolact_im400 / im700, yolact_plus_base, yolact_plus_resnet50) is built with random weights,
conditioned on the first two images as ``parity_check.py`` does, converted with
``tools/convert_yolact_weights.py`` and loaded into our model (so ``--weights`` is not allowed
with it). Per image, the two implementations run one after the other, in alternating order, so
that drift of the machine's speed affects both alike. The original's stages (its own evaluation
path, ``torch.inference_mode``):

==============  ===============================================================================
preprocess      ``BaseTransform`` (eval.py's dataset transform: squash resize, BGR mean/std, RGB)
                of the BGR image, as a (1, 3, S, S) tensor
forward         ``Yolact.forward`` up to and including the class softmax (and, YOLACT++, the
                mask-score sigmoid), with its ``detect`` hook replaced by a pass-through
detect          ``Detect``: box decoding + per-class Fast NMS (``use_fast_nms=True``); its score
                threshold ``conf_thresh`` is set to ours (0 with ``--all-detections``),
                or to ``--original-conf-thresh`` (0.05: the original eval.py protocol)
postprocess     ``postprocess(crop_masks=True, score_threshold=0)``: mask assembly, crop,
                upsampling to the image size, binarisation, pixel boxes (YOLACT++: mask re-scoring)
end_to_end      ``BaseTransform`` + ``net(x)`` with the real ``Detect`` + ``postprocess``, on its own
==============  ===============================================================================

It then prints ours / original for preprocess, forward (ours: backbone+fpn + head+protonet, which
also decodes the boxes; or the ONNX network), NMS + masks (original: detect + postprocess) and end
to end, as the ratio of the medians and as the median of the per-image ratios. The peak memory is
then that of the process holding both models.
"""
import argparse
import glob
import importlib.util
import json
import os
import resource
import statistics
import sys
import tempfile
import time

import cv2
import numpy as np
import torch

TORCH_STAGES = ["preprocess", "backbone+fpn", "head+protonet", "nms", "masks", "end_to_end"]
ORT_STAGES = ["preprocess", "network", "nms", "masks", "end_to_end"]
ORIGINAL_STAGES = ["preprocess", "forward", "detect", "postprocess", "end_to_end"]
PARITY_TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "parity_check.py")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default="", help="checkpoint (default: conditioned random init)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--images", help="folder of images (all .jpg/.jpeg/.png in it)")
    src.add_argument("--synthetic", type=int, default=10, help="number of rendered 480x640 images (default 10)")
    parser.add_argument("--threads", type=int, default=None, help="torch / onnxruntime intra-op threads")
    parser.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch")
    parser.add_argument(
        "--onnx", help="exported model for --backend onnxruntime; exported there first if missing or without "
        "--weights (default: a temp file)")
    parser.add_argument("--warmup", type=int, default=2, help="images run before timing (default 2)")
    parser.add_argument("--repeat", type=int, default=1, help="passes over the images")
    parser.add_argument("--all-detections", action="store_true", help="score threshold 0: 100 detections per image")
    parser.add_argument("--faithful", action="store_true", help="reference post-processing (FAST_POSTPROCESS_TEST False)")
    parser.add_argument("--device", default=None, help="MODEL.DEVICE (default: cuda if available, else cpu)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument(
        "--original-repo", help="developer only: also time the original YOLACT (a dbolya/yolact checkout at this "
        "path) side by side, same images and (converted) weights; CPU")
    parser.add_argument("--seed", type=int, default=0, help="random init of the original model (--original-repo)")
    parser.add_argument(
        "--original-conf-thresh", type=float, default=None,
        help="the original's Detect score threshold (--original-repo; default: ours, MODEL.YOLACT.SCORE_THRESH_TEST, "
        "0 with --all-detections; 0.05 is the original eval.py protocol)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser.parse_args(argv)


def load_images(args):
    if args.images:
        paths = sorted(p for p in glob.glob(os.path.join(args.images, "*")) if p.lower().endswith((".jpg", ".jpeg", ".png")))
        if not paths:
            sys.exit(f"error: no .jpg/.jpeg/.png images in {args.images}")
        images = [cv2.imread(p) for p in paths]
        bad = [p for p, im in zip(paths, images) if im is None]
        if bad:
            sys.exit(f"error: cannot read {bad[0]}")
        return images
    from yolact_d2.data.datasets.synthetic import render_synthetic_sample

    return [render_synthetic_sample(0, "val", i, image_size=(480, 640))["image"] for i in range(args.synthetic)]


def build_cfg(args):
    from detectron2.config import get_cfg

    from yolact_d2 import add_yolact_config
    from yolact_d2.utils.config_loading import merge_config_file, merge_config_list

    cfg = get_cfg()
    add_yolact_config(cfg)
    merge_config_file(cfg, args.config_file)  # one-line errors (YAML syntax, unknown keys)
    merge_config_list(cfg, args.opts)
    cfg.MODEL.WEIGHTS = args.weights
    cfg.MODEL.DEVICE = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.all_detections:
        cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.0
    if args.faithful:
        cfg.MODEL.YOLACT.FAST_POSTPROCESS_TEST = False
    return cfg


def load_parity_tool():
    spec = importlib.util.spec_from_file_location("yolact_parity_check", PARITY_TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class OriginalRunner:
    """The original YOLACT (``--original-repo``) on CPU, set up by ``tools/parity_check.py``'s
    helpers (patches P1-P4, conditioning, weight conversion)."""

    def __init__(self, repo, config_file, images, score_threshold, work_dir, seed):
        parity = load_parity_tool()
        self.variant = parity.variant_for_config(config_file)
        if self.variant is None:
            known = ", ".join(ours for _, ours, _ in parity.VARIANTS.values())
            sys.exit(f"error: --original-repo: no original variant for {os.path.basename(config_file)} (known: {known})")
        self.parity = parity
        self.mods = parity.import_original(repo, None)
        inputs = [parity.original_input(self.mods, im) for im in images[:2]]
        self.net, self.ocfg, self.conditioning, _, self.converted_weights = parity.prepare_original(
            self.mods, self.variant, inputs, work_dir, seed)
        self.original_config = parity.VARIANTS[self.variant][0]
        # same candidate threshold as ours (MODEL.YOLACT.SCORE_THRESH_TEST <-> Detect.conf_thresh)
        self.net.detect.conf_thresh = score_threshold

    def check_weights(self, cfg):
        """The converted checkpoint must load into our model with no missing/unexpected/mis-shaped key."""
        from detectron2.modeling import build_model

        cfg = cfg.clone()
        cfg.MODEL.WEIGHTS = ""
        keys = self.parity.load_weights_checked(build_model(cfg), self.converted_weights)
        if any(keys.values()):
            sys.exit(f"error: the converted original weights do not load cleanly into our model: {keys}")
        return keys

    def timed_stages(self, image):
        net, postprocess = self.net, self.mods["postprocess"]
        detect = net.detect
        h, w = image.shape[:2]
        times = {}

        def clock(name, fn, *a):
            t0 = time.perf_counter()
            out = fn(*a)
            times[name] = (time.perf_counter() - t0) * 1000
            return out

        def forward(x):
            net.detect = lambda predictions, net_: predictions  # stop before Detect
            try:
                return net(x)
            finally:
                net.detect = detect

        def end_to_end():
            return postprocess(net(self.parity.original_input(self.mods, image)), w, h, crop_masks=True,
                               score_threshold=0)

        with torch.inference_mode():
            x = clock("preprocess", self.parity.original_input, self.mods, image)
            predictions = clock("forward", forward, x)
            dets = clock("detect", detect, predictions, net)
            classes, *_ = clock("postprocess", lambda: postprocess(dets, w, h, crop_masks=True, score_threshold=0))
            clock("end_to_end", end_to_end)
        return times, len(classes)


def build_predictor(args, images, tmp, original=None):
    """The predictor of the chosen backend; without --weights, conditioned random weights
    (saved in the directory ``tmp`` so that an ONNX export and the predictor use the same ones),
    or with ``original`` (an :class:`OriginalRunner`) its converted weights."""
    from yolact_d2 import YolactPredictor

    cfg = build_cfg(args)
    if original is not None:
        cfg.MODEL.WEIGHTS = original.converted_weights
        original.check_weights(cfg)
    elif not args.weights:
        from yolact_d2.utils.testing import save_conditioned_random_weights

        cfg.MODEL.WEIGHTS = save_conditioned_random_weights(cfg, images[:2], os.path.join(tmp, "conditioned_random.pth"))
    if args.backend == "torch":
        return cfg, YolactPredictor(cfg)
    from yolact_d2.export import YolactONNXPredictor, export_onnx

    onnx_path = args.onnx or os.path.join(tmp, "model.onnx")
    if not args.onnx or not os.path.exists(onnx_path) or not args.weights:
        # conditioned random weights are new on every run: export them
        export_onnx(YolactPredictor(cfg).model, onnx_path, int(cfg.INPUT.IMAGE_SIZE))
    return cfg, YolactONNXPredictor(cfg, onnx_path, num_threads=args.threads)


def timed_stages(predictor, image, backend, sync):
    """One image through the stage methods that Yolact.inference is made of, timing each."""
    model = predictor.model
    times = {}

    def clock(name, fn, *a):
        sync()
        t0 = time.perf_counter()
        out = fn(*a)
        sync()
        times[name] = (time.perf_counter() - t0) * 1000
        return out

    with torch.inference_mode():

        def preprocess():
            inputs = predictor.preprocess(image)
            return inputs, model.preprocess_image([inputs])

        inputs, images = clock("preprocess", preprocess)
        padded = tuple(images.tensor.shape[-2:])
        if backend == "torch":
            features = clock("backbone+fpn", model.extract_features, images.tensor)
            outputs = clock("head+protonet", model.predict_from_features, features, padded)
        else:
            outputs = clock("network", predictor.run_network, inputs["image"][None])
        class_probs, boxes, coefficients, prototypes = outputs
        detections = clock("nms", model.detect_single, class_probs[0], boxes[0], coefficients[0], padded)
        output_size = (inputs["height"], inputs["width"])
        instances = clock(
            "masks", model.postprocess_single, detections, prototypes[0], images.image_sizes[0], padded, output_size
        )
    clock("end_to_end", predictor, image)
    return times, len(instances)


def summarize(values):
    return {
        "median_ms": statistics.median(values),
        "min_ms": min(values),
        "max_ms": max(values),
        "iqr_ms": (np.percentile(values, 75) - np.percentile(values, 25)) if len(values) > 1 else 0.0,
    }


def _ratios(ours, orig):
    """ours / original: ratio of the medians and median of the per-image (paired) ratios."""
    return {
        "of_medians": statistics.median(ours) / statistics.median(orig),
        "median_of_paired": statistics.median(a / b for a, b in zip(ours, orig)),
    }


def main(argv=None):
    args = parse_args(argv)
    if args.original_repo:
        if args.weights:
            sys.exit("error: --original-repo uses the original's (conditioned, converted) weights; drop --weights")
        if args.device not in (None, "cpu"):
            sys.exit("error: --original-repo runs on CPU only")
        args.device = "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    images = load_images(args)
    original = None
    with tempfile.TemporaryDirectory(prefix="yolact_bench_") as tmp:
        if args.original_repo:
            score_threshold = args.original_conf_thresh
            if score_threshold is None:
                score_threshold = build_cfg(args).MODEL.YOLACT.SCORE_THRESH_TEST
            original = OriginalRunner(args.original_repo, args.config_file, images, score_threshold, tmp, args.seed)
        cfg, predictor = build_predictor(args, images, tmp, original)
    device = predictor.model.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    stages = TORCH_STAGES if args.backend == "torch" else ORT_STAGES

    def run_both(image, k):
        # alternate which implementation goes first, so that drift affects both alike
        if original is not None and k % 2:
            o = original.timed_stages(image)
            return timed_stages(predictor, image, args.backend, sync), o
        u = timed_stages(predictor, image, args.backend, sync)
        return u, (original.timed_stages(image) if original is not None else None)

    for i in range(args.warmup):
        run_both(images[i % len(images)], i)
    records, counts = {s: [] for s in stages}, []
    orig_records, orig_counts = {s: [] for s in ORIGINAL_STAGES}, []
    k = 0
    for _ in range(args.repeat):
        for image in images:
            (times, n), o = run_both(image, k)
            k += 1
            for s in stages:
                records[s].append(times[s])
            counts.append(n)
            if o is not None:
                for s in ORIGINAL_STAGES:
                    orig_records[s].append(o[0][s])
                orig_counts.append(o[1])
    records["nms+masks"] = [a + b for a, b in zip(records["nms"], records["masks"])]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_kind = "process max RSS" + (", both models" if original is not None else "")
    if device.type == "cuda":
        peak_mb, peak_kind = torch.cuda.max_memory_allocated() / 2**20, "CUDA allocated"

    h, w = images[0].shape[:2]
    summary = {s: summarize(v) for s, v in records.items()}
    print(
        f"config: {args.config_file}  weights: {describe_weights(args, original)}  backend: {args.backend}  "
        f"device: {device}  threads: {args.threads or torch.get_num_threads()}  "
        f"images: {len(images)} x {args.repeat} ({w}x{h} first), warm-up {args.warmup}  "
        f"score threshold: {cfg.MODEL.YOLACT.SCORE_THRESH_TEST}  "
        f"post-processing: {'faithful' if args.faithful else 'fast'}"
    )
    print("detections per image: " + " ".join(str(c) for c in counts))
    rows = [(s, v) for s, v in summary.items()]
    comparison = None
    if original is not None:
        orig_records["detect+postprocess"] = [a + b for a, b in zip(orig_records["detect"], orig_records["postprocess"])]
        orig_summary = {s: summarize(v) for s, v in orig_records.items()}
        print(f"original ({original.variant}, {original.original_config}) detections per image: "
              + " ".join(str(c) for c in orig_counts))
        rows += [(f"original {s}", v) for s, v in orig_summary.items()]
        ours_forward = (
            [a + b for a, b in zip(records["backbone+fpn"], records["head+protonet"])] if args.backend == "torch"
            else records["network"])
        pairs = {
            "preprocess": (records["preprocess"], orig_records["preprocess"]),
            "forward": (ours_forward, orig_records["forward"]),
            "nms+masks": (records["nms+masks"], orig_records["detect+postprocess"]),
            "end_to_end": (records["end_to_end"], orig_records["end_to_end"]),
        }
        comparison = {name: {"ours_median_ms": statistics.median(a), "original_median_ms": statistics.median(b),
                             **_ratios(a, b)} for name, (a, b) in pairs.items()}
    print(f"{'stage':<30}{'median ms':>11}{'min ms':>9}{'max ms':>9}{'IQR ms':>9}")
    for s, v in rows:
        print(f"{s:<30}{v['median_ms']:>11.1f}{v['min_ms']:>9.1f}{v['max_ms']:>9.1f}{v['iqr_ms']:>9.1f}")
    if comparison is not None:
        print(f"{'ours / original':<30}{'ours ms':>11}{'orig ms':>9}{'ratio':>9}{'paired':>9}  "
              "(ratio of the medians; median of the per-image ratios)")
        for name, c in comparison.items():
            label = {"nms+masks": "nms+masks / detect+postprocess"}.get(name, name)
            print(f"{label:<30}{c['ours_median_ms']:>11.1f}{c['original_median_ms']:>9.1f}"
                  f"{c['of_medians']:>9.3f}{c['median_of_paired']:>9.3f}")
    print(f"peak memory: {peak_mb:.0f} MB ({peak_kind})")
    if args.json:
        result = {
            "config": args.config_file, "weights": describe_weights(args, original), "backend": args.backend,
            "device": str(device), "threads": args.threads or torch.get_num_threads(),
            "num_images": len(images) * args.repeat, "warmup": args.warmup, "image_size": [h, w],
            "score_threshold": cfg.MODEL.YOLACT.SCORE_THRESH_TEST, "fast_postprocess": not args.faithful,
            "detections_per_image": counts, "stages": summary, "peak_memory_mb": peak_mb, "peak_memory_kind": peak_kind,
        }
        if original is not None:
            result["original"] = {
                "repo": os.path.abspath(args.original_repo), "variant": original.variant,
                "original_config": original.original_config, "seed": args.seed,
                "detect_conf_thresh": float(original.net.detect.conf_thresh), "postprocess_score_threshold": 0.0,
                "detections_per_image": orig_counts, "stages": orig_summary, "conditioning": original.conditioning,
            }
            result["ours_over_original"] = comparison
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return summary


def describe_weights(args, original):
    if original is not None:
        return f"original {original.variant}, random init (seed {args.seed}) conditioned, converted"
    return args.weights or "conditioned random init"


if __name__ == "__main__":
    main()
