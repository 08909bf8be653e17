#!/bin/bash
# A card pulled and put back, with the agent running (issue 6, item 4).
# The fault module makes the token absent while $T/absent exists; the
# helper notices it by polling the slot (and, with P11FAULT_SLOT_EVENTS=1,
# through emulated C_WaitForSlotEvent events) and tells the agent:
# - a new connection fails within 1 s, its log line naming the card;
# - with on-removal = close, an open tunnel of that identity is closed
#   within 1 s; with the default (keep) it keeps flowing;
# - put back, the next connection succeeds: same agent, a new helper;
# - 50 remove/insert cycles leave the agent's descriptors, helpers and
#   RSS where they were after the first;
# - a signature that finds the card gone makes the helper look at once;
# - a card whose flags report a failed login gets no stored PIN again;
# - another card (same label and key id, another key and certificate):
#   refused with on-reinsert = same-card (the default), taken and logged
#   as another card with on-reinsert = any.
. "$top_srcdir/tests/lib.sh"
make_token
export P11FAULT_TOKEN_ABSENT_FILE=$T/absent
start_upstream s

# conf FILE POLL-LINE [IDENTITY-LINE...]: identities ec (keep) and rsa
# (on-removal = close), tunnels t (ec) and tc (rsa)
conf() {
	local f=$1 poll=$2
	shift 2
	{
		agent_section
		# (still the [agent] section: blank lines do not end it)
		[ -z "$poll" ] || printf '%s\n\n' "$poll"
		identity ec 02 | sed '/^$/d'
		printf '%s\n' "$@"
		echo
		identity rsa 01 | sed '/^$/d'
		echo 'on-removal = close'
		echo
		tunnel t "localhost:$s_port" ec
		tunnel tc "localhost:$s_port" rsa
	} >"$f"
}

ms_now() {
	echo $(( $(date +%s%N) / 1000000 ))
}

roundtrip() {
	"$CLIENT" "$(listen_addr "$1" tcp)" roundtrip --bytes 1000 \
	    --expect-subject "CN=p11agent-test-$2"
}

