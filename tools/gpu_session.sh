#!/usr/bin/env bash
# One short GPU session (prepared on a CPU machine; run it where PyTorch sees a CUDA device):
#   1. `parity check` of every built-in case, Torch on CUDA against the CPU-recorded TF goldens,
#      with the --repeat 2 nondeterminism check (TensorFlow is never imported);
#   2. the same for the pinn cases with --allow-tf32, which must fail the tight float32 tolerances visibly;
#   3. `parity bench` on CUDA, Torch rows only (patterns/s at growing batches, harness overhead).
# Usage: tools/gpu_session.sh [OUTPUT_FOLDER]   (default: $OUT if set, else gpu-session/)
# Environment: PYTHON (default python3), PARITY_THREADS as usual. Each step's exit code is recorded
# in OUTPUT_FOLDER/exit-codes.txt; the script itself exits 0 unless the machine has no CUDA device.
set -u
out="${1:-${OUT:-gpu-session}}"
python="${PYTHON:-python3}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME COMMAND...: run, tee the output, record the exit code and the wall time
    local name="$1"; shift
    local started=$SECONDS
    "$@" > >(tee "$out/$name.txt") 2>&1
    local code=$?
    echo "$name exit=$code seconds=$((SECONDS - started))" | tee -a "$out/exit-codes.txt"
}

{ nvidia-smi || true; "$python" -c 'import platform, torch; print(platform.platform(), "torch", torch.__version__,
  "cuda", torch.version.cuda, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)'
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
"$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' || {
    echo "no CUDA device visible to PyTorch: nothing to do" | tee -a "$out/exit-codes.txt"; exit 1; }

step check "$python" -m parity check --candidate torch --device cuda --repeat 2 --out "$out/check"
step check-tf32 "$python" -m parity check --candidate torch --device cuda --allow-tf32 --case pinn-default \
    --case pinn-fly001-moon --mode both --out "$out/check-tf32"
step bench "$python" -m parity bench --no-tf --device cuda --batch 64 --batch 1024 --batch 4096 \
    --scaling-batch 4096 --scaling-batch 16384 --skip memory --skip startup --json "$out/bench-gpu.json"
exit 0
