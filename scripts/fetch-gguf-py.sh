#!/usr/bin/env bash
# Fetches gguf-py, llama.cpp's own Python GGUF library (the PyPI package `gguf`), into a cache
# outside the repository, checks its hash and prints the wheel's path. The wheel is pure Python:
# the tests import it straight from the zip (`sys.path.insert(0, wheel)`), so nothing is installed.
# It is the independent reference for surgeon's GGUF dequantisation (tests/gguf_reference.py).
#
#   scripts/fetch-gguf-py.sh            # fetch (if missing) and print the wheel path
#   SURGEON_MODEL_CACHE=/path ...       # cache folder (default: ~/.cache/surgeon)
set -euo pipefail
cache="${SURGEON_MODEL_CACHE:-$HOME/.cache/surgeon}/python"
mkdir -p "$cache"
wheel="$cache/gguf-0.17.1-py3-none-any.whl"
wheel_sha256="7bc5aa7eeb1931f7d39b48fdc5b38fda6b294b9dca75cf607ac69557840a3943"

check() {  # check FILE SHA256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

if ! check "$wheel" "$wheel_sha256"; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" "gguf==0.17.1" >&2
  [ -f "$work/$(basename "$wheel")" ] || { echo "fetch-gguf-py: pip downloaded no gguf 0.17.1 wheel" >&2; exit 1; }
  if ! check "$work/$(basename "$wheel")" "$wheel_sha256"; then
    echo "fetch-gguf-py: sha256 mismatch for $(basename "$wheel")" >&2
    exit 1
  fi
  mv "$work/$(basename "$wheel")" "$wheel"
fi
echo "$wheel"
