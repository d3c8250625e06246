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
# every DVC output in dvc.lock byte for byte (README, "Reproducibility"). The libraries read these when they load,
# so they must be in the environment before Python starts: override them on the command line
# (ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=ALL OPENBLAS_CORETYPE=) for the machine's widest kernels.
ifeq ($(shell uname -m),x86_64)
export ATEN_CPU_CAPABILITY ?= avx2
export ONEDNN_MAX_CPU_ISA ?= AVX2
export OPENBLAS_CORETYPE ?= Haswell
endif
# dvc runs stage commands (papermill, python) in a shell: they must resolve to the venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help install repro test test-all lint format lock sweep ablations world mismatch bench lab clean-venv book dryrun-real lesson

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

# The venv is rebuilt when the lock file or pyproject changes; the stamp records a finished install.
# A new .venv takes about 6.7 GB (torch 2.14.1 is a CUDA build); check the disk first rather than fail mid-install.
MIN_FREE_GB ?= 8
$(BIN)/.installed: requirements.lock pyproject.toml
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

repro: install  ## run the whole pipeline (dvc repro): toy world -> ... -> results/evaluate/metrics.json
	$(BIN)/dvc repro

test: install  ## the test suite (CPU, no network)
	$(BIN)/python -m pytest -q

test-all: install  ## also the slow tests (full toy-model quality checks)
	$(BIN)/python -m pytest -q -m "not gpu"

