"""How far torch.compile's CPU backend (Inductor) takes the network part of YOLACT, eager against compiled,
float32 and bf16 side by side in one process.

    python dev/compile_trial.py [--config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml]
                                [--threads 2] [--rounds 7]

What is timed: ``Yolact.inference_tensors`` on one normalised 550x550 image (backbone, FPN, head,
protonet, box decoding and softmax), as ``YolactPredictor`` prepares the model (BN folded, channels-last,
the network cast once for bf16). Post-processing (Fast NMS, masks) is not part of it: it runs the same
either way. Conditioned random weights (``yolact_d2.testing``), as the benchmarks use: plain random
weights make the activations of a deep ResNet explode, and bf16 kernels slow down on such values
(denormals, infinities), which a trained model never feeds them. Eager and compiled calls
alternate, so a drift of the machine's speed hits both alike; the table gives the median of the rounds.
Inductor needs a C++ compiler on the machine (it builds its kernels the first time).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from yolact_d2 import YolactPredictor  # noqa: E402
from yolact_d2.runtime.config_loading import setup_cfg  # noqa: E402
from yolact_d2.testing import save_conditioned_random_weights  # noqa: E402


def build_network(config_file: str, precision: str, weights: str):
    cfg = setup_cfg(config_file, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", weights], freeze=False)
    cfg.freeze()
    predictor = YolactPredictor(cfg, precision=precision)
    size = cfg.INPUT.IMAGE_SIZE
    image = torch.randn(1, 3, size, size).contiguous(memory_format=torch.channels_last)
    return predictor.model, image


def time_call(fn, image) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        fn(image)
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default=os.path.join(
        REPO, "configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--precisions", default="fp32,bf16")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    cfg = setup_cfg(args.config_file, ["MODEL.DEVICE", "cpu"], freeze=False)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(2)]
    weights = os.path.join(tempfile.mkdtemp(), "conditioned.pth")
    save_conditioned_random_weights(cfg, images, weights)

    rows = []
    for precision in args.precisions.split(","):
        model, image = build_network(args.config_file, precision, weights)
        eager = model.inference_tensors
        compiled = torch.compile(model.inference_tensors, dynamic=False)
        start = time.perf_counter()
        with torch.no_grad():
            compiled(image)  # compiles (Inductor builds C++ kernels)
        compile_s = time.perf_counter() - start
        with torch.no_grad():  # the results agree
            a, b = eager(image), compiled(image)
        # relative to the output's scale: random weights give large activations
        diff = max(((x.float() - y.float()).abs().max() / x.float().abs().max().clamp(min=1e-12)).item()
                   for x, y in zip(a, b))
        time_call(eager, image)
        eager_ms, compiled_ms = [], []
        for _ in range(args.rounds):
            eager_ms.append(time_call(eager, image))
            compiled_ms.append(time_call(compiled, image))
        rows.append((precision, statistics.median(eager_ms), statistics.median(compiled_ms), compile_s, diff))

    print(f"{os.path.basename(args.config_file)}, {args.threads} threads, median of {args.rounds} alternating rounds")
    print("| precision | eager ms | compiled ms | compiled / eager | first compile s | max relative difference |")
    print("|---|---|---|---|---|---|")
    for precision, e, c, s, d in rows:
        print(f"| {precision} | {e:.1f} | {c:.1f} | {c / e:.2f} | {s:.0f} | {d:.2e} |")


if __name__ == "__main__":
    main()
