# Two entry points (see README): `make run` and `make test`. Both create .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EDGESEG := $(VENV)/bin/edgeseg
OUT ?= out

.PHONY: setup run test test-slow check clean export-table upsample-cost int8-table tflite-breakdown \
	estimate-validation lvt-segformer-table sweep-example sweep-example-ray report-screenshots

# torch is installed first and pinned: the local CPU wheel. Anything that replaced it would pull CUDA builds.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test]'
	$(PY) -c "import torch; v = torch.__version__; assert v.startswith('2.13.0'), f'torch {v} replaced the pinned 2.13.0'"
	touch $@

setup: $(VENV)/.installed

# The main job on the bundled defaults: EfficientViT-B0 with its shipped CamVid weights (the default --weights) on
# the bundled sample: evaluate, predict, export to ONNX and TFLite with parity against PyTorch and backend lint,
# bench those artifacts on this machine, and gate them with `edgeseg check` (no config: the absolute gates).
run: setup
	$(EDGESEG) models
	$(EDGESEG) eval --model efficientvit-b0 --json $(OUT)/eval-sample.json
	$(EDGESEG) predict --model efficientvit-b0 \
		--images edgeseg/assets/sample/camvid/val/images --out $(OUT)/predict --overlay
	$(EDGESEG) export --model efficientvit-b0 --target onnx-fp32 --out $(OUT)/artifacts
	$(EDGESEG) export --model efficientvit-b0 --target tflite-fp16 --out $(OUT)/artifacts
	$(EDGESEG) bench --device host --artifacts-dir $(OUT)/artifacts --report $(OUT)/bench --max-seconds 5
	cd $(OUT) && $(abspath $(EDGESEG)) check

test: setup
	$(PY) -m pytest -q

test-slow: setup  # whole-model conversions (minutes each here)
	$(PY) -m pytest -q -m slow

# The CI regression gate on B0's ONNX/TFLite exports (also run by .ci/run); see README "Use in CI".
check: setup
	mkdir -p $(OUT)
	$(EDGESEG) check --config .ci/edgeseg.yaml --baseline .ci/baseline.json \
		--junit $(OUT)/check-junit.xml --markdown $(OUT)/check.md

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache *.egg-info

# Benchmark (not a test): export B0 with its CamVid weights to every available target, parity on 20 val images.
export-table: setup
	$(PY) benchmarks/export_table.py --model efficientvit-b0 --weights camvid \
		--parity-data ../shared/data/camvid --parity-images 20 --out $(OUT)/artifacts \
		--json $(OUT)/export-table.json

# Benchmark (not a test): mIoU of the head-upsampling variants (reference bicubic, exact conv, bilinear) on CamVid val.
upsample-cost: setup
	$(PY) benchmarks/upsample_cost.py --model efficientvit-b0 --weights camvid \
		--data ../shared/data/camvid --json $(OUT)/upsample-cost.json

# Benchmark (not a test): onnx-fp32 vs onnx-int8 (minmax, percentile): CamVid val mIoU and side-by-side ORT latency.
int8-table: setup
	$(PY) benchmarks/int8_table.py --model efficientvit-b0 --data ../shared/data/camvid --out $(OUT)/int8 \
		--json $(OUT)/int8-b0.json

# Benchmark (not a test): B0 TFLite time by op family (attention core, HardSwish, depthwise taps, the rest), fp32
# against int8, by timing-only ablations side by side (XNNPACK's per-op times are not exposed to Python).
tflite-breakdown: setup
	$(PY) benchmarks/tflite_breakdown.py --model efficientvit-b0 --calib-data ../shared/data/camvid \
		--json $(OUT)/tflite-breakdown-b0.json

# Latency estimator validation: leave-one-out on the published EfficientViT-Seg figures and on host measurements
estimate-validation: setup
	$(PY) benchmarks/estimate_validation.py --json $(OUT)/estimate_validation.json

# Benchmark (not a test): LVT and SegFormer-B0 on every target at 384x480 with the short CPU-trained checkpoints
# (no shipped weights; LVT_WEIGHTS / SEGFORMER_WEIGHTS override): parity on 5 val images, lint and max rank,
# latency here (ORT / LiteRT, round-robin per model, then both models in one pass), val mIoU per artifact on the first 20 val images beside PyTorch fp32;
# INT8 calibrated on 8 train images.
LVT_WEIGHTS ?= runs/lvt-camvid/best.pt
SEGFORMER_WEIGHTS ?= runs/segformer-b0-camvid/best.pt
TRAIN_SHORT = --data ../shared/data/camvid --epochs 2 --limit-train 96 --batch-size 4 --crop 128x128 \
	--warmup-epochs 0.2 --threads 1 --limit-val 5
