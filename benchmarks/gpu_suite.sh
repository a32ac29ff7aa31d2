#!/usr/bin/env bash
# The GPU benchmark suite on the lent GPU machine, run from the repository root (see benchmarks/README.md):
#
#     bash benchmarks/gpu_suite.sh                    # parts a, b, c (and d if time is left) in ~6 minutes
#     bash benchmarks/gpu_suite.sh --parts d          # arguments go to benchmarks/gpu_suite.py
#
# 1. installs the carried wheels (.whl/: optuna, torch-pruning, fvcore and their missing dependencies) into
#    /tmp/site with --no-index --no-deps --target, so pip never touches the machine's own CUDA torch;
# 2. puts the repository on PYTHONPATH (no install: there is no registry to build it with);
# 3. points PRUNENAS_DATA at the carried CIFAR-10 copy (.data/cifar10-jpeg.tar.gz), copied once per machine
#    to /tmp so its decoded cache (PRUNENAS_CACHE=/tmp/prunenas-cache) stays valid across calls;
# 4. runs benchmarks/gpu_suite.py with --out-dir "$OUT", so the results and the part b and d folders come back;
#    the whole log goes to $OUT/suite.log. The suite's --budget-s (default 360 s) starts after this set-up
#    (~15-20 s), so a run call's timeout_s=420 leaves it ~40 s of slack.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1
export GPU_SUITE_CMD="bash benchmarks/gpu_suite.sh $*"
PY=${PYTHON:-python3}
SITE=${GPU_SUITE_SITE:-/tmp/site}
CIFAR_SHA256=c0e76c99a1ed7fedad99f9be6f27d38403c0a6f6a4fe955d0b2eab7759630fb6

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv,noheader 2>/dev/null ||
  echo "(no nvidia-smi)"
# (each python start that imports torch costs seconds of device time: one here, one after the wheels)
torch_before=$("$PY" -c 'import torch; print(torch.__file__, torch.__version__)')
"$PY" -c 'import sys; print("python", sys.version.split()[0])'
echo "torch: $torch_before"

echo "== wheels (.whl/ -> $SITE)"
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "no .whl/*.whl: copy ../shared/wheels/gpu-py312/*.whl to .whl/ and carry \".whl\" (optuna, torch-pruning" \
    "and fvcore are missing on the GPU machine)" >&2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
torch_after=$("$PY" -c 'import torch, optuna, torch_pruning, fvcore, onnx, onnxruntime, prunenas
print(torch.__file__, torch.__version__)
import sys; print("imports ok: cuda", torch.cuda.is_available(), "| optuna", optuna.__version__, "| onnxruntime",
onnxruntime.__version__, onnxruntime.get_available_providers(), "| prunenas from", prunenas.__file__, file=sys.stderr)')
if [ "$torch_before" != "$torch_after" ]; then
  echo "error: the wheels changed which torch imports ($torch_before -> $torch_after); remove torch from .whl/" >&2
  exit 2
fi

echo "== data"
src=${GPU_SUITE_DATA:-.data/cifar10-jpeg.tar.gz}
if [ -f "$src" ]; then
  mkdir -p /tmp/prunenas-data
  dst=/tmp/prunenas-data/cifar10-jpeg.tar.gz
  # Keep the first copy (and its mtime): the decoded cache is keyed on path, size and mtime.
  cmp -s "$src" "$dst" || cp "$src" "$dst"
  got=$(sha256sum "$dst" | cut -d' ' -f1)
  [ "$got" = "$CIFAR_SHA256" ] || echo "warning: $src has sha256 $got, expected $CIFAR_SHA256" >&2
  export PRUNENAS_DATA=$dst
  echo "CIFAR-10 copy: $PRUNENAS_DATA"
else
  echo "no $src: parts that need CIFAR-10 will say so (copy ../shared/datasets/cifar10-jpeg.tar.gz to .data/)"
fi
export PRUNENAS_CACHE=${PRUNENAS_CACHE:-/tmp/prunenas-cache}

echo "== suite (set-up took ${SECONDS} s)"
out=${OUT:-}
if [ -n "$out" ]; then
  mkdir -p "$out"
  set +e
  "$PY" benchmarks/gpu_suite.py --out-dir "$out" "$@" 2>&1 | tee "$out/suite.log"
  rc=${PIPESTATUS[0]}
  set -e
else
  set +e
  "$PY" benchmarks/gpu_suite.py "$@"
  rc=$?
  set -e
fi
exit "$rc"