# an open tunnel through tc: /dev/tcp, one echoed line proves it is up
open_tunnel() {
	local addr=${LISTEN[$1]#tcp:} line
	addr=${addr%% *}
	exec {TFD}<>"/dev/tcp/${addr%:*}/${addr##*:}" ||
	    fail "cannot connect to tunnel $1"
	# the echo server's first line names the client certificate
	read -r -t $((10 * SLOW)) -u "$TFD" line || fail "nothing through $1"
	echo hello >&"$TFD"
	read -r -t $((10 * SLOW)) -u "$TFD" line || fail "no echo through $1"
	[ "$line" = hello ] || fail "tunnel $1 echoed '$line'"
}

CARD="token 'p11agent-test' \\(serial [0-9a-f]+\\)"

# removal_case MODE: MODE events (emulated slot events) or poll
removal_case() {
	local mode=$1 t0 t1 out
	if [ "$mode" = events ]; then
		export P11FAULT_SLOT_EVENTS=1
	else
		unset P11FAULT_SLOT_EVENTS
	fi
	rm -f "$T/absent" "$T/calls.log"
	conf "$T/agent.conf" ""
	start_agent "$T/agent.conf" || fail "$mode: the agent did not start"
	pid=$AGENT_PID
	roundtrip t ec >/dev/null || fail "$mode: before the removal"
	open_tunnel tc
	log_mark
	t0=$(ms_now)
	: >"$T/absent"
	# the tunnel of on-removal = close ends (EOF) within 1 s
	if read -r -t $((5 * SLOW)) -u "$TFD" out; then
		fail "$mode: tunnel tc gave data after the removal: $out"
	fi
	t1=$(ms_now)
	exec {TFD}<&-
	[ $((t1 - t0)) -lt $((1000 * SLOW)) ] ||
	    fail "$mode: the open tunnel closed $((t1 - t0)) ms after the removal"
	wait_log "identity ec: $CARD was removed; insert it again" 5 ||
	    fail "$mode: no removal line naming the card"
	wait_log "conn [0-9]+ \(tc\): closed: $CARD was removed \(on-removal = close\)" 5 ||
	    fail "$mode: the closed tunnel's line"
	ok "$mode: removal logged, tunnel tc (on-removal = close) closed after $((t1 - t0)) ms"
	t0=$(ms_now)
	out=$("$CLIENT" "$(listen_addr t tcp)" expect-close --timeout 5) ||
	    fail "$mode: a new connection with the card gone: $out"
	t1=$(ms_now)
	[ $((t1 - t0)) -lt $((1000 * SLOW)) ] ||
	    fail "$mode: the new connection failed after $((t1 - t0)) ms"
	wait_log "conn [0-9]+ \(t\): $CARD was removed; insert it again" 5 ||
	    fail "$mode: the refused connection's line does not name the card"
	ok "$mode: a new connection failed in $((t1 - t0)) ms naming the card"
	log_mark
	rm -f "$T/absent"
	wait_log "identity ec: $CARD is back; new connections use it" 10 ||
	    fail "$mode: the card was not taken back"
	wait_log "token helper for .* is back" 10 || fail "$mode: no helper"
	roundtrip t ec >/dev/null || fail "$mode: after the reinsertion"
	roundtrip tc rsa >/dev/null || fail "$mode: tc after the reinsertion"
	[ "$AGENT_PID" = "$pid" ] && kill -0 "$pid" || fail "$mode: the agent"
	ok "$mode: put back, the next connections succeed (agent pid $pid)"
	if [ "$mode" = events ]; then
		grep -Eq "^[0-9]+ C_WaitForSlotEvent 0x0 flags=0x1$" \
		    "$T/calls.log" || fail "events: no slot event was taken"
	else
		grep -Eq "^[0-9]+ C_WaitForSlotEvent 0x0 " "$T/calls.log" &&
		    fail "poll: a slot event without the emulation?"
	fi
	stop_agent || fail "$mode: the agent did not exit cleanly"
}

removal_case poll
removal_case events

# ---- the fault module's slot events, as a module's user sees them:
# CKF_DONT_BLOCK with nothing new, then a blocking wait that a removal ends
# slot_wait MODE: runs tests/slot-wait on the fault module; reads its
# output from a fifo (ready, then the result), with a deadline
export P11FAULT_SLOT_EVENTS=1
rm -f "$T/absent" "$T/sw.fifo"
mkfifo "$T/sw.fifo"
slot_wait() {
	"$top_builddir/tests/slot-wait" "$FAULT" "$1" >"$T/sw.fifo" &
	SWPID=$!
	PIDS+=($SWPID)
	exec {SW}<"$T/sw.fifo"
	read -r -t $((10 * SLOW)) -u "$SW" line && [ "$line" = ready ] ||
	    fail "slot-wait $1 did not start"
}
slot_wait dont-block
read -r -t $((10 * SLOW)) -u "$SW" line || fail "slot-wait dont-block"
exec {SW}<&-
# its write end must be closed before the next one opens the fifo, or
# the next reader sees this one's end of file
wait "$SWPID" 2>/dev/null || :
[ "$line" = "rv 0x8" ] || fail "dont-block with nothing new: $line"
slot_wait block
: >"$T/absent"
read -r -t $((10 * SLOW)) -u "$SW" line || fail "the blocking wait did not end"
exec {SW}<&-
[[ $line == event\ [0-9]* ]] || fail "blocking wait: $line"
grep -Eq "^[0-9]+ C_WaitForSlotEvent 0x0 flags=0x0$" "$T/calls.log" ||
    fail "the blocking wait is not in the call log"
rm -f "$T/absent"
ok "slot events: CKF_DONT_BLOCK says CKR_NO_EVENT, a blocking wait ends at the removal ($line)"

# ---- 50 cycles: no descriptors, helpers or memory lost (under valgrind,
# where memcheck itself finds what leaks and a helper takes seconds to
# start, 5: the counts are still asserted)
CYCLES=50
[ -z "${P11AGENT_VALGRIND:-}" ] || CYCLES=5
# (P11AGENT_REMOVAL_CYCLES=N: more, to see whether RSS settles)
CYCLES=${P11AGENT_REMOVAL_CYCLES:-$CYCLES}
export P11FAULT_SLOT_EVENTS=1
rm -f "$T/absent"
conf "$T/cycles.conf" "token-poll = 50"
# in a sanitizer build ASan keeps freed memory in quarantine (up to
# 256 MB): without one, RSS measures what the agent holds
ASAN_OPTIONS=$ASAN_OPTIONS:quarantine_size_mb=0:thread_local_quarantine_size_kb=0 \
    start_agent "$T/cycles.conf" || fail "cycles: the agent did not start"
pid=$AGENT_PID
# cycle: remove, wait for the line, insert, wait, one connection
cycle() {
	log_mark
	: >"$T/absent"
	wait_log "identity ec: $CARD was removed" 10 ||
	    fail "cycle $1: no removal line"
	rm -f "$T/absent"
	wait_log "token helper for .* is back" 10 ||
	    fail "cycle $1: the card was not taken back"
	roundtrip t ec >/dev/null || fail "cycle $1: no connection"
}
# descriptors other than pidfds, pidfds, live helpers, zombies: a
# replaced helper is killed at once and reaped from the agent's 200 ms
# tick, so one of it (its pidfd, its zombie) may still be there
measure() {
	FDS=$(find "/proc/$pid/fd" -mindepth 1 -printf '%l\n' |
	    grep -vc 'anon_inode:\[pidfd\]')
	PIDFDS=$(find "/proc/$pid/fd" -mindepth 1 -printf '%l\n' |
	    grep -c 'anon_inode:\[pidfd\]')
	KIDS=$(ps --ppid "$pid" -o stat= | grep -vc '^Z')
	ZOMBIES=$(ps --ppid "$pid" -o stat= | grep -c '^Z')
	RSS=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")
}
check_kids() {
	[ "$KIDS" = 1 ] && [ "$ZOMBIES" -le 1 ] && [ "$PIDFDS" -le 2 ] ||
	    fail "$1: $KIDS helpers, $ZOMBIES zombies, $PIDFDS pidfds"
}
cycle 1
measure
check_kids "after cycle 1"
fds1=$FDS rss1=$RSS
t0=$(ms_now)
for i in $(seq 2 "$CYCLES"); do
	cycle "$i"
done
t1=$(ms_now)
measure
check_kids "after $CYCLES cycles"
# (a connection's sockets or a retired helper's channel may still be
# closing when a count is taken: 2 either way; a leak adds one a cycle)
[ "$FDS" -le $((fds1 + 2)) ] ||
    fail "descriptors: $fds1 after cycle 1, $FDS after $CYCLES"
# RSS: malloc arenas and OpenSSL's caches settle within a few cycles; a
# leak of one connection's or helper's state per cycle (TLS buffers of
# ~40 KB, a helper record) would grow it by MBs over 49 cycles
# (under valgrind RSS is memcheck's own, which grows with the code it has
# translated; memcheck's leak report stands in for it there)
[ -n "${P11AGENT_VALGRIND:-}" ] || [ "$RSS" -le $((rss1 + 1024)) ] ||
    fail "RSS: ${rss1} kB after cycle 1, ${RSS} kB after $CYCLES"
ok "$CYCLES cycles in $((t1 - t0)) ms: $FDS descriptors (+$PIDFDS pidfds), $KIDS helper, RSS ${rss1} -> ${RSS} kB"
stop_agent || fail "cycles: the agent did not exit cleanly"

# ---- a signature that finds the card gone: the watch looks at once (a
# poll every 60 s would not see it yet), the helper stays
unset P11FAULT_SLOT_EVENTS
rm -f "$T/absent"
conf "$T/slow.conf" "token-poll = 60000"
start_agent "$T/slow.conf" || fail "sign: the agent did not start"
helper=$(pgrep -P "$AGENT_PID") || fail "sign: no helper"
log_mark
: >"$T/absent"
out=$("$CLIENT" "$(listen_addr t tcp)" expect-close --timeout 5) ||
    fail "sign: a connection with the card gone: $out"
wait_log "TLS handshake failed: the token did not sign: .*(CKR_DEVICE_REMOVED|CKR_TOKEN_NOT_PRESENT)" 5 ||
    fail "sign: the handshake did not fail on the token"
wait_log "identity ec: $CARD was removed; insert it again" 5 ||
    fail "sign: the failed signature did not make the helper look"
[ "$(pgrep -P "$AGENT_PID")" = "$helper" ] || fail "sign: the helper exited"
out=$("$CLIENT" "$(listen_addr t tcp)" expect-close --timeout 5) ||
    fail "sign: the next connection: $out"
wait_log "conn [0-9]+ \(t\): $CARD was removed; insert it again" 5 ||
    fail "sign: the next connection's line"
ok "a signature that finds the card gone: removal said at once, the helper stays"
stop_agent || fail "sign: the agent did not exit cleanly"

# ---- a card reporting a failed login: its file PIN is not tried again
# (the fault module sets CKF_USER_PIN_COUNT_LOW, 0x10000)
unset P11FAULT_SLOT_EVENTS
rm -f "$T/absent" "$T/calls.log"
P11FAULT_TOKEN_FLAGS=0x10000 start_agent "$T/cycles.conf" ||
    fail "count-low: the agent did not start"
logins=$(grep -c " C_Login " "$T/calls.log")
log_mark
: >"$T/absent"
wait_log "identity ec: $CARD was removed" 10 || fail "count-low: no removal"
rm -f "$T/absent"
wait_log "identity ec: $CARD reports a failed login \(token flags 0x10000\); the PIN from file:.* is not tried on it again" 10 ||
    fail "count-low: the stored PIN would be tried again"
out=$("$CLIENT" "$(listen_addr t tcp)" expect-close --timeout 5) ||
    fail "count-low: a connection: $out"
[ "$(grep -c " C_Login " "$T/calls.log")" = "$logins" ] ||
    fail "count-low: a C_Login after the card came back"
ok "a card reporting a failed login: its file PIN is not tried again ($logins C_Login in all)"
stop_agent || fail "count-low: the agent did not exit cleanly"

# ---- another card: same label and key id, another key and certificate
"$top_srcdir/tests/mktoken.sh" "$T/tok2" || fail "a second token world"
cat "$TOK/ca.pem" "$T/tok2/ca.pem" >"$T/both-ca.pem"
start_server s2 --cert "$TOK/server.pem" --key "$TOK/server.key" \
    --ca "$T/both-ca.pem" --require-cert
swap_conf() {
	{
		agent_section
		identity ec 02 | sed '/^$/d'
		printf '%s\n' "$@"
		echo
		tunnel t "localhost:$s2_port" ec
	} >"$T/swap.conf"
}
# swap: the other card goes in while the first is out
swap() {
	log_mark
	: >"$T/absent"
	wait_log "identity ec: $CARD was removed" 10 || fail "swap: no removal"
	mv "$TOK/tokens" "$TOK/tokens.first"
	mv "$T/tok2/tokens" "$TOK/tokens"
	rm -f "$T/absent"
}
unswap() {
	mv "$TOK/tokens" "$T/tok2/tokens"
	mv "$TOK/tokens.first" "$TOK/tokens"
}

# on-reinsert = same-card (the default): the other card is not used
swap_conf
start_agent "$T/swap.conf" || fail "swap: the agent did not start"
roundtrip t ec >/dev/null || fail "swap: before"
swap
wait_log "identity ec: the card in the reader is not the one removed \(serial [0-9a-f]+\); waiting for that one \(on-reinsert = same-card" 20 ||
    fail "same-card: the other card was not refused"
out=$("$CLIENT" "$(listen_addr t tcp)" expect-close --timeout 5) ||
    fail "same-card: a connection with the other card in: $out"
wait_log "conn [0-9]+ \(t\): $CARD was removed; insert it again" 5 ||
    fail "same-card: the connection's line does not name the card"
ok "same-card: another card is refused, connections fail naming the first"
log_mark
unswap
wait_log "identity ec: $CARD is back; new connections use it" 30 ||
    fail "same-card: the first card was not taken back"
roundtrip t ec >/dev/null || fail "same-card: after the first card came back"
ok "same-card: the first card put back is taken again"
stop_agent || fail "swap: the agent did not exit cleanly"

# on-reinsert = any: the other card is taken, logged as another card
swap_conf "on-reinsert = any"
start_agent "$T/swap.conf" || fail "any: the agent did not start"
roundtrip t ec >/dev/null || fail "any: before"
swap
wait_log "identity ec: the token came back with a different key \(its certificate changed; certificate was .*, now .*\); its tunnels now use the new one" 20 ||
    fail "any: the other card was not logged as such"
wait_log "identity ec: token .* is back; new connections use it" 10 ||
    fail "any: the other card was not taken"
roundtrip t ec >/dev/null || fail "any: a connection with the other card"
ok "any: another card is taken, logged as another key and certificate"
stop_agent || fail "any: the agent did not exit cleanly"
unswap
