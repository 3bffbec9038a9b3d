#!/usr/bin/env python
"""Developer harness: the latency of our YOLACT next to the ORIGINAL YOLACT code, same images, same
(converted) weights, on CPU.

    PYTHONPATH=. python dev/benchmark_original.py --original-repo PATH --config-file CONFIG \\
        [--synthetic N] [--threads T] [--all-detections] [--precision fp32,bf16,int8] [--json OUT] \\
        [KEY VALUE ...]

It takes the arguments of ``tools/benchmark.py`` (our stages are timed by that tool's code) plus
the ones below.

``--original-repo PATH`` (CPU) times the ORIGINAL YOLACT code (a dbolya/yolact checkout at PATH,
imported at run time with the patches of ``dev/original_yolact.py``; nothing of it
is copied into this project) side by side, on the same images with the same weights: the original
model of the matching variant (yolact_base for ``yolact_R_101_FPN_550.yaml``, yolact_resnet50,
yolact_im400 / im700, yolact_plus_base, yolact_plus_resnet50) is built with random weights,
conditioned on the first two images as ``dev/parity_check.py`` does, converted with
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

``--precision fp32,bf16,int8`` (see ``tools/benchmark.py``) times several of our precisions of the
same converted weights against the original in one run, everyone taking turns image by image;
``--backend onnxruntime --int8`` is the older way to time int8 alone.

It then prints ours / original for preprocess, forward (ours: backbone+fpn + head+protonet, which
also decodes the boxes; or the ONNX network), NMS + masks (original: detect + postprocess) and end
to end, as the ratio of the medians and as the median of the per-image ratios. The peak memory is
then that of the process holding both models.
"""
import json
import os
import statistics
import sys
import tempfile
import time

import torch

DEV_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(DEV_DIR), "tools"))  # tools/benchmark.py, as a module

import benchmark  # noqa: E402  (tools/)
import original_yolact  # noqa: E402  (dev/)

ORIGINAL_STAGES = ["preprocess", "forward", "detect", "postprocess", "end_to_end"]


def parse_args(argv=None):
    parser = benchmark.build_parser(__doc__)
    parser.add_argument(
        "--original-repo", required=True, help="a dbolya/yolact checkout: time the original side by side")
    parser.add_argument("--seed", type=int, default=0, help="random init of the original model")
    parser.add_argument(
        "--int8", action="store_true",
        help="with --backend onnxruntime: time our int8 model (yolact_d2.quantization defaults, calibrated "
        "on --calibration-images of --calibration-dataset) quantised from the same converted weights")
    parser.add_argument(
        "--original-conf-thresh", type=float, default=None,
        help="the original's Detect score threshold (default: ours, MODEL.YOLACT.SCORE_THRESH_TEST, "
        "0 with --all-detections; 0.05 is the original eval.py protocol)")
    args = parser.parse_args(argv)
    args.precisions = benchmark.check_precisions(parser, args)
    return args


class OriginalRunner:
    """The original YOLACT (``--original-repo``) on CPU, set up by ``dev/original_yolact.py``
    (patches P1-P4, conditioning, weight conversion)."""

    def __init__(self, repo, config_file, images, score_threshold, work_dir, seed):
        parity = original_yolact
        self.variant = parity.variant_for_config(config_file)
        if self.variant is None:
            known = ", ".join(ours for _, ours, _ in parity.VARIANTS.values())
            name = os.path.basename(config_file)
            sys.exit(f"error: --original-repo: no original variant for {name} (known: {known})")
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


