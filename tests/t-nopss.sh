#!/bin/bash
# An RSA key on a token whose mechanism list has neither RSA-PSS nor raw
# RSA still connects: TLS 1.2 with PKCS#1 v1.5 signatures, chosen
# automatically with a log line saying so.  A token with RSA-PSS but no
# raw RSA signs TLS 1.3 with its own CKM_RSA_PKCS_PSS; one with raw RSA
# but no PSS gets the PSS padding done by the agent.
. "$top_srcdir/tests/lib.sh"
make_token
# every PSS flavour and raw RSA are hidden by the fault module
export P11FAULT_HIDE_MECHS=CKM_RSA_PKCS_PSS,CKM_RSA_X_509,0x0e,0x43,0x44,0x45,0x47

start_upstream s
{
	identity rsa 01
	tunnel nopss "127.0.0.1:$s_port" rsa "server-name = localhost"
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"
agent_log_has "tunnel nopss: the token of identity rsa cannot sign RSA-PSS.*TLS 1.2 with RSA PKCS#1" ||
    fail "no log line about the missing PSS"
out=$("$CLIENT" "$(listen_addr nopss tcp)" roundtrip --bytes 65536 \
    --expect-subject CN=p11agent-test-rsa) || fail "no connection: $out"
case $out in
*"version=TLSv1.2 sigalg=RSA"$'\n'*) ok "TLS 1.2 with RSA PKCS#1: $out" ;;
*) fail "expected TLS 1.2 + PKCS#1: $out" ;;
esac
grep -q "C_SignInit 0x0 .*mech=0x1\b" "$T/calls.log" ||
    fail "the token did not sign with CKM_RSA_PKCS"
if grep -q "C_SignInit .*mech=0x3\b" "$T/calls.log"; then
	fail "raw RSA was used although hidden"
fi
stop_agent || fail "the agent did not exit cleanly"

# tls-min = 1.3 cannot work with such a token: a clear error at start
sed -i 's/^identity = rsa$/identity = rsa\ntls-min = 1.3/' "$T/agent.conf"
: >"$T/agent.log"
if start_agent "$T/agent.conf"; then
	fail "the agent started with tls-min = 1.3 on a PKCS#1-only token"
fi
agent_log_has "agent.conf:[0-9]+: \[tunnel nopss\]: identity rsa: the token can sign only RSA PKCS#1 v1.5, which TLS 1.3 forbids" ||
    fail "no clear error for tls-min = 1.3"
ok "tls-min = 1.3 refused with a clear message"

# PSS on the token, no raw RSA: TLS 1.3 with the token's own RSA-PSS
: >"$T/agent.log"
sed -i '/^tls-min = 1.3$/d' "$T/agent.conf"
export P11FAULT_HIDE_MECHS=CKM_RSA_X_509
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start"
agent_log_has "cannot sign RSA-PSS" && fail "PSS is there, but the agent says not"
out=$("$CLIENT" "$(listen_addr nopss tcp)" roundtrip --bytes 65536 \
    --expect-subject CN=p11agent-test-rsa) || fail "native PSS: $out"
case $out in
*"version=TLSv1.3 sigalg=RSA-PSS"$'\n'*) ;;
*) fail "expected TLS 1.3 + RSA-PSS: $out" ;;
esac
grep -q "C_SignInit 0x0 .*mech=0xd\b" "$T/calls.log" ||
    fail "the token did not sign with CKM_RSA_PKCS_PSS"
ok "native RSA-PSS: $(head -n 1 <<<"$out")"
stop_agent || fail "the agent did not exit cleanly"

# raw RSA on the token, no PSS: the agent pads, the token does raw RSA
: >"$T/agent.log"
export P11FAULT_HIDE_MECHS=CKM_RSA_PKCS_PSS,0x0e,0x43,0x44,0x45,0x47
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start"
out=$("$CLIENT" "$(listen_addr nopss tcp)" roundtrip --bytes 65536 \
    --expect-subject CN=p11agent-test-rsa) || fail "PSS over raw RSA: $out"
case $out in
*"version=TLSv1.3 sigalg=RSA-PSS"$'\n'*) ;;
*) fail "expected TLS 1.3 + RSA-PSS: $out" ;;
esac
grep -q "C_SignInit 0x0 .*mech=0x3\b" "$T/calls.log" ||
    fail "the token did not sign with CKM_RSA_X_509"
ok "RSA-PSS padded by the agent, raw RSA on the token"
stop_agent || fail "the agent did not exit cleanly"
