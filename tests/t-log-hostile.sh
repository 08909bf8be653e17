#!/bin/bash
# Logging against what a local program or the way the agent is started
# can do (issue 9, scope 3; review findings):
# - a program whose path holds a newline cannot forge a log line;
# - started with stderr closed, the agent runs (stdio is reopened on
#   /dev/null, so no socket or file takes fd 2);
# - started with stderr on /dev/null (syslog, with fd 2 as the relay's
#   pipe), a reload keeps syslog: the agent answers and stops afterwards
#   (it used to write its lines into its own relay and hang).
. "$top_srcdir/tests/lib.sh"
make_token
one_tunnel_conf

# start_quiet REDIRECTION: the agent with stderr as given, until ready
start_quiet() {
	local fd line=
	rm -f "$T/ready"
	mkfifo "$T/ready"
	case $1 in
	closed) "$P11AGENT" run -c "$T/agent.conf" --ready-fd 3 3>"$T/ready" 2>&- & ;;
	null) "$P11AGENT" run -c "$T/agent.conf" --ready-fd 3 3>"$T/ready" 2>/dev/null & ;;
	esac
	AGENT_PID=$!
	PIDS+=($AGENT_PID)
	exec {fd}<"$T/ready"
	while read -r -t $((30 * SLOW)) -u "$fd" line; do
		case $line in
		ready) break ;;
		listen\ t\ tcp:*) ADDR=${line#listen t } ;;
		esac
	done
	exec {fd}<&-
	[ "$line" = ready ] || fail "the agent with stderr $1 did not start"
}

# ---- a newline in the peer's executable path
start_agent "$T/agent.conf" || fail "the agent did not start"
d="$T/x
p11agent: conn 99 (t): closed by the client; uid 0 pid 1 /usr/bin/FORGED (own uid); upstream evil:443"
mkdir -p "$d"
cp "$CLIENT" "$d/client"
log_mark
"$d/client" "$(listen_addr t tcp)" roundtrip --bytes 100 >/dev/null ||
    fail "the client with a newline in its path"
wait_log "conn [0-9]+ \(t\): closed" 10 || fail "no closing line"
stop_agent || fail "the agent did not stop"
! grep -q '^p11agent: conn 99 (t): closed by the client; uid 0 pid 1 /usr/bin/FORGED' "$T/agent.log" ||
    fail "a forged log line: $(grep -n FORGED "$T/agent.log")"
grep -q "x?p11agent: conn 99" "$T/agent.log" || fail "the path is not in the log as one line"
ok "a newline in a program's path stays in its line ($(grep -c FORGED "$T/agent.log") line)"

# ---- stderr closed
start_quiet closed
[ "$(readlink "/proc/$AGENT_PID/fd/0")" = /dev/null ] ||
    fail "fd 0 of an agent started with it open: $(readlink "/proc/$AGENT_PID/fd/0")"
"$CLIENT" "$ADDR" roundtrip --bytes 1000 >/dev/null || fail "a connection, stderr closed"
"$P11AGENT" status -c "$T/agent.conf" >/dev/null || fail "status, stderr closed"
stop_agent || fail "the agent with stderr closed did not stop cleanly"
ok "stderr closed: the agent serves, answers and stops"

# ---- stderr on /dev/null: syslog, and a reload keeps it
start_quiet null
kill -HUP "$AGENT_PID"
timeout $((10 * SLOW)) "$P11AGENT" reload -c "$T/agent.conf" >"$T/reload.out" 2>&1 ||
    fail "reload after SIGHUP, logging to syslog: $(cat "$T/reload.out")"
timeout $((10 * SLOW)) "$P11AGENT" status -c "$T/agent.conf" >/dev/null ||
    fail "status after a reload, logging to syslog"
"$CLIENT" "$ADDR" roundtrip --bytes 1000 >/dev/null || fail "a connection after the reloads"
term_within "$AGENT_PID" $((5000 * SLOW)) "the agent logging to syslog, after two reloads"
AGENT_PID=
ok "syslog (stderr on /dev/null): two reloads, then it answers, serves and stops in $STOP_MS ms"
