# The README's two commands:
#   make train-synthetic   -> setup, then train + evaluate on the bundled synthetic dataset, with visualisations
#   make test              -> setup, then the test suite
PYTHON ?= python3
OUTPUT ?= output/synthetic

.PHONY: setup test train-synthetic

setup:
	PYTHON=$(PYTHON) bash tools/setup_env.sh

test: setup
	$(PYTHON) -m pytest -q tests

train-synthetic: setup
	$(PYTHON) train_net.py --config-file configs/Synthetic/yolact_R_18_FPN_synthetic.yaml --num-vis 8 OUTPUT_DIR $(OUTPUT)
