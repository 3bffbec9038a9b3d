#!/usr/bin/env python
"""Train and evaluate YOLACT with Detectron2.

    python train_net.py --config-file configs/COCO-InstanceSegmentation/yolact_R_101_FPN_550.yaml
    python train_net.py --config-file ... --eval-only MODEL.WEIGHTS model_final.pth
    python train_net.py --config-file ... --num-gpus 2 [MODEL.DEVICE cpu]

Standard Detectron2 flags (``--resume``, ``--num-machines``, ``--machine-rank``, ``--dist-url``,
``KEY VALUE`` overrides) work as usual. Own data: see ``DATASETS.COCO_INSTANCES`` in the README.
"""
import os

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from yolact_d2 import YolactTrainer, add_yolact_config
from yolact_d2.data.datasets import register_datasets_from_config
from yolact_d2.utils.visualization import save_prediction_visualizations


def setup(args):
    cfg = get_cfg()
    add_yolact_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    register_datasets_from_config(cfg)
    cfg.freeze()
    default_setup(cfg, args)
    return cfg


def visualize(cfg, model, num_images):
    if num_images <= 0 or not cfg.DATASETS.TEST or not comm.is_main_process():
        return
    out_dir = os.path.join(cfg.OUTPUT_DIR, "visualizations")
    save_prediction_visualizations(cfg, model, cfg.DATASETS.TEST[0], out_dir, num_images)
    print(f"Visualisations of predictions (ground truth | prediction): {os.path.abspath(out_dir)}")


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = YolactTrainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        results = YolactTrainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        visualize(cfg, model, args.num_vis)
        return results

    trainer = YolactTrainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    results = trainer.train()
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    visualize(cfg, model, args.num_vis)
    if comm.is_main_process():
        print(f"Metrics: {os.path.abspath(os.path.join(cfg.OUTPUT_DIR, 'metrics.json'))}")
    return results


def get_parser():
    parser = default_argument_parser()
    parser.add_argument("--num-vis", type=int, default=0, help="write PNGs of predictions on this many test images")
    return parser


if __name__ == "__main__":
    args = get_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
