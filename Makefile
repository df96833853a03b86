# Two entry points (see README): `make run` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EDGESEG := $(VENV)/bin/edgeseg
OUT ?= out

.PHONY: setup run test clean

# torch is installed first and pinned: the local CPU wheel. Anything that replaced it would pull CUDA builds.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	$(PY) -c "import torch; v = torch.__version__; assert v.startswith('2.13.0'), f'torch {v} replaced the pinned 2.13.0'"
	touch $@

setup: $(VENV)/.installed

# The main job on the bundled defaults: EfficientViT-B0 with its shipped CamVid weights on the bundled sample.
run: setup
	$(EDGESEG) models
	$(EDGESEG) eval --model efficientvit-b0 --weights camvid --json $(OUT)/eval-sample.json
	$(EDGESEG) predict --model efficientvit-b0 --weights camvid \
		--images edgeseg/assets/sample/camvid/val/images --out $(OUT)/predict --overlay

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache *.egg-info