def main(argv=None):
    args = parse_args(argv)
    if args.weights:
        sys.exit("error: --original-repo uses the original's (conditioned, converted) weights; drop --weights")
    if args.device not in (None, "cpu"):
        sys.exit("error: --original-repo runs on CPU only")
    if args.int8 and args.backend != "onnxruntime":
        sys.exit("error: --int8 times an ONNX Runtime model: add --backend onnxruntime")
    if args.int8 and args.precisions:
        sys.exit("error: --int8 and --precision: use --precision ...,int8")
    args.device = "cpu"
    if args.threads:
        torch.set_num_threads(args.threads)
    images = benchmark.load_images(args)
    with tempfile.TemporaryDirectory(prefix="yolact_bench_") as tmp:
        score_threshold = args.original_conf_thresh
        if score_threshold is None:
            score_threshold = benchmark.build_cfg(args).MODEL.YOLACT.SCORE_THRESH_TEST
        original = OriginalRunner(args.original_repo, args.config_file, images, score_threshold, tmp, args.seed)
        original.check_weights(benchmark.build_cfg(args))
        cfg, runs = benchmark.build_predictors(args, images, tmp, weights=original.converted_weights)
        if args.int8:  # the float32 file build_predictors exported, quantised
            runs = [("onnxruntime int8", "onnxruntime", benchmark.int8_predictor(args, cfg, tmp))]
    records, counts, orig_records, orig_counts = _time_both(args, images, runs, original)
    peak_mb, peak_kind = benchmark.peak_memory(runs[0][2].model.device)
    peak_kind += f", the original and our {len(runs)} model(s)"

    h, w = images[0].shape[:2]
    orig_summary = {s: benchmark.summarize(v) for s, v in orig_records.items()}
    weights = f"original {original.variant}, random init (seed {args.seed}) conditioned, converted"
    print(
        f"config: {args.config_file}  weights: {weights}  ours: {', '.join(label for label, _, _ in runs)}  "
        "device: cpu  "
        f"threads: {args.threads or torch.get_num_threads()}  "
        f"images: {len(images)} x {args.repeat} ({w}x{h} first), warm-up {args.warmup}  "
        f"score threshold: {cfg.MODEL.YOLACT.SCORE_THRESH_TEST}  "
        f"post-processing: {'faithful' if args.faithful else 'fast'}"
    )
    print(f"original ({original.variant}, {original.original_config}) detections per image: "
          + " ".join(str(c) for c in orig_counts))
    benchmark.print_rows([(f"original {s}", v) for s, v in orig_summary.items()])
    per_run = {}
    for (label, backend, predictor), rec, count in zip(runs, records, counts):
        summary = {s: benchmark.summarize(v) for s, v in rec.items()}
        ours_forward = ([a + b for a, b in zip(rec["backbone+fpn"], rec["head+protonet"])] if backend == "torch"
                        else rec["network"])
        pairs = {
            "preprocess": (rec["preprocess"], orig_records["preprocess"]),
            "forward": (ours_forward, orig_records["forward"]),
            "nms+masks": (rec["nms+masks"], orig_records["detect+postprocess"]),
            "end_to_end": (rec["end_to_end"], orig_records["end_to_end"]),
        }
        comparison = {name: {"ours_median_ms": statistics.median(a), "original_median_ms": statistics.median(b),
                             **_ratios(a, b)} for name, (a, b) in pairs.items()}
        print(f"--- ours: {label}")
        print("detections per image: " + " ".join(str(c) for c in count))
        benchmark.print_rows(list(summary.items()))
        print(f"{'ours / original':<30}{'ours ms':>11}{'orig ms':>9}{'ratio':>9}{'paired':>9}  "
              "(ratio of the medians; median of the per-image ratios)")
        for name, c in comparison.items():
            name = {"nms+masks": "nms+masks / detect+postprocess"}.get(name, name)
            print(f"{name:<30}{c['ours_median_ms']:>11.1f}{c['original_median_ms']:>9.1f}"
                  f"{c['of_medians']:>9.3f}{c['median_of_paired']:>9.3f}")
        per_run[label] = {"backend": backend, "quantization": getattr(predictor, "quantization", None),
                          "precision": getattr(predictor, "precision", None), "detections_per_image": count,
                          "stages": summary, "ours_over_original": comparison}
    print(f"peak memory: {peak_mb:.0f} MB ({peak_kind})")
    if args.json:
        first = per_run[runs[0][0]]
        result = {
            "config": args.config_file, "weights": weights, "backend": args.backend,
            "quantization": first["quantization"], "device": "cpu",
            "threads": args.threads or torch.get_num_threads(),
            "num_images": len(images) * args.repeat, "warmup": args.warmup, "image_size": [h, w],
            "score_threshold": cfg.MODEL.YOLACT.SCORE_THRESH_TEST, "fast_postprocess": not args.faithful,
            "detections_per_image": first["detections_per_image"], "stages": first["stages"],
            "peak_memory_mb": peak_mb, "peak_memory_kind": peak_kind,
            "original": {
                "repo": os.path.abspath(args.original_repo), "variant": original.variant,
                "original_config": original.original_config, "seed": args.seed,
                "detect_conf_thresh": float(original.net.detect.conf_thresh), "postprocess_score_threshold": 0.0,
                "detections_per_image": orig_counts, "stages": orig_summary, "conditioning": original.conditioning,
            },
            "ours_over_original": first["ours_over_original"],
            "runs": per_run,
        }
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return per_run


def _time_both(args, images, runs, original):
    """Per-stage times and detection counts of each of our runs and of the original, image by image,
    all taking turns in rotating order so that drift of the machine's speed affects them alike."""
    everyone = [("original", None, None)] + list(runs)

    def run_all(image, k):
        out = [None] * len(everyone)
        for j in range(len(everyone)):
            r = (j + k) % len(everyone)
            _, backend, predictor = everyone[r]
            out[r] = (original.timed_stages(image) if r == 0
                      else benchmark.timed_stages(predictor, image, backend, lambda: None))
        return out

    for i in range(args.warmup):
        run_all(images[i % len(images)], i)
    records = [{s: [] for s in (benchmark.TORCH_STAGES if b == "torch" else benchmark.ORT_STAGES)}
               for _, b, _ in runs]
    counts = [[] for _ in runs]
    orig_records, orig_counts = {s: [] for s in ORIGINAL_STAGES}, []
    for k, image in enumerate(images * args.repeat):
        (orig_times, orig_n), *ours = run_all(image, k)
        for rec, count, (times, n) in zip(records, counts, ours):
            for s in rec:
                rec[s].append(times[s])
            count.append(n)
        for s in ORIGINAL_STAGES:
            orig_records[s].append(orig_times[s])
        orig_counts.append(orig_n)
    for rec in records:
        rec["nms+masks"] = [a + b for a, b in zip(rec["nms"], rec["masks"])]
    orig_records["detect+postprocess"] = [a + b for a, b in zip(orig_records["detect"], orig_records["postprocess"])]
    return records, counts, orig_records, orig_counts


def _ratios(ours, orig):
    """ours / original: ratio of the medians and median of the per-image (paired) ratios."""
    return {
        "of_medians": statistics.median(ours) / statistics.median(orig),
        "median_of_paired": statistics.median(a / b for a, b in zip(ours, orig)),
    }


if __name__ == "__main__":
    main()
