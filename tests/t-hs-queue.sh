#!/bin/bash
# Bursts of full handshakes (issue 7, item 4): an identity has at most
# max-handshakes full handshakes on its token at once; the connections
# beyond wait in the agent's queue, bounded by their handshake-timeout,
# not by the signature's sign-timeout, and fail with the token only when
# the token failed the handshake before them.  The listener keeps
# accepting meanwhile: a connection that can resume is served at once.
. "$top_srcdir/tests/lib.sh"
make_token
export P11FAULT_SIGN_DELAY_MS=300

signs() {
	grep -c ' C_Sign ' "$T/calls.log" || :
}
# burst N ADDR: N clients started together (no fifo gate: a client that
# opened it after the writer closed it would wait forever); their
# outputs in $T/b.I.  They start within a few ms of each other, far less
# than one 300 ms signature.
burst() {
	local n=$1 addr=$2 i
	BPIDS=()
	for i in $(seq 1 "$n"); do
		"$CLIENT" "$addr" roundtrip --bytes 10 >"$T/b.$i" 2>&1 &
		BPIDS+=($!)
	done
}
# burst_wait: sets good to how many of the burst's clients succeeded
# (not in a $(...): a subshell cannot wait for them)
burst_wait() {
	local p
	good=0
	for p in "${BPIDS[@]}"; do
		wait "$p" && good=$((good + 1))
	done
}

start_upstream plain	# no tickets, no session IDs: every one is full
start_upstream s --resume
s_pid=${PIDS[-1]}
{
	agent_section
	identity ec 02
	# 10 signatures of 300 ms are 3 s of card time: more than sign-timeout
	echo "sign-timeout = 2"
	echo "max-handshakes = 2"
	echo
	# no session cache: no handshake waits for another's session, each
	# takes a slot or the queue
	tunnel n "localhost:$plain_port" ec "session-cache = no"
	tunnel r "localhost:$s_port" ec
} >"$T/agent.conf"
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start"

# tunnel r gets a session to resume before the burst
"$CLIENT" "$(listen_addr r tcp)" roundtrip --bytes 10 >/dev/null ||
    fail "tunnel r before the burst"

# ---- 10 full handshakes at once: 2 on the token, 8 queued, all served
before=$(signs)
log_mark
t0=$(date +%s%N)
burst 10 "$(listen_addr n tcp)"
# meanwhile a connection that resumes is accepted and served at once
wait_log "queued for the token" 10 || fail "no connection was queued"
"$CLIENT" "$(listen_addr r tcp)" roundtrip --bytes 10 >"$T/r.out" ||
    fail "a resuming connection during the queue: $(cat "$T/r.out")"
r_ms=$(sed -n 's/^ok .* ms=//p' "$T/r.out")
burst_wait
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$good" = 10 ] || fail "$good of 10 queued full handshakes were served: $(grep -h 'timed out\|failed' "$T/agent.log" | head -3)"
n=$(($(signs) - before))
[ "$n" = 10 ] || fail "10 full handshakes made $n C_Sign"
q=$(grep -c 'queued for the token' "$T/agent.log")
[ "$q" -ge 7 ] || fail "only $q of 10 were queued behind 2 slots"
[ "$r_ms" -le 500 ] ||
    fail "a resuming connection took $r_ms ms behind the token's queue"
agent_log_has "timed out" && fail "a connection timed out"
ok "10 full handshakes on a 300 ms card, sign-timeout 2 s: all served in $ms ms ($q queued, $n C_Sign); a resuming connection meanwhile in $r_ms ms"
stop_agent || fail "the agent did not exit cleanly"

# ---- the queue is bounded by handshake-timeout
sed -i 's/^max-handshakes = 2/max-handshakes = 1/' "$T/agent.conf"
sed -i '/^\[tunnel n\]/a handshake-timeout = 1' "$T/agent.conf"
: >"$T/agent.log"
start_agent "$T/agent.conf" || fail "the agent did not start"
burst 6 "$(listen_addr n tcp)"
burst_wait
[ "$good" -ge 1 ] && [ "$good" -le 4 ] ||
    fail "$good of 6 served in a 1 s handshake-timeout on a 300 ms card"
agent_log_has "TLS handshake \\(queued for the token\\) timed out" ||
    fail "a queued connection past its handshake-timeout is not said"
ok "handshake-timeout bounds the queue: $good of 6 served in 1 s, the others timed out in the queue"
stop_agent || fail "the agent did not exit cleanly"

# ---- the token fails a handshake: those queued behind it fail with it,
# without a signature each (a cancelled PIN dialog is not asked again)
sed -i '/^handshake-timeout = 1/d' "$T/agent.conf"
: >"$T/agent.log"
: >"$T/calls.log"
export P11FAULT_FAIL=C_Sign=0x6:1	# CKR_FUNCTION_FAILED, once
start_agent "$T/agent.conf" || fail "the agent did not start"
before=$(signs)
burst 4 "$(listen_addr n tcp)"
burst_wait
[ "$good" = 0 ] || fail "$good of 4 succeeded after the token failed the first"
n=$(($(signs) - before))
[ "$n" = 1 ] || fail "4 connections behind a failed signature made $n C_Sign"
[ "$(grep -c "before it in the token's queue failed on the token" "$T/agent.log")" = 3 ] ||
    fail "the 3 queued connections do not say the token failed before them"
"$CLIENT" "$(listen_addr n tcp)" roundtrip --bytes 10 >/dev/null ||
    fail "the next connection after the failure"
ok "a token failure fails the 3 queued behind it with 1 C_Sign; the next connection is served"
stop_agent || fail "the agent did not exit cleanly"

# ---- a session the server refuses: the handshake turns full only then,
# and takes a slot (or the queue) when the server asks for the
# certificate, not before.  The upstream restarts on its port with new
# ticket keys, so the cached session is refused by all 10.
unset P11FAULT_FAIL
: >"$T/agent.log"
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start"
"$CLIENT" "$(listen_addr r tcp)" roundtrip --bytes 10 >/dev/null ||
    fail "tunnel r before the restart"
kill "$s_pid"
wait "$s_pid" 2>/dev/null
start_upstream s2 --resume --port "$s_port"
[ "$s2_port" = "$s_port" ] || fail "the upstream came back on $s2_port, not $s_port"
before=$(signs)
log_mark
burst 10 "$(listen_addr r tcp)"
burst_wait
[ "$good" = 10 ] || fail "$good of 10 with a refused session were served: $(grep -h 'timed out\|failed' "$T/agent.log" | head -3)"
n=$(($(signs) - before))
q=$(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -c 'queued for the token' || :)
[ "$q" -ge 1 ] || fail "no handshake with a refused session was queued ($n C_Sign)"
ok "10 connections whose session the restarted upstream refused: all served, $n C_Sign, $q queued"
stop_agent || fail "the agent did not exit cleanly"
