#!/usr/bin/env bash
# The project's GPU check: what a machine with an NVIDIA GPU shows that CI cannot. From a
# checkout and the datasets mirror, offline, in about 8 minutes on one data-centre GPU:
#
#   tools/gpu_check.sh [--dry-run] [--mirror DIR] [--out DIR]
#
#   1. nvidia-smi: the GPU, its driver, its memory
#   2. the GPU-marked tests (pytest -m gpu: identical bytes from two runs, the fp16 path, a
#      GPU-saved model loading on a CPU, one-process NCCL, SyncBatchNorm conversion)
#   3. in a copy of the checkout (its own git repo and DVC cache): `dvc repro --force` of the
#      downloads, `datasets`, `train@*`, `tsne@*` and `transfer@scratch`, one stage at a time,
#      each timed; then `train@simple_cnn` once more, its model and metrics compared byte for
#      byte with the first run's
#   4. a summary, OUT/gpu_check.md: time per stage, accuracies, peak GPU memory, whether the
#      second run gave the same bytes
#
# --dry-run says what each step would run, runs none of it and needs no GPU (the tests check
# the script that way). --mirror: the datasets mirror (default: shared/datasets in the
# checkout, else ../shared/datasets beside it). --out: where the summary and logs go (default
# gpu_check/ in the checkout; $OUT when set). PYTHON: the interpreter (default: the
# checkout's .venv, else python3); it needs the packages of requirements-test.lock.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DRY_RUN=0
MIRROR=""
OUT_DIR=${OUT:-$ROOT/gpu_check}
TWICE=train@simple_cnn
TWICE_FILES=(models/simple_cnn.pt metrics/simple_cnn.json plots/simple_cnn/confusion.csv)

