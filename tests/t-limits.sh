#!/bin/bash
# Connection limits: at a tunnel's max-connections (or the [agent]
# section's total) the agent stops accepting, and says so; a client over
# the limit waits in the listen backlog (its TCP connect succeeds) and is
# served once a connection closes.  Fairness: while one connection pushes
# bulk data as fast as it can, another one's round trips stay fast
# (the slowest of 200 under 250 ms; P11AGENT_PING_MAX_MS changes that:
# measured here 10-50 ms, and 5 s stalls without the pump budget).
. "$top_srcdir/tests/lib.sh"
make_token

start_upstream s

# open_conn VAR PORT: a connection through the agent, its first line read
open_conn() {
	local fd line
	exec {fd}<>"/dev/tcp/127.0.0.1/$2" || fail "connect to $2"
	read -r -t 20 -u "$fd" line || fail "no first line on port $2"
	case $line in subject=*) ;; *) fail "first line: $line" ;; esac
	printf -v "$1" '%s' "$fd"
}

# echo_on FD: a round trip through the agent's loop
echo_on() {
	local line
	echo "ping $1" >&"$1"
	read -r -t 20 -u "$1" line || fail "no echo on fd $1"
	[ "$line" = "ping $1" ] || fail "echo on fd $1: $line"
}

# waits_unserved FD TUNNEL N BARRIER-FD: connection FD was not accepted:
# after a round trip on BARRIER-FD (the agent's loop came by, and FD's
# connect came earlier), TUNNEL has still accepted only N and FD has no
# data
waits_unserved() {
	local n
	echo_on "$4"
	n=$(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" |
	    grep -c "conn [0-9]* ($2): from" || :)
	[ "$n" = "$3" ] || fail "tunnel $2 accepted $n connections, wanted $3"
	if read -r -t 0 -u "$1"; then
		fail "the connection over the limit got data"
	fi
}

port_of() {
	local a
	a=$(listen_addr "$1" tcp) || fail "no listener for $1"
	echo "${a##*:}"
}

# 1. max-connections = 2 on a tunnel
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec "max-connections = 2"
	tunnel u "localhost:$s_port" ec
} >"$T/tunnel.conf"
start_agent "$T/tunnel.conf" || fail "the agent did not start"
tp=$(port_of t)
up=$(port_of u)
log_mark
open_conn a "$tp"
open_conn b "$tp"
wait_log "tunnel t: 2 connections open, its max-connections: not accepting more until one closes" ||
    fail "no log line for the tunnel's limit"
exec {c}<>"/dev/tcp/127.0.0.1/$tp" || fail "the third connect was refused"
waits_unserved "$c" t 2 "$a"
open_conn d "$up"	# other tunnels are not limited
ok "tunnel limit: the third client waits in the backlog, tunnel u still serves"
exec {a}<&-
read -r -t 20 -u "$c" line || fail "the third client was not served after one closed"
case $line in subject=*) ;; *) fail "third client: $line" ;; esac
echo_on "$c"
ok "once one of the two closed, the third was served"
exec {b}<&- {c}<&- {d}<&-
stop_agent || fail "the agent did not exit cleanly"

# 2. the [agent] section's max-connections counts all tunnels
{
	printf '[agent]\nmax-connections = 2\nmodule-allow = %s/*\n\n' \
	    "$LIBS_REAL"
	identity ec 02
	tunnel t "localhost:$s_port" ec
	tunnel u "localhost:$s_port" ec
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"
tp=$(port_of t)
up=$(port_of u)
log_mark
open_conn a "$tp"
open_conn b "$up"
wait_log "2 connections open, the agent's max-connections: not accepting more until one closes" ||
    fail "no log line for the agent's limit"
exec {c}<>"/dev/tcp/127.0.0.1/$tp" || fail "the third connect was refused"
waits_unserved "$c" t 1 "$a"
ok "agent limit: a client on another tunnel waits"
exec {b}<&-
read -r -t 20 -u "$c" line || fail "the waiting client was not served after one closed"
echo_on "$c"
ok "once the connection on tunnel u closed, the client on t was served"
exec {a}<&- {c}<&-
stop_agent || fail "the agent did not exit cleanly"

# 3. fairness: bulk data on one connection, pings on another
start_agent "$T/tunnel.conf" || fail "the agent did not start"
addr=$(listen_addr u tcp)
out=$("$CLIENT" "$addr" pings --count 100 --max-ms 1000) || fail "pings alone: $out"
alone=$out
mkfifo "$T/flood.fifo"
"$CLIENT" "$addr" flood --timeout 120 >"$T/flood.fifo" 2>"$T/flood.err" &
flood=$!
PIDS+=("$flood")
exec {ff}<"$T/flood.fifo"
read -r -t 20 -u "$ff" line || fail "the flood did not start: $(cat "$T/flood.err")"
[ "$line" = flowing ] || fail "flood: $line"
out=$("$CLIENT" "$addr" pings --count 200 --max-ms "${P11AGENT_PING_MAX_MS:-250}") ||
    fail "pings while another connection floods: $out"
kill -0 "$flood" 2>/dev/null || fail "the flood ended before the pings: $(cat "$T/flood.err")"
kill "$flood"
read -r -t 20 -u "$ff" totals || fail "the flood did not stop: $(cat "$T/flood.err")"
wait "$flood" || fail "flood: $(cat "$T/flood.err")"
exec {ff}<&-
ok "pings alone: $alone; during a $totals: $out"
stop_agent || fail "the agent did not exit cleanly"

# the descriptor limit: the soft one is raised to the hard one at start;
# a hard one below what max-connections needs is said
command -v prlimit >/dev/null || skip "prlimit is missing"
{
	agent_section	# max-connections: the default, 1024
	identity ec 02
	tunnel t "localhost:$s_port" ec
} >"$T/nofile.conf"
log_mark
AGENT_WRAP=(prlimit --nofile=256:8192)
start_agent "$T/nofile.conf" || fail "the agent did not start (nofile)"
AGENT_WRAP=()
log_since_has "descriptor limit raised from 256 to 8192" ||
    fail "the soft limit was not raised: $(tail -n 3 "$T/agent.log")"
grep -Eq '^Max open files +8192 +8192' "/proc/$AGENT_PID/limits" ||
    fail "limits: $(grep 'open files' "/proc/$AGENT_PID/limits")"
stop_agent || fail "the agent did not exit cleanly (nofile)"
log_mark
AGENT_WRAP=(prlimit --nofile=256:512)
start_agent "$T/nofile.conf" || fail "the agent did not start (low nofile)"
AGENT_WRAP=()
log_since_has "the descriptor limit is 512: fewer than the 2112 that max-connections = 1024 needs; raise it" ||
    fail "a low hard limit is not said: $(tail -n 3 "$T/agent.log")"
stop_agent || fail "the agent did not exit cleanly (low nofile)"
ok "RLIMIT_NOFILE: soft 256 raised to hard 8192; a hard 512 is said to be too low"
