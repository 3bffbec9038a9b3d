"""Local web demo of a YOLACT model (Gradio): upload an image or pick a bundled example, look at the
masks, filter them, download the overlay and the detections: ``yolact-app`` (in a clone also
``python demo/app.py``).

    pip install "yolact_d2[app]"     # or, in a clone: pip install -e ".[app]"
    yolact-app --config-file configs/Synthetic/yolact_R_18_FPN_synthetic.yaml \\
        --opts MODEL.WEIGHTS output/synthetic/model_final.pth MODEL.DEVICE cpu

It serves on 127.0.0.1 only (``--port``, default 7860) and prints its URL. The model runs once per
image at the config's ``MODEL.YOLACT.SCORE_THRESH_TEST``; the score-threshold slider (from that value
to 1), the class filter and the mask opacity only redraw the cached detections, which gives the
same detections as running the model at the slider's threshold (yolact_d2/demo/predictor.py). ``--onnx FILE``
runs the network with ONNX Runtime (``YolactONNXPredictor``, a file from tools/export_model.py).
``--opts MODEL.YOLACT.PRECISION_TEST bf16`` (or ``auto``) runs the PyTorch network in bf16
(yolact_d2/precision.py); with ``auto`` and an int8 ``--onnx`` file, the file runs where int8 is the
fastest choice (VNNI, no AMX), else the PyTorch model of ``MODEL.WEIGHTS``.
The logic lives in :mod:`yolact_d2.demo.web`; this module is the command line and the page.
"""
import argparse
import json
import logging
import os
import shutil
import signal
import tempfile
import warnings

from ..data.datasets.synthetic import DEFAULT_SEED, render_synthetic_sample
from ..demo import resolve_metadata
from ..demo.web import (
    DEFAULT_MAX_PIXELS,
    TABLE_HEADERS,
    detection_rows,
    predict,
    read_upload,
    render,
    select,
    to_coco_results,
)
from ..export import build_predictor  # PyTorch or the ONNX file, per MODEL.YOLACT.PRECISION_TEST
from ..runtime.config_loading import setup_cfg
from ..runtime.reporting import run_cli
from ..utils.errors import UserError

logger = logging.getLogger("yolact_app")
NUM_EXAMPLES = 4
MIN_DRAWN_SIDE = 480  # smaller images are drawn enlarged (readable labels); the json keeps image pixels
CACHE_MAX_AGE_S = 600  # Gradio's copies of the images and downloads it served, kept this long


def get_parser(prog=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="YOLACT web demo (yolact_d2, Gradio): upload an image, see its masks, boxes and classes.",
        epilog="example: yolact-app --config-file configs/Synthetic/yolact_R_18_FPN_synthetic.yaml "
        "--opts MODEL.WEIGHTS output/synthetic/model_final.pth MODEL.DEVICE cpu",
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="path to a yolact_d2 config file")
    parser.add_argument("--port", type=int, default=7860, help="port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.3, metavar="T",
        help="initial position of the score-threshold slider (default: %(default)s)",
    )
    parser.add_argument("--onnx", metavar="FILE", help="run the network from this ONNX export (YolactONNXPredictor)")
    parser.add_argument(
        "--max-pixels", type=int, default=None, metavar="N", help="largest upload accepted, in pixels (default: 40e6)"
    )
    parser.add_argument(
        "--opts", default=[], nargs=argparse.REMAINDER, metavar="KEY VALUE",
        help="config overrides as KEY VALUE pairs, e.g. MODEL.WEIGHTS model.pth MODEL.DEVICE cpu (must come last)",
    )
    return parser


def check_port_free(port: int) -> None:
    """A port already in use is one line before the model is built (gradio reports it only at launch,
    with a traceback)."""
    import errno
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            cause = "is in use on 127.0.0.1" if e.errno == errno.EADDRINUSE else f"cannot be used ({e.strerror})"
            raise UserError(f"--port {port}", cause, "choose another --port") from None


def write_examples(folder: str, num: int = NUM_EXAMPLES):
    """Render synthetic-shapes images (no download, nothing committed) as PNGs; returns their paths."""
    import cv2

    paths = []
    for index in range(num):
        path = os.path.join(folder, f"synthetic_{index}.png")
        cv2.imwrite(path, render_synthetic_sample(DEFAULT_SEED, "demo", index, image_size=(320, 320))["image"])
        paths.append(path)
    return paths


