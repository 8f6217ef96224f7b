# HER2Radiomics — developer entry points.  `make demo` and `make test` are the only two set-up
# commands a fresh machine needs; both build .venv first (once: the stamp file makes a second run
# skip the ~2.5 min install unless pyproject.toml, constraints.txt or this Makefile changed).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
# Threads: 2-core machines; keep BLAS from oversubscribing when joblib runs workers in parallel.
export OMP_NUM_THREADS ?= 1

.PHONY: install demo pacs-demo test lint bench install-check clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	# pyradiomics 3.0.1 (the reference engine the tests compare against; not a runtime need) is an
	# sdist whose setup.py imports numpy and versioneer: put the build tools in the venv first,
	# then build it without isolation (isolation hides numpy from it).
	$(PIP) install -q --upgrade pip
	$(PIP) install -q numpy setuptools wheel versioneer -c constraints.txt
	$(PIP) install -q --no-build-isolation pyradiomics==3.0.1 -c constraints.txt
	# torch pinned to the local CPU wheel: an unpinned torch pulls gigabytes of CUDA packages.
	$(PIP) install -q torch==2.13.0
	# [fast] too: the tests compare the optional compiled pass with the numpy path bit for bit
	$(PIP) install -q --no-build-isolation -e ".[dev,torch,pyradiomics,station,pacs,fast]" -c constraints.txt
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/her2radiomics demo --out demo-output

# A local Orthanc (Debian's orthanc + orthanc-dicomweb; loopback, free ports, a temporary
# folder) with the synthetic cohort's DICOM images, then `pacs run` over every study; Orthanc
# stops when it ends (PACS_DEMO_ARGS=--keep keeps it until Enter).
pacs-demo: $(STAMP)
	$(VENV)/bin/her2radiomics pacs demo --out pacs-demo-output $(PACS_DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

# ruff with the rules in pyproject.toml (the same hook runs on commit: .pre-commit-config.yaml).
lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) benchmarks/bench_extract.py
	$(PY) benchmarks/bench_segment.py
	$(PY) benchmarks/bench_icc.py
	$(PY) benchmarks/bench_startup.py
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_whole.py
	$(PY) benchmarks/bench_station.py
	$(PY) benchmarks/bench_models.py

# Installs the Slicer requirements from wheels only on pyenv's Python 3.12 (numpy 2.0.x) and 3.9
# (numpy 1.26.x), as Slicer 5.10+ and 5.8 would, and compares the features and the shipped
# bundle's prediction with this venv's: first the newest wheels, then (--floors) every
# requirement at exactly its floor in pyproject.toml. Minutes, so not part of `make test`;
# both run even when the first fails (summaries in build/install-check/).
install-check: $(STAMP)
	$(PY) scripts/check_install.py; newest=$$?; \
	$(PY) scripts/check_install.py --floors && exit $$newest

clean:
	rm -rf $(VENV) demo-output pacs-demo-output .pytest_cache build *.egg-info
