#!/usr/bin/env bash
# --help of ompq-server and ompq-worker lists their own flags (absl's default looks for a
# file named like the program and listed none for the worker), and both accept the
# documented dashed spelling of flag names as well as absl's underscores.
set -euo pipefail
bin=${1:?usage: flags_help_test.sh BIN_DIR}

check_help() {  # binary, then flags its --help must list
  local binary=$1; shift
  local out
  out=$("$bin/$binary" --help 2>&1 || true)
  if grep -q "No flags matched" <<<"$out"; then
    echo "FAIL: $binary --help lists no flags:"; echo "$out"; exit 1
  fi
  for flag in "$@"; do
    grep -q -- "--$flag (" <<<"$out" || { echo "FAIL: $binary --help lacks --$flag:"; echo "$out"; exit 1; }
  done
  echo "ok: $binary --help lists $*"
}
check_help ompq-server data_dir listen workers tls_cert
check_help ompq-worker server work_dir device metrics_listen

# Dashed and underscored names parse alike; an unknown flag is refused by name.
for spelling in --work-dir --work_dir; do
  out=$("$bin/ompq-worker" "$spelling=/tmp/x" --bogus-flag 2>&1 || true)
  grep -q "Unknown command line flag 'bogus_flag'" <<<"$out" ||
    { echo "FAIL: ompq-worker $spelling: $out"; exit 1; }
done
echo "ok: --work-dir and --work_dir both parse; unknown flags refused by name"
