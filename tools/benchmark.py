#!/usr/bin/env python
"""Per-stage latency of YOLACT inference, PyTorch or ONNX Runtime.

    python tools/benchmark.py --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml \\
        [--weights W.pth] [--images DIR | --synthetic N] [--threads T] [--backend torch|onnxruntime] \\
        [--all-detections] [--faithful] [--precision fp32,bf16,int8] [--json OUT] [KEY VALUE ...]

Every image goes through the predictor once under ``torch.profiler``; the stages are the profiler
ranges that ``Yolact.forward`` records (``yolact.<stage>``, yolact_d2/modeling/meta_arch.py), so the
model keeps one inference path and no method per stage:

==============  ===============================================================================
preprocess      BGR image -> resized float tensor (``YolactPredictor.preprocess``), normalisation
                and padding (``Yolact.preprocess_image``): the time up to the backbone
backbone+fpn    range ``yolact.backbone``                                (torch backend)
head+protonet   ranges ``yolact.head``: head, protonet, anchors, box decoding, softmax
network         the exported graph, backbone to softmax in one call    (onnxruntime backend)
nms             ranges ``yolact.nms``: score threshold + Fast NMS
masks           ranges ``yolact.masks``: mask assembly, crop, upsampling to the image
                size, binarisation, pixel boxes
end_to_end      the predictor's ``__call__`` on the same image, measured on its own (no profiler)
==============  ===============================================================================

The profiler adds a few microseconds per operator to the stage times, not to ``end_to_end``.
On CUDA the ranges measure the host side (kernels run asynchronously) unless
``CUDA_LAUNCH_BLOCKING=1`` is set.

It prints the median, min and max of every stage in ms, the number of detections per image and
the peak resident memory of the process (``ru_maxrss``, model building included).

``--all-detections`` sets the score threshold to 0, so that (with >= 100 candidates) every image
yields 100 detections, as in COCO evaluation: post-processing cost grows with the detections.
Without ``--weights`` the random initialisation is conditioned on the first two images
(``yolact_d2.testing.condition_random_model``: BN statistics re-estimated, head outputs
scaled) so that activations, detections and masks look like a trained model's; timings of a
raw random init are meaningless (exploding activations, denormals). ``--synthetic N`` renders N
480x640 images of the bundled synthetic shapes dataset. ``--faithful`` times the original's literal
post-processing instead of the library's (the same detections and masks, computed as the original
does: full sorts, every mask upsampled to the whole image): the tests' oracle,
tests/reference_postprocess.py, so it needs the repository's tests/ folder.

``--precision fp32,bf16,int8`` times several precisions of the same weights in one run, taking turns
image by image: PyTorch float32, PyTorch with the network in bf16 (``MODEL.YOLACT.PRECISION_TEST``)
and ONNX Runtime int8 (exported and quantised in a temp folder, ``--calibration-images`` of
``--calibration-dataset``); ``auto`` is the predictor's own choice for this machine.

The side-by-side comparison with the original YOLACT code is a developer harness:
``dev/benchmark_original.py`` (docs/BENCHMARKS.md).
"""
import argparse
import glob
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


def build_parser(description=__doc__):
    """The arguments of our benchmark (``dev/benchmark_original.py`` adds its own)."""
    from yolact_d2.runtime.cli_args import non_negative_int, positive_int

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", default="", help="checkpoint (default: conditioned random init)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--images", help="folder of images (all .jpg/.jpeg/.png in it)")
    src.add_argument("--synthetic", type=positive_int, default=10,
                     help="number of rendered 480x640 images (default 10)")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch / onnxruntime intra-op threads")
    parser.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch")
    parser.add_argument(
        "--onnx", help="exported model for --backend onnxruntime, used as it is; exported there first if the file "
        "does not exist (default: a temp file)")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="images run before timing (default 2)")
    parser.add_argument("--repeat", type=positive_int, default=1, help="passes over the images")
    parser.add_argument("--all-detections", action="store_true", help="score threshold 0: 100 detections per image")
    parser.add_argument(
        "--faithful", action="store_true",
        help="the original's literal post-processing (tests/reference_postprocess.py), for comparison")
    parser.add_argument("--device", default=None, help="MODEL.DEVICE (default: cuda if available, else cpu)")
    parser.add_argument(
        "--precision", default=None,
        help="comma-separated precisions timed side by side on the same images, interleaved: fp32, bf16, auto "
        "(MODEL.YOLACT.PRECISION_TEST of the --backend torch predictor) and int8 (ONNX Runtime int8, quantised "
        "from the same weights); e.g. fp32,bf16,int8. Default: one predictor of --backend")
    parser.add_argument("--calibration-dataset", default="yolact_synthetic_train", help="int8: calibration images")
    parser.add_argument("--calibration-images", type=int, default=16, help="int8: number of calibration images")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


