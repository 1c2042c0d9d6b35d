#!/usr/bin/env bash
# A run over two processes against one (docs/BENCHMARKS.md, "Over several processes"):
# SmolLM2-135M-Instruct, LLM Surgeon, unstructured, density 0.5, one shot, N = 32 x 256 from
# wikitext-2 valid, at the tool's defaults (sequential calibration) and with --one-pass (the
# paper's schedule: one pass, every curvature in memory for the update). One process with one
# BLAS thread against `mpirun -np 2` with one BLAS thread per process, one run at a time on one
# machine; then the phases, their ratios and each process's peak memory
# (benchmarks/distributed_table.py), in OUT/<mode>/table.md.
#
#   benchmarks/distributed.sh [--build DIR] [--out DIR] [--modes "default one-pass"]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
out=build/distributed
modes="default one-pass"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--out DIR] [--modes LIST]" >&2; exit 2 ;;
  esac
done
model=$(bash scripts/fetch-models.sh)
# wikitext-2 from ../shared (no package registry carries it), as benchmarks/cross_domain.sh.
calib=../shared/data/wikitext-2/valid.txt
eval_text=../shared/data/wikitext-2/test.txt
for f in "$calib" "$eval_text"; do
  [ -f "$f" ] || { echo "distributed: $f is missing (../shared/data/wikitext-2)" >&2; exit 1; }
done
tool="$build/examples/llama/surgeon-prune"
flags=(--model "$model" --calib "$calib" --eval "$eval_text" --method llm-surgeon --structure unstructured
       --density 0.5 --shots 1 --nsamples 32 --seqlen 256 --eval-windows 8 --seed 3 --update-threads 1)
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
# mpirun refuses root unless told (CI and containers run as root).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
for mode in $modes; do
  extra=()
  [ "$mode" = one-pass ] && extra=(--one-pass)
  dir="$out/$mode"
  mkdir -p "$dir"
  echo "$mode: one process, one thread"
  "$tool" "${flags[@]}" "${extra[@]}" --out "$dir/one.gguf" --report "$dir/one.json" >"$dir/one.log" 2>&1
  echo "$mode: two processes, one thread each"
  mpirun -np 2 -x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS "$tool" "${flags[@]}" "${extra[@]}" --out "$dir/two.gguf" \
    --report "$dir/two.json" >"$dir/two.log" 2>&1
  /usr/bin/python3 benchmarks/distributed_table.py "$dir/one.json" "$dir/two.json" | tee "$dir/table.md"
done
