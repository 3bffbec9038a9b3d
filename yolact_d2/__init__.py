"""yolact_d2: YOLACT (Bolya et al., ICCV 2019) as Detectron2 components."""
__version__ = "0.1.0"
