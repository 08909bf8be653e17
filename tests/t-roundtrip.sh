#!/bin/bash
# {RSA-2048, P-256, P-384} x {TLS 1.2, TLS 1.3} x {TCP, Unix listener}: 1 MiB of
# random bytes round-trips byte-exact through the tunnel to an upstream
# that requires a client certificate, and the upstream reports the
# subject of the certificate on the token.
. "$top_srcdir/tests/lib.sh"
make_token

start_upstream s12 --tls1.2
start_upstream s13 --tls1.3

{
	agent_section
	identity rsa 01
	identity ec 02
	identity ec384 03
	for key in rsa ec ec384; do
		for v in 12 13; do
			port=s${v}_port
			tunnel "$key$v" "localhost:${!port}" "$key" \
			    "listen = unix:$T/sock/$key$v.sock"
		done
	done
} >"$T/agent.conf"

start_agent "$T/agent.conf" || fail "the agent did not start"

for key in rsa ec ec384; do
	for v in 12 13; do
		for kind in tcp unix; do
			addr=$(listen_addr "$key$v" "$kind") ||
			    fail "no $kind listener for $key$v"
			out=$("$CLIENT" "$addr" roundtrip --bytes 1048576 \
			    --expect-subject "CN=p11agent-test-$key") ||
			    fail "$key TLS1.${v#1} $kind: $out"
			case $out in
			"subject=O=p11agent tests,CN=p11agent-test-$key version=TLSv1.${v#1} "*"ok bytes=1048576"*) ;;
			*) fail "$key TLS1.${v#1} $kind: unexpected: $out" ;;
			esac
			ok "$key TLSv1.${v#1} $kind: $(echo "$out" | tail -n 1)"
		done
	done
done

# each connection's line names its peer: on a Unix socket the kernel's
# uid, pid and the program; on TCP the client's address
agent_log_has "conn [0-9]+ \(rsa12\): from uid $(id -u) pid [0-9]+ $(realpath "$CLIENT" | sed 's/[.]/[.]/g') on unix:$T/sock/rsa12.sock" ||
    fail "no peer (uid, pid, program) on a Unix connection's line"
agent_log_has "conn [0-9]+ \(rsa12\): from 127[.]0[.]0[.]1 port [0-9]+ on tcp:127[.]0[.]0[.]1:[0-9]+" ||
    fail "no peer address on a TCP connection's line"
ok "peers: $(grep -E 'conn [0-9]+ \(rsa12\): from uid' "$T/agent.log" | head -n 1)"

# the socket is 0600 in a 0700 directory
[ "$(stat -c %a "$T/sock")" = 700 ] || fail "socket directory mode"
[ "$(stat -c %a "$T/sock/rsa12.sock")" = 600 ] || fail "socket mode"
# the agent process never loaded a PKCS#11 module
if grep -Eq 'softhsm|p11fault|pkcs11' "/proc/$AGENT_PID/maps"; then
	fail "a PKCS#11 module is mapped in the agent: $(grep -E 'softhsm|p11fault|pkcs11' /proc/$AGENT_PID/maps)"
fi
ok "no PKCS#11 module in the agent process"
stop_agent || fail "the agent did not exit cleanly"
