#!/bin/bash
# An upstream name with two addresses whose first refuses: the agent
# tries the next one and the tunnel works; -v logs the failed attempt.
# The name is localhost, resolving to ::1 and then 127.0.0.1, while the
# upstream listens on 127.0.0.1 only.  Where /etc/hosts does not say so,
# the agent gets a private /etc/hosts in a mount namespace (unshare).
. "$top_srcdir/tests/lib.sh"

# the stream addresses of localhost in getaddrinfo's order (getent uses
# AI_ADDRCONFIG, like the agent)
addrs() {
	"$@" getent ahosts localhost | awk '$2 == "STREAM" { print $1 }' |
	    paste -s -d ' '
}
two() {
	[[ $1 == "::1 "* && " $1 " == *" 127.0.0.1 "* ]]
}
sys=$(addrs)
where="the system's /etc/hosts"
if ! two "$sys"; then
	where="a private /etc/hosts"
	printf '::1 localhost\n127.0.0.1 localhost\n' >"$T/hosts"
	AGENT_WRAP=(unshare -r -m --propagation private sh -c
	    'mount --bind "$0" /etc/hosts && exec "$@"' "$T/hosts")
	own=$(addrs "${AGENT_WRAP[@]}" 2>&1) || own="unshare failed: $own"
	two "$own" || skip "localhost resolves to '$sys' here (one address," \
	    "or not ::1 first), and with a private /etc/hosts to '$own'" \
	    "(no IPv6 address, or no user namespaces)"
fi
make_token

start_upstream s		# 127.0.0.1 only: ::1 refuses
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 65536 \
    --expect-subject CN=p11agent-test-ec --timeout $((20 * SLOW))) ||
    fail "through the second address: $out"
agent_log_has "conn 1: upstream localhost:$s_port: connecting to ::1 failed: Connection refused$" ||
    fail "no log line for the refused first address"
agent_log_has "conn 1 \(t\): TLSv1\.[23] to localhost:$s_port in " ||
    fail "no handshake line"
agent_log_has "cannot connect" && fail "logged as not connected"
grep -q "conn 1 from 127\.0\.0\.1:.*handshake ok" "$T/s.log" ||
    fail "the upstream did not see the connection: $(cat "$T/s.log")"
ok "::1 refused, 127.0.0.1 served ($where): $(tail -n 1 <<<"$out")"
stop_agent || fail "the agent did not exit cleanly"
