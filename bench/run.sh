#!/bin/sh
# mailhostd benchmark: the one command.  bench/run.sh [--quick] [bench.py options]
#                                         bench/run.sh --memory-users N  (memory only)
# Installs wrk/nginx/slapd/ldap-utils/libldap-dev with apt-get if missing, builds mailhostd
# in _build/ if it is not built, generates the directory once (bench/.cache/), compiles
# bench/ldapload.c, then runs bench/bench.py, which starts and stops everything itself.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(dirname "$HERE")
CACHE="$HERE/.cache"
USERS=${BENCH_USERS:-100000}
MEMORY=
if [ "${1:-}" = --memory-users ]; then   # bench/run.sh --memory-users 1000000
    USERS=$2; MEMORY=--memory-only; shift 2
fi
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
if [ ! -x "$CACHE/ldapload" ] || [ "$HERE/ldapload.c" -nt "$CACHE/ldapload" ]; then
    cc -O2 -Wall -o "$CACHE/ldapload" "$HERE/ldapload.c" -lldap -llber -pthread
fi

exec python3 "$HERE/bench.py" --ldif "$LDIF" --users "$USERS" $MEMORY \
    --command "bench/run.sh${MEMORY:+ --memory-users $USERS}${*:+ $*}" "$@"
