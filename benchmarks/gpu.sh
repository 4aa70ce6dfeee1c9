#!/usr/bin/env bash
# The GPU run: vaelab's GPU tests and GPU benchmark on one CUDA machine, in under 8
# minutes on one H100/H200 (issue 18). Nothing here needs the network.
#
#   bash benchmarks/gpu.sh OUT_DIR          # on the GPU machine, from the repository root
#   bash benchmarks/gpu.sh OUT_DIR --dry    # the same steps on CPU, tiny: checks the script
#
# Python: $PYTHON, else .venv/bin/python, else python3 (the GPU image's, which holds a CUDA
# torch). vaelab runs from src/ (no install). MNIST comes from .gpu/data when present
# (`make gpu-bundle` puts the IDX files there, to carry to a machine without the network),
# else from the usual places. Writes OUT_DIR/gpu-tests.log, gpu.json, gpu.md, gpu-bench.log.
set -uo pipefail
out=${1:?usage: benchmarks/gpu.sh OUT_DIR [--dry]}
dry=${2:-}
cd "$(dirname "$0")/.."
mkdir -p "$out"
py=${PYTHON:-}
[ -n "$py" ] || { [ -x .venv/bin/python ] && py=.venv/bin/python; } || true
[ -n "$py" ] || py=python3
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export VAELAB_OFFLINE=1 PYTHONUNBUFFERED=1
[ -d .gpu/data ] && export VAELAB_DATA="$PWD/.gpu/data"
[ -n "${XDG_CACHE_HOME:-}" ] || export XDG_CACHE_HOME="$PWD/.gpu/cache"
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())'

status=0
start=$SECONDS
# 1. the GPU tests (they skip without a GPU)
timeout 180 "$py" -m pytest -q -p no:cacheprovider -o addopts="" tests/test_gpu.py 2>&1 | tee "$out/gpu-tests.log"
[ "${PIPESTATUS[0]}" = 0 ] || status=1
echo "tests: $((SECONDS - start)) s"
# 2. the benchmark
if [ "$dry" = "--dry" ]; then
  bench=(--device cpu --epochs 1 --n-eval 200 --k 100)
else
  bench=(--device cuda)
fi
timeout 360 "$py" benchmarks/gpu_bench.py --out "$out" "${bench[@]}" || status=1
echo "total: $((SECONDS - start)) s, status $status"
exit $status