class DemoApp:
    """The page's callbacks: plain methods over the cached prediction, no Gradio types inside."""

    def __init__(self, predictor, metadata, workdir: str, max_pixels=None):
        self.predictor, self.metadata, self.workdir = predictor, metadata, workdir
        self.class_names = list(metadata.get("thing_classes", []))
        self.max_pixels = max_pixels or DEFAULT_MAX_PIXELS

    def analyse(self, path: str, name: str):
        """Read and run one image: ``(cached state or None, status markdown)``."""
        try:
            bgr, notes = read_upload(path, self.max_pixels, name=name)
        except UserError as e:
            return None, f"**Error:** {e}"
        try:
            pred = predict(self.predictor, bgr)
        except Exception as e:  # noqa: BLE001 (report in the page, keep serving)
            logger.exception(f"inference failed on {name}")
            return None, f"**Error:** inference failed on '{name}': {type(e).__name__}: {e}"
        h, w = bgr.shape[:2]
        status = f"**{name}** ({w}x{h}): {len(pred)} detections, model time **{pred.seconds * 1000:.0f} ms**"
        if notes:
            status += "  \n" + "; ".join(notes)
        return {"rgb": bgr[:, :, ::-1], "pred": pred, "name": name}, status

    def redraw(self, state, threshold: float, classes, mask_alpha: float):
        """``(overlay RGB or None, table rows, download paths, summary)`` for the display settings."""
        if state is None:
            return None, [], None, ""
        pred = state["pred"]
        keep = select(pred, float(threshold), None if classes is None else [int(c) for c in classes])
        overlay = render(state["rgb"], pred, keep, self.metadata, mask_alpha=float(mask_alpha), min_side=MIN_DRAWN_SIDE)
        # One pair of download files, overwritten at every redraw (a folder per slider move grew the
        # temp folder by megabytes a move); Gradio serves a copy of each.
        folder = os.path.join(self.workdir, "downloads")
        os.makedirs(folder, exist_ok=True)
        stem = os.path.splitext(os.path.basename(state["name"]))[0] or "image"
        png, js = os.path.join(folder, f"{stem}_overlay.png"), os.path.join(folder, f"{stem}_detections.json")
        for old in os.listdir(folder):  # those of the previous image
            if os.path.join(folder, old) not in (png, js):
                os.remove(os.path.join(folder, old))
        from PIL import Image

        Image.fromarray(overlay).save(png)
        with open(js, "w") as f:
            json.dump(to_coco_results(pred, keep, image_id=1, metadata=self.metadata), f)
        summary = f"{len(keep)} of {len(pred)} detections shown (score > {float(threshold):.2f})"
        return overlay, detection_rows(pred, keep, self.class_names), [png, js], summary


def build_ui(app: DemoApp, examples, threshold: float, min_threshold: float):
    import gradio as gr

    # Gradio keeps a copy of every image and file it sends: delete those older than CACHE_MAX_AGE_S.
    with gr.Blocks(title="YOLACT demo (yolact_d2)", delete_cache=(CACHE_MAX_AGE_S, CACHE_MAX_AGE_S)) as page:
        gr.Markdown("# YOLACT instance segmentation\nUpload an image or pick an example; the sliders only redraw.")
        state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Upload an image", file_count="single", type="filepath", elem_id="upload")
                gallery = gr.Gallery(
                    value=[(p, os.path.basename(p)) for p in examples], label="Examples (synthetic shapes)",
                    columns=4, height=200, allow_preview=False, interactive=False, elem_id="examples",
                )
                status = gr.Markdown(elem_id="status")
                thr = gr.Slider(
                    min_threshold, 1.0, value=threshold, step=0.01, label="Score threshold", elem_id="threshold"
                )
                choices = [(name, i) for i, name in enumerate(app.class_names)]
                cls = gr.CheckboxGroup(choices, value=list(range(len(choices))), label="Classes", elem_id="classes")
                alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Mask opacity", elem_id="opacity")
            with gr.Column(scale=2):
                overlay = gr.Image(label="Detections", type="numpy", interactive=False, height=520, elem_id="overlay")
                summary = gr.Markdown(elem_id="summary")
                table = gr.Dataframe(headers=TABLE_HEADERS, interactive=False, elem_id="detections")
                files = gr.File(label="Downloads: overlay PNG, detections (COCO json, RLE masks)",
                                file_count="multiple", interactive=False, elem_id="downloads")
        controls, shown = [state, thr, cls, alpha], [overlay, table, files, summary]

        def on_upload(path, *display):
            if path is None:
                return (None, "") + app.redraw(None, *display)
            cached, message = app.analyse(path, os.path.basename(path))
            return (cached, message) + app.redraw(cached, *display)

        def on_example(evt: gr.SelectData, *display):
            cached, message = app.analyse(examples[evt.index], os.path.basename(examples[evt.index]))
            return (cached, message) + app.redraw(cached, *display)

        upload.upload(on_upload, [upload, thr, cls, alpha], [state, status, *shown])
        gallery.select(on_example, [thr, cls, alpha], [state, status, *shown])
        for control in (thr, cls, alpha):
            control.change(app.redraw, controls, shown)
    return page


