# The two commands a user needs: `make repro` and `make test`. Everything runs inside .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1
export PYTHONHASHSEED := 0
# Byte-identical artefacts across x86 CPUs: PyTorch (ATen, oneDNN) and the OpenBLAS that numpy and scipy ship pick
# kernels by instruction set, and an AVX-512 machine sums in another order than an AVX2 one: its embeddings,
# prototypes and everything after them differed from dvc.lock (written on an AVX2 machine) in the last bits, so DVC
# reran every stage. Pinned to AVX2 (which every x86 CPU of the last decade has), an AVX-512 AMD EPYC reproduced
# every DVC output in dvc.lock byte for byte (docs/reproducibility.md). The libraries read these when they load,
# so they must be in the environment before Python starts: override them on the command line
# (ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=ALL OPENBLAS_CORETYPE=) for the machine's widest kernels.
ifeq ($(shell uname -m),x86_64)
export ATEN_CPU_CAPABILITY ?= avx2
export ONEDNN_MAX_CPU_ISA ?= AVX2
export OPENBLAS_CORETYPE ?= Haswell
endif
# dvc runs stage commands (papermill, python) in a shell: they must resolve to the venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help install repro test test-all lint lockcheck dryrun-ci format lock sweep world mismatch calibration bench lab clean-venv book dryrun-real lesson seeds tm-curve

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

