#!/usr/bin/env bash
# Every pruning method x structure at several densities with surgeon-prune: a Markdown table of
# wikitext-2 test perplexities (with the exact command of every row) and a PNG plot of perplexity
# against density (benchmarks/plot_results.py; the PNG needs gnuplot, e.g. Debian's gnuplot-nox).
#
#   benchmarks/compare_methods.sh [--smollm2] [--no-stories] [--build DIR]
#                                 [--out DIR (build/compare_methods)] [--densities "0.9 0.8 ..."]
#
# stories260K (../shared/models/stories260K), unless --no-stories: 32 x 256 calibration tokens,
# 16 evaluation windows of 256, 5 shots, every method x structure at --densities.
# --smollm2 adds SmolLM2-135M (scripts/fetch-models.sh; about an hour on 2 cores, an LLM Surgeon
# unstructured run alone is ~6 minutes): 8 x 256 calibration tokens, 8 windows of 256, one shot;
# unstructured at 0.8/0.7/0.6/0.5 and 2:4 with every method, rows-cols at 0.9/0.8/0.7 with
# magnitude, L-OBD, K-OBD and LLM Surgeon. Wall time and peak memory are in the table.
# Calibration on wikitext-2 valid.txt, evaluation on test.txt (METHOD.md §8); seed 0,
# λ_G = 0.1, λ_A = 0.01 (surgeon-prune's defaults).
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
out=build/compare_methods
densities="0.9 0.8 0.7 0.6 0.5"
smollm2=0
stories=1
while [ $# -gt 0 ]; do
  case "$1" in
    --smollm2) smollm2=1; shift ;;
    --no-stories) stories=0; shift ;;
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --densities) densities=$2; shift 2 ;;
    *) echo "usage: $0 [--smollm2] [--no-stories] [--build DIR] [--out DIR] [--densities LIST]" >&2; exit 2 ;;
  esac
done
shared=../shared
calib=$shared/data/wikitext-2/valid.txt
eval_text=$shared/data/wikitext-2/test.txt
[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" --target surgeon-prune surgeon-ppl >/dev/null
prune="$build/examples/llama/surgeon-prune"
mkdir -p "$out/reports"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# run NAME MODEL OUT-SUFFIX FLAGS...: one surgeon-prune run; a failure is logged and skipped.
run() {
  local name=$1 model=$2 suffix=$3
  shift 3
  local report="$out/reports/$name.json"
  if "$prune" --model "$model" --calib "$calib" --eval "$eval_text" --out "$work/$name$suffix" \
      --report "$report" "$@" >"$work/log" 2>&1; then
    echo "$name: $(tail -1 "$work/log")"
  else
    echo "$name: FAILED: $(tail -1 "$work/log")"
    rm -f "$report"
    printf '%s\n' "$name: $(tail -1 "$work/log")" >>"$out/failures.txt"
  fi
  rm -f "$work/$name$suffix"
}

rm -f "$out"/reports/*.json "$out/failures.txt"
stories_model=$shared/models/stories260K/stories260K.bin
common=(--nsamples 32 --seqlen 256 --eval-windows 16 --shots 5 --seed 0)
[ "$stories" = 1 ] || densities=""
for density in $densities; do
  for method in magnitude wanda lobd kobd sparsegpt llm-surgeon; do
    run "stories260K_${method}_unstructured_$density" "$stories_model" .bin "${common[@]}" \
      --method $method --structure unstructured --density "$density"
    # 2:4 removes at most half of the weights; SparseGPT's 2:4 removes exactly half.
    if awk "BEGIN{exit !($density >= 0.5)}" && { [ "$method" != sparsegpt ] || [ "$density" = 0.5 ]; }; then
      run "stories260K_${method}_2_4_$density" "$stories_model" .bin "${common[@]}" \
        --method $method --structure 2:4 --density "$density"
    fi
    case $method in wanda | sparsegpt) ;; *)
      run "stories260K_${method}_rows-cols_$density" "$stories_model" .bin "${common[@]}" \
        --method $method --structure rows-cols --density "$density" ;;
    esac
  done
done

if [ "$smollm2" = 1 ]; then
  smol=$(bash scripts/fetch-models.sh)
  smol_common=(--nsamples 8 --seqlen 256 --eval-windows 8 --shots 1 --seed 0)
  # Cheap methods first, so a partial run already has the baselines.
  for method in magnitude wanda lobd kobd sparsegpt llm-surgeon; do
    for density in 0.8 0.7 0.6 0.5; do
      run "smollm2_${method}_unstructured_$density" "$smol" .gguf "${smol_common[@]}" \
        --method $method --structure unstructured --density "$density"
    done
    run "smollm2_${method}_2_4_0.5" "$smol" .gguf "${smol_common[@]}" \
      --method $method --structure 2:4 --density 0.5
    case $method in wanda | sparsegpt) ;; *)
      for density in 0.9 0.8 0.7; do
        run "smollm2_${method}_rows-cols_$density" "$smol" .gguf "${smol_common[@]}" \
          --method $method --structure rows-cols --density "$density"
      done ;;
    esac
  done
fi

/usr/bin/python3 benchmarks/plot_results.py "$out/reports" --markdown "$out/results.md" --png "$out/results.png"
echo "wrote $out/results.md and $out/results.png"
