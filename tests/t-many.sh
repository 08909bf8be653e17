#!/bin/bash
# One client holding many connections.
#
# 1. The pid of a loopback TCP client: the agent names its
# pid on each connection's line without reading all of the client's
# descriptors every time.  (The /proc scan reads every descriptor of
# every process of the uid until it finds the socket: quadratic in one
# client's connections; bench/scale measured 20 ms of agent CPU per
# accept at 2,000.)  Counted with strace: K connections of one process
# cost the agent a few readlink calls each (about two for the socket,
# one for its program; at most 20 allowed), not K*K/2 in all; a
# connection from another process after them still names that one.
#
# 2. Memory after they close: the agent gives back what they used
# (malloc_trim once the tunnels have been quiet for 1 s; glibc kept all
# of it: 300 MB after 10,000 tunnels in bench/scale).  VmRSS after that
# must be back within half of what the open connections added.
. "$top_srcdir/tests/lib.sh"
command -v strace >/dev/null || skip "strace is missing"
make_token
one_tunnel_conf
start_agent "$T/agent.conf" || fail "the agent did not start"
addr=$(listen_addr t tcp) || fail "no TCP listener"
port=${addr##*:}
me=$BASHPID
K=200

# the first connection makes the whole scan, before the count begins
log_mark
exec {first}<>"/dev/tcp/127.0.0.1/$port" || fail "connect"
wait_log "conn [0-9]+ \(t\): from 127[.]0[.]0[.]1 port [0-9]+ on $addr, " ||
    fail "no line for the first connection"
# the scan's budget (16384 descriptors) may run out in other processes
log_since_has "conn [0-9]+ \(t\): from .*, uid [0-9]+ pid $me " ||
    skip "the /proc scan did not reach this shell: other processes of uid $(id -u) hold too many descriptors"

rss() { awk '/^VmRSS/ {print $2}' "/proc/$AGENT_PID/status"; }
rss0=$(rss)

mkfifo "$T/strace.fifo"
strace -e trace=readlinkat,readlink -o "$T/strace.out" -p "$AGENT_PID" \
    2>"$T/strace.fifo" &
st=$!
PIDS+=($st)
exec {sf}<"$T/strace.fifo"
read -r -t $((20 * SLOW)) -u "$sf" line || fail "strace did not attach"
case $line in *attached*) ;; *) fail "strace: $line" ;; esac

log_mark
fds=()
for ((i = 0; i < K; i++)); do
	exec {fd}<>"/dev/tcp/127.0.0.1/$port" || fail "connect $i"
	fds+=("$fd")
done
wait_log_count "conn [0-9]+ \(t\): from 127[.]0[.]0[.]1 port [0-9]+ on $addr, uid [0-9]+ pid $me " "$K" 60 ||
    fail "not all $K connections name pid $me"
# every tunnel up end to end (its handshake done)
wait_log_count "conn [0-9]+ \(t\): TLSv1[.]3 to " "$K" 60 ||
    fail "not all $K handshakes were done"
kill -INT "$st"
wait "$st" 2>/dev/null
exec {sf}<&-
n=$(grep -c '^readlink' "$T/strace.out" || :)
[ "$n" -le $((20 * K + 64)) ] ||
    fail "$n readlink calls for $K connections of one process (about $((K * K / 2)) is the whole scan's)"
ok "$K connections of pid $me: $n readlink calls in the agent"

# another process after them: not the last one's pid
log_mark
out=$("$CLIENT" "$addr" roundtrip --bytes 10) || fail "roundtrip: $out"
client_re=$(realpath "$CLIENT" | sed 's/[.]/[.]/g')
log_since_has "conn [0-9]+ \(t\): from 127[.]0[.]0[.]1 port [0-9]+ on $addr, uid [0-9]+ pid [0-9]+ $client_re$" ||
    fail "a connection from another process does not name it: $(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -m1 from)"
log_since_has "pid $me " && fail "a connection from another process names pid $me"
ok "a connection from another process names that process"

# a child that inherited the socket (forked after the connect, before the
# agent looked) is not named: the program that connected is.  A new
# process connects (not one of the recent ones: /proc is scanned, newest
# first) and forks; the agent is stopped meanwhile, so that it looks only
# after the fork.
log_mark
mkfifo "$T/kid.fifo" "$T/kid.hold"
kill -STOP "$AGENT_PID"
(
	exec 9<>"/dev/tcp/127.0.0.1/$port" || exit 1
	# the child holds the socket until it is told, through a fifo
	(read -r -t $((60 * SLOW)) _ <"$T/kid.hold") &
	echo "$! $BASHPID" >"$T/kid.fifo"
	wait
) &
sub=$!
PIDS+=($sub)
read -r -t $((20 * SLOW)) kid conn <"$T/kid.fifo" || fail "the connecting subshell"
kill -CONT "$AGENT_PID"
wait_log "conn [0-9]+ \(t\): from 127[.]0[.]0[.]1 port [0-9]+ on $addr, uid [0-9]+ pid " ||
    fail "no line for the inherited connection"
log_since_has "uid [0-9]+ pid $kid " &&
    fail "the connection was named after the child $kid that inherited it"
log_since_has "uid [0-9]+ pid $conn " ||
    fail "the connection does not name its subshell (pid $conn): $(tail -n 3 "$T/agent.log")"
echo done >"$T/kid.hold"	# the child ends, then its parent
wait "$sub" 2>/dev/null
ok "a socket a child inherited names the process that connected"

rss1=$(rss)
log_mark
for fd in "${fds[@]}"; do exec {fd}>&-; done
exec {first}>&-
wait_log_count "conn [0-9]+ \(t\): closed" $((K + 1)) 60 ||
    fail "the agent did not close all $((K + 1)) connections"
# a round trip: the loop has finished the turn that freed the last one
out=$("$CLIENT" "$addr" roundtrip --bytes 10) || fail "roundtrip: $out"
wait_log "quiet for [0-9]+ ms: free heap pages returned" 10 ||
    fail "no trim logged after the connections closed"
rss2=$(rss)
# ASan's allocator keeps freed memory in its quarantine
if ldd "$P11AGENT" 2>/dev/null | grep -q libasan; then
	ok "VmRSS not checked under ASan ($rss0 kB, $rss1 kB with $((K + 1)) open, $rss2 kB after)"
	stop_agent || fail "the agent did not exit cleanly"
	exit 0
fi
[ $((rss2 - rss0)) -le $(( (rss1 - rss0) / 2 )) ] ||
    fail "memory not given back: VmRSS $rss0 kB, $rss1 kB with $((K + 1)) open, $rss2 kB after they closed"
ok "VmRSS $rss0 kB, $rss1 kB with $((K + 1)) open, $rss2 kB after they closed"
stop_agent || fail "the agent did not exit cleanly"