# The venv is rebuilt when the lock file or pyproject changes; the stamp records a finished install.
# A new .venv takes about 6.7 GB (torch 2.14.1 is a CUDA build); check the disk first rather than fail mid-install.
MIN_FREE_GB ?= 8
$(BIN)/.installed: requirements.lock pyproject.toml
	@if [ -L $(VENV) ]; then echo "make install: .venv is a link to $$(readlink -f $(VENV)); installing would point that environment's editable install and kernel at this checkout. Use it as it is (make -o $(BIN)/.installed <target>) or replace the link with a venv of its own." >&2; exit 1; fi
	@test -x $(BIN)/python || { free=$$(df -Pk . | awk 'NR==2 {print int($$4 / 1048576)}'); \
	  if [ "$$free" -lt $(MIN_FREE_GB) ]; then \
	    echo "make install: a new .venv needs about $(MIN_FREE_GB) GB free here, only $$free GB are: free disk space and rerun" >&2; exit 1; fi; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (pds)" >/dev/null
	touch $@

install: $(BIN)/.installed  ## create .venv and install the locked environment

repro: install  ## run the whole pipeline (dvc repro dvc.yaml): toy world -> ... -> results/evaluate/metrics.json
	$(BIN)/dvc repro dvc.yaml

test: install  ## the test suite (CPU, no network)
	$(BIN)/python -m pytest -q

test-all: install  ## also the slow tests (full toy-model quality checks)
	$(BIN)/python -m pytest -q -m "not gpu"

lint: install  ## ruff + notebooks stripped of outputs
	$(BIN)/ruff check pds studies tests benchmarks notebooks
	$(BIN)/nbstripout --verify notebooks/*.ipynb

lockcheck: install  ## fail if a stage's recorded code or parameters differ from the committed ones (CI)
	$(BIN)/python -m studies.lockcheck

# The dry run itself, outside DVC (CI: a fresh clone, nothing to compare a lock entry with).
dryrun-ci: install
	$(BIN)/python -m studies.dryrun --out build/dryrun-real

format: install
	$(BIN)/ruff check --fix pds studies tests benchmarks
	$(BIN)/nbstripout notebooks/*.ipynb

lock:  ## rewrite requirements.lock from the current .venv
	{ echo "# Exact versions \`make\` installs (pip freeze of a working .venv, Python 3.11, x86_64). Regenerate: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^pds'; } > requirements.lock

# The studies are DVC stages of studies/dvc.yaml (their settings: studies/params.yaml); each target reproduces one,
# reruns only what changed, and leaves params.yaml, dvc.lock and the workspace as they were.
# `dvc status studies/dvc.yaml` says which committed study results are current.
S := studies/dvc.yaml:
sweep: install  ## budget M = 200 on the default world, ablations at 100, the sweep plot -> results/sweep/
	$(BIN)/dvc repro $(S)sweep_summary $(S)ablations_100

world: install  ## the realistic world (toyflickr) at M = 100, 200, 500 -> results/worlds/toyflickr/
	$(BIN)/dvc repro $(S)worlds_summary $(S)worlds_ablations

mismatch: install  ## mismatched-pair sweep on toyflickr (~10 min per rate) -> results/mismatch/
	$(BIN)/dvc repro $(S)mismatch_report

seeds: install  ## PDS distilled with 3 k-means / decoder seeds on each world at M = 100 (toyflickr also at 500), against its baselines -> results/seeds/<report>/
	$(BIN)/dvc repro $(S)seeds_report

tm-curve: install  ## MTT-VL / LoRS for 1,000 iterations on both worlds, chosen on val (~1 h per world); on toyflickr also at M = 500 and with seeds 43, 44 -> results/tm_curve/
	$(BIN)/dvc repro --glob 'studies/dvc.yaml:tm_curve@*' 'studies/dvc.yaml:tm_budget@*'

calibration: install  ## the realistic world's calibration candidates (baselines only) -> results/calibration/
	$(BIN)/dvc repro $(S)calibration_summary

bench: install  ## performance harness (not a test): results/benchmarks.json + results/benchmarks/summary.md
	$(BIN)/python benchmarks/run.py

# After `make lesson`, JupyterLab opens the notebooks on the classroom world (PDS_LESSON, pds/paths.py: its folders
# and settings in place of the defaults); `make lab LESSON=` opens them on the default run's data/ and results/.
LESSON ?= $(if $(wildcard build/lesson/parameters.json),build/lesson)

lab: install  ## JupyterLab on the notebooks (on build/lesson's classroom world once make lesson made it)
	@echo "notebooks on $(if $(LESSON),the classroom world in $(LESSON) (make lab LESSON= for data/),the default run's data/ and results/)"
	$(if $(LESSON),PDS_LESSON=$(LESSON) )$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

# A static HTML book of the executed notebooks, built offline (studies/book.py). BOOK_SRC / BOOK_OUT choose other
# folders (the test builds into a temp one).
BOOK_SRC ?= results/notebooks
BOOK_OUT ?= results/book

book: install  ## static HTML book of the executed notebooks -> results/book/index.html (offline)
	$(BIN)/python -m studies.book $(BOOK_SRC) $(BOOK_OUT)

# A classroom preset: the five lessons on a small toy world of their own, run from a fresh clone with one command
# (studies/lesson.py says what it runs); build/lesson/notebooks and build/lesson/book. 2 min 19 s on 2 quiet cores
# after `make install` (AVX-512 EPYC, kernels pinned).
lesson: install  ## the five lessons on a small toy world of their own (~2.5 min) -> build/lesson/notebooks, build/lesson/book
	$(BIN)/dvc repro $(S)lesson

clean-venv:
	rm -rf $(VENV)

# The real path's architectures at random weights (open_clip ViT-L-14, the unclip-small decoder, timm NFNet /
# NF-ResNet / ViT-Tiny students, a BERT-base text encoder) through stages 01-05 on 20 toy images, on the CPU and
# without a download: proves the real parameters wire together, not that anything works (studies/dryrun.py).
# 4 min on 2 quiet cores (AMD EPYC, fresh clone), 10.3 GiB of memory at peak; outputs and report.json in build/dryrun-real/.
dryrun-real: install  ## real architectures at random weights, stages 01-05 on 20 toy images (CPU, ~10 min) -> build/dryrun-real/
	$(BIN)/dvc repro $(S)dryrun_real
