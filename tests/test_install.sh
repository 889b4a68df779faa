#!/usr/bin/env bash
# SPDX-License-Identifier: BSD-2-Clause
# test_install.sh BUILDDIR: "make install" into a DESTDIR, then check what was installed and
# run the installed programs with the installed sample configuration.
set -u
build=${1:?usage: test_install.sh BUILDDIR}
dest=$(mktemp -d /tmp/mh-install.XXXXXX)
trap 'rm -rf "$dest"' EXIT
pass=0 fail=0
ok() { if "$@" >/dev/null 2>&1; then pass=$((pass + 1)); echo "ok   $label"; else fail=$((fail + 1)); echo "FAIL $label: $*"; fi; }

label="make install DESTDIR"; ok make -C "$build" install DESTDIR="$dest"
prefix=$(sed -n 's/^prefix = //p' "$build/Makefile")
sysconf=$(sed -n 's/^sysconfdir = //p' "$build/Makefile" | sed "s|\${prefix}|$prefix|")
unitdir=$(sed -n 's/^systemdsystemunitdir = //p' "$build/Makefile" | sed "s|\${prefix}|$prefix|")
root="$dest$prefix"
for f in sbin/mailhostd sbin/mailhostctl share/man/man8/mailhostd.8 share/man/man5/mailhostd.conf.5 \
         share/mailhostd/schema/mailhostd.ldif share/mailhostd/schema/mailhostd.schema \
         share/mailhostd/ldif/sample.ldif share/mailhostd/ldif/acl.ldif \
         share/mailhostd/ldif/acl.slapd.conf \
         share/mailhostd/ldif/indexes.ldif share/mailhostd/ldif/migration/04-flip.ldif \
         share/mailhostd/mailhostd.conf.sample; do
    label="installed $f"; ok test -s "$root/$f"
done
conf="$dest$sysconf/mailhostd/mailhostd.conf"
label="configuration installed from the sample, mode 0640"
ok test "$(stat -c %a "$conf" 2>/dev/null)" = 640
unit="$dest$unitdir/mailhostd.service"
label="systemd unit installed with the real paths"
ok grep -q "^ExecStart=$prefix/sbin/mailhostd -c $sysconf/mailhostd/mailhostd.conf" "$unit"
label="systemd unit is sandboxed"
ok grep -q "^ProtectSystem=strict" "$unit"
label="item 12: systemd unit is Type=notify (mailhostd sends READY=1, tests/test_notify.py)"
ok grep -qx "Type=notify" "$unit"
if command -v systemd-analyze >/dev/null 2>&1; then
    label="systemd-analyze verify accepts the unit (paths mapped into the DESTDIR)"
    sed "s|$prefix/sbin|$root/sbin|g" "$unit" > "$dest/mailhostd.service"
    ok systemd-analyze verify --man=no "$dest/mailhostd.service"
else
    echo "note: systemd-analyze is not installed: the unit's syntax was not verified"
fi
# the installed sample names /etc/mailhostd/bindpw: without it, -t must say so clearly
label="installed mailhostd -t on the sample: clear error while the bind password is missing"
out=$("$root/sbin/mailhostd" -t -c "$conf" 2>&1)
ok grep -q "ldap_bind_pw_file\|bindpw" <<<"$out"
printf 'secret\n' > "$dest/bindpw"; chmod 600 "$dest/bindpw"
sed "s|^ldap_bind_pw_file .*|ldap_bind_pw_file $dest/bindpw|" "$conf" > "$dest/test.conf"
label="installed mailhostd -t accepts the installed sample once the bind password exists"
ok "$root/sbin/mailhostd" -t -c "$dest/test.conf"
label="installed mailhostctl --help"
ok "$root/sbin/mailhostctl" --help
# README / migration.md: a source build reads sysconfdir/mailhostd/mailhostd.conf (no -c)
label="item 11: without -c the installed mailhostd reads $sysconf/mailhostd/mailhostd.conf"
out=$("$root/sbin/mailhostd" -t 2>&1)
ok grep -qF "$sysconf/mailhostd/mailhostd.conf" <<<"$out"
label="make uninstall leaves only the directories"
ok make -C "$build" uninstall DESTDIR="$dest"
left=$(find "$dest$prefix" "$dest$sysconf" -type f 2>/dev/null | wc -l)
label="no installed file left after uninstall ($left)"; ok test "$left" -eq 0
echo "test_install: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
