#!/usr/bin/env bash
# Copies the header-only dependencies of the CUDA tests and benchmarks from this machine's Debian
# packages into the git-ignored .deps/include/, so that a machine without the -dev packages (the GPU
# machine, see benchmarks/gpu_check.sh) can build them:
#   Eigen 3 (libeigen3-dev: /usr/include/eigen3/Eigen), fmt (libfmt-dev: /usr/include/fmt, used
#   header-only with FMT_HEADER_ONLY), Catch2 v2 (catch2: /usr/include/catch2/catch.hpp).
# It also copies stories260K and wikitext-2 from ../shared (when present) into .deps/shared/, for
# gpu_check.sh's end-to-end surgeon-prune --device cuda check (3.4 MB; never committed).
# Usage: bash scripts/fill-deps.sh   (from anywhere; idempotent: replaces .deps/include, .deps/shared)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.deps/include"

need() {
  if [ ! -e "$1" ]; then
    echo "fill-deps: $1 not found (install $2)" >&2
    exit 1
  fi
}
need /usr/include/eigen3/Eigen/Dense libeigen3-dev
need /usr/include/fmt/format-inl.h libfmt-dev
need /usr/include/catch2/catch.hpp catch2

rm -rf "$dest"
mkdir -p "$dest"
cp -a /usr/include/eigen3/Eigen "$dest/Eigen"
cp -a /usr/include/fmt "$dest/fmt"
mkdir -p "$dest/catch2"
cp -a /usr/include/catch2/catch.hpp "$dest/catch2/catch.hpp"

shared_src="${SURGEON_SHARED_DIR:-$root/../shared}"
shared_dest="$root/.deps/shared"
rm -rf "$shared_dest"
if [ -f "$shared_src/models/stories260K/stories260K.bin" ] && [ -f "$shared_src/data/wikitext-2/test.txt" ]; then
  mkdir -p "$shared_dest/models/stories260K" "$shared_dest/data/wikitext-2"
  cp "$shared_src/models/stories260K/stories260K.bin" "$shared_src/models/stories260K/tok512.bin" \
    "$shared_dest/models/stories260K/"
  cp "$shared_src/data/wikitext-2/valid.txt" "$shared_src/data/wikitext-2/test.txt" "$shared_dest/data/wikitext-2/"
  echo "fill-deps: stories260K and wikitext-2 copied to $shared_dest"
else
  echo "fill-deps: $shared_src lacks stories260K or wikitext-2: gpu_check.sh will skip the surgeon-prune check"
fi

echo "fill-deps: $(du -sh "$dest" | cut -f1) in $dest (Eigen, fmt $(sed -n 's/^#define FMT_VERSION \([0-9]*\).*/\1/p' "$dest/fmt/core.h"), Catch2 v2)"
