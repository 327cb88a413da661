#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, ASan + UBSan) in build-fuzz, makes
# seed corpora with Debian's python3 (real numpy/torch files) and protoc, and runs each
# target briefly. Fails on any crash, sanitizer report, leak, timeout or OOM.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 20; or $OMPQ_FUZZ_SECONDS)
# Environment: OMPQ_FUZZ_BUILD_DIR (default build-fuzz), OMPQ_FUZZ_JOBS (default 2).
# Crash inputs land in BUILD/fuzz-artifacts; the grown corpora in BUILD/fuzz-corpus are
# kept and reused by the next run. Reproduce a crash: BUILD/fuzz/TARGET ARTIFACT_FILE.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-${OMPQ_FUZZ_SECONDS:-20}}
build=${OMPQ_FUZZ_BUILD_DIR:-build-fuzz}
targets=(fuzz_npy fuzz_npz fuzz_file_sniff fuzz_units fuzz_job_validation fuzz_calibration_file
  fuzz_write_blob_chunk)

# libFuzzer comes with clang (the runtime is in libclang-rt-14-dev).
CC=clang CXX=clang++ cmake -S . -B "$build" -DOMPQ_FUZZ=ON >"$build.configure.log" 2>&1 || {
  cat "$build.configure.log" >&2
  exit 1
}
rm -f "$build.configure.log"
compiler=$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' "$build/CMakeCache.txt")
if [[ "$compiler" != *clang* ]]; then
  echo "fuzz.sh: $build was configured with $compiler; remove it or set OMPQ_FUZZ_BUILD_DIR" >&2
  exit 1
fi
# Only the fuzz targets (and the few libraries they link), not the whole project.
cmake --build "$build" -j "${OMPQ_FUZZ_JOBS:-2}" --target "${targets[@]}"

work=$(mktemp -d "${TMPDIR:-/tmp}/ompq-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
/usr/bin/python3 tests/fuzz/make_seeds.py "$work/seeds" proto

artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
failed=()
for target in "${targets[@]}"; do
  corpus="$build/fuzz-corpus/$target"
  mkdir -p "$corpus"
  log="$work/$target.log"
  # LibTorch's own zip reader leaks on some malformed archives (see the file's comment).
  lsan=""
  [[ $target == fuzz_calibration_file ]] && lsan="suppressions=$PWD/tests/fuzz/lsan_torch.supp"
  rc=0
  # -timeout: one input taking this long is a hang; -rss_limit_mb: memory blow-ups fail.
  LSAN_OPTIONS="$lsan" TMPDIR="$work" timeout $((seconds + 120)) "$build/fuzz/$target" \
    -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$artifacts/$target-" "$corpus" "$work/seeds/$target" >"$log" 2>&1 || rc=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1 || true)
  if [[ $rc -ne 0 ]]; then
    echo "FAIL $target (exit $rc)" >&2
    grep -E -A 30 'ERROR: |runtime error|deadly signal|Test unit written' "$log" | head -n 60 >&2 ||
      tail -n 40 "$log" >&2
    failed+=("$target")
  else
    printf 'ok   %-22s %s runs, %s exec/s, %s, corpus %s files\n' "$target" "${runs:-?}" \
      "${speed:-?}" "${cov:-cov: ?}" "$(find "$corpus" -type f | wc -l)"
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: crashes in ${failed[*]} (inputs in $artifacts)" >&2
  exit 1
fi
echo "fuzz.sh: ${#targets[@]} targets, ${seconds}s each, no crash"
