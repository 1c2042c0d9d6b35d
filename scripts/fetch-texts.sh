#!/usr/bin/env bash
# Fetches the evaluation texts of surgeon's cross-domain protocol (docs/RESULTS.md) into a cache
# outside the repository, checks their hashes, and prints their paths, one per line.
#
#   scripts/fetch-texts.sh                   # fetch (if missing) and print every text's path
#   scripts/fetch-texts.sh policy            # print one text's path (fetching it if missing)
#   SURGEON_MODEL_CACHE=/path ...            # cache folder (default: ~/.cache/surgeon)
#
# policy: the Debian Policy Manual 4.6.2.0 as plain text (English technical documentation: a
#   domain far from wikitext-2's encyclopedia articles, never used for calibration). It comes from
#   Debian 12's package debian-policy_4.6.2.0_all.deb (file
#   usr/share/doc/debian-policy/policy.txt.gz, GPL-2+ with the Debian Policy's own notices); the
#   table of contents in front of chapter 1 is cut so that the first evaluation windows are prose.
#   466,118 bytes, about 114,000 SmolLM2 tokens.
set -euo pipefail
cache="${SURGEON_MODEL_CACHE:-$HOME/.cache/surgeon}/texts"
mkdir -p "$cache"

policy="$cache/debian-policy-4.6.2.0.txt"
policy_sha256="f8c00c3f120fbee372f56a1d60f59e14dd3ce9ea5bc8ca87c2d6716f8343f754"
policy_deb="debian-policy_4.6.2.0_all.deb"
policy_deb_sha256="ef9d01b625c3b87c3a845c2cd1b66f1a16e9240b2b9e5bee53472a00e8457a39"
policy_url="https://deb.debian.org/debian/pool/main/d/debian-policy/$policy_deb"

check() {  # check FILE SHA256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

fetch_policy() {
  check "$policy" "$policy_sha256" && return 0
  local work
  work=$(mktemp -d)
  # apt first (it verifies the package against the signed archive index), the pool URL otherwise.
  (cd "$work" && apt-get download -qq "debian-policy=4.6.2.0" >/dev/null 2>&1) ||
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
      "$policy_url" "$work/$policy_deb"
  if ! check "$work/$policy_deb" "$policy_deb_sha256"; then
    echo "fetch-texts: sha256 mismatch or download failure for $policy_deb" >&2
    rm -rf "$work"
    exit 1
  fi
  dpkg-deb --fsys-tarfile "$work/$policy_deb" |
    tar -xO ./usr/share/doc/debian-policy/policy.txt.gz | gzip -dc >"$work/policy.txt"
  # From the heading of chapter 1 (its title line underlined with "*") to the end.
  python3 - "$work/policy.txt" "$policy.part" <<'PY'
import sys
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
start = next(k for k in range(len(lines) - 1)
             if lines[k] == "1. About this manual" and set(lines[k + 1]) == {"*"})
open(sys.argv[2], "w", encoding="utf-8").write("\n".join(lines[start:]))
PY
  rm -rf "$work"
  if ! check "$policy.part" "$policy_sha256"; then
    echo "fetch-texts: sha256 mismatch for the policy text: got $(sha256sum "$policy.part" | cut -d' ' -f1)" >&2
    rm -f "$policy.part"
    exit 1
  fi
  mv "$policy.part" "$policy"
}

case "${1:-all}" in
  policy) fetch_policy && echo "$policy" ;;
  all) fetch_policy && echo "$policy" ;;
  *) echo "fetch-texts: unknown text '$1' (policy)" >&2; exit 2 ;;
esac
