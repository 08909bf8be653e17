#!/bin/bash
# The agent refuses upstreams it must not trust, closes the local client's
# connection (never leaves it hanging, never falls back to plaintext) and
# logs why: another CA, an expired certificate, a wrong host name, an
# upstream that does not speak TLS, an upstream that is down.
. "$top_srcdir/tests/lib.sh"
make_token

srv() {
	start_server "$1" --cert "$TOK/$2.pem" --key "$TOK/$2.key" \
	    --ca "$TOK/ca.pem" --require-cert
}
srv otherca server-otherca
srv expired server-expired
srv wrongname server-wrongname
start_server plain --plain
# a port that is bound but not listening: connections are refused, and
# no other test can take the port meanwhile
start_server down --closed

{
	agent_section
	identity ec 02
	for name in otherca expired wrongname plain down; do
		port=${name}_port
		tunnel "$name" "localhost:${!port}" ec "connect-timeout = 5"
	done
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"

refused() {
	local name=$1 why=$2 out
	out=$("$CLIENT" "$(listen_addr "$name" tcp)" expect-close --timeout 10) ||
	    fail "$name: the client was not closed cleanly: $out"
	grep -E "conn [0-9]+: upstream localhost:[0-9]+: .*$why" "$T/agent.log" |
	    grep -q . || fail "$name: no log line matching '$why'"
	ok "$name: refused ($out): $(grep -E "$why" "$T/agent.log" | tail -n 1)"
}
# (what each refusal says in full: tests/t-server-trust.sh)
refused otherca "TLS handshake failed: server certificate refused: issuer CN=some other CA not trusted by ca = "
refused expired "TLS handshake failed: server certificate refused: certificate for localhost expired 2021-01-01 00:00 UTC"
refused wrongname "TLS handshake failed: server certificate refused: the certificate CN=wrong.example is not for localhost: names in the certificate: wrong.example"
refused plain "TLS handshake failed: .*(wrong version number|packet length too long|record layer failure)"
refused down "cannot connect: Connection refused"
