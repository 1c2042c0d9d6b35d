#!/usr/bin/env bash
# Coupled structures cut out of the model (docs/BENCHMARKS.md, "Physically smaller models"):
# SmolLM2-135M-Instruct pruned with --structure neurons-heads to density 0.7 (70 % of the prunable
# parameters kept) by LLM Surgeon, K-OBD and magnitude, with the cross-domain protocol of
# benchmarks/cross_domain.sh (calibration on wikitext-2 valid, N = 32 x 256 tokens; perplexity of
# wikitext-2 test and of the Debian Policy Manual, 32 windows of 256). Each pruned F16 GGUF is
# compared with the dense model written as F16 by the same tool: file size, and llama.cpp's
# llama-bench prompt (pp256) and generation (tg64) speed on the CPU, interleaved in rounds (below).
#
#   benchmarks/neurons_heads.sh [--build DIR] [--out DIR] [--methods "llm-surgeon kobd magnitude"]
#                               [--density 0.7] [--threads 2] [--rounds 6]
#
# Runs whose report exists are skipped. Needs ../shared/data/wikitext-2, the registries (model,
# second text, llama.cpp's source: scripts/fetch-*.sh) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build
out=build/neurons_heads
methods="llm-surgeon kobd magnitude"
density=0.7
threads=2
rounds=6
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --methods) methods=$2; shift 2 ;;
    --density) density=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--out DIR] [--methods LIST] [--density D] [--threads K] [--rounds R]" >&2
       exit 2 ;;
  esac
done
calib=../shared/data/wikitext-2/valid.txt
wiki=../shared/data/wikitext-2/test.txt
for f in "$calib" "$wiki"; do
  [ -f "$f" ] || { echo "neurons_heads: $f is missing (../shared/data/wikitext-2)" >&2; exit 1; }
done
model=$(bash scripts/fetch-models.sh)
policy=$(bash scripts/fetch-texts.sh policy)
tools=$(bash scripts/fetch-llama-cpp.sh)
[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" --target surgeon-prune >/dev/null
prune="$build/examples/llama/surgeon-prune"
mkdir -p "$out/reports" "$out/logs"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), commit $(git rev-parse --short HEAD)"

# run NAME FLAGS...: one surgeon-prune run unless its report exists; keeps the written GGUF.
run() {
  local name=$1
  shift
  local report="$out/reports/$name.json"
  [ -f "$report" ] && [ -f "$out/$name.gguf" ] && { echo "$name: done before"; return 0; }
  if "$prune" --model "$model" --calib "$calib" --eval "$wiki" --eval "$policy" --out "$out/$name.gguf" \
      --report "$report.part" --nsamples 32 --seqlen 256 --eval-windows 32 "$@" >"$out/logs/$name.log" 2>&1; then
    mv "$report.part" "$report"
    echo "$name: $(grep -E '^\| pruned' "$out/logs/$name.log" | tr -s ' ')"
  else
    echo "$name: FAILED: $(tail -1 "$out/logs/$name.log")" >&2
    rm -f "$report.part"
    return 1
  fi
}

# The dense model as the same tool writes it (F16, nothing pruned).
run dense --method magnitude --structure unstructured --density 1
names=(dense)
for method in $methods; do
  run "$method" --method "$method" --structure neurons-heads --density "$density"
  names+=("$method")
done

# llama-bench, interleaved: each round runs every model once (-r 3), so that a slow spell of the
# shared machine hits every model; the table gives each model's median over the rounds of its
# ratio to dense in the same round.
rm -f "$out/llama-bench.jsonl"
for round in $(seq "$rounds"); do
  for name in "${names[@]}"; do
    "$tools/bin/llama-bench" -m "$out/$name.gguf" -p 256 -n 64 -t "$threads" -r 3 -o jsonl \
      >>"$out/llama-bench.jsonl" 2>>"$out/logs/llama-bench.log"
  done
done

python3 - "$out" "${names[@]}" <<'EOF'
import json, os, sys
out, names = sys.argv[1], sys.argv[2:]
import statistics
rows = [json.loads(line) for line in open(os.path.join(out, "llama-bench.jsonl")) if line.strip()]
# Rows come in rounds: per model, pp then tg, in `names` order.
speeds = {}  # (name, kind) -> per-round tokens/s
for i, row in enumerate(rows):
    name = os.path.splitext(os.path.basename(row["model_filename"]))[0]
    kind = "pp" if row["n_prompt"] > 0 else "tg"
    speeds.setdefault((name, kind), []).append(row["avg_ts"])
def ratio(name, kind):
    return statistics.median(x / d for x, d in zip(speeds[(name, kind)], speeds[("dense", kind)]))
def spread(name, kind):
    r = sorted(x / d for x, d in zip(speeds[(name, kind)], speeds[("dense", kind)]))
    return f"{r[0]:.2f}–{r[-1]:.2f}"
reports = {n: json.load(open(os.path.join(out, "reports", n + ".json"))) for n in names}
dense = reports["dense"]
size0 = os.path.getsize(os.path.join(out, "dense.gguf"))
rounds = len(speeds[("dense", "pp")])
print(f"| model | density | wikitext-2 | policy | file MB | size × | pp256 × (range, {rounds} rounds) | tg64 × (range) | prune s |")
print("|---|---|---|---|---|---|---|---|---|")
for n in names:
    r = reports[n]
    ev = r["evaluations"]
    size = os.path.getsize(os.path.join(out, n + ".gguf"))
    print(f"| {n} | {r['achieved_density']:.4f} | {ev[0]['ppl_pruned']:.2f} | {ev[1]['ppl_pruned']:.2f} | "
          f"{size / 1e6:.1f} | {size / size0:.3f} | {ratio(n, 'pp'):.2f} ({spread(n, 'pp')}) | "
          f"{ratio(n, 'tg'):.2f} ({spread(n, 'tg')}) | {r['seconds']:.0f} |")
print(f"\ndense tokens/s, median of rounds: pp256 {statistics.median(speeds[('dense', 'pp')]):.1f}, "
      f"tg64 {statistics.median(speeds[('dense', 'tg')]):.1f}")
print(f"\ndense perplexities: wikitext-2 {dense['evaluations'][0]['ppl_dense']:.2f}, "
      f"policy {dense['evaluations'][1]['ppl_dense']:.2f}")
EOF
