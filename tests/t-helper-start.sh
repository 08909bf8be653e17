#!/bin/bash
# The token helper's command line (p11agent-helper [-a PATTERN]...
# [-p MS] [-r NAME] [MODULE-PATH]): a bad one is a usage error (exit 2); -r NAME
# loads only that module of p11-kit's registry, and a NAME not there is
# an error listing the registered ones; -a adds allowed module paths.
# A helper that cannot disable core dumps or ptrace does not start.
. "$top_srcdir/tests/lib.sh"
make_token

# usage errors: exit 2 and the synopsis
usage_case() {
	local out rc=0
	out=$("$P11AGENT_HELPER" "$@" 2>&1 3</dev/null) || rc=$?
	[ "$rc" = 2 ] && grep -Fq "usage: p11agent-helper [-a PATTERN]... [-p MS] [-r NAME] [MODULE-PATH]" <<<"$out" ||
	    fail "p11agent-helper $* ($rc): $out"
	ok "p11agent-helper $*: exit 2: $(head -n 1 <<<"$out")"
}
usage_case -x
usage_case -r
usage_case -p 0 "$FAULT"
usage_case -p 5ms "$FAULT"
usage_case -a relative/x.so "$FAULT"
usage_case -r softhsm2 "$SOFTHSM"
usage_case "$FAULT" "$FAULT"
usage_case relative/x.so

# wrap_helper ARGS...: a helper started with ARGS before the agent's own
wrap_helper() {
	printf '#!/bin/bash\nexec %q' "$P11AGENT_HELPER" >"$T/wrap-helper"
	printf ' %q' "$@" >>"$T/wrap-helper"
	printf ' "$@"\n' >>"$T/wrap-helper"
	chmod +x "$T/wrap-helper"
}

# -a: a module outside /usr/lib* loads when a pattern allows it (what the
# agent passes from module-allow); a pattern that does not match is no help
mkdir -m 700 "$T/mods"
cp "$FAULT" "$T/mods/fault.so"
cat >"$T/agent.conf" <<EOT
[identity t]
key = pkcs11:token=$P11TEST_TOKEN;id=%02;type=private
pin = file:$TOK/pin
module = $T/mods/fault.so

[tunnel t]
listen = tcp:127.0.0.1:0
connect = localhost:1
identity = t
EOT
rc=0
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -Fq "module $T/mods/fault.so: not in a directory allowed for modules" <<<"$out" ||
    fail "a module nothing allows ($rc): $out"
wrap_helper -a "$T/other/*"
out=$(P11AGENT_HELPER=$T/wrap-helper "$P11AGENT" check -c "$T/agent.conf" 2>&1) &&
    fail "a pattern that does not match allowed it: $out"
wrap_helper -a "$T/other/*" -a "$T/mods/*.so"
out=$(P11AGENT_HELPER=$T/wrap-helper "$P11AGENT" check -c "$T/agent.conf" 2>&1) ||
    fail "-a did not allow the module: $out"
grep -q "identity t: ok: EC key" <<<"$out" || fail "check: $out"
ok "-a PATTERN allows a module: $out"

# -r NAME: only that registry module is loaded
if [ -f /usr/share/p11-kit/modules/softhsm2.module ]; then
	out=$("$P11AGENT" tokens) || fail "tokens via the registry: $out"
	all=$(grep -c '^module: ' <<<"$out")
	wrap_helper -r softhsm2
	out=$(P11AGENT_HELPER=$T/wrap-helper "$P11AGENT" tokens) ||
	    fail "tokens with -r softhsm2: $out"
	mods=$(grep '^module: ' <<<"$out")
	[ "$(wc -l <<<"$mods")" = 1 ] && grep -q 'libsofthsm2.so (Implementation of PKCS11, SoftHSM)' <<<"$mods" ||
	    fail "-r softhsm2 listed: $mods"
	grep -q "^    token: token 'p11agent-test'" <<<"$out" || fail "no token: $out"
	ok "-r softhsm2: one module of $all registered: $mods"
	wrap_helper -r no-such-module
	rc=0
	out=$(P11AGENT_HELPER=$T/wrap-helper "$P11AGENT" tokens 2>&1) || rc=$?
	[ "$rc" = 1 ] && grep -Eq "p11-kit registry: no module named 'no-such-module' \(registered: .*softhsm2.*\)" <<<"$out" ||
	    fail "-r no-such-module ($rc): $out"
	ok "-r with an unknown name: $out"
fi

# a helper that cannot harden itself does not start, and loads no module
for what in core dumpable; do
	printf '#!/bin/bash\nexec %q %q %q "$@"\n' "$top_builddir/tests/deny-syscall" \
	    "$what" "$P11AGENT_HELPER" >"$T/denied-helper"
	chmod +x "$T/denied-helper"
	: >"$P11FAULT_LOG"
	rc=0
	# (a sanitizer runtime must not set RLIMIT_CORE itself here)
	out=$(ASAN_OPTIONS=$ASAN_OPTIONS:disable_coredump=0 \
	    P11AGENT_HELPER=$T/denied-helper "$P11AGENT" tokens -m "$FAULT" 2>&1) || rc=$?
	[ "$rc" = 77 ] && skip "no seccomp filter here: $out"
	case $what in
	core) want="cannot disable core dumps (setrlimit RLIMIT_CORE): Operation not permitted" ;;
	dumpable) want="cannot make the process undumpable (prctl PR_SET_DUMPABLE): Operation not permitted" ;;
	esac
	[ "$rc" = 1 ] && grep -Fq "p11agent-helper: $want" <<<"$out" ||
	    fail "helper without $what protection ($rc): $out"
	[ -s "$P11FAULT_LOG" ] && fail "the module was loaded: $(head -n 3 "$P11FAULT_LOG")"
	ok "no $what protection, no helper: $(grep p11agent-helper <<<"$out")"
done