lint: install  ## ruff + notebooks stripped of outputs
	$(BIN)/ruff check pds tests benchmarks notebooks
	$(BIN)/nbstripout --verify notebooks/*.ipynb

format: install
	$(BIN)/ruff check --fix pds tests benchmarks
	$(BIN)/nbstripout notebooks/*.ipynb

lock:  ## rewrite requirements.lock from the current .venv
	{ echo "# Exact versions \`make\` installs (pip freeze of a working .venv, Python 3.11, x86_64). Regenerate: make lock"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^pds'; } > requirements.lock

sweep: install  ## budgets M = 200, 500, 100 (dvc exp run each; ablations at 500 and 100), then the sweep plot
	mkdir -p results/sweep
	for m in 200 500 100; do \
	  $(BIN)/dvc exp run -S base.n_pairs=$$m && cp results/evaluate/metrics.json results/sweep/metrics_$$m.json || exit 1; \
	  if [[ " $(ABLATE_AT) " == *" $$m "* ]]; then $(MAKE) ablations || exit 1; fi; \
	done
	$(BIN)/python -m pds.sweep results/sweep

# Where PDS loses points, at the budget now in the workspace (params.yaml base.n_pairs): notebook 05 with real
# training images at the prototypes (pds_real) and with the retrieved caption as text target; the students'
# metrics land in results/sweep/ablations_<M>/ (the executed notebooks and runs are left in a temporary folder).
ABLATE_AT ?= 500 100
ablations: install  ## ablations of PDS at the workspace's budget -> results/sweep/ablations_<M>/
	set -e; m=$$($(BIN)/python -c "import yaml; print(yaml.safe_load(open('params.yaml'))['base']['n_pairs'])"); \
	out=results/sweep/ablations_$$m; tmp=$$(mktemp -d); mkdir -p $$out; \
	for run in "pds_real prototype" "pds,pds_real caption"; do \
	  set -- $$run; name=$${1/,/_and_}__text_$$2; \
	  $(BIN)/papermill notebooks/05_evaluate.ipynb $$tmp/$$name.ipynb -k python3 --progress-bar \
	    -p n_pairs $$m -p methods $$1 -p text_target $$2 -p out_dir $$tmp/$$name; \
	  cp $$tmp/$$name/metrics.json $$out/$$name.json; \
	done; echo "ablations at M = $$m: $$out (notebooks in $$tmp)"

# Another generated world (params.yaml toyworld: entries) through the pipeline up to evaluate (`dvc exp run -S
# base.dataset=...`), once per budget in WORLD_BUDGETS; the workspace then returns to params.yaml's world (git
# checkout of params.yaml, dvc.lock, results/evaluate and the executed notebooks, dvc checkout). The first budget's
# run also trains the full-data bound -- not a budget, so the others leave it out -- and on a world that needs more
# epochs for it (toyflickr: 24, chosen on val in results/calibration) it trains that long, for the first seed only
# (WORLD_FULL_SEEDS), the costliest student by far. Results: results/worlds/<world>/ (the first budget's
# evaluate folder and notebooks) and results/worlds/<world>/sweep/ (every budget's metrics, summary.md, the plot).
WORLD ?= toyflickr
WORLD_BUDGETS ?= 100 200 500
WORLD_METHODS ?= pds,pds_real,random,herding,kcenter
WORLD_FULL_EPOCHS ?= 24
WORLD_FULL_SEEDS ?= 1
world: install  ## the pipeline on another world (WORLD=toyflickr) at each budget -> results/worlds/<world>/
	set -e; out=results/worlds/$(WORLD); first=$(firstword $(WORLD_BUDGETS)); mkdir -p $$out/notebooks $$out/sweep; \
	for m in $(WORLD_BUDGETS); do \
	  methods=$(WORLD_METHODS); if [ $$m = $$first ]; then methods=$$methods,full; fi; \
	  $(BIN)/dvc exp run -S base.dataset=$(WORLD) -S base.n_pairs=$$m -S evaluate.methods=$$methods \
	    -S evaluate.full_epochs=$(WORLD_FULL_EPOCHS) -S evaluate.full_seeds=$(WORLD_FULL_SEEDS) evaluate; \
	  cp results/evaluate/metrics.json $$out/sweep/metrics_$$m.json; \
	  if [ $$m = $$first ]; then cp results/evaluate/* $$out/; cp results/notebooks/0*.ipynb $$out/notebooks/; fi; \
	done; \
	git checkout -- params.yaml dvc.lock results/evaluate results/notebooks; $(BIN)/dvc checkout --quiet; \
	$(BIN)/python -m pds.sweep $$out/sweep; \
	echo "$(WORLD): $$out (the workspace is back on params.yaml's world)"

# The mismatched-pair sweep (issue #19, pds/mismatch.py): a copy of MISMATCH_WORLD in which a fraction p of the
# training images carry another training image's captions, for each p in MISMATCH_RATES, through notebooks 01-05
# with that world's own toy models (trained at p = 0; val and test untouched) at budget MISMATCH_M, the students
# MISMATCH_ENCODERS, both protocols, every other setting the notebooks' defaults (params.yaml's). The full-data
# bound is left out (not a budget; 24 epochs on toyflickr). Each rate's metrics.json, runs.csv and filter.json
# (what the noise filter removes) land in results/mismatch/p<p>/; a rate whose metrics.json exists is skipped
# (delete it to rerun); work files in build/mismatch/p<p>/. About 10 minutes per rate on 2 cores.
MISMATCH_WORLD ?= toyflickr
MISMATCH_RATES ?= 0 0.2 0.4
MISMATCH_M ?= 100
MISMATCH_ENCODERS ?= convnet
MISMATCH_METHODS ?= pds,pds_real,random,herding,kcenter
MISMATCH ?= build/mismatch
MISMATCH_OUT ?= results/mismatch

mismatch: install $(foreach p,$(MISMATCH_RATES),$(MISMATCH_OUT)/p$(p)/metrics.json)  ## mismatched-pair sweep on toyflickr (~10 min per rate) -> results/mismatch/
	$(BIN)/python -m pds.mismatch report $(MISMATCH_OUT) --world $(MISMATCH_WORLD)

$(MISMATCH_OUT)/p%/metrics.json: $(BIN)/.installed
	mkdir -p $(MISMATCH)/p$*/notebooks
	$(BIN)/python -m pds.mismatch world --world $(MISMATCH_WORLD) --rate $* --out $(MISMATCH)/p$*/raw/$(MISMATCH_WORLD)
	$(call notebooks,$(MISMATCH)/p$*,$(MISMATCH_WORLD),$(MISMATCH_M),PDS_PROGRESS=0,,\
	  -p dataset $(MISMATCH_WORLD)_p$* -p methods $(MISMATCH_METHODS) -p image_encoders $(MISMATCH_ENCODERS))
	$(BIN)/python -m pds.mismatch diagnose --root $(MISMATCH)/p$*/raw/$(MISMATCH_WORLD) --run $(MISMATCH)/p$* \
	  --out $(MISMATCH_OUT)/p$*/filter.json
	cp $(MISMATCH)/p$*/evaluate/runs.csv $(MISMATCH)/p$*/evaluate/r_mean.png $(MISMATCH_OUT)/p$*/
	cp $(MISMATCH)/p$*/evaluate/metrics.json $@  # last: a rate with metrics.json is complete

bench: install  ## performance harness (not a test): results/benchmarks.json + results/benchmarks/summary.md
	$(BIN)/python benchmarks/run.py

lab: install  ## JupyterLab on the notebooks
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

# A static HTML book of the executed notebooks, built offline (pds/book.py). BOOK_SRC / BOOK_OUT choose other
# folders (the test builds into a temp one).
BOOK_SRC ?= results/notebooks
BOOK_OUT ?= results/book

book: install  ## static HTML book of the executed notebooks -> results/book/index.html (offline)
	$(BIN)/python -m pds.book $(BOOK_SRC) $(BOOK_OUT)

