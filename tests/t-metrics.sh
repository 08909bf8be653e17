#!/bin/bash
# p11agent status --prometheus (issue 9, scope 2, first part): the
# Prometheus text exposition of the running agent passes `promtool check
# metrics` (its linter: HELP and TYPE, names, units), and its counters
# move as traffic flows: connections, full handshakes, bytes each way,
# token signatures and their histogram, failures by reason.
. "$top_srcdir/tests/lib.sh"
PROMTOOL=$(command -v promtool || true)
[ -n "$PROMTOOL" ] || skip "promtool is missing (package prometheus; .ci/run installs it)"
make_token
one_tunnel_conf
start_agent "$T/agent.conf" || fail "the agent did not start"

# metric FILE NAME{LABELS}: its value
metric() {
	awk -v m="$2" '$1 == m { print $2 }' "$1"
}
scrape() {
	"$P11AGENT" status --prometheus -c "$T/agent.conf" >"$T/$1.prom" ||
	    fail "status --prometheus: $(cat "$T/$1.prom")"
	"$PROMTOOL" check metrics <"$T/$1.prom" >"$T/$1.lint" 2>&1 ||
	    fail "promtool check metrics: $(cat "$T/$1.lint")"
}

scrape before
for i in 1 2; do
	"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 4000 >/dev/null ||
	    fail "connection $i"
done
scrape after
ok "promtool check metrics: clean, $(grep -c '^p11agent_' "$T/after.prom") samples"

delta() {
	local a b
	a=$(metric "$T/before.prom" "$1")
	b=$(metric "$T/after.prom" "$1")
	[ -n "$a" ] && [ -n "$b" ] || fail "no sample $1"
	echo $((b - a))
}
mod="module=\"$FAULT\""
for want in "p11agent_connections_total{tunnel=\"t\"} 2" \
    "p11agent_handshakes_total{tunnel=\"t\",kind=\"full\"} 2" \
    "p11agent_bytes_total{tunnel=\"t\",direction=\"up\"} 8000" \
    "p11agent_token_signatures_total{$mod,result=\"ok\"} 2" \
    "p11agent_token_signature_duration_seconds_count{$mod} 2" \
    "p11agent_token_signature_duration_seconds_bucket{$mod,le=\"+Inf\"} 2" \
    "p11agent_token_signatures_total{$mod,result=\"failed\"} 0" \
    "p11agent_connection_failures_total{tunnel=\"t\",reason=\"token\"} 0"; do
	name=${want% *}
	d=$(delta "$name")
	[ "$d" = "${want##* }" ] || fail "$name moved by $d, wanted ${want##* }"
done
d=$(delta 'p11agent_bytes_total{tunnel="t",direction="down"}')
[ "$d" -gt 8000 ] || fail "bytes down moved by $d"
[ "$(metric "$T/after.prom" 'p11agent_connections_open{tunnel="t"}')" = 0 ] ||
    fail "connections open after both closed"
grep -q '^# TYPE p11agent_token_signature_duration_seconds histogram$' "$T/after.prom" ||
    fail "the signature latency is not a histogram"
ok "counters moved: 2 connections, 2 full handshakes, 8000 bytes up, $d down, 2 signatures"

# a failure moves its reason's counter
stop_agent || fail "the agent did not exit cleanly"
export P11FAULT_FAIL=C_Sign=0x6:1
start_agent "$T/agent.conf" || fail "the agent did not start (fault)"
scrape before
"$CLIENT" "$(listen_addr t tcp)" expect-close --timeout 10 >/dev/null ||
    fail "the failing connection was not closed"
scrape after
for want in "p11agent_connection_failures_total{tunnel=\"t\",reason=\"token\"} 1" \
    "p11agent_token_signatures_total{$mod,result=\"failed\"} 1" \
    "p11agent_token_signatures_total{$mod,result=\"ok\"} 0"; do
	name=${want% *}
	d=$(delta "$name")
	[ "$d" = "${want##* }" ] || fail "$name moved by $d, wanted ${want##* }"
done
ok "a failed signature: failures{reason=token} +1, signatures{result=failed} +1"
stop_agent || fail "the agent did not exit cleanly"
