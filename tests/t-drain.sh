#!/bin/bash
# SIGTERM drains (issue 9, scope 5): the agent stops accepting at once,
# lets the open connections finish within drain-timeout, then exits 0;
# what is still open at drain-timeout is closed; a second signal stops
# it at once.
. "$top_srcdir/tests/lib.sh"
make_token
start_upstream s

conf() {	# conf DRAIN-TIMEOUT
	{
		printf '[agent]\nmodule-allow = %s/*\ndrain-timeout = %s\n\n' \
		    "$LIBS_REAL" "$1"
		identity ec 02
		tunnel t "localhost:$s_port" ec
		printf '[tunnel u]\nlisten = unix:%s/u.sock\nconnect = localhost:%s\nidentity = ec\nca = %s\n' \
		    "$T/run" "$s_port" "$TOK/ca.pem"
	} >"$T/agent.conf"
}

# ---- an open transfer finishes, new connections are refused meanwhile
conf 30
start_agent "$T/agent.conf" || fail "the agent did not start"
a=$(listen_addr t tcp)
start_xfer "$a" 16M 8M
log_mark
kill -TERM "$AGENT_PID"
wait_log "signal 15: stopping: not accepting; 1 open connections may finish within drain-timeout \(30 s\)" ||
    fail "no drain line: $(tail -n 3 "$T/agent.log")"
refused "$a" || fail "the listener still accepts while draining"
[ ! -e "$T/run/u.sock" ] || fail "the unix socket is still there while draining"
kill -0 "$AGENT_PID" || fail "the agent did not wait for the open connection"
echo go >&$GO
wait "$XFER" || fail "the open transfer: $(cat <&$XOUT)"
grep -q "^ok bytes=16777216 " <<<"$(cat <&$XOUT)" || fail "the transfer was cut"
start=$(date +%s%N)
rc=0
wait "$AGENT_PID" || rc=$?
AGENT_PID=
ms=$((($(date +%s%N) - start) / 1000000))
[ "$rc" = 0 ] || fail "the agent exited $rc after draining"
agent_log_has "every connection has finished: stopping" || fail "no drained line"
ok "SIGTERM: not accepting, the open 16 MiB transfer finished byte-exact, exit 0 ${ms} ms after it"

# ---- drain-timeout: what is still open then is closed
conf 1
start_agent "$T/agent.conf" || fail "the agent did not start again"
a=$(listen_addr t tcp)
start_xfer "$a" 1M 100K
log_mark
term_within "$AGENT_PID" $((3000 * SLOW)) "drain-timeout = 1"
AGENT_PID=
ms=$STOP_MS
[ "$ms" -ge 900 ] || fail "stopped after $ms ms with drain-timeout = 1"
log_since_has "drain-timeout \(1 s\): closing the 1 connections still open" ||
    fail "no drain-timeout line"
! wait "$XFER" || fail "the stalled transfer completed?"
ok "drain-timeout = 1: the stalled connection was closed, exit 0 after $ms ms"

# ---- a second SIGTERM stops at once
conf 30
start_agent "$T/agent.conf" || fail "the agent did not start a third time"
start_xfer "$(listen_addr t tcp)" 1M 100K
log_mark
kill -TERM "$AGENT_PID"
wait_log "may finish within drain-timeout" || fail "no drain"
term_within "$AGENT_PID" $((2000 * SLOW)) "the second SIGTERM"
AGENT_PID=
ms=$STOP_MS
log_since_has "stopping now, without waiting for the open connections" ||
    fail "no second-signal line"
ok "a second SIGTERM while draining: exit 0 after $ms ms"