PRECISIONS = ("fp32", "bf16", "auto", "int8")


def check_precisions(parser, args):
    """``args.precision`` as a list (None: one predictor of ``--backend``); usage errors exit."""
    if not args.precision:
        return None
    precisions = [p.strip().lower() for p in args.precision.split(",") if p.strip()]
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown or not precisions:
        parser.error(f"--precision: unknown {unknown}; use a comma-separated list of {', '.join(PRECISIONS)}")
    if len(set(precisions)) != len(precisions):
        parser.error(f"--precision: {args.precision} names one precision twice")
    if args.backend == "onnxruntime" and set(precisions) - {"fp32", "int8"}:
        parser.error("--precision with --backend onnxruntime: fp32 (ONNX Runtime float32) and int8 only")
    return precisions


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.onnx and args.backend != "onnxruntime":  # else the torch model would be timed instead, silently
        parser.error("--onnx is the model of --backend onnxruntime: add --backend onnxruntime")
    args.precisions = check_precisions(parser, args)
    return args


def load_images(args):
    if args.images:
        paths = sorted(
            p for p in glob.glob(os.path.join(args.images, "*"))
            if p.lower().endswith((".jpg", ".jpeg", ".png")) and os.path.isfile(p))  # not a FIFO: it would block
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
    from yolact_d2.runtime.command_line_keys import mark_set_on_command_line
    from yolact_d2.runtime.config_loading import setup_cfg

    cfg = setup_cfg(args.config_file, args.opts, freeze=False)
    cfg.MODEL.WEIGHTS = args.weights
    mark_set_on_command_line(cfg, "MODEL.WEIGHTS")  # --weights is the user's choice
    cfg.MODEL.DEVICE = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.all_detections:
        cfg.MODEL.YOLACT.SCORE_THRESH_TEST = 0.0
    return cfg


def with_postprocessing(args, predictor):
    """``predictor``, post-processing with the tests' oracle (the original's literal algorithm) for
    ``--faithful``; both predictor kinds run ``predictor.model.postprocess_batch`` after the network."""
    if args.faithful:
        tests_dir = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests")
        if tests_dir not in sys.path:
            sys.path.insert(0, tests_dir)
        from reference_postprocess import use_reference_postprocess  # lazy: a test helper, not in the package

        use_reference_postprocess(predictor.model)
    return predictor


def build_cfg_with_weights(args, images, tmp, weights=None):
    """:func:`build_cfg` with the weights every predictor of a run shares: ``weights``, else --weights,
    else conditioned random weights saved in the directory ``tmp``."""
    cfg = build_cfg(args)
    if weights:
        cfg.MODEL.WEIGHTS = weights
    elif not args.weights:
        from yolact_d2.testing import save_conditioned_random_weights

        path = os.path.join(tmp, "conditioned_random.pth")
        cfg.MODEL.WEIGHTS = save_conditioned_random_weights(cfg, images[:2], path)
    return cfg


def build_predictor(args, images, tmp, weights=None):
    """The predictor of the chosen backend with ``weights`` (default: --weights or, without it,
    conditioned random weights saved in the directory ``tmp`` so that an ONNX export and the
    predictor use the same ones)."""
    from yolact_d2 import YolactPredictor

    cfg = build_cfg_with_weights(args, images, tmp, weights)
    if args.backend == "torch":
        return cfg, with_postprocessing(args, YolactPredictor(cfg))
    from yolact_d2.export import YolactONNXPredictor, export_onnx

    onnx_path = args.onnx or os.path.join(tmp, "model.onnx")
    if not os.path.exists(onnx_path):  # a given file is never overwritten
        export_onnx(YolactPredictor(cfg, precision="fp32").model, onnx_path, int(cfg.INPUT.IMAGE_SIZE))
    return cfg, with_postprocessing(args, YolactONNXPredictor(cfg, onnx_path, num_threads=args.threads))


