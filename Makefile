# make smoke      every stage on a slice of the data (smoke.yaml), report included, as
#                 `dvc exp run --temp`: the workspace's results stay, the smoke's go to smoke/
# make repro      the whole pipeline (tools/repro.py: `dvc repro $(REPRO_FLAGS)`); without the
#                 ImageNet weights, every stage that does not need them, the others named
# make restore    the last commit's results back after a failed `dvc exp run` or `dvc repro`
#                 (tools/restore.py)
# make exps       dvc exp show, readable: the params and headline metrics that differ
# make plots      dvc plots show (PLOTS_REVS=main: diff) of what can be drawn, no empty chart;
#                 make metrics: dvc metrics show (METRICS_REVS=main: diff) of what exists
#                 (tools/show.py: what is not computed yet named in one line)
# make share      every run computed here, to the DVC remote (tools/push_runs.py): others
#                 `make pull`, then `dvc exp run --pull ...` restores instead of training
# make release    each trained model a version (a GTO tag NAME@vX.Y.Z), its weights on the DVC
#                 remote: `dvc artifacts get URL NAME` fetches it (tools/release.py;
#                 RELEASE_FLAGS=--version vX.Y.Z)
# make verify STAGE=train@alexnet  a pulled or shared result computed again and compared
#                 (tools/verify.py; VERIFY_FLAGS=--tolerance 0.005 across hardware)
# make pull       the remote's shared runs, each checked before it is used (tools/pull_runs.py)
# make check-cache every object of DVC's cache against its MD5 (a damaged one removed), a killed
#                 save's temporary files removed, every output saved (tools/check_cache.py)
# make submission the report as a PDF and the hand-in zip, named from report.author
#                 (tools/submission.py; submission/)
# make test       every test, on 2 workers (pytest-xdist); make test-fast: the unit tier
#                 (pytest -m "not e2e", on 2 workers too)
# make lint       ruff, as CI runs it
# make bench      the speed benchmarks, written to docs/benchmarks.md (BENCH_FLAGS for
#                 epoch_speed.py); gets the three datasets through their download stages first.
#                 benchmarks/analysis_speed.py (probe, t-SNE) needs a trained model: by hand
# make full-run   the whole practical timed stage by stage (benchmarks/full_run.py: dvc repro
#                 --force in a fresh clone, FULL_RUN_FLAGS), written to docs/full_run.md
# make gpu-check  on a machine with an NVIDIA GPU: tools/gpu_check.py (GPU_CHECK_FLAGS, e.g.
#                 --mirror DIR), its summary in gpu_check/gpu_check.md (docs/gpu.md)
# make gpu-bundle what a lent GPU machine lacks (wheels, a datasets mirror), in build/gpu/, with
#                 the call that runs the check there (tools/gpu_bundle.py; PyPI needed once)
# make gpu-rehearsal the check on this CPU as that machine will run it (tools/gpu_rehearsal.py)
# Each creates .venv first when needed. On Linux x86_64 with Python 3.11 it installs the exact
# versions of requirements.lock (+ requirements-test.lock for tests and lint); elsewhere the
# ranges of requirements.txt (+ requirements-test.txt). tools/lock.py rewrites the lock files.
# tools/ and benchmarks/ run as modules from this folder (python -m tools.smoke); make installs
# neither them nor the project (pyproject.toml: `pip install -e .`, stages/ only, is optional).
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
PINNED := $(shell python3 -c 'import platform, sys; print(int(platform.system() == "Linux" \
	and platform.machine() == "x86_64" and sys.version_info[:2] == (3, 11)))')
ifeq ($(PINNED),1)
RUNTIME := requirements.lock
TESTING := requirements-test.lock
else
RUNTIME := requirements.txt
TESTING := requirements-test.txt
endif

# what `make exps` leaves out: dependency hashes, creation time, t-SNE scores

.PHONY: smoke repro restore exps plots metrics share release verify pull check-cache submission test test-fast lint bench full-run gpu-check gpu-bundle gpu-rehearsal

$(BIN)/.installed: requirements.txt requirements.lock
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -r $(RUNTIME)
	touch $@

$(BIN)/.installed-test: $(BIN)/.installed requirements-test.txt requirements-test.lock
	$(BIN)/python -m pip install -r $(TESTING)
	touch $@

smoke: $(BIN)/.installed
	python -m tools.smoke $(SMOKE_FLAGS)

repro: $(BIN)/.installed
	python -m tools.repro $(REPRO_FLAGS)

restore: $(BIN)/.installed
	python -m tools.restore

exps: $(BIN)/.installed
	python -m tools.exps $(EXPS_FLAGS)

plots: $(BIN)/.installed
	python -m tools.show plots $(PLOTS_REVS)

metrics: $(BIN)/.installed
	python -m tools.show metrics $(METRICS_REVS)

share: $(BIN)/.installed
	python -m tools.push_runs $(SHARE_FLAGS)

release: $(BIN)/.installed
	python -m tools.release $(RELEASE_FLAGS)

verify: $(BIN)/.installed
	@test -n "$(STAGE)" || { echo "make verify: name the stage: make verify STAGE=train@alexnet"; exit 2; }
	python -m tools.verify $(STAGE) $(VERIFY_FLAGS)

pull: $(BIN)/.installed
	python -m tools.pull_runs $(PULL_FLAGS)

check-cache: $(BIN)/.installed
	python -m tools.check_cache

submission: $(BIN)/.installed
	python -m tools.submission

test: $(BIN)/.installed-test
	python -m pytest -n 2 --dist loadfile

test-fast: $(BIN)/.installed-test
	python -m pytest -n 2 -m "not e2e"

lint: $(BIN)/.installed-test
	ruff check .

bench: $(BIN)/.installed
	dvc repro download@mnist download@cifar10 download@hymenoptera || { echo "make bench: \
	the benchmarks need MNIST, CIFAR-10 and hymenoptera: set DATASETS_MIRROR (docs/data.md) \
	or go online, then run it again"; exit 1; }
	python -m benchmarks.write_doc $(BENCH_FLAGS)

full-run: $(BIN)/.installed
	python -m benchmarks.full_run $(FULL_RUN_FLAGS)

gpu-check: $(BIN)/.installed-test
	python -m tools.gpu_check $(GPU_CHECK_FLAGS)

gpu-bundle: $(BIN)/.installed-test
	python -m tools.gpu_bundle $(GPU_BUNDLE_FLAGS)

gpu-rehearsal: gpu-bundle
	python -m tools.gpu_rehearsal
