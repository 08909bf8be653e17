#!/bin/bash
# ./configure --without-systemd still builds p11agent (with -Werror), not
# linked to libsystemd, and that p11agent refuses listen = systemd:NAME
# naming the reason, and says it does not use sockets passed to it.
. "$top_srcdir/tests/lib.sh"

# a copy of the generated build files and the program's sources, away from
# the configured tree (timestamps kept: nothing is regenerated)
mkdir "$T/src"
for f in configure configure.ac Makefile.am Makefile.in config.h.in aclocal.m4 \
    build-aux m4 agent engine include; do
	[ -e "$top_srcdir/$f" ] || skip "no $f in the source tree (run autoreconf first)"
	cp -rp "$top_srcdir/$f" "$T/src/"
done
chmod -R u+w "$T/src"
(cd "$T/src" && ./configure --enable-strict --without-systemd >"$T/configure.log" 2>&1) ||
    fail "configure --without-systemd: $(tail -n 5 "$T/configure.log")"
grep -q "libsystemd: no" "$T/configure.log" || fail "configure did not say libsystemd: no"
make -C "$T/src" -j2 p11agent >"$T/make.log" 2>&1 ||
    fail "make p11agent --without-systemd: $(grep -E -m 5 'error|Error' "$T/make.log")"
! ldd "$T/src/p11agent" | grep libsystemd || fail "linked to libsystemd"
ok "configure --without-systemd --enable-strict; make p11agent: built, no libsystemd"

printf '[identity a]\nkey = pkcs11:token=x\n[tunnel t]\nlisten = systemd:web\nconnect = h:1\nidentity = a\n' \
    >"$T/sd.conf"
rc=0
out=$("$T/src/p11agent" check -c "$T/sd.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -q "sd.conf:4: \[tunnel t\] listen: systemd:web: p11agent was built without libsystemd, so it cannot take sockets from systemd" <<<"$out" ||
    fail "listen = systemd:web without libsystemd: exit $rc: $out"
ok "refused: $(grep -o 'systemd:web: .*' <<<"$out")"

rc=0
out=$(LISTEN_FDS=1 LISTEN_PID=$$ "$T/src/p11agent" run -c "$T/none.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -q "systemd passed sockets (LISTEN_FDS), but p11agent was built without libsystemd and does not use them" <<<"$out" ||
    fail "LISTEN_FDS without libsystemd: exit $rc: $out"
ok "LISTEN_FDS without libsystemd: said so"
