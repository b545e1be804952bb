# One-command set-up: `make demo` and `make test` create .venv and install on first use.
PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints.txt
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_CONSTRAINT_FLAG := $(if $(CONSTRAINTS),-c $(CONSTRAINTS),)

export QT_QPA_PLATFORM ?= offscreen

.PHONY: install test demo lint format bench bench-install peers pretrained clean xvfb

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet $(PIP_CONSTRAINT_FLAG) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP) xvfb
	$(BIN)/python -m pytest

# A virtual X server for tests/test_preview_screen.py (the OpenGL preview on a real
# display; the rest of the suite runs on QT_QPA_PLATFORM=offscreen, where OpenGL canvases
# are blank). Debian packages: Xvfb and xvfb-run, Mesa's llvmpipe GL, and what Qt's xcb
# platform plugin links. Installed with apt-get as root (or with password-less sudo) when
# one is missing; otherwise this says how, and the screen test skips (fails under CI=1).
XVFB_PACKAGES := xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-cursor0 \
	libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
	libxcb-shape0 libxcb-xkb1

xvfb:
	@if command -v xvfb-run >/dev/null 2>&1 && \
		{ ! command -v dpkg >/dev/null 2>&1 || dpkg -s $(XVFB_PACKAGES) >/dev/null 2>&1; }; then \
		exit 0; \
	elif ! command -v apt-get >/dev/null 2>&1; then \
		echo "make xvfb: no apt-get here; install Xvfb (xvfb-run) and Mesa GL yourself."; \
	elif [ "$$(id -u)" = 0 ]; then \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(XVFB_PACKAGES); } || \
			echo "make xvfb: apt-get failed (offline?); the screen test needs xvfb-run."; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then \
		{ sudo -n apt-get update -qq && sudo -n env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends $(XVFB_PACKAGES); } || \
			echo "make xvfb: apt-get failed (offline?); the screen test needs xvfb-run."; \
	else \
		echo "make xvfb: not root and no password-less sudo; to run the screen test:"; \
		echo "  sudo apt-get install -y --no-install-recommends $(XVFB_PACKAGES)"; \
	fi

demo: $(STAMP)
	$(BIN)/sn2n-live demo --out demo-output

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts examples
	$(BIN)/ruff format --check src tests benchmarks scripts examples

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks scripts examples
	$(BIN)/ruff check --fix src tests benchmarks scripts examples

# The shipped pretrained lite model (scripts/pretrain.py; ~25 min on 2 CPU cores, run alone).
pretrained: $(STAMP)
	$(BIN)/python scripts/pretrain.py --minutes 25

# Fidelity against the peers: benchmarks/peers.py (`make bench-install peers`).
bench: $(STAMP)
	$(BIN)/python benchmarks/throughput.py
	$(BIN)/python benchmarks/engine_throughput.py --quick

# Peers for benchmarks/peers.py (CAREamics Noise2Void, BM3D): the `bench` extra, never
# runtime dependencies, and `make test` does not need them. `pip install '.[bench]'` works
# where a torchvision matching torch exists; here it does not: careamics 0.3.5 pins
# torchvision<=0.26, whose wheels need torch 2.11, and the only torchvision wheels for torch
# 2.13 on this index are CUDA builds that fail to load on CPU torch. So careamics goes in
# with --no-deps, then its other requirements (microssim is skipped: LVAE metrics only).
# careamics imports torchvision only for its LVAE and BioImage-export code; peers.py puts
# an import-only stub (benchmarks/_stubs/torchvision) on sys.path when none is installed,
# after lightning and torchmetrics have looked for it, so nothing else sees the stub.
# careamics also caps pydantic<=2.14.1 and pyyaml<=6.0.3; N2V trains and predicts with the
# versions `make install` resolves (pydantic 2.14.4), so they stay (`pip check` lists the
# caps; bioimageio-core's model export, unused here, is what fails on pydantic 2.14.4).
# The last step trains N2V and runs BM3D on a tiny array (~30 s).
BENCH_REQUIREMENTS := 'lightning>=2.2,<=2.6.6,!=2.6.2,!=2.6.3' 'torchmetrics>0.7,<1.9' \
	'bioimageio-core>=0.9,<=0.11.0' 'psutil<=7.2.2' 'bm3d>=4.0.3'

bench-install: $(STAMP)
	$(BIN)/python -m pip install --quiet $(PIP_CONSTRAINT_FLAG) --no-deps 'careamics==0.3.5'
	$(BIN)/python -m pip install --quiet $(PIP_CONSTRAINT_FLAG) $(BENCH_REQUIREMENTS)
	$(BIN)/python benchmarks/peers.py --self-test

# The full peer comparison: about 2 h on 2 cores with the defaults (6 conditions x 4 trained
# methods x 4 min, plus BM3D). Run it on a quiet machine; it writes benchmarks/results and
# the table in docs/benchmarks.md. PEERS_ARGS="--modalities sim --photons 20" to narrow it.
PEERS_ARGS ?= --write-docs
peers: $(STAMP)
	$(BIN)/python benchmarks/peers.py $(PEERS_ARGS)

clean:
	rm -rf $(VENV) demo-output