def build_predictors(args, images, tmp, weights=None):
    """``(cfg, [(label, backend, predictor)])``: one predictor of ``--backend`` without
    ``--precision``, else one per listed precision, all with the same weights (``weights``, else
    ``--weights``, else conditioned random weights saved in ``tmp``)."""
    from yolact_d2 import YolactPredictor

    if not args.precisions:
        cfg, predictor = build_predictor(args, images, tmp, weights)
        return cfg, [(args.backend, args.backend, predictor)]
    cfg = build_cfg_with_weights(args, images, tmp, weights)
    runs = []
    for precision in args.precisions:
        if precision == "int8":
            runs.append(("onnxruntime int8", "onnxruntime", int8_predictor(args, cfg, tmp)))
        elif args.backend == "onnxruntime":
            runs.append(("onnxruntime fp32", "onnxruntime", build_predictor(args, images, tmp, cfg.MODEL.WEIGHTS)[1]))
        else:
            predictor = with_postprocessing(args, YolactPredictor(cfg, precision=precision))
            label = f"torch {precision}" + (f" ({predictor.precision})" if precision == "auto" else "")
            runs.append((label, "torch", predictor))
    return cfg, runs


def int8_predictor(args, cfg, tmp):
    """ONNX Runtime int8 of ``cfg``'s weights: ``--onnx`` (exported there first if missing) or a float32
    export in ``tmp``, quantised with the library's defaults on ``--calibration-images`` of
    ``--calibration-dataset``."""
    from yolact_d2 import YolactPredictor
    from yolact_d2.export import YolactONNXPredictor, export_onnx
    from yolact_d2.quantization import DatasetCalibrationReader, quantize_onnx

    float_path = args.onnx or os.path.join(tmp, "model.onnx")
    if not os.path.exists(float_path):
        export_onnx(YolactPredictor(cfg, precision="fp32").model, float_path, int(cfg.INPUT.IMAGE_SIZE))
    int8_path = os.path.join(tmp, "model.int8.onnx")
    t0 = time.perf_counter()
    reader = DatasetCalibrationReader(cfg, args.calibration_dataset, args.calibration_images)
    quantize_onnx(float_path, int8_path, reader, dataset_name=args.calibration_dataset)
    print(f"int8: quantised in {time.perf_counter() - t0:.0f} s ({len(reader)} images of {args.calibration_dataset})")
    return with_postprocessing(args, YolactONNXPredictor(cfg, int8_path, num_threads=args.threads))


# The profiler ranges of Yolact.forward's stages (yolact_d2/modeling/meta_arch.py)
_RANGES = ("yolact.backbone", "yolact.head", "yolact.nms", "yolact.masks")


def _ranges_ms(prof):
    """Total milliseconds of each stage range recorded by ``prof``, and the first range's start (us)."""
    totals, first_start = dict.fromkeys(_RANGES, 0.0), None
    for event in prof.events():
        if event.name in totals:
            totals[event.name] += event.time_range.elapsed_us() / 1000
            if event.name == "yolact.backbone":
                first_start = event.time_range.start
    return totals, first_start


def timed_stages(predictor, image, backend, sync):
    """One image through the predictor, each stage timed by the profiler ranges the model records
    (``torch`` backend); with ``onnxruntime`` the predictor's preprocess and network calls are
    clocked directly and NMS + masks by their ranges. ``end_to_end`` is a separate run without the
    profiler. (CUDA kernels run asynchronously: set CUDA_LAUNCH_BLOCKING=1 for per-stage GPU times.)"""
    from torch.profiler import ProfilerActivity, profile, record_function

    times = {}
    with torch.inference_mode():
        if backend == "torch":
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                with record_function("benchmark.predictor"):
                    out = predictor(image)
                sync()
            ranges, backbone_start = _ranges_ms(prof)
            outer = next(e for e in prof.events() if e.name == "benchmark.predictor")
            # from the call to the backbone: the predictor's resize + the model's normalisation and padding
            times["preprocess"] = (backbone_start - outer.time_range.start) / 1000
            times["backbone+fpn"], times["head+protonet"] = ranges["yolact.backbone"], ranges["yolact.head"]
        else:
            sync()
            t0 = time.perf_counter()
            inputs = predictor.preprocess(image)
            t1 = time.perf_counter()
            outputs = predictor.run_network(inputs["image"][None])
            sync()
            times["preprocess"], times["network"] = (t1 - t0) * 1000, (time.perf_counter() - t1) * 1000
            size = tuple(inputs["image"].shape[-2:])
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                out = predictor.model.postprocess_batch([inputs], [size], size, outputs)[0]
                sync()
            ranges, _ = _ranges_ms(prof)
        times["nms"], times["masks"] = ranges["yolact.nms"], ranges["yolact.masks"]
    sync()
    t0 = time.perf_counter()
    predictor(image)
    sync()
    times["end_to_end"] = (time.perf_counter() - t0) * 1000
    return times, len(out["instances"])


def summarize(values):
    return {
        "median_ms": statistics.median(values),
        "min_ms": min(values),
        "max_ms": max(values),
        "iqr_ms": (np.percentile(values, 75) - np.percentile(values, 25)) if len(values) > 1 else 0.0,
    }


