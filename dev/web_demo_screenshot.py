#!/usr/bin/env python
"""The web demo's screenshot for the docs (docs/images/web_demo.png, shown in docs/WEB_DEMO.md and
docs/GETTING_STARTED.md), taken with a trained model on an image of the synthetic validation set.

    python dev/web_demo_screenshot.py --config-file output/synthetic/config.yaml \\
        --opts MODEL.WEIGHTS output/synthetic/model_final.pth

It starts ``demo/app.py`` with that model on a free loopback port, opens it in headless Chromium
(Debian's ``chromium`` driven by Playwright's Python API, as tests/test_web_app.py does: never run
``playwright install``), uploads validation image ``--val-index`` of ``yolact_synthetic_val`` (generated
under ``$DETECTRON2_DATASETS`` if missing), waits for the overlay and the table and saves a full-page
screenshot to ``--output``. Needs the ``app`` extra (gradio) and playwright (``make setup``).
"""
import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from yolact_d2.runtime.reporting import run_cli  # noqa: E402
from yolact_d2.utils.errors import UserError  # noqa: E402

APP = os.path.join(REPO, "demo", "app.py")
DEFAULT_OUTPUT = os.path.join(REPO, "docs", "images", "web_demo.png")
CHROMIUM_ARGS = [  # the browser test's
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def get_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, help="the trained model's config (OUTPUT_DIR/config.yaml)")
    parser.add_argument("--dataset", default="yolact_synthetic_val",
                        help="where the image comes from (default %(default)s)")
    parser.add_argument("--val-index", type=int, default=0, help="which image of --dataset (default %(default)s)")
    parser.add_argument("--image", default=None, help="this image instead of one of --dataset")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="the PNG to write (default: docs/images/web_demo.png)")
    parser.add_argument("--confidence-threshold", type=float, default=0.3,
                        help="the score slider's position (demo/app.py's default %(default)s)")
    parser.add_argument("--chromium", default=os.environ.get("YOLACT_D2_CHROMIUM", "/usr/bin/chromium"),
                        help="the Chromium binary (default: $YOLACT_D2_CHROMIUM or /usr/bin/chromium)")
    parser.add_argument("--width", type=int, default=1400, help="browser window width (default %(default)s)")
    parser.add_argument("--height", type=int, default=1000, help="browser window height (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the app (default %(default)s)")
    parser.add_argument("--opts", nargs=argparse.REMAINDER, default=[],
                        help="demo/app.py's config overrides, e.g. MODEL.WEIGHTS model_final.pth (must come last)")
    return parser


def _validation_image(dataset: str, index: int) -> str:
    from detectron2.data import DatasetCatalog

    import yolact_d2  # noqa: F401  (registers the synthetic datasets)

    records = DatasetCatalog.get(dataset)
    if not 0 <= index < len(records):
        raise UserError(f"--val-index {index}", f"{dataset} has {len(records)} images")
    return records[index]["file_name"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_app(args, port: int, log):
    """demo/app.py on ``port``; returns its process once the page answers."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p))
    cmd = [sys.executable, APP, "--config-file", args.config_file, "--port", str(port),
           "--confidence-threshold", str(args.confidence_threshold), "--opts", *args.opts]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url, deadline = f"http://127.0.0.1:{port}/", time.time() + args.timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            lines = [line for line in log.read().splitlines() if line.strip()]
            raise UserError("demo/app.py", f"exited with status {proc.returncode}: {lines[-1] if lines else ''}")
        try:
            urllib.request.urlopen(url, timeout=5)
            return proc, url
        except OSError:
            if time.time() > deadline:
                proc.terminate()
                raise UserError("demo/app.py", f"did not answer at {url} within {args.timeout:g} s") from None
            time.sleep(1)


def take_screenshot(args) -> str:
    for module in ("gradio", "playwright"):
        try:
            __import__(module)
        except ImportError:
            raise UserError(f"Python package {module!r}", "is not installed", fix="make setup") from None
    if not (os.path.isfile(args.chromium) and os.access(args.chromium, os.X_OK)):
        raise UserError(f"--chromium {args.chromium}", "no such executable", fix="apt-get install chromium")
    from playwright.sync_api import sync_playwright

    image = args.image or _validation_image(args.dataset, args.val_index)
    work = tempfile.mkdtemp(prefix="web_demo_screenshot_")
    try:
        with open(os.path.join(work, "app.log"), "w+") as log:
            proc, url = _start_app(args, _free_port(), log)
            try:
                with sync_playwright() as p:
                    context = p.chromium.launch_persistent_context(
                        os.path.join(work, "profile"), executable_path=args.chromium, args=CHROMIUM_ARGS,
                        headless=True, viewport={"width": args.width, "height": args.height},
                    )
                    page = context.new_page()
                    page.goto(url)
                    page.set_input_files("#upload input[type=file]", image)
                    name = os.path.basename(image)
                    page.wait_for_function("t => document.querySelector('#status').innerText.includes(t)",
                                           arg=f"{name} (", timeout=args.timeout * 1000)
                    page.wait_for_selector("#overlay img", timeout=args.timeout * 1000)
                    page.wait_for_function("() => document.querySelector('#summary').innerText.trim().length > 0",
                                           timeout=args.timeout * 1000)
                    status = page.inner_text("#status").strip()
                    summary = page.inner_text("#summary").strip()
                    shown = re.match(r"(\d+) of", summary)
                    if shown and int(shown.group(1)) > 0:  # the table renders after the summary: wait for its rows
                        page.wait_for_function(
                            "() => Number(document.querySelector('#detections [role=grid]')"
                            "?.getAttribute('aria-rowcount')) > 1", timeout=args.timeout * 1000)
                    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
                    page.screenshot(path=args.output, full_page=True)
                    context.close()
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"image: {image}")
    print(f"page: {' '.join(status.split())} | {' '.join(summary.split())}")
    print(f"screenshot: {os.path.abspath(args.output)}")
    return args.output


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    return run_cli(lambda: take_screenshot(args) and 0)


if __name__ == "__main__":
    sys.exit(main())
