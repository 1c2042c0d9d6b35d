#!/usr/bin/env bash
# Builds llama.cpp's command-line tools from the llama.cpp source that the llama-cpp-python sdist on
# PyPI carries (pinned version, sha256-checked), into a cache outside the repository, and prints the
# folder that holds them: llama-perplexity, llama-bench, llama-quantize, llama-simple, and
# libllama/libggml for programs that link llama.cpp (benchmarks/llama_cpp_ppl.cpp).
#
#   scripts/fetch-llama-cpp.sh          # fetch and build (if missing), print <cache>/llama.cpp-<v>/build
#   scripts/fetch-llama-cpp.sh --built  # print it only if already built; exit 77 otherwise (tests)
#   SURGEON_MODEL_CACHE=/path ...       # cache folder (default: ~/.cache/surgeon)
#
# CPU only, GGML_NATIVE=OFF: a native build's AMX path gives wrong Q4_1 results on the EPYC CPUs
# of this project's machines; the portable build is what the checks compare against.
set -euo pipefail
version="0.3.36"
sdist="llama_cpp_python-$version.tar.gz"
sdist_sha256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
url="https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/$sdist"
root="${SURGEON_MODEL_CACHE:-$HOME/.cache/surgeon}/llama.cpp-$version"
tools=(llama-perplexity llama-bench llama-quantize llama-simple)

built() {
  for tool in "${tools[@]}"; do [ -x "$root/build/bin/$tool" ] || return 1; done
}

if [ "${1:-}" = "--built" ]; then
  built || exit 77
  echo "$root/build"
  exit 0
fi

if ! built; then
  mkdir -p "$root"
  if [ ! -f "$root/$sdist" ] || [ "$(sha256sum "$root/$sdist" | cut -d' ' -f1)" != "$sdist_sha256" ]; then
    curl -sSfL --retry 3 -o "$root/$sdist.part" "$url"
    got="$(sha256sum "$root/$sdist.part" | cut -d' ' -f1)"
    if [ "$got" != "$sdist_sha256" ]; then
      echo "fetch-llama-cpp: sha256 mismatch for $sdist: got $got" >&2
      rm -f "$root/$sdist.part"
      exit 1
    fi
    mv "$root/$sdist.part" "$root/$sdist"
  fi
  rm -rf "$root/src"
  mkdir -p "$root/src"
  tar -xzf "$root/$sdist" -C "$root/src" --strip-components=3 "llama_cpp_python-$version/vendor/llama.cpp"
  cmake -S "$root/src" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DGGML_OPENMP=OFF \
    -DBUILD_SHARED_LIBS=ON >&2
  cmake --build "$root/build" -j "$(nproc)" --target "${tools[@]}" >&2
  built || { echo "fetch-llama-cpp: the build left no ${tools[*]}" >&2; exit 1; }
fi
echo "$root/build"
