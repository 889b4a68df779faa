#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# mailhostd benchmark: the one command.  bench/run.sh [--quick] [bench.py options]
#                                         bench/run.sh --memory-users N  (memory only)
#                                         bench/run.sh --reload    (bench/reload.py)
#                                         bench/run.sh --replflip  (bench/replflip.py)
# (see bench/README.md; BENCH_USERS=N sets the directory size of the full run, 100000)
# Installs wrk/nginx/slapd/ldap-utils/libldap-dev with apt-get if missing, builds mailhostd
# in _build/ if it is not built, generates the directory once (bench/.cache/), compiles
# bench/ldapload.c, then runs bench/bench.py, which starts and stops everything itself.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
CACHE="$HERE/.cache"
USERS=${BENCH_USERS:-100000}
MEMORY=
ONLY=       # --reload / --replflip: that script instead of bench.py
# bench/run.sh --memory-users 1000000 (or --memory-users=N, anywhere among the options):
# only the memory figures at N users; everything else is passed on to bench.py
n=$#
while [ "$n" -gt 0 ]; do
    a=$1; shift; n=$((n - 1))
    case $a in
    --memory-users)
        [ "$n" -gt 0 ] || { echo "bench: --memory-users needs a user count" >&2; exit 2; }
        USERS=$1; MEMORY=--memory-only; shift; n=$((n - 1)) ;;
    --memory-users=*)
        USERS=${a#*=}; MEMORY=--memory-only ;;
    --reload|--replflip)
        ONLY=${a#--} ;;
    *)
        set -- "$@" "$a" ;;
    esac
done
case $USERS in
''|*[!0-9]*|0) echo "bench: the user count must be a positive number, not '$USERS'" >&2; exit 2 ;;
esac
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

need=
for t in wrk:wrk nginx:nginx slapd:slapd ldapsearch:ldap-utils cc:gcc; do
    command -v "${t%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${t%%:*}" ] || need="$need ${t#*:}"
done
[ -e /usr/include/ldap.h ] || need="$need libldap-dev"
if [ -n "$need" ]; then
    echo "bench: apt-get install$need"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $need
    # the Debian packages start their services: the bench uses private instances only
    for s in nginx slapd; do $SUDO systemctl disable --now "$s" >/dev/null 2>&1 || true; done
fi

if [ ! -x "$SRC/_build/mailhostd" ]; then
    echo "bench: building mailhostd in _build/"
    (cd "$SRC" && { [ -x configure ] || autoreconf -fi; } && mkdir -p _build && cd _build &&
        { [ -f Makefile ] || ../configure; } && make -j"$(nproc)")
fi

mkdir -p "$CACHE"
LDIF="$CACHE/users-$USERS.ldif"
if [ ! -s "$LDIF" ]; then
    echo "bench: generating $USERS users into $LDIF"
    python3 "$SRC/ldif/gen-sample.py" --users "$USERS" --out "$LDIF.tmp" && mv "$LDIF.tmp" "$LDIF"
fi
if [ ! -x "$CACHE/ldapload" ] || [ "$HERE/ldapload.c" -nt "$CACHE/ldapload" ] || [ "$HERE/loadgen.h" -nt "$CACHE/ldapload" ]; then
    cc -O2 -Wall -o "$CACHE/ldapload" "$HERE/ldapload.c" -lldap -llber -pthread
fi
if [ ! -x "$CACHE/smload" ] || [ "$HERE/smload.c" -nt "$CACHE/smload" ] || [ "$HERE/loadgen.h" -nt "$CACHE/smload" ]; then
    cc -O2 -Wall -o "$CACHE/smload" "$HERE/smload.c" -pthread
fi

if [ -n "$ONLY" ]; then
    exec python3 "$HERE/$ONLY.py" --ldif "$LDIF" --users "$USERS" \
        --command "bench/run.sh --$ONLY${*:+ $*}" "$@"
fi
exec python3 "$HERE/bench.py" --ldif "$LDIF" --users "$USERS" $MEMORY \
    --command "bench/run.sh${MEMORY:+ --memory-users $USERS}${*:+ $*}" "$@"