fail() { echo "gpu_check: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --mirror) [ $# -ge 2 ] || fail "--mirror needs a folder"; MIRROR=$2; shift ;;
    --out) [ $# -ge 2 ] || fail "--out needs a folder"; OUT_DIR=$2; shift ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) fail "unknown argument '$1' (usage: tools/gpu_check.sh [--dry-run] [--mirror DIR] [--out DIR])" ;;
  esac
  shift
done

if [ -z "$MIRROR" ]; then
  for candidate in "$ROOT/shared/datasets" "$ROOT/../shared/datasets"; do
    if [ -f "$candidate/SHA256SUMS" ]; then MIRROR=$candidate; break; fi
  done
fi
[ -n "$MIRROR" ] || fail "no datasets mirror: pass --mirror DIR (a folder with SHA256SUMS)"
[ -f "$MIRROR/SHA256SUMS" ] || fail "$MIRROR is not a datasets mirror (no SHA256SUMS in it)"
MIRROR=$(cd "$MIRROR" && pwd)

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi

# The stages that need no ImageNet weights, from params.yaml's `models` and `strategies`: the
# datasets they read, then train@ and tsne@ of each model, transfer@ of each strategy that
# starts from random weights.
mapfile -t STAGES < <(cd "$ROOT" && "$PYTHON" - <<'EOF'
from stages.lib.core import params, registry
settings = params.load()
models, strategies = registry.models(settings), registry.strategies(settings)
datasets = dict.fromkeys([*models.values(), settings["transfer"]["dataset"]])
print(*[f"download@{d}" for d in datasets], "datasets", sep="\n")
for model in models:
    print(f"train@{model}\ntsne@{model}")
for strategy, start in strategies.items():
    if registry.STARTS[start] == "random":
        print(f"transfer@{strategy}")
EOF
)
[ "${#STAGES[@]}" -gt 0 ] || fail "params.yaml names no stage to run"

# run CMD...: the command, or what it would be on a dry run
run() {
  if [ "$DRY_RUN" = 1 ]; then echo "would run: $*"; else "$@"; fi
}

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SUMMARY=$OUT_DIR/gpu_check.md
WORK=$OUT_DIR/project
echo "gpu_check: mirror $MIRROR, python $PYTHON, summary $SUMMARY"

# 1. the GPU
if [ "$DRY_RUN" = 1 ]; then
  echo "would run: nvidia-smi"
else
  command -v nvidia-smi > /dev/null || fail "no nvidia-smi: this machine has no NVIDIA driver"
  nvidia-smi | tee "$OUT_DIR/nvidia-smi.txt"
  missing=$("$PYTHON" - <<'EOF'
import importlib.util
print(" ".join(m for m in ("torch", "torchvision", "dvc", "dvclive", "sklearn", "pytest")
               if importlib.util.find_spec(m) is None))
EOF
)
  [ -z "$missing" ] || fail "$PYTHON lacks $missing (install requirements-test.lock, or set PYTHON)"
  "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || fail "torch $("$PYTHON" -c 'import torch; print(torch.__version__)') cannot use the GPU"
fi

# peak GPU memory: nvidia-smi sampled every 200 ms until the end
if [ "$DRY_RUN" = 0 ]; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 \
    > "$OUT_DIR/memory.log" 2> /dev/null &
  SAMPLER=$!
  trap 'kill $SAMPLER 2> /dev/null || true' EXIT
fi

# 2. the GPU tests
TESTS=passed
(cd "$ROOT" && run "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests) \
  > "$OUT_DIR/tests.log" 2>&1 || TESTS=failed
tail -n 3 "$OUT_DIR/tests.log"

# 3. the pipeline, in a copy with its own git repo and cache
if [ "$DRY_RUN" = 0 ]; then
  rm -rf "$WORK"
  mkdir -p "$WORK"
  (cd "$ROOT" && tar -c --exclude=./.venv --exclude=./.git --exclude=./gpu_check \
      --exclude=./.dvc/cache --exclude=./.dvc/tmp --exclude=./shared . ) | tar -x -C "$WORK"
  (cd "$WORK" && git init -q && git add -A \
    && GIT_AUTHOR_NAME=gpu_check GIT_AUTHOR_EMAIL=gpu_check@localhost \
       GIT_COMMITTER_NAME=gpu_check GIT_COMMITTER_EMAIL=gpu_check@localhost \
       git commit -q -m "gpu_check")
fi
export DATASETS_MIRROR=$MIRROR DVC_NO_ANALYTICS=1
# a mirror's copy of CIFAR-10 that is not upstream's byte for byte (docs/data.md)
export DATASETS_ACCEPT_UNVERIFIED=${DATASETS_ACCEPT_UNVERIFIED-cifar10}
TIMES=()
repro() {   # repro STAGE: force one stage (its dependencies ran before it), timed
  if [ "$DRY_RUN" = 1 ]; then
    echo "would run in $WORK: $PYTHON -m dvc repro --force --single-item $1"
    return
  fi
  local start end ms
  start=$(date +%s%N)
  (cd "$WORK" && "$PYTHON" -m dvc repro --force --single-item "$1") >> "$OUT_DIR/repro.log" 2>&1 \
    || { tail -n 20 "$OUT_DIR/repro.log" >&2; fail "dvc repro $1 failed (log: $OUT_DIR/repro.log)"; }
  end=$(date +%s%N)
  ms=$(( (end - start) / 1000000 ))
  TIMES+=("$1 $(printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100)))")
  echo "${TIMES[-1]} s"
}
: > "$OUT_DIR/repro.log"
for stage in "${STAGES[@]}"; do repro "$stage"; done
SAME=yes
if [ "$DRY_RUN" = 0 ]; then
  mkdir -p "$OUT_DIR/first"
  for f in "${TWICE_FILES[@]}"; do cp "$WORK/$f" "$OUT_DIR/first/$(basename "$f")"; done
fi
repro "$TWICE"
if [ "$DRY_RUN" = 0 ]; then
  for f in "${TWICE_FILES[@]}"; do
    cmp -s "$WORK/$f" "$OUT_DIR/first/$(basename "$f")" || SAME="no ($f differs)"
  done
fi

# 4. the summary
if [ "$DRY_RUN" = 1 ]; then
  echo "would write: $SUMMARY"
  exit 0
fi
kill "$SAMPLER" 2> /dev/null || true
PEAK=$(sort -n "$OUT_DIR/memory.log" | tail -n 1)
{
  echo "# GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader)"
  echo "- torch $("$PYTHON" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
  echo "- GPU tests (pytest -m gpu): $TESTS: $(tail -n 1 "$OUT_DIR/tests.log")"
  echo "- peak GPU memory in use: ${PEAK:-?} MiB"
  echo "- $TWICE run twice, same bytes (${TWICE_FILES[*]}): $SAME"
  echo
  echo "| stage | seconds |"
  echo "|---|---|"
  for t in "${TIMES[@]}"; do echo "| ${t% *} | ${t##* } |"; done
  echo
  echo "| model | accuracy | best accuracy (epoch) | device, precision |"
  echo "|---|---|---|---|"
  (cd "$WORK" && "$PYTHON" - "${STAGES[@]}" <<'EOF'
import json
import sys
for stage in sys.argv[1:]:
    kind, _, name = stage.partition("@")
    if kind not in ("train", "transfer"):
        continue
    path = name if kind == "train" else f"transfer/{name}"
    metrics = json.load(open(f"metrics/{path}.json"))
    run = json.load(open(f"models/{path}.run.json"))
    print(f"| {stage} | {metrics['accuracy']:.4f} | {metrics['best_accuracy']:.4f} "
          f"({metrics['best_epoch']}) | {run['gpu'] or run['device']}, {run['precision']} |")
EOF
)
} > "$SUMMARY"
cat "$SUMMARY"
[ "$TESTS" = passed ] && [ "$SAME" = yes ]
