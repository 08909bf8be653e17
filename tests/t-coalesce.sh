#!/bin/bash
# Handshake coalescing (issue 7, item 2): on a card that takes 300 ms per
# signature, 50 connections opened at once with no session to resume get
# their first byte within 1.5 s with at most 3 C_Sign: one full handshake
# leads, the others wait for its session and resume.  An open tunnel's
# round trips are measured meanwhile (the issue's "under 20 ms"): 99% of
# them under 20 ms and none over 50 ms, since one scheduler hiccup on a
# shared CI machine is not a stall of the agent.  The agent, the
# upstream (whose forked children inherit it) and the pinger run at nice
# -10 where the test may, above whatever other test make check runs
# beside this one (without that priority the worst may be 100 ms; see
# "Handshakes do not hold up open tunnels" in docs/design-notes.md).  49
# of the 50 come from one client process (tunnel-client burst).  An
# upstream that gives no session: the waiting connections make their own
# full handshakes.
. "$top_srcdir/tests/lib.sh"
make_token
export P11FAULT_SIGN_DELAY_MS=300
# the bounds: a sanitizer build starts its 50 clients far slower
burst_ms=1500 p99_ms=20 ping_ms=50 prio=(nice -n -10)
"${prio[@]}" true 2>/dev/null || { ping_ms=100 prio=(); }
if ldd "$P11AGENT" 2>/dev/null | grep -q libasan; then
	burst_ms=6000 p99_ms=400 ping_ms=400
fi

signs() {
	grep -c ' C_Sign ' "$T/calls.log" || :
}
start_upstream s --resume
s_pid=${PIDS[-1]}
start_upstream plain	# no tickets, no session IDs
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec
	tunnel o "localhost:$s_port" ec
	tunnel n "localhost:$plain_port" ec
} >"$T/agent.conf"
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start"

# ---- 50 at once on tunnel t, while tunnel o is open and pinged
# (o resumes: its first connection here leaves a session; the 50th
# connection on t is the pinger's second one, which must wait for the
# leader's signature: --min-second-ms)
"$CLIENT" "$(listen_addr o tcp)" roundtrip --bytes 10 >/dev/null ||
    fail "tunnel o before the burst"
# (the upstream's children, forked per connection, inherit its priority)
[ ${#prio[@]} = 0 ] || renice -n -10 -p "$AGENT_PID" "$s_pid" >/dev/null ||
    fail "renice of the agent and the upstream"
before=$(signs)
t0=$(date +%s%N)
"$CLIENT" "$(listen_addr t tcp)" burst --count 49 --bytes 10 >"$T/burst.out" 2>&1 &
burst=$!
"${prio[@]}" "$CLIENT" "$(listen_addr o tcp)" latency --second-addr "$(listen_addr t tcp)" \
    --max-ms "$ping_ms" --p99-ms "$p99_ms" --min-second-ms 250 \
    >"$T/lat.out" 2>&1 &
lat=$!
wait "$burst" || fail "the burst of 49: $(cat "$T/burst.out")"
wait "$lat" || fail "the open tunnel's round trips: $(cat "$T/lat.out")"
ms=$((($(date +%s%N) - t0) / 1000000))
n=$(($(signs) - before))
[ "$n" -le 3 ] || fail "50 connections on t made $n C_Sign"
[ "$ms" -le "$burst_ms" ] || fail "the 50 took $ms ms (at most $burst_ms)"
agent_log_has "waits for the session of a handshake in flight" ||
    fail "no connection waited for another's session"
ok "50 at once on a 300 ms card: all served in $ms ms with $n C_Sign; $(cat "$T/burst.out"); $(cat "$T/lat.out")"

# ---- an upstream that gives no session: full handshakes, all served
before=$(signs)
pids=()
for i in $(seq 1 5); do
	"$CLIENT" "$(listen_addr n tcp)" roundtrip --bytes 10 >"$T/n.$i" 2>&1 &
	pids+=($!)
done
for i in $(seq 1 5); do
	wait "${pids[$((i - 1))]}" || fail "no-session connection $i: $(cat "$T/n.$i")"
done
[ $(($(signs) - before)) = 5 ] ||
    fail "5 connections to an upstream without sessions: $(($(signs) - before)) C_Sign"
agent_log_has "tunnel n: the upstream gave no session to resume" ||
    fail "the fallback to full handshakes is not logged"
stop_agent || fail "the agent did not exit cleanly"
ok "an upstream without sessions: 5 connections, 5 full handshakes, all served"
