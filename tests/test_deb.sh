#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# test_deb.sh: build the Debian package (debian/) from a copy of the working tree with
# dpkg-buildpackage, lint it, install it with dpkg -i, check the system user, the files and
# their owners, then start the INSTALLED daemon the way its systemd unit does (ExecStartPre,
# ExecStart) on a private slapd with the installed configuration, changed only where this
# machine needs it, and ask it one nginx-shaped question; finally purge the package.
#
# Needs root (through sudo otherwise), dpkg-dev, debhelper, the build dependencies, slapd,
# ldap-utils, python3 and curl; lintian if installed.  Nothing is built in the source tree.
# Leaves no process, no installed package and no file behind. The package leaves its system
# user "mailhostd" after a purge, as Debian packages usually do; this test removes the user
# and group again when they did not exist before it ran, so the machine is as it was.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
t_start=$SECONDS
pass=0 fail=0
ok() { if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); echo "ok   $label"; else fail=$((fail + 1)); echo "FAIL $label: $*"; fi; }
note() { echo "     $*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
finish() { echo "test_deb: $pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit; }

work=$(mktemp -d /tmp/mh-deb.XXXXXX)
chmod 755 "$work"
daemon_pid="" slapd_pid="" slapd_py_pid="" installed="" made_rcd=""
had_user="" had_group=""
getent passwd mailhostd >/dev/null && had_user=1
getent group mailhostd >/dev/null && had_group=1
cleanup() {
    if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
        as_root kill -TERM "$daemon_pid" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
        as_root kill -KILL "$daemon_pid" 2>/dev/null
    fi
    if [ -n "$slapd_py_pid" ] && kill -0 "$slapd_py_pid" 2>/dev/null; then
        kill -TERM "$slapd_py_pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$slapd_py_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$slapd_py_pid" 2>/dev/null
    fi
    if [ -n "$slapd_pid" ] && kill -0 "$slapd_pid" 2>/dev/null; then kill -KILL "$slapd_pid" 2>/dev/null; fi
    wait 2>/dev/null
    if [ -n "$installed" ] && dpkg-query -W -f='${Status}' mailhostd 2>/dev/null | grep -q installed; then
        as_root env DEBIAN_FRONTEND=noninteractive dpkg --purge mailhostd >/dev/null 2>&1
    fi
    [ -z "$made_rcd" ] || as_root rm -f /usr/sbin/policy-rc.d
    # the package's postinst made these; a machine that had none gets none back
    if [ -z "$had_user" ] && getent passwd mailhostd >/dev/null; then
        as_root userdel mailhostd >/dev/null 2>&1
    fi
    if [ -z "$had_group" ] && getent group mailhostd >/dev/null; then
        as_root groupdel mailhostd >/dev/null 2>&1
    fi
    as_root rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# A package of the same name that someone installed is not ours to replace or purge.
if dpkg-query -W -f='${Status}' mailhostd 2>/dev/null | grep -q 'install ok installed'; then
    label="mailhostd is not installed already"; ok false; finish
fi

# ---- build, in a copy: the working tree's files as git sees them (tracked and new, not
# ignored: no _build*, no generated autotools files), or everything but build output ----
version=$(cd "$top" && dpkg-parsechangelog -S Version)
arch=$(dpkg --print-architecture)
src="$work/mailhostd-$version"
mkdir -p "$src"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$top" && git ls-files -z -co --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
        tar --null -T - -cf -) | tar -xf - -C "$src"
else
    (cd "$top" && tar --exclude='./_build*' --exclude=./.git --exclude=./autom4te.cache \
        --exclude='./debian/mailhostd' --exclude='./debian/.debhelper' -cf - .) | tar -xf - -C "$src"
fi
label="source copied to $src"; ok test -f "$src/debian/control"
t0=$SECONDS
(cd "$src" && DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=$(nproc)}" \
    dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1
build_rc=$?
label="dpkg-buildpackage -us -uc -b ($((SECONDS - t0)) s)"; ok test "$build_rc" -eq 0
deb="$work/mailhostd_${version}_${arch}.deb"
if [ "$build_rc" -ne 0 ] || [ ! -f "$deb" ]; then
    tail -40 "$work/build.log"; label="package built: $deb"; ok test -f "$deb"; finish
fi
label="unit tests ran in the package build and passed"
ok grep -qE '^# FAIL: +0$' "$work/build.log"
note "$(grep -E '^# (TOTAL|PASS):' "$work/build.log" | tr '\n' ' ')"
label="source tree untouched by the build (no debian/mailhostd, no debian/.debhelper)"
ok test ! -e "$top/debian/mailhostd" -a ! -e "$top/debian/.debhelper"

if command -v lintian >/dev/null 2>&1; then
    t0=$SECONDS
    # warnings and information are shown; errors (or lintian failing to run) fail the check
    lintian --display-info --fail-on error "$work/mailhostd_${version}_${arch}.changes" \
        >"$work/lintian.log" 2>&1
    lint_rc=$?
    sed -e '/^running with root privileges/d' -e 's/^/     lintian: /' "$work/lintian.log"
    label="lintian: no errors ($((SECONDS - t0)) s)"
    ok test "$lint_rc" -eq 0 -a -z "$(grep '^E: ' "$work/lintian.log")"
else
    echo "note: lintian is not installed: the package was not linted"
fi

# ---- install: nothing may start by itself (policy-rc.d "101": action not allowed) ----
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee /usr/sbin/policy-rc.d >/dev/null
    as_root chmod 755 /usr/sbin/policy-rc.d
    made_rcd=1
fi
installed=1
as_root env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$work/install.log" 2>&1 </dev/null
label="dpkg -i $(basename "$deb")"; ok test $? -eq 0
label="package state: install ok installed"
ok test "$(dpkg-query -W -f='${Status}' mailhostd 2>/dev/null)" = "install ok installed"

# the system user and group
pw=$(getent passwd mailhostd)
uid=$(cut -d: -f3 <<<"$pw") gid=$(cut -d: -f4 <<<"$pw")
label="system user mailhostd exists ($pw)"; ok test -n "$pw"
label="mailhostd is a system user (uid below 1000), home /nonexistent, no login shell"
ok test -n "$uid" -a "${uid:-1000}" -lt 1000 -a "$(cut -d: -f6 <<<"$pw")" = /nonexistent \
    -a "$(cut -d: -f7 <<<"$pw")" != /bin/sh -a "$(cut -d: -f7 <<<"$pw")" != /bin/bash
label="its primary group is the system group mailhostd"
ok test "$(getent group mailhostd | cut -d: -f3)" = "$gid"

# the files
for f in /usr/sbin/mailhostd /usr/sbin/mailhostctl /usr/share/man/man8/mailhostd.8.gz \
         /usr/share/man/man5/mailhostd.conf.5.gz /usr/share/mailhostd/schema/mailhostd.ldif \
         /usr/share/mailhostd/schema/mailhostd.schema /usr/share/mailhostd/ldif/sample.ldif \
         /usr/share/mailhostd/ldif/acl.ldif /usr/share/mailhostd/ldif/acl.slapd.conf \
         /usr/share/mailhostd/ldif/indexes.ldif \
         /usr/share/mailhostd/ldif/migration/04-flip.ldif /usr/share/mailhostd/mailhostd.conf.sample \
         /usr/share/doc/mailhostd/copyright /usr/share/doc/mailhostd/README.Debian \
         /lib/systemd/system/mailhostd.service /etc/mailhostd/mailhostd.conf; do
    label="installed $f"; ok test -s "$f"
done
label="installed man pages read: man mailhostd, man 5 mailhostd.conf"
ok sh -c 'command -v man >/dev/null || exit 0; man -P cat mailhostd && man -P cat 5 mailhostd.conf'
conf=/etc/mailhostd/mailhostd.conf
label="$conf is a conffile"
ok grep -q "^ $conf " <<<"$(dpkg-query -W -f='${Conffiles}\n' mailhostd)"
label="$conf is root:mailhostd 0640 ($(stat -c '%U:%G %a' $conf))"
ok test "$(stat -c '%U:%G %a' $conf)" = "root:mailhostd 640"
label="/etc/mailhostd is root:mailhostd 0750 ($(stat -c '%U:%G %a' /etc/mailhostd))"
ok test "$(stat -c '%U:%G %a' /etc/mailhostd)" = "root:mailhostd 750"
label="the installed configuration serves as user mailhostd"; ok grep -qx 'user mailhostd' $conf
label="installed mailhostd -V names the package's upstream version"
ok grep -qx "mailhostd ${version%%-*}" <<<"$(/usr/sbin/mailhostd -V)"
label="installed mailhostctl --help"; ok /usr/sbin/mailhostctl --help

unit=/lib/systemd/system/mailhostd.service
label="the unit runs /usr/sbin/mailhostd -c $conf"
ok grep -qx "ExecStart=/usr/sbin/mailhostd -c $conf" $unit
label="item 12: the unit is Type=notify"; ok grep -qx "Type=notify" $unit
label="the unit is enabled (multi-user.target.wants)"
ok test -L /etc/systemd/system/multi-user.target.wants/mailhostd.service
if command -v systemd-analyze >/dev/null 2>&1; then
    label="systemd-analyze verify accepts the installed unit"
    ok systemd-analyze verify --man=no $unit
fi
pre=$(sed -n 's/^ExecStartPre=//p' $unit) start=$(sed -n 's/^ExecStart=//p' $unit)
label="unconfigured, the unit's ExecStartPre refuses to start, naming the bind password file"
out=$(as_root $pre 2>&1); rc=$?
ok test "$rc" -ne 0 -a -n "$(grep 'ldap_bind_pw_file\|bindpw' <<<"$out")"
note "$out"

# ---- configure it as an administrator would, then start it as the unit does ----
t0=$SECONDS
python3 "$top/tests/lib/slapd.py" --workdir "$work/slapd" \
    --sample /usr/share/mailhostd/ldif/sample.ldif >"$work/slapd.out" 2>&1 &
slapd_py_pid=$!
for _ in $(seq 300); do
    grep -q '^ready;' "$work/slapd.out" && break
    kill -0 "$slapd_py_pid" 2>/dev/null || break
    sleep 0.1
done
v() { sed -n "s/^$1=//p" "$work/slapd.out"; }
uri=$(v URI) slapd_pid=$(v PID)
label="private slapd with the installed sample directory: $uri ($((SECONDS - t0)) s)"
ok grep -q '^ready;' "$work/slapd.out"
grep -q '^ready;' "$work/slapd.out" || { cat "$work/slapd.out"; finish; }
label="the configuration's bind DN is the sample directory's service account"
ok grep -qx "ldap_bind_dn $(v SERVICE_DN)" $conf

# the bind password where the configuration expects it (README.Debian's steps)
as_root install -m 0640 -o root -g mailhostd /dev/null /etc/mailhostd/bindpw
v SERVICE_PW | as_root tee /etc/mailhostd/bindpw >/dev/null
# changed only where this machine differs: the directory's URI; the socket under a private
# directory (systemd's RuntimeDirectory would make /run/mailhostd); the log to stderr (no
# syslog daemon here, and the test keeps the log).  Base, bind DN, filter, backends, user,
# socket group and mode stay as shipped.
rundir="$work/run"
mkdir -m 0755 "$rundir"
sock="$rundir/auth.sock"
as_root sed -i -e "s|^ldap_uri .*|ldap_uri $uri|" -e "s|^listen unix:.*|listen unix:$sock|" \
    -e 's|^log syslog$|log stderr|' $conf
note "configuration changed: $(diff "$src/etc/mailhostd.conf.sample" $conf | grep '^>' | tr '\n' ' ')"

# installing the same package again (an upgrade, the postinst again): the changed
# configuration stays, so do its owner and mode; the existing user is reused
as_root env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$work/reinstall.log" 2>&1 </dev/null
label="dpkg -i again over the installed package"; ok test $? -eq 0
label="the changed configuration is kept"; ok grep -qx "ldap_uri $uri" $conf
label="... and stays root:mailhostd 0640 ($(stat -c '%U:%G %a' $conf))"
ok test "$(stat -c '%U:%G %a' $conf)" = "root:mailhostd 640"
label="the user mailhostd is the same ($(getent passwd mailhostd))"
ok test "$(getent passwd mailhostd | cut -d: -f3)" = "$uid"

label="configured, the unit's ExecStartPre accepts it: $pre"; ok as_root $pre
# ExecStart as the unit runs it: as root, UMask=0077, in the foreground
sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
(umask 077; exec $sudo $start) >"$work/daemon.log" 2>&1 </dev/null &
daemon_pid=$!
for _ in $(seq 100); do
    [ -S "$sock" ] && grep -q 'ready' "$work/daemon.log" && break
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.1
done
label="installed mailhostd started as the unit does: $start"
ok test -S "$sock"
label="the socket has the shipped group and mode: www-data 0660 ($(stat -c '%G %a' "$sock" 2>/dev/null))"
ok test "$(stat -c '%G %a' "$sock" 2>/dev/null)" = "www-data 660"
pid=$(pgrep -P "$daemon_pid" -x mailhostd || echo "$daemon_pid")
status=$(cat /proc/"$pid"/status 2>/dev/null)
label="the daemon serves as mailhostd, not root: $(grep -E '^(Uid|Gid):' <<<"$status" | tr '\t\n' '  ')"
ok test -n "$uid" -a "$(awk '/^Uid:/ {print $2,$3,$4,$5}' <<<"$status")" = "$uid $uid $uid $uid" \
    -a "$(awk '/^Gid:/ {print $2,$3,$4,$5}' <<<"$status")" = "$gid $gid $gid $gid"
label="... with no supplementary group root ($(grep '^Groups:' <<<"$status" | tr '\t' ' '))"
ok test -z "$(awk '/^Groups:/ {for (i = 2; i <= NF; i++) if ($i == 0) print}' <<<"$status")"

ask() { # USER PASS: nginx's request, as its mail proxy sends it; prints the answer's headers
    as_root curl -sS --max-time 10 --unix-socket "$sock" -o /dev/null -D - http://localhost/auth \
        -H 'Auth-Method: plain' -H "Auth-User: $1" -H "Auth-Pass: $2" -H 'Auth-Protocol: imap' \
        -H 'Auth-Login-Attempt: 1' -H 'Client-IP: 192.0.2.7' | tr -d '\r'
}
ans=$(ask alice@example.com Alice-pw-1)
note "$(tr '\n' ' ' <<<"$ans")"
label="alice@example.com, right password: Auth-Status: OK"; ok grep -qx 'Auth-Status: OK' <<<"$ans"
label="... routed to mail-old.example.org: Auth-Server: 192.0.2.10, Auth-Port: 143"
ok test -n "$(grep -x 'Auth-Server: 192.0.2.10' <<<"$ans")" -a -n "$(grep -x 'Auth-Port: 143' <<<"$ans")"
ans=$(ask bob@example.com wrong-password)
note "$(tr '\n' ' ' <<<"$ans")"
label="bob@example.com, wrong password: refused, no Auth-Server"
ok test -n "$(grep -E '^Auth-Status: (\[[A-Z]+\] )?Invalid login or password$' <<<"$ans")" \
    -a -z "$(grep '^Auth-Server:' <<<"$ans")"

as_root kill -TERM "$daemon_pid"
for _ in $(seq 100); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.1; done
wait "$daemon_pid"; rc=$?
label="SIGTERM stops it, exit status 0 ($rc)"; ok test "$rc" -eq 0
daemon_pid=""
# (not a failure: under systemd the RuntimeDirectory goes with the service)
if [ -e "$sock" ]; then note "the socket is left after the stop: $rundir is root's, the daemon serves as mailhostd"; fi
if [ "$fail" -gt 0 ]; then echo "---- daemon log ----"; cat "$work/daemon.log"; fi
kill -TERM "$slapd_py_pid" 2>/dev/null
wait "$slapd_py_pid" 2>/dev/null
slapd_py_pid=""

# ---- purge ----
as_root env DEBIAN_FRONTEND=noninteractive dpkg --purge mailhostd >"$work/purge.log" 2>&1 </dev/null
label="dpkg --purge mailhostd"; ok test $? -eq 0
label="package state after purge: not installed"
ok test -z "$(dpkg-query -W -f='${Status}' mailhostd 2>/dev/null | grep -v 'not-installed')"
for f in /usr/sbin/mailhostd /usr/sbin/mailhostctl /usr/share/mailhostd /usr/share/doc/mailhostd \
         /usr/share/man/man8/mailhostd.8.gz /lib/systemd/system/mailhostd.service \
         /etc/systemd/system/multi-user.target.wants/mailhostd.service /etc/mailhostd; do
    label="gone after purge: $f"; ok test ! -e "$f" -a ! -L "$f"
done
label="no stat override left for /etc/mailhostd"
ok test -z "$(dpkg-statoverride --list '/etc/mailhostd*' 2>/dev/null)"
installed=""
if getent passwd mailhostd >/dev/null; then note "the package leaves its system user mailhostd after a purge (as Debian packages do)"; fi
if [ -z "$had_user" ]; then
    as_root userdel mailhostd >/dev/null 2>&1
    label="the system user this test's install created is removed again"
    ok test -z "$(getent passwd mailhostd)"
fi
if [ -z "$had_group" ]; then
    as_root groupdel mailhostd >/dev/null 2>&1
    label="the system group this test's install created is removed again"
    ok test -z "$(getent group mailhostd)"
fi

echo "time: $((SECONDS - t_start)) s"
finish
