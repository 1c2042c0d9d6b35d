#!/usr/bin/env bash
# SmolLM2-135M checks outside CI: tokenizer parity with Hugging Face `tokenizers`, runtime parity
# with PyTorch (logits, loss, layer inputs and gradients), forward + backward speed beside PyTorch in
# the same run, peak memory of a backward pass over 8 x 512 tokens, and wikitext-2 test perplexity
# (32 windows of 512 tokens).
#
#   benchmarks/smollm2.sh [build-dir]     (default: build; configured and built if needed)
#
# Needs Debian's python3-torch (scripts/install-deps.sh) and PyPI (gguf, tokenizers go into a venv
# under the model cache).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
cache="${SURGEON_MODEL_CACHE:-$HOME/.cache/surgeon}"
model=$(bash scripts/fetch-models.sh)
text=../shared/data/wikitext-2/test.txt
venv="$cache/venv"
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check gguf tokenizers
fi
[ -f "$build/CMakeCache.txt" ] || cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" --target llama-check surgeon-ppl test_llama_io >/dev/null
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"

echo "== tokenizer parity with Hugging Face tokenizers"
mkdir -p "$cache/reference"
"$venv/bin/python" tests/llama/tokenizer_reference.py --gguf "$model" --wikitext "$text" --out "$cache/reference" >/dev/null
SURGEON_TOKENIZER_REF_DIR="$cache/reference" "$build/tests/test_llama_io" "[smollm2]" | tail -2

echo "== runtime parity with PyTorch (float64 reference), 1 x 128 tokens, blocks 0, 15, 29"
"$build/benchmarks/llama-check" --model "$model" --text "$text" --batch 1 --seq 128 --layers 0,15,29 --out "$work/cpp.safetensors"
"$venv/bin/python" benchmarks/llama_torch.py --gguf "$model" --compare "$work/cpp.safetensors" --seq 128 | tail -4

echo "== forward + backward speed, 4 x 512 tokens (best of 3), same machine, same run"
"$build/benchmarks/llama-check" --model "$model" --text "$text" --batch 4 --seq 512 --repeat 3 --out "$work/tokens.safetensors" --layers 0 | tail -1
"$venv/bin/python" benchmarks/llama_torch.py --gguf "$model" --bench --batch 4 --seq 512 --repeat 3 --tokens "$work/tokens.safetensors"

echo "== peak memory of forward + backward over 8 x 512 tokens"
/usr/bin/time -f "peak_rss_kb=%M" "$build/benchmarks/llama-check" --model "$model" --text "$text" --batch 8 --seq 512 --repeat 1 2>&1 | tail -2

echo "== wikitext-2 test perplexity, 32 windows of 512 tokens"
"$build/examples/llama/surgeon-ppl" --model "$model" --text "$text" --seqlen 512 --max-windows 32 | tail -2
