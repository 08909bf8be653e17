#!/bin/bash
# make install (into a DESTDIR) installs the program, its helper where the
# program looks for it, the man pages, the documentation with an example
# configuration, and the policies directories; the installed example
# configuration works once its token names are the test token's; make
# uninstall takes every file away again.
. "$top_srcdir/tests/lib.sh"

D=$T/inst
make -s -C "$top_builddir" install DESTDIR="$D" >"$T/install.log" 2>&1 ||
    fail "make install failed: $(tail -n 20 "$T/install.log")"
# the directories as configured, from the build's own Makefile
dirs() {
	local v rule="p11a-dirs:;@echo p11a-dirs:"
	for v in "$@"; do
		rule="$rule \$($v)"
	done
	MAKEFLAGS= MFLAGS= make -s --no-print-directory -C "$top_builddir" \
	    -f Makefile -f - p11a-dirs <<<"$rule" | sed -n 's/^p11a-dirs: //p'
}
read -r bindir pkglibexecdir mandir docdir pkgdatadir sysconfdir version < <(
    dirs bindir pkglibexecdir mandir docdir pkgdatadir sysconfdir \
	PACKAGE_VERSION) || fail "cannot read the install directories"

for f in "$bindir/p11agent" "$pkglibexecdir/p11agent-helper"; do
	[ -x "$D$f" ] || fail "make install: no program $f"
done
for f in "$mandir/man1/p11agent.1" "$mandir/man5/p11agent.conf.5" \
    "$mandir/man5/p11agent.policy.5" \
    "$docdir/README.md" "$docdir/control-protocol.md" \
    "$docdir/helper-protocol.md" "$docdir/examples/agent.conf" \
    "$pkgdatadir/policies/README.md" "$pkgdatadir/policies/banking.policy" \
    "$pkgdatadir/policies/intranet.policy" \
    "$pkgdatadir/policies/iot-ci.policy" \
    "$sysconfdir/p11agent/policies.d/default.policy"; do
	[ -f "$D$f" ] || fail "make install: no file $f"
done
[ -d "$D$sysconfdir/p11agent/policies.d" ] ||
    fail "make install: no directory $sysconfdir/p11agent/policies.d"
# the examples are installed as examples only: the active directory holds
# the default policy alone
[ "$(cd "$D$sysconfdir/p11agent/policies.d" && echo *)" = default.policy ] ||
    fail "policies.d holds more than default.policy: $(ls "$D$sysconfdir/p11agent/policies.d")"
# the systemd units (where the build has libsystemd: they are Type=notify)
# name the installed program
if grep -q '^#define HAVE_LIBSYSTEMD 1' "$top_builddir/config.h"; then
	read -r userunitdir systemunitdir < <(dirs systemduserunitdir \
	    systemdsystemunitdir) || fail "cannot read the unit directories"
	for f in "$userunitdir/p11agent.service" "$userunitdir/p11agent.socket" \
	    "$systemunitdir/p11agent@.service" "$systemunitdir/p11agent@.socket" \
	    "$docdir/systemd/README.md"; do
		[ -f "$D$f" ] || fail "make install: no file $f"
	done
	grep -qx "ExecStart=$bindir/p11agent run" "$D$userunitdir/p11agent.service" &&
	    grep -qx "ExecReload=$bindir/p11agent reload" "$D$systemunitdir/p11agent@.service" ||
	    fail "the installed units do not run $bindir/p11agent"
	units=", units"
fi
ok "installed: $bindir/p11agent, $pkglibexecdir/p11agent-helper, man pages, docs, policies.d${units:-}"

# the Debian package's version is this one (debian/changelog's first line)
deb=$(sed -n '1s/^p11agent (\([^-)]*\)[-)].*/\1/p' "$top_srcdir/debian/changelog")
[ "$deb" = "$version" ] || fail "debian/changelog is at version '$deb'," \
    "configure.ac's AC_INIT at $version: add a changelog entry (dch -v $version-1)"
out=$("$D$bindir/p11agent" --version) || fail "installed p11agent --version failed"
[ "$out" = "p11agent $version" ] || fail "installed p11agent --version says '$out'"
# without P11AGENT_HELPER, a p11agent that is not the installed one (this
# copy under DESTDIR) looks beside itself, then at the configured path:
# the path make install put the helper in
if [ ! -e "$pkglibexecdir/p11agent-helper" ]; then
	rc=0
	out=$(env -u P11AGENT_HELPER "$D$bindir/p11agent" tokens \
	    -m /usr/lib/softhsm/libsofthsm2.so 2>&1) || rc=$?
	[ "$rc" = 1 ] || fail "p11agent without a helper exited $rc: $out"
	grep -qF "or $pkglibexecdir/p11agent-helper;" <<<"$out" ||
	    fail "p11agent does not look for its helper at $pkglibexecdir: $out"
	ok "the program looks for its helper at $pkglibexecdir/p11agent-helper"
fi

# the example, with the test token's names, passes p11agent check
make_token
sed -e "s|token=corp-card;object=auth-key|token=$P11TEST_TOKEN;object=ec-key|" \
    -e "s|^pin = pinentry|pin = file:$TOK/pin|" \
    -e "s|unix:/run/user/1000/p11agent/|unix:$T/run/p11agent/|" \
    -e "s|^ca = .*|ca = $TOK/ca.pem|" \
    "$D$docdir/examples/agent.conf" >"$T/agent.conf"
cmp -s "$T/agent.conf" "$D$docdir/examples/agent.conf" &&
    fail "the example's token names changed: update this test"
out=$(P11AGENT_HELPER=$D$pkglibexecdir/p11agent-helper \
    "$D$bindir/p11agent" check -c "$T/agent.conf" 2>"$T/check.err") ||
    fail "p11agent check of the example failed: $(cat "$T/check.err")"
grep -q '^identity card: ok' <<<"$out" &&
    grep -q '^tunnel intranet-api: ok' <<<"$out" ||
    fail "p11agent check of the example said: $out"
ok "the example configuration passes p11agent check"
# ... with the installed active policies, and with the examples (which
# bind other tokens: they parse, and change nothing for this one)
for dir in "$D$sysconfdir/p11agent/policies.d" "$D$pkgdatadir/policies"; do
	out=$(P11AGENT_HELPER=$D$pkglibexecdir/p11agent-helper \
	    "$D$bindir/p11agent" check -c "$T/agent.conf" --policies "$dir" \
	    2>"$T/check.err") ||
	    fail "p11agent check --policies ${dir#"$D"} failed: $(cat "$T/check.err")"
done
ok "the installed policies (active and examples) pass p11agent check"

make -s -C "$top_builddir" uninstall DESTDIR="$D" >"$T/uninstall.log" 2>&1 ||
    fail "make uninstall failed: $(tail -n 20 "$T/uninstall.log")"
left=$(find "$D" -type f)
[ -z "$left" ] || fail "make uninstall left: $left"
ok "make uninstall removed every file"
