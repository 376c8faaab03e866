# SpecVision: `make demo` runs every stage end to end on a synthetic dataset made here (no network):
# yes / no / unknown (other words) / silence (noise crops);
# `make test` runs the test suite. Both create .venv and install the pinned set on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DEMO   := data/demo_synth
SHARED      := ../shared/data
SHARED_REAL := $(SHARED)/speech_commands_real
REAL_DATA   := $(SHARED_REAL) $(SHARED)/speech_commands_more $(SHARED)/speech_commands_other_words

.PHONY: setup demo test bench openset seven real clean

setup: $(STAMP)

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[test,export,tensorboard,live]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m preprocess.synth --words yes no --per-word 300 --unknown 300 --background 60 --out $(DEMO) --seed 0
	$(PY) -m preprocess --source folder --root $(DEMO) --words yes no --unknown-pct 25 --silence-pct 25 --out images
	$(PY) -m train --images images --out models/demo
	$(PY) -m train.evaluate --model models/demo/model.pt --images images/test
	$(PY) -m train.predict --model models/demo/model.pt $(DEMO)/yes/$$(ls $(DEMO)/yes | head -n 1)
	$(PY) -m train.report models/demo --out report/
	$(PY) -m preprocess.audit images --out audit/ --model models/demo/model.pt --folds 3 --fold-epochs 5

test: $(STAMP)
	$(PY) -m pytest -n auto --maxprocesses 4

bench: $(STAMP)
	$(PY) -m preprocess --source folder --root $(SHARED_REAL) --out images_real
	$(PY) -m bench.preprocess_speed $(SHARED_REAL)
	$(PY) -m bench.cnnet --images images_real

# The open-set benchmark on every real folder (one fold: about an hour on 2 cores; FOLDS=5 for all)
FOLDS ?= 1
openset: $(STAMP)
	$(PY) -m train.openset --out openset --data $(REAL_DATA) --folds $(FOLDS)

# Seven real words, the default model against CNNet side by side (15 epochs: cnnet needs minutes an epoch)
seven: $(STAMP)
	$(PY) -m bench.seven_words --data $(SHARED_REAL) $(SHARED)/speech_commands_more --out seven --epochs 15

# The demo model (synthetic speech only) on every real clip in ../shared: yes/no right, rejected, other words
real: $(STAMP)
	$(PY) -m bench.real_speech --model models/demo/model.pt --data $(REAL_DATA)

clean:
	rm -rf images/train images/val images/test images/render.json images/manifest.csv images/.openworld models/demo report audit data
