#!/usr/bin/env bash
# The first-order correction (docs/RESULTS.md, "First-order correction"): SmolLM2-135M-Instruct
# pruned by LLM Surgeon and SparseGPT at 50 % unstructured, 2:4 and rows and columns at density 0.7
# (LLM Surgeon only: SparseGPT has no row/column form), each without and with --first-order, under
# the cross-domain protocol (benchmarks/cross_domain.sh: calibrated on wikitext-2 valid, N = 32 x 256,
# evaluated on wikitext-2 test and the Debian Policy Manual, which is never used for calibration or
# fine-tuning), one run at a time on one machine. Writes the cross-domain tables and a table of
# what the correction gains (benchmarks/first_order_table.py) to OUT/results.md and OUT/gain.md.
#
#   benchmarks/first_order.sh [--build DIR] [--out DIR] [--seeds "3"] [--suites "50 2:4 rows-cols"]
#                             [-- EXTRA FIRST-ORDER FLAGS]
#
# Runs whose report exists are skipped, so an interrupted script resumes where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
out=build/first_order
seeds="3"
suites="50 2:4 rows-cols"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --suites) suites=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--build DIR] [--out DIR] [--seeds LIST] [--suites LIST] [-- FLAGS...]" >&2; exit 2 ;;
  esac
done
for suite in $suites; do
  # Each pair back to back, so that the two runs of a pair see the same machine.
  bash benchmarks/cross_domain.sh --build "$build" --out "$out" --seeds "$seeds" --suites "$suite" \
    --methods "sparsegpt llm-surgeon"
  bash benchmarks/cross_domain.sh --build "$build" --out "$out" --seeds "$seeds" --suites "$suite" \
    --methods "sparsegpt llm-surgeon" --tag first-order -- --first-order "${extra[@]}"
done
/usr/bin/python3 benchmarks/first_order_table.py "$out/reports" >"$out/gain.md"
cat "$out/gain.md"
