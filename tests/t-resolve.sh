#!/bin/bash
# Upstream names are resolved off the loop, and connections waiting on
# the same name share one lookup: 30 connections that arrive together
# to a tunnel whose connect is "localhost:PORT" all work, with fewer
# lookups than connections.  A name that does not resolve closes the
# client with a reason.
. "$top_srcdir/tests/lib.sh"
make_token

start_upstream s
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec
	tunnel nx "nonexistent.invalid:$s_port" ec
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"
addr=$(listen_addr t tcp)

# 30 connections wait in the backlog while the agent is stopped, so it
# accepts them in one go
log_mark
kill -STOP "$AGENT_PID"
fds=()
for i in $(seq 1 30); do
	exec {fd}<>"/dev/tcp/127.0.0.1/${addr##*:}" || {
		kill -CONT "$AGENT_PID"
		fail "connection $i"
	}
	fds+=("$fd")
done
kill -CONT "$AGENT_PID"
i=0
for fd in "${fds[@]}"; do
	i=$((i + 1))
	read -r -t 20 -u "$fd" line || fail "connection $i: no first line"
	case $line in subject=*CN=p11agent-test-ec*) ;; *) fail "connection $i: $line" ;; esac
	echo "ping $i" >&"$fd"
	read -r -t 20 -u "$fd" line || fail "connection $i: no echo"
	[ "$line" = "ping $i" ] || fail "connection $i: echo '$line'"
done
for fd in "${fds[@]}"; do
	exec {fd}<&-
done
since() {
	tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -c -- "$1" || :
}
lookups=$(since "resolving localhost:$s_port\$")
joins=$(since "a connection joins the lookup of localhost:$s_port ")
kept=$(since "localhost:$s_port: the answer of [0-9]* ms ago")
[ "$lookups" -ge 1 ] || fail "no lookup of localhost:$s_port logged"
[ $((lookups + joins + kept)) = 30 ] ||
    fail "$lookups lookups, $joins joins, $kept kept answers for 30 connections"
[ "$lookups" -lt 30 ] || fail "30 connections made $lookups lookups"
log_since_has "lookup of localhost:$s_port answered \(ok\) for [0-9]+ connections" ||
    fail "no answer logged for the shared lookup"
ok "30 connections at once: $lookups lookup(s), $joins joined, $kept from the kept answer"

# ---- an answer is kept for 5 s: 20 connections one after the other make
# at most one lookup (the burst above left an answer)
log_mark
for i in $(seq 1 20); do
	"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 10 >/dev/null ||
	    fail "sequential connection $i"
done
lookups=$(since "resolving localhost:$s_port\$")
kept=$(since "localhost:$s_port: the answer of [0-9]* ms ago")
[ "$lookups" -le 1 ] && [ $((lookups + kept)) = 20 ] ||
    fail "20 sequential connections: $lookups lookups, $kept kept answers"
ok "20 connections one after the other: $lookups lookup, $kept kept answers"

# a name that does not resolve: the client is closed, the log says why
log_mark
out=$("$CLIENT" "$(listen_addr nx tcp)" expect-close --timeout 20) ||
    fail "unresolvable upstream: $out"
wait_log "conn [0-9]+ \(nx\): closed: upstream name does not resolve" ||
    fail "no close line for the unresolvable name"
log_since_has "upstream nonexistent.invalid:$s_port: name resolution failed" ||
    fail "no resolution failure logged"
ok "nonexistent.invalid: $out"
stop_agent || fail "the agent did not exit cleanly"