# Notebooks 01-05 (and the caption features between 04 and 05) on a world outside data/ and results/, as the
# pipeline's stages would run them (make lesson, make mismatch): $(1) the work folder (raw/<world>/ holds the world;
# embeddings/, clusters/, prototypes/, synthetic/, text_features/, evaluate/ and notebooks/ are written there), $(2)
# the world whose toy models are used, $(3) the budget M, $(4) the environment of every command, $(5) more -p of 02,
# $(6) more -p of 05. Every other parameter is the notebook's default, i.e. params.yaml's, except that 05 leaves
# out the MTT-VL / LoRS students and sets (tm_runs, tm_dir): they belong to the pipeline's own world and settings.
define notebooks
	$(4) $(BIN)/papermill --no-progress-bar -k python3 notebooks/01_embed.ipynb $(1)/notebooks/01_embed.ipynb \
	  -p dataset_root $(1)/raw/$(2) -p dataset $(2) -p out_dir $(1)/embeddings
	$(4) $(BIN)/papermill --no-progress-bar -k python3 notebooks/02_cluster.ipynb $(1)/notebooks/02_cluster.ipynb \
	  -p embeddings_dir $(1)/embeddings -p dataset_root $(1)/raw/$(2) -p out_dir $(1)/clusters -p n_clusters $(3) $(5)
	$(4) $(BIN)/papermill --no-progress-bar -k python3 notebooks/03_match.ipynb $(1)/notebooks/03_match.ipynb \
	  -p embeddings_dir $(1)/embeddings -p clusters_dir $(1)/clusters -p dataset_root $(1)/raw/$(2) \
	  -p out_dir $(1)/prototypes
	$(4) $(BIN)/papermill --no-progress-bar -k python3 notebooks/04_synthesize.ipynb $(1)/notebooks/04_synthesize.ipynb \
	  -p prototypes_dir $(1)/prototypes -p embeddings_dir $(1)/embeddings -p dataset_root $(1)/raw/$(2) \
	  -p dataset $(2) -p out_dir $(1)/synthetic
	$(4) $(BIN)/python -m pds.text_features --embeddings-dir $(1)/embeddings --out $(1)/text_features
	$(4) $(BIN)/papermill --no-progress-bar -k python3 notebooks/05_evaluate.ipynb $(1)/notebooks/05_evaluate.ipynb \
	  -p embeddings_dir $(1)/embeddings -p text_features_dir $(1)/text_features -p clusters_dir $(1)/clusters \
	  -p prototypes_dir $(1)/prototypes -p synthetic_dir $(1)/synthetic -p dataset_root $(1)/raw/$(2) \
	  -p encoders_dir models/$(2)/toy-encoders -p out_dir $(1)/evaluate -p n_pairs $(3) -r tm_runs '' -r tm_dir '' $(6)
endef

# A classroom preset: the five lessons on a small toy world of their own (1,000 training images, 200 val, 200 test;
# M = 20 pairs, k-means n_init 1; students: one seed, 20 epochs), run from a fresh clone with one command. Everything
# is written under $(LESSON): raw/toyworld, embeddings, clusters, prototypes, synthetic, text_features, evaluate,
# notebooks/ (the executed lessons) and book/ (their HTML book); data/ and results/ are never read or written
# (models/ is read: the committed toy models). 2 min 19 s on 2 cores after `make install` (session 12, AVX-512
# EPYC, kernels pinned, nothing else running; 4 min 18 s in session 11 on another EPYC). One thread per process
# (LESSON_THREADS): with two per process the same run took 10.5 min (notebook 04
# alone 7 min), and with other jobs on the cores the toy decoder ran 6x slower on two threads than on one.
LESSON ?= build/lesson
LESSON_M ?= 20
LESSON_THREADS ?= 1
LESSON_ENV = PDS_PROGRESS=0 OMP_NUM_THREADS=$(LESSON_THREADS) PDS_NUM_THREADS=$(LESSON_THREADS)

lesson: install  ## the five lessons on a small toy world of their own (~2.5 min) -> build/lesson/notebooks, build/lesson/book
	mkdir -p $(LESSON)/notebooks
	$(LESSON_ENV) $(BIN)/python -m pds.toy.world --out $(LESSON)/raw/toyworld --n-train 1000 --n-val 200 --n-test 200 --seed 0
	$(call notebooks,$(LESSON),toyworld,$(LESSON_M),$(LESSON_ENV),-p n_init 1,\
	  -p seeds 1 -p epochs 20 -p full_epochs 1 -p eval_every 5 -p paper_epochs 21 -p paper_lr_step 11)
	$(LESSON_ENV) $(BIN)/python -m pds.book $(LESSON)/notebooks $(LESSON)/book
	@echo "lessons: $(LESSON)/notebooks/ (Jupyter) and $(LESSON)/book/index.html (the same as web pages)"

clean-venv:
	rm -rf $(VENV)

# The real path's architectures at random weights (open_clip ViT-L-14, the unclip-small decoder, timm NFNet /
# NF-ResNet / ViT-Tiny students, a BERT-base text encoder) through stages 01-05 on 20 toy images, on the CPU and
# without a download: proves the real parameters wire together, not that anything works (pds/dryrun.py).
# About 10 minutes on 2 cores, 9-10 GB of memory at peak; outputs and report.json in build/dryrun-real/.
dryrun-real: install  ## real architectures at random weights, stages 01-05 on 20 toy images (CPU, ~10 min) -> build/dryrun-real/
	$(BIN)/python -m pds.dryrun --out build/dryrun-real
