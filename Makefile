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
	$(VENV)/bin/dlc data assets
	@$(MAKE) --no-print-directory debian-packages
	touch $(STAMP)

# Debian packages, installed when we are root or have sudo; otherwise a note says what to ask for.
# $(call apt-install,PACKAGES)
define apt-install
	@if dpkg -s $(1) >/dev/null 2>&1; then true; \
	elif [ "$$(id -u)" = 0 ]; then (apt-get update -qq || true) && apt-get install -y -qq $(1); \
	elif sudo -n true 2>/dev/null; then (sudo apt-get update -qq || true) && sudo apt-get install -y -qq $(1); \
	else echo "NOTE: cannot install $(1) (not root, no sudo): ask an admin to 'apt-get install $(1)'"; fi
endef

# The offline datasets come from Debian packages; without them `dlc data list` says what to install.
DEB_PACKAGES := fonts-noto-color-emoji unicode-data dataset-fashion-mnist fonts-dejavu-core fonts-dejavu-extra
.PHONY: debian-packages
debian-packages:
	$(call apt-install,$(DEB_PACKAGES))

# Opens the demo's report in headless Chromium (Debian's chromium) at a phone's size: every picture
# must load and every table render; writes a full-page screenshot beside it (report-phone.png).
REPORT ?= runs/demo/report.html
.PHONY: report-check
report-check: install
	$(call apt-install,chromium)
	$(PY) -m dlc.report $(REPORT)

data: install
	$(VENV)/bin/dlc data prepare emoji

# The paper-scale recipe rehearsed: the README's ImageNet commands in order at a miniature size, each
# stage killed and resumed (benchmarks/rehearse.py; JSON in benchmarks/results/rehearse_cpu.json).
.PHONY: rehearse
rehearse: install
	$(PY) benchmarks/rehearse.py $(REHEARSE_ARGS)

lint: install
	$(VENV)/bin/ruff check dlc train sample tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
