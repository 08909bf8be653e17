#!/bin/bash
# The PKCS#11 call log proves the key never leaves the token: every full
# handshake costs exactly one C_SignInit + C_Sign, and no call reads
# private key material, wraps, copies, derives or changes a key.  The
# agent process never maps a PKCS#11 module.
. "$top_srcdir/tests/lib.sh"
make_token

start_upstream s
{
	agent_section
	identity rsa 01
	identity ec 02
	for key in rsa ec; do
		tunnel "$key" "localhost:$s_port" "$key"
	done
} >"$T/agent.conf"

export P11FAULT_LOG=$T/run.calls
start_agent "$T/agent.conf" || fail "the agent did not start"
helper_pids=$(pgrep -P "$AGENT_PID" -d ' ') || fail "no token helper"
for i in 1 2 3; do
	for key in rsa ec; do
		"$CLIENT" "$(listen_addr $key tcp)" roundtrip --bytes 1000 \
		    --expect-subject "CN=p11agent-test-$key" >/dev/null ||
		    fail "connection $i via $key"
	done
done
if grep -Eiq 'softhsm|p11fault|pkcs11|p11-kit' "/proc/$AGENT_PID/maps"; then
	fail "a PKCS#11 module or p11-kit is mapped in the agent process"
fi
ok "the agent maps no PKCS#11 module or p11-kit; the helper (pid $helper_pids) does: $(grep -c p11fault "/proc/${helper_pids%% *}/maps") mappings"
stop_agent || fail "the agent did not exit cleanly"

handshakes=$(grep -c ': TLSv1\.[23] to ' "$T/agent.log")
signs=$(grep -c ' C_Sign 0x0' "$T/run.calls")
inits=$(grep -c ' C_SignInit 0x0' "$T/run.calls")
[ "$handshakes" = 6 ] || fail "$handshakes handshakes, wanted 6"
[ "$signs" = 6 ] && [ "$inits" = 6 ] ||
    fail "$signs C_Sign and $inits C_SignInit for 6 full handshakes"
ok "6 full handshakes, 6 C_SignInit + C_Sign"

# the other commands go through the same check
export P11FAULT_LOG=$T/cli.calls
"$P11AGENT" check -c "$T/agent.conf" >/dev/null || fail "check"
"$P11AGENT" tokens -m "$FAULT" --pin "file:$TOK/pin" >/dev/null ||
    fail "tokens"

# every call the helpers made is one signing needs (lib.sh: SIGN_ONLY_CALLS;
# of a private key only public attributes)
calls_allowed "$SIGN_ONLY_CALLS" "$KEY_PUBLIC_ATTRS" "$T/run.calls" "$T/cli.calls" || fail "the call log shows a forbidden call"
[ "$(grep -c . "$T/cli.calls")" -gt 20 ] || fail "the CLI call log is too short to prove anything"
ok "$(cat "$T/run.calls" "$T/cli.calls" | wc -l) logged calls, all allowed; private keys: only public attributes read"
