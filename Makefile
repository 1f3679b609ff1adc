# Quick start: `make demo` (package + bench + gate EfficientNet-Lite0, no phone
# needed) and `make test`. Both create .venv and install everything.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.setup-stamp
OUT     ?= demo-out

.PHONY: setup system-deps demo test test-fast lint format bench clean

setup: $(STAMP)

# torch first, pinned: any spec that admits a newer torch pulls GBs of CUDA wheels.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Real peers the tests drive: Debian's adb, PostgreSQL, Chromium, kotlinc (compiles android_app's
# platform-independent Kotlin to check it against runners/stats.py), aapt + android-framework-res
# (compile android_app's manifest and resources against the Android framework's), and qemu-user
# (runs ONNX Runtime as an AVX2-only CPU, so int8 checks see the saturating kernel on any x86 host).
# Installed only when missing; needs root (CI runs as root).
system-deps:
	@missing=""; \
	command -v adb >/dev/null || missing="$$missing adb"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v kotlinc >/dev/null || missing="$$missing kotlin"; \
	command -v qemu-x86_64 >/dev/null || missing="$$missing qemu-user"; \
	command -v aapt >/dev/null || missing="$$missing aapt"; \
	test -f /usr/share/android-framework-res/framework-res.apk || missing="$$missing android-framework-res"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not root: tests that need$$missing will be skipped (apt-get install$$missing)"; fi; \
	fi

demo: setup
	@# exit 1 = an artifact missed its verification tolerance; everything is still written and the
	@# table names it, so the demo goes on to show the rest. Any other failure stops here.
	$(BIN)/mpk package --model efficientnet-lite0 --quantize none,int8 \
	    --backends executorch,onnx,coreml --out $(OUT)/package || [ $$? -eq 1 ]
	$(BIN)/mpk bench $(OUT)/package/manifest.json --devices devices.yaml --fallback emulator --profile \
	    --out $(OUT)/bench
	$(BIN)/mpk gate $(OUT)/bench/results.json --budgets devices.yaml --report $(OUT)/report

test: setup system-deps
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow and not device and not macos"

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python bench/package_speed.py

clean:
	rm -rf $(OUT) .mpk-cache build *.egg-info
