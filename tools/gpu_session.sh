#!/usr/bin/env bash
# One short GPU session (prepared on a CPU machine; run it where PyTorch sees a CUDA device):
#   1. `parity check` of every built-in case, Torch on CUDA against the CPU-recorded TF goldens,
#      with the --repeat 2 nondeterminism check (TensorFlow is never imported);
#   2. the same for the pinn cases with --allow-tf32, which must fail the tight float32 tolerances visibly;
#   3. `parity bench` on CUDA, Torch rows only (patterns/s at growing batches, with and without the
#      inputs' host-to-device copy; harness overhead), then where the statistics sink's time goes
#      there (tools/sink_profile.py);
#   4. the test suite without TensorFlow, the generated per-tap suite with the candidate on CUDA against
#      the goldens (tests that need TensorFlow skip; the CPU baselines are not compared on CUDA).
# Usage: tools/gpu_session.sh [OUTPUT_FOLDER]   (default: $OUT if set, else gpu-session/)
# Environment: PYTHON (default python3), PARITY_THREADS as usual, PARITY_GPU_STEP_TIMEOUT (seconds per step),
# PARITY_GPU_PROFILE_BATCH (default 256); PARITY_GPU_DEVICE (default cuda) and
# PARITY_GPU_SMALL=1 rehearse the script on a CPU machine with a tiny bench. Each step's exit code is
# recorded in OUTPUT_FOLDER/exit-codes.txt, and the text results (logs, report.json, bench JSON; no
# pictures) are packed into OUTPUT_FOLDER/results.tar.gz. The script exits 0 unless no device is visible.
set -u
out="${1:-${OUT:-gpu-session}}"
python="${PYTHON:-python3}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"  # relative to where it was run from, not to the repository root entered next
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

step() {  # step NAME COMMAND...: run, tee the output, record the exit code and the wall time
    local name="$1"; shift
    local started=$SECONDS
    timeout "${PARITY_GPU_STEP_TIMEOUT:-0}" "$@" > >(tee "$out/$name.txt") 2>&1
    local code=$?
    echo "$name exit=$code seconds=$((SECONDS - started))" | tee -a "$out/exit-codes.txt"
}

{ nvidia-smi || true; "$python" -c 'import platform, torch; print(platform.platform(), "torch", torch.__version__,
  "cuda", torch.version.cuda, "device", torch.cuda.get_device_name() if torch.cuda.is_available() else None)'
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
device="${PARITY_GPU_DEVICE:-cuda}"
if [ "$device" = cuda ]; then
    "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' || {
        echo "no CUDA device visible to PyTorch: nothing to do" | tee -a "$out/exit-codes.txt"; exit 1; }
fi
if [ "${PARITY_GPU_SMALL:-0}" = 1 ]; then
    bench_sizes=(--batch 8 --scaling-batch 16 --scaling-batch 32 --overhead-batch 8 --repeats 1 --warmup 1)
else
    # sized to finish well inside a step: on an H200 (2026-11-27) scaling to 16384 and overhead at 1024 did not
    bench_sizes=(--batch 64 --batch 1024 --batch 4096 --scaling-batch 2048 --scaling-batch 8192 --overhead-batch 256
                 --repeats 3 --warmup 1)
fi

step check "$python" -m parity check --candidate torch --device "$device" --repeat 2 --out "$out/check"
step bench "$python" -m parity bench --no-tf --device "$device" "${bench_sizes[@]}" \
    --skip memory --skip startup --json "$out/bench-gpu.json"
step sink-profile "$python" tools/sink_profile.py --device "$device" --batch "${PARITY_GPU_PROFILE_BATCH:-256}" \
    --rounds 2
step check-tf32 "$python" -m parity check --candidate torch --device "$device" --allow-tf32 --case pinn-default \
    --case pinn-fly001-moon --mode both --out "$out/check-tf32"
step pytest "$python" -m pytest -q -p no:cacheprovider -n "${PARITY_GPU_WORKERS:-8}" --dist loadfile \
    --parity-device "$device" --parity-baselines off --parity-out "$out/pytest-reports" tests
# the text results in one archive (a device session brings back only a few files)
(cd "$out" && find . -name '*.txt' -o -name '*.json' -o -name '*.log' | grep -v '^./results' \
    | tar -czf results.tar.gz -T -) || true
exit 0
