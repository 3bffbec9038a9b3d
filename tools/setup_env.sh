#!/usr/bin/env bash
# Installs everything yolact_d2 needs into the current Python environment, idempotently.
#
#   bash tools/setup_env.sh            # or: make setup
#
# Steps (each skipped when already satisfied, so a second run takes a few seconds):
#   1. PyTorch + torchvision, if `import torch, torchvision` fails (install the build for your
#      platform/CUDA yourself first if you want a specific one; this step then does nothing).
#   2. Detectron2, if `import detectron2` fails. Official detectron2 is not on PyPI; we install the
#      pure-Python sources of the `sal-detectron2` wheel (a build of detectron2 main) without its
#      compiled extension, which was built for Python 3.10 only. A user with a source build of
#      detectron2 keeps theirs (see README, "Installing the official detectron2").
#   3. yolact_d2 itself (`pip install -e .`) with its runtime and test dependencies.
set -euo pipefail
PYTHON=${PYTHON:-python3}
cd "$(dirname "$0")/.."

say() { echo "[setup] $*"; }

if ! "$PYTHON" -c "import torch, torchvision" 2>/dev/null; then
    say "installing torch + torchvision"
    "$PYTHON" -m pip install --quiet "torch>=2.1" "torchvision>=0.16"
fi

if ! "$PYTHON" -c "import detectron2" 2>/dev/null; then
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

if ! "$PYTHON" -c "import yolact_d2, detectron2.engine, pytest, onnxruntime" 2>/dev/null \
        || [ setup.py -nt "$("$PYTHON" -c 'import yolact_d2,os;print(os.path.dirname(yolact_d2.__file__))' 2>/dev/null || echo setup.py)" ]; then
    say "installing yolact_d2 and its dependencies"
    "$PYTHON" -m pip install --quiet -e ".[dev]"
fi
say "ok: $("$PYTHON" -c 'import torch, detectron2, yolact_d2; print("torch", torch.__version__, "| detectron2", detectron2.__version__, "| yolact_d2", yolact_d2.__version__)')"
