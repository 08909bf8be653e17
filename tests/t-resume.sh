#!/bin/bash
# TLS session resumption (issue 7, item 1): 200 sequential short
# connections through one tunnel cost at most 3 signatures and at least
# 195 reach the upstream resumed; with session-cache = no each one is a
# full handshake; TLS 1.2 resumes too; p11agent lock drops the sessions,
# so the next connection is a full handshake again.
. "$top_srcdir/tests/lib.sh"
make_token

signs() {
	grep -c ' C_Sign ' "$T/calls.log" || :
}
resumed() {
	grep -c 'handshake ok .* resumed ' "$T/s.log" || :
}
full() {
	grep -c 'handshake ok .* full ' "$T/s.log" || :
}
# conf [EXTRA...]: tunnel t (identity ec) with extra lines in the tunnel
conf() {
	{
		agent_section
		identity ec 02
		tunnel t "localhost:$s_port" ec
		for l in "$@"; do
			printf '%s\n' "$l"
		done
	} >"$T/agent.conf"
}
# run N: N sequential connections, each with a round trip
run() {
	local i
	for ((i = 0; i < $1; i++)); do
		"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 64 >/dev/null ||
		    fail "connection $i of $1"
	done
}
start_upstream s --resume

# ---- 200 sequential connections: resumed after the first
conf
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start"
base_r=$(resumed) base_f=$(full)
run 200
n_sign=$(signs)
n_res=$(($(resumed) - base_r))
n_full=$(($(full) - base_f))
[ "$n_sign" -le 3 ] || fail "200 connections made $n_sign C_Sign (at most 3)"
[ "$n_res" -ge 195 ] || fail "only $n_res of 200 resumed at the upstream ($n_full full)"
agent_log_has "resumed \(no signature\)" || fail "the agent does not log resumption"
ok "200 connections: $n_sign C_Sign, $n_res resumed and $n_full full at the upstream"

# ---- p11agent lock drops the sessions: the next one is full
log_mark
out=$("$P11AGENT" lock 2>&1) || fail "p11agent lock: $out"
wait_log "tunnel t: [0-9]+ TLS sessions? dropped: the agent is locked" 5 ||
    fail "the lock did not drop the sessions: $(tail -n 3 "$T/agent.log")"
before=$(signs)
run 1
[ "$(signs)" = $((before + 1)) ] ||
    fail "after the lock: $(($(signs) - before)) C_Sign, wanted 1 (a full handshake)"
before=$(signs)
run 5
[ "$(signs)" = "$before" ] || fail "after the lock, resumption did not come back"
stop_agent || fail "the agent did not exit cleanly"
agent_log_has "tunnel t: 206 connections, 206 handshakes \([0-9]+ resumed\)" ||
    fail "the tunnel's stats: $(grep 'tunnel t: .* connections' "$T/agent.log")"
ok "lock drops the sessions: 1 full handshake after it, then resumed again"

# ---- the card pulled: the sessions go, no connection resumes without
# it, and the first one after it is back is a full handshake
export P11FAULT_TOKEN_ABSENT_FILE=$T/absent
start_agent "$T/agent.conf" || fail "the agent did not start (removal)"
run 3
log_mark
: >"$T/absent"
wait_log "tunnel t: [0-9]+ TLS sessions? dropped: its identity's card was pulled" 10 ||
    fail "the removal did not drop the sessions: $(tail -n 3 "$T/agent.log")"
"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 64 >/dev/null 2>&1 &&
    fail "a connection went through with the card out"
log_mark
rm -f "$T/absent"
wait_log "identity ec: token .* is back" 20 || fail "the card did not come back"
before=$(signs)
run 1
[ "$(signs)" = $((before + 1)) ] || fail "after the card came back: not a full handshake"
stop_agent || fail "the agent did not exit cleanly (removal)"
unset P11FAULT_TOKEN_ABSENT_FILE
ok "card pulled: the sessions are dropped, no connection without the card, a full handshake after"

# ---- the token helper dies (its login with it): the sessions go too
start_agent "$T/agent.conf" || fail "the agent did not start (helper)"
run 3
helper=$(pgrep -P "$AGENT_PID") || fail "no helper"
log_mark
kill -9 "$helper"
wait_log "tunnel t: [0-9]+ TLS sessions? dropped: its token helper is gone" 10 ||
    fail "the helper's death did not drop the sessions: $(tail -n 3 "$T/agent.log")"
wait_log "token helper for .* is back" 20 || fail "the helper did not come back"
before=$(signs)
run 1
[ "$(signs)" = $((before + 1)) ] || fail "after the helper's restart: not a full handshake"
stop_agent || fail "the agent did not exit cleanly (helper)"
ok "the token helper killed: its sessions are dropped, the next connection logs in and signs"

# ---- lock-after counts resumed handshakes as use: a tunnel in steady use
# (resumed connections every 0.5 s, no signature) is not locked; idle, it is
{
	agent_section | sed 's/^module-allow = .*/&\nlock-after = 2/'
	identity ec 02
	tunnel t "localhost:$s_port" ec
} >"$T/after.conf"
start_agent "$T/after.conf" || fail "the agent did not start (lock-after)"
run 1
# resumed connections, one after another, for 4 s (twice lock-after)
end=$(($(date +%s%N) + 4000000000))
while [ "$(date +%s%N)" -lt "$end" ]; do
	run 1
done
agent_log_has "locked: no signature" &&
    fail "locked while resumed connections kept coming: $(grep 'locked:' "$T/agent.log")"
log_mark
wait_log "locked: no signature for 2 s" 6 || fail "lock-after = 2 did not lock when idle"
stop_agent || fail "the agent did not exit cleanly (lock-after)"
ok "lock-after = 2: not locked during 4 s of resumed connections, locked once idle"

# ---- session-cache = no: every connection signs
conf "session-cache = no"
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start (no cache)"
run 200
stop_agent || fail "the agent did not exit cleanly (no cache)"
[ "$(signs)" = 200 ] || fail "session-cache = no: $(signs) C_Sign for 200 connections"
ok "session-cache = no: 200 connections, 200 C_Sign"

# ---- TLS 1.2 resumes too (a ticket or a session ID)
conf "tls-max = 1.2"
: >"$T/calls.log"
base_r=$(resumed)
start_agent "$T/agent.conf" || fail "the agent did not start (TLS 1.2)"
run 20
stop_agent || fail "the agent did not exit cleanly (TLS 1.2)"
[ "$(signs)" -le 2 ] || fail "TLS 1.2: $(signs) C_Sign for 20 connections"
[ $(($(resumed) - base_r)) -ge 19 ] || fail "TLS 1.2: $(($(resumed) - base_r)) of 20 resumed"
ok "TLS 1.2: 20 connections, $(signs) C_Sign, $(($(resumed) - base_r)) resumed"

# ---- a bad value names the line
conf "session-cache-size = 0"
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) && fail "session-cache-size = 0 accepted"
grep -q "session-cache-size: '0' is not a number between 1 and 4096" <<<"$out" ||
    fail "no clear error: $out"
ok "session-cache-size = 0: $(head -n 1 <<<"$out")"