def print_rows(rows):
    print(f"{'stage':<30}{'median ms':>11}{'min ms':>9}{'max ms':>9}{'IQR ms':>9}")
    for s, v in rows:
        print(f"{s:<30}{v['median_ms']:>11.1f}{v['min_ms']:>9.1f}{v['max_ms']:>9.1f}{v['iqr_ms']:>9.1f}")


def peak_memory(device):
    """(MB, what it is): CUDA allocated memory, or the process's max RSS (model building included)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20, "CUDA allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "process max RSS"


def run_interleaved(runs, images, args, sync):
    """Per-stage times and detection counts of every run, the runs taking turns image by image in
    rotating order (so that drift of the machine's speed affects them alike)."""
    for i in range(args.warmup):
        for _, backend, predictor in runs:
            timed_stages(predictor, images[i % len(images)], backend, sync)
    records = [{s: [] for s in (TORCH_STAGES if b == "torch" else ORT_STAGES)} for _, b, _ in runs]
    counts = [[] for _ in runs]
    for k, image in enumerate(images * args.repeat):
        for j in range(len(runs)):
            r = (j + k) % len(runs)
            _, backend, predictor = runs[r]
            times, n = timed_stages(predictor, image, backend, sync)
            for s in records[r]:
                records[r][s].append(times[s])
            counts[r].append(n)
    for rec in records:
        rec["nms+masks"] = [a + b for a, b in zip(rec["nms"], rec["masks"])]
    return records, counts


def main(argv=None):
    args = parse_args(argv)
    if args.json:
        from yolact_d2.utils.atomic_io import prepare_output_file

        prepare_output_file(args.json, "--json")  # before the benchmark, not after it
    if args.threads:
        torch.set_num_threads(args.threads)
    images = load_images(args)
    with tempfile.TemporaryDirectory(prefix="yolact_bench_") as tmp:
        cfg, runs = build_predictors(args, images, tmp)
    device = runs[0][2].model.device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    records, counts = run_interleaved(runs, images, args, sync)
    peak_mb, peak_kind = peak_memory(device)
    if len(runs) > 1:
        peak_kind += f", all {len(runs)} predictors in one process"

    h, w = images[0].shape[:2]
    summaries = [{s: summarize(v) for s, v in rec.items()} for rec in records]
    weights = args.weights or "conditioned random init"
    print(
        f"config: {args.config_file}  weights: {weights}  backend: {', '.join(label for label, _, _ in runs)}  "
        f"device: {device}  threads: {args.threads or torch.get_num_threads()}  "
        f"images: {len(images)} x {args.repeat} ({w}x{h} first), warm-up {args.warmup}  "
        f"score threshold: {cfg.MODEL.YOLACT.SCORE_THRESH_TEST}  "
        f"post-processing: {'faithful' if args.faithful else 'fast'}"
    )
    for (label, _, _), summary, count in zip(runs, summaries, counts):
        if len(runs) > 1:
            print(f"--- {label}")
        print("detections per image: " + " ".join(str(c) for c in count))
        print_rows(summary.items())
    if len(runs) > 1:
        base = summaries[0]["end_to_end"]["median_ms"]
        print("end to end, median ms (ratio to " + runs[0][0] + "): " + ", ".join(
            f"{label} {s['end_to_end']['median_ms']:.1f} ({s['end_to_end']['median_ms'] / base:.3f})"
            for (label, _, _), s in zip(runs, summaries)))
    print(f"peak memory: {peak_mb:.0f} MB ({peak_kind})")
    if args.json:
        result = {
            "config": args.config_file, "weights": weights, "backend": args.backend,
            "device": str(device), "threads": args.threads or torch.get_num_threads(),
            "num_images": len(images) * args.repeat, "warmup": args.warmup, "image_size": [h, w],
            "score_threshold": cfg.MODEL.YOLACT.SCORE_THRESH_TEST, "fast_postprocess": not args.faithful,
            "detections_per_image": counts[0], "stages": summaries[0], "peak_memory_mb": peak_mb,
            "peak_memory_kind": peak_kind,
        }
        if args.precisions:
            result["runs"] = {label: {"backend": backend, "detections_per_image": count, "stages": summary}
                              for (label, backend, _), summary, count in zip(runs, summaries, counts)}
        from yolact_d2.utils.atomic_io import atomic_open

        with atomic_open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return summaries[0]


if __name__ == "__main__":
    from yolact_d2.runtime.reporting import run_cli

    def cli() -> int:
        main()  # returns the summary table (for tests)
        return 0

    sys.exit(run_cli(cli))
