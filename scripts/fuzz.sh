#!/usr/bin/env bash
# Fuzzes surgeon's model-file readers with libFuzzer + ASan + UBSan. Not part of CI.
#
#   scripts/fuzz.sh                  # build every fuzz/fuzz_*.cpp and run each for 60 s
#   FUZZ_SECONDS=600 scripts/fuzz.sh # run each target longer
#   scripts/fuzz.sh gguf             # only fuzz/fuzz_gguf.cpp
#
# Environment: FUZZ_SECONDS (default 60) per target; FUZZ_OUT (default build/fuzz) for binaries,
# corpora, logs and crash artifacts; FUZZ_CXX (default clang++, which needs the libFuzzer
# runtime, e.g. Debian's libclang-rt-14-dev); FUZZ_FMT=header to use fmt header-only instead
# of linking -lfmt.
#
# Seeds are written at run time by fuzz/make_corpus.cpp with surgeon's own writers (no binary
# files are checked in); files in fuzz/corpus_<target>/, if any, are added as extra seeds. The
# corpus each run grows is kept in $FUZZ_OUT/corpus_<target>/ and reused next time. Exits
# non-zero when any target reports a finding (its input is saved in $FUZZ_OUT/artifacts_<target>/).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
seconds="${FUZZ_SECONDS:-60}"
out="${FUZZ_OUT:-$root/build/fuzz}"
cxx="${FUZZ_CXX:-clang++}"
mkdir -p "$out"

if [ "${FUZZ_FMT:-lib}" = header ]; then
  fmt_flags=(-DFMT_HEADER_ONLY)
else
  fmt_flags=(-lfmt)
fi
flags=(-std=c++17 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -I "$root/include")

echo "== seeds"
"$cxx" -std=c++17 -O1 -I "$root/include" "$root/fuzz/make_corpus.cpp" "${fmt_flags[@]}" -o "$out/make_corpus"
rm -rf "$out/seeds"
"$out/make_corpus" "$out/seeds"

targets=()
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  for src in "$root"/fuzz/fuzz_*.cpp; do
    name=$(basename "$src" .cpp)
    targets+=("${name#fuzz_}")
  done
fi

status=0
summary=()
for target in "${targets[@]}"; do
  src="$root/fuzz/fuzz_$target.cpp"
  [ -f "$src" ] || { echo "fuzz.sh: no $src" >&2; exit 2; }
  bin="$out/fuzz_$target"
  echo "== build $target"
  "$cxx" "${flags[@]}" "$src" "${fmt_flags[@]}" -o "$bin"

  corpus="$out/corpus_$target"
  artifacts="$out/artifacts_$target"
  mkdir -p "$corpus" "$artifacts"
  seed_dirs=()
  [ -d "$out/seeds/$target" ] && seed_dirs+=("$out/seeds/$target")
  [ -d "$root/fuzz/corpus_$target" ] && seed_dirs+=("$root/fuzz/corpus_$target")
  before=$(find "$artifacts" -type f | wc -l)

  echo "== run $target for ${seconds}s"
  log="$out/fuzz_$target.log"
  set +e
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin" -max_total_time="$seconds" -max_len=65536 -timeout=20 -rss_limit_mb=4096 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 "$corpus" "${seed_dirs[@]}" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || true)
  after=$(find "$artifacts" -type f | wc -l)
  findings=$((after - before))
  if [ "$rc" -ne 0 ] || [ "$findings" -ne 0 ]; then
    status=1
    echo "!! $target: exit $rc, $findings new finding(s) in $artifacts; tail of $log:"
    tail -40 "$log"
  fi
  summary+=("$target: ${execs:-?} executions, coverage ${cov:-?}, corpus $(find "$corpus" -type f | wc -l) files, findings $findings (exit $rc)")
done

echo "== summary (${seconds}s per target)"
printf '%s\n' "${summary[@]}"
exit "$status"
