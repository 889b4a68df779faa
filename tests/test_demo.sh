#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# test_demo.sh: ./quickstart demo as a newcomer runs it, three times:
#   1. every login and command the demo suggests works; then Ctrl-C as a terminal sends it
#      (SIGINT to the whole process group);
#   2. SIGINT to quickstart alone (as `timeout -s INT` sends it);
#   3. Ctrl-C while the stack is still starting.
# After each stop: exit status 0, "nothing left running" said, no process whose command
# line names the demo's directories, and no file left in the demo's TMPDIR.
# Uses the existing _build (the test command builds it first).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
pass=0 fail=0
ok() { if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); echo "ok   $label"; else fail=$((fail + 1)); echo "FAIL $label"; fi; }
tmps=()
trap 'for t in "${tmps[@]}"; do rm -rf "$t" "$t.out" "$t.suggested"; done' EXIT

# wait_until SECONDS CMD...: polls CMD (every 0.1 s) until it succeeds or time is up
wait_until() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.1
    done
}

# procs_naming DIR: PIDs of live processes whose command line contains DIR
procs_naming() {
    local p
    for p in /proc/[0-9]*; do
        tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF "$1" && echo "${p#/proc/}"
    done
}
none_naming() { [ -z "$(procs_naming "$1")" ]; }
empty_dir() { [ -z "$(find "$1" -mindepth 1 -maxdepth 1 2>/dev/null)" ]; }
alive() { kill -0 "$1" 2>/dev/null; }
no_warning() { ! grep -q 'warning:' "$1"; }
own_group() { [ "$(ps -o pgid= -p "$1" | tr -d ' ')" = "$1" ]; }
not_alive() { ! kill -0 "$1" 2>/dev/null; }
# (these read $tmp, the run's TMPDIR, each time they are called)
stack_started() { grep -qs '^WORKDIR=' "$tmp"/mailhostd-demo.*/stack.out; }
stack_dir_made() { [ -n "$(find "$tmp" -maxdepth 2 -name 'mh-e2e-*' -type d)" ]; }
demo_ready() { [ -n "$(find "$tmp" -maxdepth 2 -name demo.ready)" ]; }

# run MODE: MODE is group-ready, leader-ready or group-starting
run() {
    local mode=$1 tmp out pid rc=0
    tmp=$(mktemp -d /tmp/mh-demo-test.XXXXXX); tmps+=("$tmp")
    chmod 755 "$tmp"      # as /tmp: nginx's workers and mailhostd (nobody) walk through it
    out="$tmp.out"
    echo "---- demo ($mode), TMPDIR=$tmp"
    # its own session and process group, as a terminal's job has; SIGINT back to its
    # default (a shell without job control starts background jobs with SIGINT ignored,
    # and bash cannot trap a signal that was ignored when it started)
    TMPDIR="$tmp" python3 -c 'import os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
os.setsid()
os.execvp(sys.argv[1], sys.argv[1:])' "$top/quickstart" demo >"$out" 2>&1 </dev/null &
    pid=$!
    label="$mode: the demo runs in its own process group"
    ok wait_until 10 own_group "$pid"
    if [ "$mode" = group-starting ]; then
        label="$mode: the stack started to start (its work directory exists)"
        ok wait_until 120 stack_started
        wait_until 30 stack_dir_made
    else
        label="$mode: the demo is ready within 180 s"
        if ! wait_until 180 grep -q '^    other users' "$out"; then
            ok false; cat "$out"; kill -KILL -- "-$pid" 2>/dev/null; return
        fi
        pass=$((pass + 1)); echo "ok   $label"
        wait_until 10 demo_ready
        label="$mode: alice moved from OLD to NEW in the demo"
        ok grep -q 'Subject: on OLD' "$out"
        ok grep -q 'Subject: on NEW' "$out"
        label="$mode: a mail to alice lands on OLD before the flip, the next on NEW after it"
        ok grep -q '"demo mail 1" is in alice.s mailbox on OLD' "$out"
        ok grep -q '"demo mail 2" is in alice.s mailbox on NEW' "$out"
        if [ "$mode" = group-ready ]; then
            # every command the demo suggests, exactly as printed
            local cmd n=0 res
            while IFS= read -r cmd; do
                cmd=${cmd#    }
                case "$cmd" in curl\ *|"$top"/_build/mailhostctl\ *) ;; *) continue ;; esac
                n=$((n + 1))
                res=$(eval "$cmd" 2>&1); rc=$?
                printf '%s\n' "$res" >> "$tmp.suggested"
                case "$cmd" in
                curl\ *) label="suggested login works: ${cmd%%:*}..."; ok grep -qE 'Subject: on (OLD|NEW)' <<<"$res" ;;
                *) label="suggested command works (exit $rc): ${cmd##*-y * }"; ok test "$rc" -eq 0 ;;
                esac
                [ "$rc" -eq 0 ] || echo "$res" | sed 's/^/     /'
            done < <(sed -n '/try more/,$p' "$out")
            label="the demo suggests logins and commands ($n)"; ok test "$n" -ge 4
            label="the demo prints no warning"; ok no_warning "$out"
            label="its suggested commands print no warning"; ok no_warning "$tmp.suggested"
        fi
    fi
    case "$mode" in
    group-*) kill -INT -- "-$pid" ;;
    leader-*) kill -INT "$pid" ;;
    esac
    label="$mode: stops within 120 s of SIGINT"; ok wait_until 120 not_alive "$pid"
    wait "$pid"; rc=$?
    label="$mode: exit status 0 ($rc)"; ok test "$rc" -eq 0
    label="$mode: says nothing is left running"; ok grep -q 'nothing left running' "$out"
    label="$mode: no process left from the demo"; ok none_naming "$tmp"
    [ -z "$(procs_naming "$tmp")" ] || ps -o pid,pgid,args -p "$(procs_naming "$tmp" | tr '\n' ',' | sed 's/,$//')"
    label="$mode: no file left in its TMPDIR"; ok empty_dir "$tmp"
    empty_dir "$tmp" || find "$tmp" -maxdepth 2 | head
    if [ "$fail" -gt 0 ]; then echo "---- its output ----"; cat "$out"; fi
    # whatever happened, nothing of this run may outlive the test
    kill -KILL -- "-$pid" 2>/dev/null
    for p in $(procs_naming "$tmp"); do kill -KILL "$p" 2>/dev/null; done
}

run group-ready
run leader-ready
run group-starting
echo "test_demo: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
