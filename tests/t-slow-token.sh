#!/bin/bash
# A token that takes 500 ms per signature does not stall tunnels that are
# already open: while a new connection's handshake waits on the token, an
# open tunnel keeps its round-trips under 50 ms.
. "$top_srcdir/tests/lib.sh"
make_token
export P11FAULT_SIGN_DELAY_MS=500

start_upstream s
{
	identity ec 02
	tunnel slow "localhost:$s_port" ec
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"
addr=$(listen_addr slow tcp)
out=$("$CLIENT" "$addr" latency --second-addr "$addr" --max-ms 50 \
    --min-second-ms 450) || fail "$out"
ok "$out"
stop_agent || fail "the agent did not exit cleanly"

# a token slower than the identity's sign-timeout: the handshake fails
# with a clear reason and the client is closed
export P11FAULT_SIGN_DELAY_MS=2500
sed -i 's/^module = .*/&\nsign-timeout = 1/' "$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"
out=$("$CLIENT" "$(listen_addr slow tcp)" expect-close --timeout 10) ||
    fail "sign timeout: $out"
agent_log_has "TLS handshake failed: the token did not sign: no answer within sign-timeout" ||
    fail "no log line for the sign timeout"
ok "token slower than sign-timeout: $out"
