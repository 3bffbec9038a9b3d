#!/usr/bin/env python3
"""Time COCO evaluation backends (pycocotools' COCOeval, faster-coco-eval's COCOeval_faster) on the
same ground truth and detections, through Detectron2's ``_evaluate_predictions_on_coco`` (what
``YolactCOCOEvaluator`` runs), and check that they give the same 12 summary numbers.

    python tools/benchmark_coco_eval.py --synthetic-val          # the bundled synthetic val split
    python tools/benchmark_coco_eval.py --images 2000 --instances 20

Detections are made from the ground truth (no model needed): every object is detected once with
its mask shifted and eroded or dilated by a random amount, its class sometimes wrong and a random
score, plus false positives; so every IoU and score level occurs. Results are printed as json.
"""
import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time

import cv2
import numpy as np
from pycocotools import mask as mask_util

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _perturb(rng, mask):
    dy, dx = rng.integers(-4, 5, 2)
    moved = np.roll(mask.astype(np.uint8), (int(dy), int(dx)), axis=(0, 1))
    k = int(rng.integers(0, 4))
    if k:
        kernel = np.ones((2 * k + 1, 2 * k + 1), np.uint8)
        moved = cv2.dilate(moved, kernel) if rng.random() < 0.5 else cv2.erode(moved, kernel)
    return moved.astype(bool)


def _detection(rng, image_id, mask, category_id):
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
    return {"image_id": image_id, "category_id": category_id, "bbox": box, "score": float(rng.random()),
            "segmentation": _rle(mask)}


def _image_detections(rng, image, pairs, cat_ids, false_positives):
    """One perturbed detection per (gt annotation, mask) pair, plus false positives."""
    results = []
    for ann, mask in pairs:
        cid = ann["category_id"] if rng.random() > 0.1 else int(rng.choice(cat_ids))
        det = _detection(rng, image["id"], _perturb(rng, mask), cid)
        if det:
            results.append(det)
    for _ in range(int(round(false_positives * len(pairs)))):
        h, w = image["height"], image["width"]
        m = np.zeros((h, w), np.uint8)
        cv2.ellipse(m, (int(rng.integers(w)), int(rng.integers(h))),
                    (int(rng.integers(5, w // 4)), int(rng.integers(5, h // 4))), 0, 0, 360, 1, -1)
        det = _detection(rng, image["id"], m.astype(bool), int(rng.choice(cat_ids)))
        if det:
            results.append(det)
    return results


def make_detections(gt, masks_of, seed=0, false_positives=0.3):
    """Detections for every gt object of the COCO dict ``gt``; ``masks_of(image) -> [(ann, mask)]``."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in gt["categories"]]
    return [d for im in gt["images"] for d in _image_detections(rng, im, masks_of(im), cat_ids, false_positives)]


def generated_set(num_images, instances, size=(480, 640), seed=0):
    """A COCO gt dict with ``instances`` random ellipse / polygon masks per image, and their detections
    (made image by image: all the masks at once would not fit in memory)."""
    rng = np.random.default_rng(seed)
    h, w = size
    cats = [{"id": i, "name": f"c{i}"} for i in range(1, 11)]
    images, anns, results = [], [], []
    for image_id in range(1, num_images + 1):
        image = {"id": image_id, "height": h, "width": w, "file_name": f"{image_id}.jpg"}
        images.append(image)
        pairs = []
        for _ in range(instances):
            m = np.zeros((h, w), np.uint8)
            centre = (int(rng.integers(w)), int(rng.integers(h)))
            if rng.random() < 0.5:
                axes = (int(rng.integers(4, w // 5)), int(rng.integers(4, h // 5)))
                cv2.ellipse(m, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            else:
                pts = np.array(centre) + rng.integers(-80, 80, (int(rng.integers(3, 7)), 2))
                cv2.fillPoly(m, [pts.astype(np.int32)], 1)
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": int(rng.integers(1, 11)),
                   "segmentation": _rle(m), "area": float(m.sum()), "iscrowd": 0,
                   "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)]}
            anns.append(ann)
            pairs.append((ann, m.astype(bool)))
        results.extend(_image_detections(rng, image, pairs, [c["id"] for c in cats], 0.3))
    return {"images": images, "annotations": anns, "categories": cats}, results


def synthetic_val_set():
    from pycocotools.coco import COCO

    from detectron2.data import DatasetCatalog, MetadataCatalog

    import yolact_d2  # noqa: F401 (registers the synthetic splits)

    DatasetCatalog.get("yolact_synthetic_val")  # generates the split if needed
    json_file = MetadataCatalog.get("yolact_synthetic_val").json_file
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(json_file)
    gt = json.load(open(json_file))

    def masks_of(image):
        return [(a, coco.annToMask(a).astype(bool)) for a in coco.imgToAnns[image["id"]] if not a["iscrowd"]]

    return gt, make_detections(gt, masks_of)


def backends(threads):
    from pycocotools.cocoeval import COCOeval

    found = {"pycocotools": COCOeval}
    try:
        from yolact_d2.evaluation.coco_evaluation import faster_cocoeval_class

        found["faster_coco_eval"] = faster_cocoeval_class(threads)
    except ImportError as e:
        print(f"faster-coco-eval not available: {e}", file=sys.stderr)
    return found


def run(gt, results, repeats, threads):
    from pycocotools.coco import COCO

    from yolact_d2.utils.detectron2_internals import evaluate_predictions_on_coco

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
    report = {"images": len(gt["images"]), "gt_instances": len(gt["annotations"]), "detections": len(results)}
    for name, fn in backends(threads).items():
        for task in ("bbox", "segm"):
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    ev = evaluate_predictions_on_coco(coco_gt, results, task, cocoeval_fn=fn)
                times.append(time.perf_counter() - start)
            stats = [round(float(s), 6) for s in ev.stats]
            report[f"{name}/{task}"] = {"seconds": round(min(times), 3), "stats": stats}
    return report


def main(argv=None):
    from yolact_d2.runtime.cli_args import non_negative_int, positive_int

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--synthetic-val", action="store_true", help="the bundled synthetic val split")
    parser.add_argument("--images", type=positive_int, default=2000)
    parser.add_argument("--instances", type=non_negative_int, default=20)
    parser.add_argument("--repeats", type=positive_int, default=1,
                        help="runs per backend and task (the fastest is kept)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="faster-coco-eval RLE IoU worker threads (default: its own choice)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    gt, results = synthetic_val_set() if args.synthetic_val else generated_set(args.images, args.instances)
    prepared = time.perf_counter() - start
    report = run(gt, results, args.repeats, args.threads)
    report.update(machine=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
                  f"{platform.python_version()}", data_seconds=round(prepared, 1), threads=args.threads)
    print("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in report.items()) + "\n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
