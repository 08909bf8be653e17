#!/bin/bash
# bench/idle-rss.sh [N]: the agent's memory per idle tunnel.  Opens N
# (default 300) connections through one tunnel to a resuming upstream,
# moves one byte each way on each, and reports the agent's VmRSS before
# and after, per tunnel.  Run from a built tree; not part of make check.
# (The start of the benchmark harness of issue 7; bench/run with the
# peers is still to come.)
top_srcdir=$(cd "$(dirname "$0")/.." && pwd)
top_builddir=$top_srcdir
export top_srcdir top_builddir P11AGENT_HELPER=$top_builddir/p11agent-helper
. "$top_srcdir/tests/lib.sh"

make_token
start_upstream s --resume
{ agent_section; identity ec 02; tunnel t "localhost:$s_port" ec; } >"$T/a.conf"
start_agent "$T/a.conf" || fail "start"
"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 10 >/dev/null
port=${LISTEN[t]##*:}
rss() { awk '/VmRSS/ {print $2}' /proc/$AGENT_PID/status; }
r0=$(rss)
N=${1:-300}
fds=()
for ((i = 0; i < N; i++)); do
	exec {fd}<>/dev/tcp/127.0.0.1/$port
	printf 'x' >&$fd
	fds+=($fd)
done
for fd in "${fds[@]}"; do read -r -n 1 -t 10 -u $fd _ || echo "no echo"; done
r1=$(rss)
echo "idle tunnels: $N; agent RSS $r0 -> $r1 kB; $(( (r1 - r0) * 1000 / N )) bytes per idle tunnel"
echo "resumed handshakes: $(grep -c 'resumed (no signature)' "$T/agent.log")"
for fd in "${fds[@]}"; do exec {fd}>&-; done
stop_agent
