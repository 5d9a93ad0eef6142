# Two commands do all setup: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint sysdeps clean

# System packages: speech engines for the training data (espeak-ng, festival and its English voices,
# flite), PortAudio (microphones), Chromium (the server's real-browser test), a C compiler (the fused
# CPU streaming step, kernels/cpu_step.c; without one the PyTorch path runs) and ffmpeg (transcribing m4a,
# mp4, webm and Opus, which libsndfile does not read). Installed where root and apt-get allow; otherwise
# one line says what to install. Tests that need one skip with the reason.
SYSPKGS := espeak-ng libportaudio2 chromium festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts flite gcc \
	ffmpeg
sysdeps:
	@if command -v espeak-ng >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 && command -v festival >/dev/null 2>&1 \
		&& command -v flite >/dev/null 2>&1 && command -v cc >/dev/null 2>&1 && command -v ffmpeg >/dev/null 2>&1 \
		&& ldconfig -p 2>/dev/null | grep -q libportaudio; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSPKGS) >/dev/null) \
		|| echo "hint: apt-get could not install $(SYSPKGS); speech data, --mic, the browser test, the fast CPU step and m4a/webm input need them"; \
	else echo "hint: install $(SYSPKGS) (e.g. sudo apt-get install ...) for speech data, --mic, the browser test, the fast CPU step and m4a/webm input"; fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: sysdeps $(STAMP)
	$(BIN)/swa-stream demo

test: sysdeps $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info
