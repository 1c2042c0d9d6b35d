#!/usr/bin/env bash
# Copies the header-only dependencies of the CUDA tests and benchmarks from this machine's Debian
# packages into the git-ignored .deps/include/, so that a machine without the -dev packages (the GPU
# machine, see benchmarks/gpu_check.sh) can build them:
#   Eigen 3 (libeigen3-dev: /usr/include/eigen3/Eigen), fmt (libfmt-dev: /usr/include/fmt, used
#   header-only with FMT_HEADER_ONLY), Catch2 v2 (catch2: /usr/include/catch2/catch.hpp).
# Usage: bash scripts/fill-deps.sh   (from anywhere; idempotent: replaces .deps/include)
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

echo "fill-deps: $(du -sh "$dest" | cut -f1) in $dest (Eigen, fmt $(sed -n 's/^#define FMT_VERSION \([0-9]*\).*/\1/p' "$dest/fmt/core.h"), Catch2 v2)"
