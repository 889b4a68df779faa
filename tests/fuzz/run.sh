#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# tests/fuzz/run.sh [BUILD_DIR] - build the fuzz targets with clang's libFuzzer
# (-fsanitize=fuzzer,address,undefined) and run each for a short time.
#
#   BUILD_DIR       a configured build tree whose config.h is used (default: _build, if it
#                   has one; otherwise a minimal config.h is written to the work directory)
#   FUZZ_SECONDS    seconds per target (default 20)
#   FUZZ_TARGETS    which targets (default: "codec config backend journal mirror socketmap")
#   FUZZ_CC         the compiler (default: clang)
#   FUZZ_KEEP       a directory (outside the source tree) to copy each target's binary, log,
#                   crash inputs and grown corpus into (default: none)
#
# Each target first runs once over its seed corpus (tests/fuzz/corpus/fuzz_<target>/) and
# over the known crashing inputs (tests/fuzz/crashes/fuzz_<target>-*), then fuzzes a COPY of
# the corpus in a temporary directory: nothing is ever written into the source tree.  A
# target fails on any crash, sanitizer report, leak, timeout or build error.  The last line
# is "fuzz: N passed, N failed" (N = targets).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
seconds=${FUZZ_SECONDS:-20}
read -r -a targets <<<"${FUZZ_TARGETS:-codec config backend journal mirror socketmap}"
cc=${FUZZ_CC:-clang}

work=$(mktemp -d "${TMPDIR:-/tmp}/mailhostd-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

say() { printf '%s\n' "$*"; }

# ---- config.h: the build tree's, else a minimal one ----
inc=""
for d in "${1:-}" "$top/_build"; do
    if [ -n "$d" ] && [ -f "$d/config.h" ]; then inc=$(cd "$d" && pwd); break; fi
done
if [ -z "$inc" ]; then
    inc="$work/include"
    mkdir -p "$inc"
    cat >"$inc/config.h" <<'EOF'
/* minimal config.h for the fuzz targets (no configured build tree was given) */
#define _GNU_SOURCE 1
#define PACKAGE "mailhostd"
#define PACKAGE_VERSION "fuzz"
#define HAVE_LDAP_BV2ESCAPED_FILTER_VALUE 1
#define HAVE_LDAP_SYNC_INIT 1
EOF
fi
say "fuzz: config.h from $inc; $seconds s per target; compiler $cc"

if ! command -v "$cc" >/dev/null 2>&1; then
    say "fuzz: $cc not found (Debian: apt-get install clang libclang-rt-14-dev)"
    say "fuzz: 0 passed, ${#targets[@]} failed"
    exit 1
fi

# ---- flags ----
libs=""
if pkg-config --exists ldap 2>/dev/null; then
    libs="$(pkg-config --libs ldap) "
else
    libs="-lldap -llber "
fi
libs+="$(pkg-config --libs libcrypto 2>/dev/null || echo -lcrypto)"
read -r -a pkg_cflags <<<"$(pkg-config --cflags ldap libcrypto 2>/dev/null)"
cflags=(-std=c11 -g -O1 -fno-omit-frame-pointer -pthread
        "-fsanitize=fuzzer,address,undefined" -fno-sanitize-recover=all
        -DSYSCONFDIR='"/etc"' -I"$inc" -I"$top/src/common" -I"$top/src/daemon" -I"$top/src/ctl" -I"$here" "${pkg_cflags[@]}")

# the sources each target links (the pure modules only; journal also compiles
# src/ctl/ctl_undo.c into itself, see fuzz_journal.c)
sources() {
    case $1 in
        codec)   echo src/common/codec.c src/common/outcome.c src/common/addr.c src/common/log.c ;;
        config)  echo src/common/conf.c src/common/backend.c src/common/cidr.c src/common/codec.c src/common/outcome.c src/common/addr.c src/common/filter.c src/common/limiter.c \
                      src/common/digest.c src/common/shtable.c src/common/log.c ;;
        backend) echo src/common/backend.c src/common/cidr.c src/common/codec.c src/common/outcome.c src/common/addr.c src/common/filter.c ;;
        journal) echo src/ctl/journal.c src/ctl/cli.c src/ctl/cachewait.c src/ctl/ctllist.c src/ctl/ctl_common.c src/ctl/ctl_change.c \
                      src/ctl/ctl_plan.c src/ctl/ctl_schema.c src/ctl/ctl_show.c src/ctl/ctl_set.c src/ctl/ctl_freeze.c \
                      src/ctl/ctl_stats.c src/ctl/ctl_stragglers.c src/common/lastlogin.c src/common/ldapentry.c \
                      src/common/ldapconn.c src/common/clock.c src/common/metrics.c src/common/csn.c src/common/frozenwatch.c src/common/conf.c src/common/backend.c src/common/cidr.c \
                      src/common/codec.c src/common/outcome.c src/common/addr.c src/common/filter.c src/common/limiter.c src/common/digest.c src/common/shtable.c src/common/log.c ;;
        mirror)  echo src/daemon/mirror.c src/common/shtable.c ;;
        socketmap) echo src/daemon/smproto.c src/common/backend.c src/common/cidr.c src/common/codec.c src/common/outcome.c src/common/addr.c src/common/log.c ;;
    esac
}
max_len() {
    case $1 in
        codec) echo 4096 ;; config) echo 8192 ;; backend) echo 4096 ;; journal) echo 12288 ;;
        mirror) echo 1024 ;; socketmap) echo 2048 ;;
    esac
}

