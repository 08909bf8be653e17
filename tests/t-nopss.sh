#!/bin/bash
# An RSA key on a token whose mechanism list has neither RSA-PSS nor raw
# RSA still connects: TLS 1.2 with PKCS#1 v1.5 signatures, chosen
# automatically with a log line saying so.  A token with RSA-PSS but no
# raw RSA signs TLS 1.3 with its own CKM_RSA_PKCS_PSS; one with raw RSA
# but no PSS gets the PSS padding done by the agent.
. "$top_srcdir/tests/lib.sh"
make_token
PSS_ALL=CKM_RSA_PKCS_PSS,0x0e,0x43,0x44,0x45,0x47	# every PSS flavour

start_upstream s
{
	agent_section
	identity rsa 01
	tunnel nopss "127.0.0.1:$s_port" rsa "server-name = localhost"
} >"$T/agent.conf"

# with_hidden MECHS: (re)start the agent on a token without MECHS
with_hidden() {
	stop_agent || fail "the agent did not exit cleanly"
	export P11FAULT_HIDE_MECHS=$1
	: >"$T/agent.log"
	: >"$T/calls.log"
	start_agent "$T/agent.conf"
}

# expect_sign VERSION SIGALG MECH: a round trip shows the TLS version and
# signature type the upstream saw, and the token signed with MECH only
expect_sign() {
	local out
	out=$("$CLIENT" "$(listen_addr nopss tcp)" roundtrip --bytes 65536 \
	    --expect-subject CN=p11agent-test-rsa) || fail "no connection: $out"
	case $out in
	*"version=TLSv$1 sigalg=$2"$'\n'*) ;;
	*) fail "expected TLS $1 with $2: $out" ;;
	esac
	grep -q "C_SignInit 0x0 .*mech=$3\b" "$T/calls.log" ||
	    fail "the token did not sign with mechanism $3"
	if grep "C_SignInit " "$T/calls.log" | grep -vq "mech=$3\b"; then
		fail "another mechanism than $3 was used"
	fi
	ok "TLS $1 with $2 (mechanism $3): $(head -n 1 <<<"$out")"
}

# neither PSS nor raw RSA: TLS 1.2 with PKCS#1 v1.5
with_hidden "$PSS_ALL,CKM_RSA_X_509" || fail "the agent did not start"
agent_log_has "tunnel nopss: the token of identity rsa cannot sign RSA-PSS.*TLS 1.2 with RSA PKCS#1" ||
    fail "no log line about the missing PSS"
expect_sign 1.2 RSA 0x1

# tls-min = 1.3 cannot work with such a token: a clear error at start
sed -i 's/^identity = rsa$/identity = rsa\ntls-min = 1.3/' "$T/agent.conf"
with_hidden "$PSS_ALL,CKM_RSA_X_509" &&
    fail "the agent started with tls-min = 1.3 on a PKCS#1-only token"
agent_log_has "agent.conf:[0-9]+: \[tunnel nopss\]: identity rsa: the token can sign only RSA PKCS#1 v1.5, which TLS 1.3 forbids" ||
    fail "no clear error for tls-min = 1.3"
ok "tls-min = 1.3 refused with a clear message"
sed -i '/^tls-min = 1.3$/d' "$T/agent.conf"

# PSS on the token, no raw RSA: TLS 1.3 with the token's own RSA-PSS
with_hidden CKM_RSA_X_509 || fail "the agent did not start"
agent_log_has "cannot sign RSA-PSS" && fail "PSS is there, but the agent says not"
expect_sign 1.3 RSA-PSS 0xd

# raw RSA on the token, no PSS: the agent pads, the token does raw RSA
with_hidden "$PSS_ALL" || fail "the agent did not start"
expect_sign 1.3 RSA-PSS 0x3
stop_agent || fail "the agent did not exit cleanly"
