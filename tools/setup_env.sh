#!/usr/bin/env bash
# Installs everything yolact_d2 needs into the current Python environment, idempotently.
#
#   bash tools/setup_env.sh            # or: make setup
#
# Steps (each skipped when already satisfied, so a second run takes a few seconds):
#   1. PyTorch + torchvision, if they cannot be imported (install the build for your platform/CUDA
#      yourself first if you want a specific one; this step then does nothing).
#   2. Detectron2, if it cannot be imported. Official detectron2 is not on PyPI; we install the
#      pure-Python sources of the `sal-detectron2` wheel (a build of detectron2 main) without its
#      compiled extension, which was built for Python 3.10 only. A user with a source build of
#      detectron2 keeps theirs (see docs/INSTALL.md, "The official detectron2").
#   3. yolact_d2 itself (`pip install -e ".[dev,app,export]"`, pyproject.toml) with its runtime, test,
#      web-demo and ONNX-export dependencies (dev includes submitit, for the cluster
#      launcher's tests), if it is not installed from this checkout or a dependency
#      is missing; when only the checkout differs (a new clone), just the editable install is re-pointed
#      (`--no-deps`).
#   4. Debian's chromium for the web demo's browser test, if missing (root + apt only; without it
#      tests/test_web_app.py skips with a loud reason).
set -euo pipefail
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."
here=$(pwd -P)

say() { echo "[setup] $*"; }

# One interpreter start reports what is missing (run from / so this checkout does not shadow an install).
status() {
    (cd / && "$PYTHON" - <<'PY' 2>/dev/null
import importlib, importlib.util, os
def ok(*mods):
    try:
        for m in mods:
            importlib.import_module(m)
        return True
    except Exception:
        return False
print("torch" if ok("torch", "torchvision") else "")
print("detectron2" if ok("detectron2") else "")
deps = ok("detectron2.engine", "pytest", "pytest_timeout", "cv2", "pycocotools", "tensorboard", "fvcore")
try:
    import yolact_d2
    where = os.path.dirname(os.path.dirname(os.path.realpath(yolact_d2.__file__)))
except Exception:
    where = ""
print(where if deps else "")
# the extras the tests use: [app] (gradio), [export] (onnx, onnxscript, onnxruntime), [dev] (the rest)
extras = ("gradio", "onnx", "onnxscript", "onnxruntime", "playwright", "faster_coco_eval", "ruff", "submitit")
print("extras" if all(importlib.util.find_spec(m) for m in extras) else "")
PY
    ) || true
}

mapfile -t state < <(status)
if [ "${state[0]:-}" != "torch" ]; then
    say "installing torch + torchvision"
    "$PYTHON" -m pip install --quiet "torch>=2.1" "torchvision>=0.16"
fi

if [ "${state[1]:-}" != "detectron2" ]; then
    say "installing detectron2 (pure-Python sources of sal-detectron2==0.7.2)"
    site=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    tmp=$(mktemp -d)
    "$PYTHON" -m pip install --quiet --no-deps --only-binary=:all: --python-version 3.10 \
        --implementation cp --platform manylinux2014_x86_64 --platform linux_x86_64 \
        --target "$tmp" sal-detectron2==0.7.2
    # The compiled extension targets CPython 3.10; detectron2 works without it on CPU
    # (deformable/rotated ops and the C++ COCO eval are then unavailable; pycocotools is used).
    rm -f "$tmp"/detectron2/_C*.so
    cp -r "$tmp"/detectron2 "$site"/
    rm -rf "$tmp"
fi

if [ -n "${state[2]:-}" ] && [ "${state[2]}" != "$here" ] && [ "${state[3]:-}" = "extras" ]; then
    # Every dependency is there and only the package points at another checkout (a new clone):
    # re-point it without pip resolving the dependencies again (seconds instead of about a minute).
    say "pointing the editable yolact_d2 install at $here"
    start=$SECONDS
    if "$PYTHON" -m pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null; then
        state[2]=$here
        say "took $((SECONDS - start)) s"
    fi
fi

if [ "${state[2]:-}" != "$here" ] || [ "${state[3]:-}" != "extras" ]; then
    say "installing yolact_d2 (editable, from $here) and its dependencies"
    start=$SECONDS
    "$PYTHON" -m pip install --quiet -e ".[dev,app,export]"
    say "pip install took $((SECONDS - start)) s"
fi

if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing chromium (apt) for tests/test_web_app.py"
    start=$SECONDS
    if { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null; then
        say "apt-get install chromium took $((SECONDS - start)) s"
    else
        say "WARNING: could not install chromium: the browser test will be skipped"
    fi
fi
say "ok: yolact_d2 from $here, detectron2 and torch importable"
