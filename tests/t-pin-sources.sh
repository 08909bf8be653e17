#!/bin/bash
# PIN sources: pin = fd:N (read once by the agent, handed to the helper
# like env:), pin = systemd-ask-password (run by the helper), and a PIN
# pad (pin = none on a token with CKF_PROTECTED_AUTHENTICATION_PATH: a
# C_Login with a NULL PIN).
. "$top_srcdir/tests/lib.sh"
make_token

# conf SOURCE: $T/agent.conf with identity ec whose pin = SOURCE
conf() {
	{
		agent_section
		identity ec 02 | sed "s|^pin = .*|pin = $1|"
		tunnel t "localhost:$s_port" ec
	} >"$T/agent.conf"
}
logins() {
	grep -c ' C_Login ' "$T/calls.log"
}
start_upstream s

# ---- PIN pad
conf none
: >"$T/calls.log"
out=$(P11FAULT_PINPAD_PIN=$P11TEST_PIN "$P11AGENT" check -c "$T/agent.conf" \
    2>&1) || fail "check with a PIN pad: $out"
[ "$(logins)" = 1 ] || fail "C_Login calls: $(logins), wanted 1"
grep ' C_Login 0x0 ' "$T/calls.log" | grep -q 'pin=NULL' ||
    fail "the C_Login was not with a NULL PIN: $(grep C_Login "$T/calls.log")"
grep -q -- "$P11TEST_PIN" "$T/calls.log" && fail "the PIN is in the call log"
ok "PIN pad: pin = none logs in once with a NULL PIN, the reader gives the PIN"
