# Two commands do all setup: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint sysdeps clean

# System packages: espeak-ng (synthetic speech) and PortAudio (microphones). Installed where root and
# apt-get allow; otherwise one line says what to install. Nothing else depends on them.
sysdeps:
	@if command -v espeak-ng >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q libportaudio; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng libportaudio2 >/dev/null) \
		|| echo "hint: apt-get could not install espeak-ng libportaudio2; synthetic speech and --mic need them"; \
	else echo "hint: install espeak-ng and libportaudio2 (e.g. sudo apt-get install espeak-ng libportaudio2) for synthetic speech and --mic"; fi

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
