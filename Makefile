# coherence-diag developer entry points. `make demo` and `make test` work on a fresh machine
# that has only Python 3.11 and pip: the first target creates .venv and installs the project.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SAMPLE ?= sample_traces/burst-amplification.parquet
VALIDATION ?= ../shared/validation

.PHONY: all venv demo test lint lint-imports ruff mypy pytest bench bench-report bench-scale screenshot samples docs detection accuracy accuracy-sparse clean

all: test

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

## demo: create the environment and analyze a shipped sample trace
demo: $(STAMP)
	$(BIN)/coherence-diag analyze $(SAMPLE)

## test: the whole suite (import-layer contracts, ruff, mypy, pytest)
test: $(STAMP) lint pytest

## lint: the static checks alone: import-layer contracts, ruff, mypy (configured in pyproject.toml)
lint: lint-imports ruff mypy

lint-imports: $(STAMP)
	$(BIN)/lint-imports --no-cache

ruff: $(STAMP)
	$(BIN)/ruff check coherence_diag tests benchmarks scripts setup.py

mypy: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -q

## bench: simulate ~10M-row traces of three shapes (once); time, CPU and peak memory of analyze
## vs pl.read_parquet of the whole trace (median of 5 interleaved rounds)
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_analyze.py --rows 10000000 --all-shapes --report docs/benchmarks.md

## bench-report: `report` against `analyze` on the bench trace (CLI and library wall time, page size)
bench-report: $(STAMP)
	$(BIN)/python benchmarks/bench_report.py --rows 10000000 --report docs/benchmarks.md

## bench-scale: a 100M-row trace as 10 tiled shards (bounded memory), then normalize and analyze
## (in-process; each child killed past a 6 GiB cap; the work-unit runs with --memory-budget 6GiB,
## a budget for the whole run) with wall time and peak RSS (docs/scale.md)
bench-scale: $(STAMP)
	$(BIN)/python benchmarks/bench_scale.py --copies 10 --cap-gib 6 --report docs/benchmarks.md

## screenshot: the README's picture of a sample report (builds it, then headless Chromium takes the PNG)
screenshot: $(STAMP)
	$(BIN)/python scripts/screenshot.py --trace $(SAMPLE) --out docs/report-screenshot.png

## samples: regenerate sample_traces/ (one trace per scenario) and their labels
samples: $(STAMP)
	$(BIN)/python -m coherence_diag.simulate.samples sample_traces

## docs: regenerate the generated reference pages in docs/
docs: $(STAMP)
	$(BIN)/python -m coherence_diag.docgen docs

## detection: every scenario x 5 seeds with varied presentation, then the structural matrix
## (fleet shape x clients x dispatch x batch placement x telemetry x length); per-rule scores
detection: $(STAMP)
	$(BIN)/python benchmarks/detection.py --seeds 5 --matrix --reps 5 --report docs/detection.md

## accuracy: score the rules on the labelled validation suite (when present) into docs/accuracy-validation.md
accuracy: $(STAMP)
	@if [ -d "$(VALIDATION)" ]; then \
		$(BIN)/coherence-diag rules score "$(VALIDATION)" --format markdown -o docs/accuracy-validation.md --no-progress \
		&& echo "wrote docs/accuracy-validation.md"; \
	else \
		echo "$(VALIDATION) is absent: no labelled suite to score (nothing done)"; \
	fi

## accuracy-sparse: score sparser copies (no queue layer, no profiling counters, vLLM-like, scheduler
## only) of the labelled validation suite (when present) into docs/accuracy-sparse.md
accuracy-sparse: $(STAMP)
	@if [ -d "$(VALIDATION)" ]; then \
		$(BIN)/python benchmarks/sparse_suite.py "$(VALIDATION)" --report docs/accuracy-sparse.md \
		&& echo "wrote docs/accuracy-sparse.md"; \
	else \
		echo "$(VALIDATION) is absent: no labelled suite to score (nothing done)"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