class _StopOnSignals:
    """SIGTERM and SIGHUP (``kill``, the terminal closing) end the server like Ctrl-C, so that the
    temporary folder is removed; the previous handlers come back on exit."""

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __enter__(self):
        def stop(signum, frame):
            raise KeyboardInterrupt(signal.Signals(signum).name)

        self._previous = {s: signal.signal(s, stop) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        return False


def main(argv=None, prog=None) -> int:
    parser = get_parser(prog)
    args = parser.parse_args(argv)
    if len(args.opts) % 2:
        parser.error(f"--opts needs KEY VALUE pairs, got an odd number of items: {args.opts}")
    if not os.path.isfile(args.config_file):
        parser.error(f"config file not found: {args.config_file}")
    if not 0.0 <= args.confidence_threshold <= 1.0:
        parser.error(f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}")
    if not 1 <= args.port <= 65535:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    if args.max_pixels is not None and args.max_pixels < 1:  # 0 fell back to the default, < 0 refused every upload
        parser.error(f"--max-pixels must be >= 1, got {args.max_pixels}")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # a local demo sends nothing anywhere
    warnings.filterwarnings("ignore", category=FutureWarning, message=".*torch.jit.script.*")
    check_port_free(args.port)
    # Everything this run writes (examples, downloads, Gradio's copies: GRADIO_TEMP_DIR, read when gradio
    # is imported) goes into one folder, removed on exit: Ctrl-C, SIGTERM, SIGHUP or an error.
    workdir = tempfile.mkdtemp(prefix="yolact_app_")
    saved_temp_dir = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(workdir, "gradio")
    try:
        with _StopOnSignals():
            return serve(args, workdir)
    except KeyboardInterrupt as stop:  # a signal before the server runs
        print(f"YOLACT demo stopped ({stop or 'SIGINT'}) before it served", flush=True)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        if saved_temp_dir is None:
            os.environ.pop("GRADIO_TEMP_DIR", None)
        else:
            os.environ["GRADIO_TEMP_DIR"] = saved_temp_dir


def serve(args, workdir: str) -> int:
    """Build the model and the page, serve until Ctrl-C / SIGTERM / SIGHUP."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("yolact-app", "gradio is not installed", 'pip install "yolact_d2[app]"') from None
    from detectron2.utils.logger import setup_logger

    setup_logger(name="yolact_d2")
    setup_logger(name=logger.name, abbrev_name="app")
    cfg = setup_cfg(args.config_file, args.opts)  # one-line errors (YAML syntax, unknown keys)
    min_threshold = float(cfg.MODEL.YOLACT.SCORE_THRESH_TEST)
    predictor = build_predictor(cfg, args.onnx)  # auto: an int8 file where fastest; a bad file: ExportedModelError
    metadata = resolve_metadata(predictor.cfg, predictor.class_names)  # its class count may be the checkpoint's
    app = DemoApp(predictor, metadata, workdir, args.max_pixels)
    examples = write_examples(app.workdir)
    app.analyse(examples[0], "warm-up")  # the first run is slow (allocations, kernels): not the user's image
    page = build_ui(app, examples, max(args.confidence_threshold, min_threshold), min_threshold)
    page.queue(default_concurrency_limit=1)  # one inference at a time: the model is shared
    _, url, _ = page.launch(
        server_name="127.0.0.1", server_port=args.port, prevent_thread_lock=True, ssr_mode=False,
        allowed_paths=[app.workdir], quiet=True, show_error=True,
    )
    print(f"YOLACT demo running at {url} (Ctrl+C stops it)", flush=True)
    try:
        page.block_thread()  # returns on Ctrl-C (and on SIGTERM / SIGHUP: _StopOnSignals)
    except KeyboardInterrupt:
        pass
    finally:
        page.close()
    print("YOLACT demo stopped; its temporary files are removed", flush=True)
    return 0


def cli_main(argv=None, prog=None) -> int:
    """The command line: one ``error: ...`` line and status 1 for a known user error."""
    return run_cli(lambda: main(argv, prog), argv)