lvt-segformer-table: setup
	for pair in lvt=$(LVT_WEIGHTS) segformer-b0=$(SEGFORMER_WEIGHTS); do \
		m=$${pair%%=*}; w=$${pair#*=}; \
		test -f $$w || { echo "$$w not found: train it (edgeseg train --model $$m $(TRAIN_SHORT) --out $$(dirname $$w)) or set the weights variable"; exit 2; }; \
		$(PY) benchmarks/export_table.py --model $$m --weights $$w --size 384x480 \
			--parity-data ../shared/data/camvid --parity-images 5 --calib-size 8 --max-miou-drop off \
			--miou-data ../shared/data/camvid --miou-images 20 \
			--latency --runs 9 --out $(OUT)/artifacts --json $(OUT)/table-$$m.json || exit 1; \
	done
	# both models' artifacts timed again in one round-robin pass: the two runs above saw different loads
	$(PY) benchmarks/time_artifacts.py $(OUT)/artifacts/lvt-camvid-onnx-*-384x480 \
		$(OUT)/artifacts/lvt-camvid-tflite-*-384x480 $(OUT)/artifacts/segformer-b0-camvid-onnx-*-384x480 \
		$(OUT)/artifacts/segformer-b0-camvid-tflite-*-384x480 --runs 9 --json $(OUT)/latency-lvt-segformer.json

# The example sweep matrix (B0 + B1, 5 targets, 4 device profiles) in this process, then the same file on a
# local Ray cluster with two worker CPUs; sweep_compare checks both give the same table (latencies: ratios).
sweep-example: setup
	$(EDGESEG) sweep --matrix examples/sweep.yaml --out $(OUT)/sweep

sweep-example-ray: setup
	RAY_USAGE_STATS_ENABLED=0 $(VENV)/bin/ray start --head --num-cpus 2 --disable-usage-stats
	$(EDGESEG) sweep --matrix examples/sweep.yaml --out $(OUT)/sweep-ray --cluster auto; \
		rc=$$?; $(VENV)/bin/ray stop; exit $$rc
	$(PY) benchmarks/sweep_compare.py $(OUT)/sweep $(OUT)/sweep-ray

# Docs pages from the benchmark JSON files that exist (out/*.json, each with its provenance record):
# docs/generated/<name>.md per file. Standard library only: no venv needed.
.PHONY: docs
docs:
	@set -e; files="$(wildcard $(OUT)/*.json)"; \
	if [ -z "$$files" ]; then echo "no $(OUT)/*.json yet: run a benchmark target (e.g. make int8-table) first"; exit 0; fi; \
	mkdir -p docs/generated; \
	for f in $$files; do python3 benchmarks/render_docs.py "$$f" --out "docs/generated/$$(basename "$$f" .json).md"; done

# Look at report.html as a reader does: screenshots at desktop (1400 px) and phone (420 px) width in a real headless
# Chromium (Debian: apt-get install chromium-headless-shell). REPORT: the page (default: `make run`'s bench report).
REPORT ?= $(OUT)/bench/report.html
SCREENSHOT_HEIGHT ?= 4000
CHROMIUM ?= $(shell command -v chromium-headless-shell || command -v chromium || command -v chromium-browser)
report-screenshots:
	@test -f "$(REPORT)" || { echo "$(REPORT) not found: run make run, or edgeseg bench ... --report DIR and REPORT=DIR/report.html"; exit 2; }
	@test -n "$(CHROMIUM)" || { echo "no headless Chromium found: apt-get install chromium-headless-shell"; exit 2; }
	mkdir -p $(OUT)/screenshots
	for w in 1400 420; do \
		"$(CHROMIUM)" --headless --no-sandbox --hide-scrollbars --window-size=$$w,$(SCREENSHOT_HEIGHT) \
			--screenshot="$(abspath $(OUT))/screenshots/report-$$w.png" "file://$(abspath $(REPORT))" || exit 1; \
	done
	@echo "wrote $(OUT)/screenshots/report-1400.png and report-420.png"
