#!/bin/bash
# Timeouts close the local client's connection and say why: an upstream
# that accepts TCP but never answers the handshake (handshake-timeout),
# and a tunnel that stays idle (idle-timeout).
. "$top_srcdir/tests/lib.sh"
make_token

start_server silent --silent
start_upstream s
{
	agent_section
	identity ec 02
	tunnel mute "localhost:$silent_port" ec "handshake-timeout = 1"
	tunnel idle "localhost:$s_port" ec "idle-timeout = 1"
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"

out=$("$CLIENT" "$(listen_addr mute tcp)" expect-close --timeout 10) ||
    fail "handshake timeout: $out"
agent_log_has "upstream localhost:$silent_port: TLS handshake timed out" ||
    fail "no log line for the handshake timeout"
ok "silent upstream: $out"

# an idle tunnel: the server's first line arrives, then nothing moves
addr=$(listen_addr idle tcp)
start=$(date +%s%N)	# before the connect: no activity can come earlier
exec {s}<>"/dev/tcp/127.0.0.1/${addr##*:}"
read -r -t 10 -u "$s" line || fail "no first line through the idle tunnel"
case $line in subject=*CN=p11agent-test-ec*) ;; *) fail "first line: $line" ;; esac
rc=0
read -r -t 10 -u "$s" more || rc=$?
[ "$rc" = 0 ] && fail "unexpected data: $more"
[ "$rc" -gt 128 ] && fail "the idle tunnel was not closed within 10 s"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
exec {s}<&-
[ "$ms" -ge 1000 ] && [ "$ms" -lt 5000 ] || fail "closed after $ms ms"
agent_log_has "closed: idle timeout" || fail "no log line for the idle timeout"
ok "idle tunnel closed after $ms ms"
stop_agent || fail "the agent did not exit cleanly"

# out of file descriptors: the agent pauses the listener instead of
# spinning on it, and serves again once descriptors are free
command -v prlimit >/dev/null || skip "prlimit is missing"
sed -i 's/^handshake-timeout = 1$/handshake-timeout = 2/' "$T/agent.conf"
# a sanitizer could not open its report file now: report to the log
export ASAN_OPTIONS=log_path=stderr:detect_leaks=1
export UBSAN_OPTIONS=log_path=stderr:print_stacktrace=1
start_agent "$T/agent.conf" || fail "the agent did not start"
# room for a dozen descriptors more than the agent has now
base=$(ls "/proc/$AGENT_PID/fd" | wc -l)
prlimit --pid "$AGENT_PID" --nofile=$((base + 12)):$((base + 12)) ||
    skip "prlimit failed"
port=$(listen_addr mute tcp)
port=${port##*:}
log_mark
fds=()
for i in $(seq 1 30); do
	exec {fd}<>"/dev/tcp/127.0.0.1/$port"
	fds+=("$fd")
done
wait_log "accept on tcp:127.0.0.1:$port \(pausing it for a second\): Too many open files" ||
    fail "the listener was not paused"
# when the handshakes time out, descriptors come back and it serves again
wait_log "closed: timeout" || fail "no handshake timed out"
for fd in "${fds[@]}"; do
	exec {fd}<&-
done
n=$(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -c "accept on" || :)
[ "$n" -le 10 ] || fail "$n 'accept on' warnings: the loop spun"
# once all 30 are done (each is accepted, then fails or times out),
# descriptors are back: a new connection is served (its handshake, to the
# silent upstream, times out as it should)
wait_log_count "conn [0-9]+ \\(mute\\): closed" 30 ||
    fail "not all 30 connections were closed"
log_mark
out=$("$CLIENT" "tcp:127.0.0.1:$port" expect-close --timeout 20) ||
    fail "after the pause: $out"
log_since_has "upstream localhost:$silent_port: TLS handshake timed out" ||
    fail "the listener did not serve again"
ok "out of descriptors: $n pause(s), no spinning, served again"
