"""yolact_d2.model_zoo: configs by name from the package (importlib.resources), yaml and LazyConfig,
trained weights by name, and models with their weights downloaded from an HTTP server on 127.0.0.1."""
import os
import sys

import pytest
import torch
from test_weight_conversion import make_original
from test_weights_cache import _Server

from conftest import CONFIG_DIR

COCO = "COCO-InstanceSegmentation"


def test_config_files_are_package_data_and_every_config_is_listed():
    from yolact_d2 import model_zoo

    package_configs = os.path.join(os.path.dirname(model_zoo.__file__), "configs")
    on_disk = sorted(
        os.path.relpath(os.path.join(d, f), package_configs).replace(os.sep, "/")
        for d, _, files in os.walk(package_configs) for f in files if f.endswith(".yaml"))
    assert len(on_disk) >= 9 and set(on_disk) <= set(model_zoo.list_configs())
    for name in on_disk:
        path = model_zoo.get_config_file(name)
        assert path == os.path.join(package_configs, name) and os.path.isfile(path)
        # the repository's configs/ is the same folder, for readers
        assert os.path.samefile(path, os.path.join(CONFIG_DIR, name))


def test_unknown_name_lists_the_valid_ones_in_one_line():
    from yolact_d2 import model_zoo
    from yolact_d2.utils.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        model_zoo.get_config_file("yolact_R_50_FPN_550.yaml")
    text = str(info.value)
    assert "\n" not in text and text.startswith("model zoo config 'yolact_R_50_FPN_550.yaml': unknown (known: ")
    assert f"{COCO}/yolact_R_50_FPN_550.yaml" in text and "Synthetic/yolact_R_18_FPN_synthetic.yaml" in text


def test_yaml_configs_and_their_weights():
    from detectron2.config import CfgNode

    from yolact_d2 import model_zoo
    from yolact_d2.utils.errors import ConfigError

    expected = {  # config -> (ImageNet start, trained checkpoint)
        "yolact_R_101_FPN_550": ("R-101", "yolact_base_54_800000"),
        "yolact_R_50_FPN_550": ("R-50", "yolact_resnet50_54_800000"),
        "yolact_R_101_FPN_700": ("R-101", "yolact_im700_54_800000"),
        "yolact_R_101_FPN_400": ("R-101", None),
        "yolact_plus_R_101_FPN_550": ("R-101", "yolact_plus_base_54_800000"),
        "yolact_plus_R_50_FPN_550": ("R-50", "yolact_plus_resnet50_54_800000"),
    }
    for stem, (imagenet, trained) in expected.items():
        name = f"{COCO}/{stem}.yaml"
        cfg = model_zoo.get_config(name)
        assert isinstance(cfg, CfgNode) and cfg.MODEL.META_ARCHITECTURE == "Yolact"
        assert cfg.MODEL.WEIGHTS == f"yolact://ImageNetPretrained/{imagenet}"
        assert f"R-{cfg.MODEL.RESNETS.DEPTH}" == imagenet and "YOLACT" in cfg.MODEL  # add_yolact_config applied
        if trained:
            assert model_zoo.get_config(name, trained=True).MODEL.WEIGHTS == f"yolact://{trained}"
        else:
            with pytest.raises(ConfigError, match=r"no published trained weights match it \(trained=True works "):
                model_zoo.get_config(name, trained=True)
    assert model_zoo.get_config("Synthetic/yolact_R_18_FPN_synthetic.yaml").MODEL.WEIGHTS == "random"


def test_lazy_config_by_name(tmp_path, monkeypatch):
    """A .py name is read with LazyConfig.load (a small config of our own in a stand-in zoo folder)."""
    from yolact_d2 import model_zoo
    from yolact_d2.model_zoo import model_zoo as zoo_module

    (tmp_path / "COCO-InstanceSegmentation").mkdir()
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "train.py").write_text("train = dict(init_checkpoint='', max_iter=5)\n")
    (tmp_path / f"{COCO}/yolact_R_50_FPN_550.py").write_text(
        "from ..common.train import train\n"
        "model = dict(depth=50)\n"
        "train.init_checkpoint = 'yolact://ImageNetPretrained/R-50'\n")
    monkeypatch.setattr(zoo_module, "_configs_root", lambda: tmp_path)
    assert model_zoo.list_configs() == [f"{COCO}/yolact_R_50_FPN_550.py"]  # common/ pieces are no configs
    cfg = model_zoo.get_config(f"{COCO}/yolact_R_50_FPN_550.py")
    assert cfg.model.depth == 50 and cfg.train.max_iter == 5
    assert cfg.train.init_checkpoint == "yolact://ImageNetPretrained/R-50"
    cfg = model_zoo.get_config(f"{COCO}/yolact_R_50_FPN_550.py", trained=True)
    assert cfg.train.init_checkpoint == "yolact://yolact_resnet50_54_800000"


def test_no_pkg_resources():
    """Nothing yolact_d2 imports needs pkg_resources (setuptools >= 81 no longer has it)."""
    import subprocess

    code = ("import sys, yolact_d2, yolact_d2.model_zoo, yolact_d2.cli.train\n"
            "yolact_d2.model_zoo.get_config('COCO-InstanceSegmentation/yolact_R_50_FPN_550.yaml')\n"
            "print(sorted(m for m in ('pkg_resources', 'detectron2.model_zoo') if m in sys.modules))\n")
    root = os.path.dirname(CONFIG_DIR)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=root), cwd=root)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-2000:]


def test_get_trained_model_downloads_converts_and_loads(tmp_path, monkeypatch):
    """get(..., trained=True): the original's checkpoint (an original-format file with the real shapes)
    from the server, converted, cached and loaded into the model built from the config."""
    from yolact_d2 import model_zoo
    from yolact_d2.modeling import Yolact

    root = tmp_path / "www"
    path = root / "dbolya/yolact-resnet50/resolve/main/yolact_resnet50_54_800000.pth"
    path.parent.mkdir(parents=True)
    original = make_original(50)
    torch.save(original, path)
    server = _Server(root)
    monkeypatch.setenv("YOLACT_D2_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("YOLACT_D2_WEIGHTS_URL", server.url)
    for proxy in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    try:
        model = model_zoo.get(f"{COCO}/yolact_R_50_FPN_550.yaml", trained=True, device="cpu")
    finally:
        server.close()
    assert isinstance(model, Yolact) and next(model.parameters()).device.type == "cpu"
    state = model.state_dict()
    for ours, theirs in (("head.cls_score.weight", "prediction_layers.0.conf_layer.weight"),
                         ("backbone.lateral_convs.0.weight", "fpn.lat_layers.2.weight"),
                         ("protonet.predictor.bias", "proto_net.10.bias"),
                         ("backbone.bottom_up.res5.2.conv3.norm.running_mean", "backbone.layers.3.2.bn3.running_mean")):
        assert torch.equal(state[ours], original[theirs]), ours
    assert server.requests == ["/dbolya/yolact-resnet50/resolve/main/yolact_resnet50_54_800000.pth"]
