#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# test_demo.sh: ./quickstart demo as a newcomer runs it, three times:
#   1. every login and command the demo suggests works; then Ctrl-C as a terminal sends it
#      (SIGINT to the whole process group);
#   2. SIGINT to quickstart alone (as `timeout -s INT` sends it);
#   3. Ctrl-C while the stack is still starting.
# In 1 and 2, before the stop: mailhostctl migrate moved alice's mailbox (the folders, UIDs
# and flags the demo printed before and after the move are the same; NEW's own doveadm shows
# OLD's UIDVALIDITY and UIDs, and the mail sent after the move) and no password is shown.
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
# listing SERVER: the folder lines the demo printed under "her login reaches SERVER:"
listing() {
    awk -v h="    her login reaches $1:" '$0 == h {on = 1; next} on && /^      / {print; next} {on = 0}' "$out"
}
same_listing() { [ -n "$(listing OLD)" ] && [ "$(listing OLD)" = "$(listing NEW)" ]; }
# stack_value KEY: a KEY=value line of the stack's output (while the demo runs)
stack_value() { sed -n "s/^$1=//p" "$tmp"/mailhostd-demo.*/stack.out; }
# inbox_on SIDE FIELD: FIELD of alice's INBOX, read by that Dovecot's own doveadm
inbox_on() {
    doveadm -c "$(stack_value "$1_DOVECOT_CONF")" -f tab mailbox status -u alice@example.com "$2" INBOX |
        tail -n +2 | cut -f2
}
# NEW holds alice's INBOX with OLD's UIDVALIDITY (as the demo printed it and as OLD has it)
# and UIDs 1 2 (moved) and 3 (mail 2, delivered after the move)
inbox_moved() {
    local printed
    printed=$(listing OLD | sed -n 's/^      INBOX: .*UIDVALIDITY \([0-9]*\),.*/\1/p')
    [ -n "$printed" ] && [ "$(inbox_on NEW uidvalidity)" = "$printed" ] &&
        [ "$(inbox_on OLD uidvalidity)" = "$printed" ] &&
        [ "$(doveadm -c "$(stack_value NEW_DOVECOT_CONF)" -f tab fetch -u alice@example.com uid \
              mailbox INBOX | tail -n +2 | paste -sd ' ' -)" = "1 2 3" ]
}
# none of the demo's secrets (the directory account's, OLD's master user's) in its output
no_secret_shown() {
    local ctl_pw master_pw
    ctl_pw=$(cat "$(stack_value CTL_PW_FILE)") &&
        master_pw=$(sed -n 's/^imapc_password = //p' "$(stack_value COPIER_CONF)") &&
        [ -n "$ctl_pw" ] && [ -n "$master_pw" ] &&
        ! grep -qF -e "$ctl_pw" -e "$master_pw" "$out" && ! grep -qE ' -w ' "$out"
}

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
        label="$mode: alice's login reaches her mailbox on OLD, then on NEW"
        ok grep -q 'Subject: on OLD' "$out"
        ok grep -qx '    her login reaches OLD:' "$out"
        ok grep -qx '    her login reaches NEW:' "$out"
        label="$mode: a mail to alice lands on OLD before the move, the next on NEW after it"
        ok grep -q '"demo mail 1" is in alice.s mailbox on OLD' "$out"
        ok grep -q '"demo mail 2" is in alice.s mailbox on NEW' "$out"
        label="$mode: before the move alice has INBOX (UIDs 1 flagged, 2: mail 1) and Archive on OLD"
        ok grep -qE '^      INBOX: MESSAGES 2, UIDVALIDITY [0-9]+, UIDNEXT 3; UIDs \(flags\): 1 \([^)]*\\Flagged[^)]*\) 2 \(\)$' <<<"$(listing OLD)"
        ok grep -qE '^      Archive: MESSAGES 1, UIDVALIDITY [0-9]+, UIDNEXT 2; UIDs \(flags\): 1 ' <<<"$(listing OLD)"
        label="$mode: mailhostctl migrate moved her mailbox and pointer (3 messages in 2 folders)"
        ok grep -qE '^    alice@example.com: done mail-old.example.org -> mail-new.example.org: 3 messages in 2 folders, ' "$out"
        ok grep -q '^    migrate: 1 user: 1 moved, 0 failed, 0 skipped, 0 pending' "$out"
        label="$mode: after the move NEW shows the same folders, UIDVALIDITY, UIDs and flags"
        ok same_listing
        ok grep -q "the same folders, messages, UIDVALIDITY, UIDNEXT, UIDs and flags as before the" "$out"
        label="$mode: NEW's own doveadm: alice's INBOX has OLD's UIDVALIDITY, UIDs 1 2 and mail 2's 3"
        ok inbox_moved
        label="$mode: no password in the demo's output (its migrate command uses -y and a 0600 file)"
        ok no_secret_shown
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
