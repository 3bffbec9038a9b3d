# COCO 2017 instances with YOLACT's mapper (SSD augmentation, square resize) and YOLACT's COCO evaluator
# (YOLACT++ mask scores; result files written atomically). The image size is set once, in
# dataloader.train.mapper.augmentations.image_size; the test mapper and the mapper's size rules follow it.
# Own COCO-format data needs no code: dataloader.{train,test}.dataset.coco_instances takes
# [name, json_file, image_root] entries (as DATASETS.COCO_INSTANCES), registered before `names` is loaded.
from omegaconf import OmegaConf

from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader

from yolact_d2.data.dataset_mapper import YolactDatasetMapper
from yolact_d2.data.datasets import coco_instances_dataset_dicts
from yolact_d2.data.detection_utils import degenerate_box_side
from yolact_d2.data.transforms import max_train_input_size, yolact_test_augmentation, yolact_train_augmentation
from yolact_d2.engine.loaders import build_yolact_train_loader
from yolact_d2.runtime.results_files import AtomicYolactCOCOEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_yolact_train_loader)(
    dataset=L(coco_instances_dataset_dicts)(names="coco_2017_train", coco_instances=[], filter_empty=True),
    mapper=L(YolactDatasetMapper)(
        is_train=True,
        augmentations=L(yolact_train_augmentation)(
            image_size=550,
            names=["photometric_distort", "expand", "random_sample_crop", "mirror"],
            image_format="${..image_format}",
            pixel_mean="${model.pixel_mean}",  # the expand canvas has the mean colour
        ),
        image_format="RGB",
        instance_mask_format="polygon",
        degenerate_box_threshold=L(degenerate_box_side)(image_size="${..augmentations.image_size}"),
        max_input_size=L(max_train_input_size)(image_size="${..augmentations.image_size}"),
        skip_bad_images=False,  # DATALOADER.SKIP_BAD_IMAGES
        num_classes="${model.head.num_classes}",  # category ids are checked against it
        box_source="json",  # INPUT.GT_BOX_SOURCE
    ),
    total_batch_size=8,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(coco_instances_dataset_dicts)(names="coco_2017_val", coco_instances=[], filter_empty=False),
    mapper=L(YolactDatasetMapper)(
        is_train=False,
        augmentations=L(yolact_test_augmentation)(
            image_size="${dataloader.train.mapper.augmentations.image_size}", resize_mode="squash"
        ),
        image_format="${dataloader.train.mapper.image_format}",
        instance_mask_format="${dataloader.train.mapper.instance_mask_format}",
        degenerate_box_threshold=L(degenerate_box_side)(image_size="${..augmentations.image_size}"),
        num_classes="${model.head.num_classes}",
    ),
    num_workers=4,
)

dataloader.evaluator = L(AtomicYolactCOCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    tasks=("bbox", "segm"),
    max_dets_per_image="${model.max_detections_per_image}",
    eval_backend="auto",  # TEST.COCO_EVAL_BACKEND
    output_dir="${train.output_dir}/inference",
)
