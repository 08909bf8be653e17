#!/bin/bash
# pin-sha256 (issue 10, scope 4, in part): the upstream's chain must hold
# a certificate whose SubjectPublicKeyInfo has one of the tunnel's pins,
# besides verifying against the CA and the name.
# - the server's own pin, or its CA's, among others: connections work;
# - pins that match nothing: refused, the log naming what the server's
#   chain has ("pin mismatch: ... got sha256//...");
# - a pin that is not the base64 of a SHA-256: a config error with its
#   line; the sha256// prefix of curl and HPKP is taken.
. "$top_srcdir/tests/lib.sh"
make_token
start_upstream s

pin() {	# pin CERT: base64 of the SHA-256 of its SPKI
	openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform DER |
	    openssl dgst -sha256 -binary | base64
}
srv=$(pin "$TOK/server.pem") ca=$(pin "$TOK/ca.pem") other=$(pin "$TOK/client-ec.pem")
[ ${#srv} = 44 ] && [ ${#ca} = 44 ] || fail "no pins computed: '$srv' '$ca'"
{
	agent_section
	identity ec 02
	tunnel server "localhost:$s_port" ec "pin-sha256 = $other, sha256//$srv"
	tunnel ca "localhost:$s_port" ec "pin-sha256 = $other" "pin-sha256 = $ca"
	tunnel wrong "localhost:$s_port" ec "pin-sha256 = $other"
} >"$T/agent.conf"
"$P11AGENT" check -c "$T/agent.conf" >"$T/check.out" 2>&1 || fail "check: $(cat "$T/check.out")"
start_agent "$T/agent.conf" || fail "the agent did not start"
"$CLIENT" "$(listen_addr server tcp)" roundtrip --bytes 1000 >/dev/null ||
    fail "the server's own pin"
"$CLIENT" "$(listen_addr ca tcp)" roundtrip --bytes 1000 >/dev/null ||
    fail "the CA's pin"
ok "the server's pin (sha256// form, second of two) and the CA's (second line) let it through"

log_mark
"$CLIENT" "$(listen_addr wrong tcp)" expect-close --timeout 10 >/dev/null ||
    fail "wrong pin: the connection was not closed"
wait_log "pin mismatch: no pin-sha256 of the tunnel matches the server's chain; got" ||
    fail "wrong pin: $(grep -i "pin\|refused\|handshake" "$T/agent.log" | tail -n 3)"
# (base64 has + and /: a fixed string, not a regex)
grep -qF "matches the server's chain; got sha256//$srv (server CN=localhost)" "$T/agent.log" ||
    fail "wrong pin, the server's hash not named: $(grep "pin mismatch" "$T/agent.log")"
ok "a pin that matches nothing: refused, $(grep -o 'pin mismatch: [^;]*; got sha256//[^ ]*' "$T/agent.log" | head -n 1)"
stop_agent || fail "the agent did not stop cleanly"

for bad in "abc" "${srv%?}" "sha256//$srv$srv" "${srv:0:43}A"; do
	{
		agent_section
		identity ec 02
		tunnel t "localhost:$s_port" ec "pin-sha256 = $bad"
	} >"$T/bad.conf"
	! "$P11AGENT" check -c "$T/bad.conf" >"$T/bad.out" 2>&1 || fail "pin '$bad' was taken"
	grep -q "bad.conf:[0-9]*: \[tunnel t\] pin-sha256: '.*' is not the base64 of a SHA-256" "$T/bad.out" ||
	    fail "pin '$bad': $(cat "$T/bad.out")"
done
ok "malformed pins refused with their line: $(head -n 1 "$T/bad.out")"
