#!/usr/bin/env bash
# On the GPU machine (CUDA toolkit, CMake, a C++ compiler; no Debian -dev packages, no network):
# builds ONLY the CUDA tests and benchmarks and surgeon-prune/surgeon-ppl
# (benchmarks/gpu_check/CMakeLists.txt, headers from .deps/include filled by scripts/fill-deps.sh),
# runs test_cuda, surgeon-prune --device cuda against --device cpu on stories260K
# (tests/llama/prune_check.py cuda, model and texts from .deps/shared), and bench_cuda; prints a
# summary. Budget: under 8 minutes in all (build about 2-3, tests well under 1, the prune check
# about 1-2, benchmarks about 3; each step has its own timeout). GPU_CHECK_QUICK=1 skips the
# 11008² eigendecompositions, runs the LLM Surgeon layer shot on 1024 of its 4096 rows and only
# six of the prune check's configurations. Without it, the script still switches a later step to
# its quick form when the time left of GPU_CHECK_BUDGET (seconds, default 480) is short for the
# full one, and caps each step's timeout at the time left, so that one run under a device limit
# of 8-9 minutes ends with every step's result rather than a kill mid-way.
# Logs and the summary are copied to $OUT when it is set.
#
#   bash scripts/fill-deps.sh          # first, on a machine with the packages
#   bash benchmarks/gpu_check.sh       # then on the GPU machine (carry .deps)
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${GPU_CHECK_BUILD:-/tmp/surgeon-gpu-check}"
logs="${OUT:-$build}"
mkdir -p "$build" "$logs"
export PATH="/usr/local/cuda/bin:$PATH"
start=$(date +%s)
elapsed() { echo "$(($(date +%s) - start))s"; }
budget="${GPU_CHECK_BUDGET:-480}"
left() { echo $((budget - ($(date +%s) - start))); }
# A step's timeout: its usual cap, or the time left (at least 30 s), whichever is smaller.
step_timeout() {
  local cap=$1 rest
  rest=$(left)
  [ "$rest" -lt 30 ] && rest=30
  [ "$rest" -lt "$cap" ] && echo "$rest" || echo "$cap"
}
quick="${GPU_CHECK_QUICK:-0}"
quick_notes=""

if [ ! -f "$root/.deps/include/Eigen/Dense" ]; then
  echo "gpu_check: $root/.deps/include is empty: run scripts/fill-deps.sh first (and carry .deps)" >&2
  exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"

generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
jobs="$(nproc 2>/dev/null || echo 8)"

status_configure=0 status_build=0 status_test=0 status_prune=0 status_bench=0
timeout 120 cmake -S "$root/benchmarks/gpu_check" -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  >"$logs/configure.log" 2>&1 || status_configure=$?
if [ "$status_configure" -eq 0 ]; then
  timeout 270 cmake --build "$build" -j "$jobs" >"$logs/build.log" 2>&1 || status_build=$?
else
  status_build=skipped
fi
echo "configure: $status_configure, build: $status_build ($(elapsed))"
[ "$status_configure" -eq 0 ] || tail -30 "$logs/configure.log"
[ "$status_build" = 0 ] || tail -40 "$logs/build.log"

if [ "$status_build" = 0 ]; then
  (cd "$build" && timeout "$(step_timeout 90)" ./test_cuda --durations yes >"$logs/test_cuda.log" 2>&1) ||
    status_test=$?
  echo "test_cuda: exit $status_test ($(elapsed))"
  tail -25 "$logs/test_cuda.log"
  prune_args=()
  # The full prune check takes about 2 minutes and the full benchmarks about 3.
  if [ "$quick" != 1 ] && [ "$(left)" -lt 330 ]; then
    prune_args=(--quick)
    quick_notes="$quick_notes prune_check quick ($(left) s left);"
  fi
  [ "$quick" = 1 ] && prune_args=(--quick)
  if [ -f "$root/.deps/shared/models/stories260K/stories260K.bin" ]; then
    timeout "$(step_timeout 180)" python3 "$root/tests/llama/prune_check.py" cuda --prune "$build/surgeon-prune" \
      --ppl "$build/surgeon-ppl" --shared "$root/.deps/shared" --work "$build/prune_check" --cuda-build 1 \
      "${prune_args[@]}" >"$logs/prune_check.log" 2>&1 || status_prune=$?
    grep -E "^  [a-z_0-9]+: ppl cpu|configurations agree|FAIL|skipped" "$logs/prune_check.log"
  else
    status_prune="skipped (no .deps/shared: run fill-deps.sh beside ../shared)"
  fi
  echo "prune_check: exit $status_prune ($(elapsed))"
  bench_args=()
  # Skip the 11008² eigendecompositions and shrink the layer when time is short (GPU_CHECK_QUICK=1,
  # or less than 200 s left).
  if [ "$quick" != 1 ] && [ "$(left)" -lt 200 ]; then
    quick_notes="$quick_notes bench_cuda quick ($(left) s left);"
    bench_args=(--no-large-eigen --layer-rows 1024)
  fi
  [ "$quick" = 1 ] && bench_args=(--no-large-eigen --layer-rows 1024)
  (cd "$build" && timeout "$(step_timeout 300)" ./bench_cuda "${bench_args[@]}" >"$logs/bench_cuda.log" 2>&1) ||
    status_bench=$?
  echo "bench_cuda: exit $status_bench ($(elapsed))"
  cat "$logs/bench_cuda.log"
else
  status_test=skipped status_prune=skipped status_bench=skipped
fi

{
  echo "=== gpu_check summary ($(elapsed)) ==="
  echo "configure   $status_configure"
  echo "build       $status_build"
  echo "test_cuda   $status_test   (0 = all passed, 77 = no device)"
  echo "prune_check $status_prune   (surgeon-prune --device cuda vs cpu on stories260K; 77 = no device)"
  echo "bench_cuda  $status_bench"
  echo "mode        $([ "$quick" = 1 ] && echo "quick (GPU_CHECK_QUICK=1)" || echo "full, budget ${budget} s;${quick_notes:- no step shortened}")"
} | tee "$logs/summary.txt"
[ "$status_configure" = 0 ] && [ "$status_build" = 0 ] && [ "$status_test" = 0 ] && [ "$status_prune" = 0 ] && [ "$status_bench" = 0 ]
