"""``yolact://`` weights (yolact_d2/runtime/weights_cache.py) against an HTTP server on 127.0.0.1:
download -> convert -> cache -> load, the request count of a second load, the sha256 files, a damaged
cache, an offline machine, and a file put in the cache by hand."""
import hashlib
import http.server
import os
import re
import socket
import threading

import pytest
import torch
import torchvision
from test_weight_conversion import expected_name, make_original

from conftest import tiny_cfg

R18 = "ImageNetPretrained/torchvision/R-18"
R18_PATH = "models/resnet18-f37072fd.pth"  # the path of torchvision's file on its host
YOLACT_R50 = "yolact_resnet50_54_800000"
YOLACT_R50_PATH = "dbolya/yolact-resnet50/resolve/main/yolact_resnet50_54_800000.pth"


class _Server:
    """Serves a folder on 127.0.0.1 and counts the GET requests per path."""

    def __init__(self, root):
        self.requests = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """``(server, files)``: a torchvision ResNet-18 and an original-format YOLACT R-50 checkpoint (small
    widths) at their published paths; the cache in tmp_path; downloads go to the server."""
    root = tmp_path / "www"
    torch.manual_seed(0)
    resnet18 = torchvision.models.resnet18().state_dict()
    original = make_original(50, width=4, fpn=8, num_prototypes=4)
    for path, obj in ((R18_PATH, resnet18), (YOLACT_R50_PATH, original)):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj, root / path)
    server = _Server(root)
    monkeypatch.setenv("YOLACT_D2_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("YOLACT_D2_WEIGHTS_URL", server.url)
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    yield server, {"root": root, "resnet18": resnet18, "original": original}
    server.close()


def _sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_imagenet_backbone_download_convert_cache_load(served, tmp_path):
    from yolact_d2.engine.trainer import YolactTrainer
    from yolact_d2.runtime.checkpointer import AtomicDetectionCheckpointer
    from yolact_d2.runtime.weights_cache import cached_weights_path

    server, files = served
    cfg = tiny_cfg(opts=["MODEL.WEIGHTS", f"yolact://{R18}"])
    model = YolactTrainer.build_model(cfg)
    AtomicDetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    state, tv = model.state_dict(), files["resnet18"]
    # torchvision names -> ours, checked tensor by tensor on a few of each kind
    for ours, theirs in (("backbone.bottom_up.stem.conv1.weight", "conv1.weight"),
                         ("backbone.bottom_up.stem.conv1.norm.running_var", "bn1.running_var"),
                         ("backbone.bottom_up.res2.0.conv1.weight", "layer1.0.conv1.weight"),
                         ("backbone.bottom_up.res3.0.shortcut.weight", "layer2.0.downsample.0.weight"),
                         ("backbone.bottom_up.res5.1.conv2.norm.bias", "layer4.1.bn2.bias")):
        assert torch.equal(state[ours], tv[theirs]), ours
    converted = {k for k in state if k.startswith("backbone.bottom_up.") and not k.endswith("num_batches_tracked")}
    assert len(converted) == len([k for k in tv if not k.startswith("fc.") and "num_batches" not in k])
    assert server.requests == ["/" + R18_PATH]

    # the cache: the download and the converted file, each with its sha256 beside it
    cache = tmp_path / "cache"
    download = cache / "downloads" / "resnet18-f37072fd.pth"
    target = cached_weights_path(R18)
    assert target == str(cache / "ImageNetPretrained" / "torchvision" / "R-18.pth")
    assert _sha256(download) == _sha256(files["root"] / R18_PATH)  # the file as served
    assert (cache / "downloads" / "resnet18-f37072fd.pth.sha256").read_text() == \
        f"{_sha256(download)}  resnet18-f37072fd.pth\n"
    assert open(target + ".sha256").read() == f"{_sha256(target)}  R-18.pth\n"

    # a second load comes from the cache: no request
    model2 = YolactTrainer.build_model(cfg)
    AtomicDetectionCheckpointer(model2).load(cfg.MODEL.WEIGHTS)
    assert torch.equal(model2.state_dict()["backbone.bottom_up.res4.1.conv1.weight"], tv["layer3.1.conv1.weight"])
    assert len(server.requests) == 1

    # a damaged cached file is refused, not loaded, and not downloaded over
    with open(target, "r+b") as f:
        f.seek(os.path.getsize(target) // 2)
        f.write(b"\x00\x01\x02\x03")
    from yolact_d2.runtime.weights_cache import WeightsDownloadError

    with pytest.raises(WeightsDownloadError, match=r"sha256 [0-9a-f]{64} differs from [0-9a-f]{64}.*delete "):
        AtomicDetectionCheckpointer(YolactTrainer.build_model(cfg)).load(cfg.MODEL.WEIGHTS)
    assert len(server.requests) == 1


def test_original_yolact_checkpoint_by_name(served, tmp_path):
    from detectron2.utils.file_io import PathManager

    from yolact_d2.runtime.safe_load import load_checkpoint

    server, files = served
    path = PathManager.get_local_path(f"yolact://{YOLACT_R50}")
    assert path == str(tmp_path / "cache" / f"{YOLACT_R50}.pth")
    saved = load_checkpoint(path)  # the safe loader: a converted file is tensors and plain data only
    assert saved["__author__"] == "yolact_d2 yolact:// weights" and saved["matching_heuristics"] is False
    model = saved["model"]
    original = files["original"]
    # every tensor of the original under its Detectron2 name, unchanged; the unused FPN layer dropped
    kept = {k: v for k, v in original.items() if not k.startswith("fpn.downsample_layers.2")}
    assert sorted(model) == sorted(expected_name(k) for k in kept)
    for key, value in kept.items():
        assert torch.equal(model[expected_name(key)], value), key
    download = tmp_path / "cache" / "downloads" / f"{YOLACT_R50}.pth"
    assert (tmp_path / "cache" / "downloads" / f"{YOLACT_R50}.pth.sha256").read_text().split()[0] == _sha256(download)
    assert PathManager.get_local_path(f"yolact://{YOLACT_R50}") == path
    assert server.requests == ["/" + YOLACT_R50_PATH]


def test_offline_machine_gets_one_line_naming_url_and_cache_file(tmp_path, monkeypatch):
    from yolact_d2.runtime.weights_cache import WeightsDownloadError, resolve_weights

    with socket.socket() as s:  # a port nothing listens on: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("YOLACT_D2_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("YOLACT_D2_WEIGHTS_URL", f"http://127.0.0.1:{port}/")
    with pytest.raises(WeightsDownloadError) as info:
        resolve_weights(R18)
    line = str(info.value)
    assert "\n" not in line
    url = f"http://127.0.0.1:{port}/{R18_PATH}"
    place = str(tmp_path / "cache" / "downloads" / "resnet18-f37072fd.pth")
    assert re.fullmatch(rf"cannot download {re.escape(url)}: .*refused.* \(.*put it at {re.escape(place)}; .*\)",
                        line), line
    assert not os.listdir(tmp_path / "cache" / "downloads")  # no partial file left

    # the fix works: the file put there by hand is converted, with no network
    torch.manual_seed(1)
    resnet18 = torchvision.models.resnet18().state_dict()
    torch.save(resnet18, place)
    path = resolve_weights(R18)
    assert torch.equal(torch.load(path, weights_only=True)["model"]["backbone.bottom_up.res2.1.conv2.weight"],
                       resnet18["layer1.1.conv2.weight"])
    assert open(place + ".sha256").read().split()[0] == _sha256(place)


def test_names_refused_in_one_line_before_any_download(tmp_path, monkeypatch):
    from yolact_d2.runtime.weights_cache import WeightsDownloadError, resolve_weights

    monkeypatch.setenv("YOLACT_D2_CACHE", str(tmp_path / "cache"))
    with pytest.raises(WeightsDownloadError, match=r"^MODEL.WEIGHTS yolact://yolact_darknet53_54_800000: not "
                                                   r"supported: a DarkNet-53 checkpoint"):
        resolve_weights("yolact_darknet53_54_800000")
    with pytest.raises(WeightsDownloadError, match=r"^MODEL.WEIGHTS yolact://R-50: unknown name \(known: "
                                                   r"yolact://ImageNetPretrained/R-50, .*yolact://yolact_base_54_800000"):
        resolve_weights("R-50")
    assert not (tmp_path / "cache").exists()


def test_http_error_names_the_url(served):
    from yolact_d2.runtime.weights_cache import WeightsDownloadError, resolve_weights

    server, files = served
    os.remove(files["root"] / YOLACT_R50_PATH)
    with pytest.raises(WeightsDownloadError, match=rf"^cannot download {re.escape(server.url)}/"
                                                   rf"{re.escape(YOLACT_R50_PATH)}: HTTP 404 "):
        resolve_weights(YOLACT_R50)