# a symbolizer, for readable stack traces
sym=$(command -v llvm-symbolizer || true)
for f in /usr/lib/llvm-*/bin/llvm-symbolizer; do [ -n "$sym" ] || [ ! -x "$f" ] || sym=$f; done
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:symbolize=1:allocator_may_return_null=1${sym:+:external_symbolizer_path=$sym}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${sym:+:external_symbolizer_path=$sym}"

# what a failed run says: the target's own message, the sanitizer's report and stack
report() {
    grep -E '^fuzz_[a-z]+: ' "$1" | head -5
    sed -n '/==[0-9]*== *ERROR\|runtime error/,/^SUMMARY/p' "$1" | head -60
}

passed=0 failed=0
for t in "${targets[@]}"; do
    name=fuzz_$t
    src="$here/$name.c"
    bin="$work/bin/$name"
    log="$work/$name.log"
    mkdir -p "$work/bin" "$work/corpus/$name" "$work/artifacts/$name"
    if [ ! -f "$src" ] || [ -z "$(sources "$t")" ]; then
        say "$name: FAILED: no such target"
        failed=$((failed + 1)); continue
    fi

    # ---- build ----
    srcs=()
    for s in $(sources "$t"); do srcs+=("$top/$s"); done
    # shellcheck disable=SC2086
    if ! (cd "$work" && "$cc" "${cflags[@]}" "$src" "${srcs[@]}" -o "$bin" $libs) \
            >"$work/$name.build.log" 2>&1; then
        say "$name: FAILED: does not build"
        cat "$work/$name.build.log"
        failed=$((failed + 1)); continue
    fi

    # ---- the seeds (together), then each known crashing input, once ----
    seeds=()
    for f in "$here/corpus/$name"/*; do [ -f "$f" ] && seeds+=("$f"); done
    once() { (cd "$work" && "$bin" -runs=1 -timeout=10 -rss_limit_mb=2048 \
                  -artifact_prefix="$work/artifacts/$name/" "$@") >"$log" 2>&1; }
    if [ ${#seeds[@]} -gt 0 ] && ! once "${seeds[@]}"; then
        say "$name: FAILED on the seed $(sed -n 's/^Running: //p' "$log" | tail -1):"
        report "$log"
        failed=$((failed + 1)); continue
    fi
    still=()
    for f in "$here/crashes/$name"-*; do
        [ -f "$f" ] || continue
        if ! once "$f"; then
            [ ${#still[@]} -gt 0 ] || { say "$name: FAILED on the known crashing input ${f#"$top"/}:"; report "$log"; }
            still+=("${f##*/}")
        fi
    done
    if [ ${#still[@]} -gt 0 ]; then
        say "$name: FAILED: ${#still[@]} known crashing input(s) still crash: ${still[*]}"
        failed=$((failed + 1)); continue
    fi

    # ---- fuzz a copy of the corpus ----
    if [ -d "$here/corpus/$name" ]; then
        cp -R "$here/corpus/$name/." "$work/corpus/$name/"
    fi
    dict=()
    [ -f "$here/$name.dict" ] && dict=(-dict="$here/$name.dict")
    (cd "$work" && "$bin" -max_total_time="$seconds" -max_len="$(max_len "$t")" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/artifacts/$name/" \
        "${dict[@]}" "$work/corpus/$name") >"$log" 2>&1
    rc=$?
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1)
    [ -n "$done_line" ] || done_line=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -1)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    cov=$(grep -oE 'cov: [0-9]+' <<<"$done_line" | tail -1)
    ft=$(grep -oE 'ft: [0-9]+' <<<"$done_line" | tail -1)
    corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$done_line" | tail -1)
    stats="${runs:-?} runs, ${speed:-?} exec/s, ${cov:-cov: ?}, ${ft:-ft: ?}, ${corp:-corp: ?}"
    if [ "$rc" -eq 0 ]; then
        say "$name: ok: $stats"
        passed=$((passed + 1))
    else
        say "$name: FAILED (exit $rc): $stats"
        report "$log"
        grep -E '^(MS: |artifact_prefix|Test unit written|==[0-9]+== ERROR: libFuzzer)' "$log" | head -10
        for a in "$work/artifacts/$name"/*; do
            [ -f "$a" ] || continue
            if [ "$(stat -c %s "$a")" -le 4096 ]; then
                say "$name: the input, base64 (save it as tests/fuzz/crashes/$name-<what>):"
                base64 -w 76 "$a"
            fi
        done
        failed=$((failed + 1))
    fi
    if [ -n "${FUZZ_KEEP:-}" ]; then
        mkdir -p "$FUZZ_KEEP/$name"
        cp -R "$work/artifacts/$name/." "$FUZZ_KEEP/$name/" 2>/dev/null
        cp -R "$work/corpus/$name" "$FUZZ_KEEP/$name/corpus" 2>/dev/null
        cp "$log" "$bin" "$FUZZ_KEEP/$name/" 2>/dev/null
    fi
done

say "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
