#!/bin/bash
# Upstream edge cases.  An upstream that closes first, after its data:
# with close_notify, with a bare TCP FIN or with a RST.  The local client
# gets every byte and then EOF, and the agent logs how it ended and the
# byte counts.  A host name that does not resolve, and an upstream that
# never answers the SYN (connect-timeout): the client is closed and the
# log says why.
. "$top_srcdir/tests/lib.sh"
make_token

N=100000
start_upstream notify --send "$N" --close notify
start_upstream fin --send "$N" --close fin
start_upstream rst --send "$N" --close rst
# listens with a full backlog and never accepts: SYNs go unanswered
start_server hang --full-backlog
{
	agent_section
	identity ec 02
	for name in notify fin rst; do
		port=${name}_port
		tunnel "$name" "localhost:${!port}" ec
	done
	# RFC 6761: .invalid never resolves; the lookup may take a while
	# where no DNS server answers, so the connect timeout is long
	tunnel nores "nonexistent.invalid:443" ec "connect-timeout = 120"
	tunnel hang "localhost:$hang_port" ec "connect-timeout = 1"
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"

# closes NAME HOW LOGLINE [--ack]: the client drains N bytes, then the end
closes() {
	local name=$1 how=$2 line=$3 out first down up=0
	shift 3
	[ $# = 0 ] || up=1	# the ack byte
	log_mark
	out=$("$CLIENT" "$(listen_addr "$name" tcp)" drain --bytes "$N" "$@" \
	    --expect-subject CN=p11agent-test-ec --timeout $((10 * SLOW))) ||
	    fail "$name: $out"
	case $out in
	*"received bytes=$N end=eof "*) ;;
	*"received bytes=$N end=reset "*) [ "$how" = rst ] ||
	    fail "$name: reset instead of EOF: $out" ;;
	*) fail "$name: unexpected: $out" ;;
	esac
	first=$(head -n 1 <<<"$out")
	down=$((${#first} + 1 + N))
	wait_log "conn [0-9]+ \\($name\\): closed" ||
	    fail "$name: the agent did not close the connection"
	log_since_has "conn [0-9]+ \\($name\\): closed by the upstream.*; $up bytes up, $down down, [0-9]+ ms$" ||
	    fail "$name: no close line with $up bytes up, $down down"
	if [ -n "$line" ]; then
		log_since_has "conn [0-9]+: $line$" || fail "$name: no log line '$line'"
	else
		log_since_has "without close_notify" &&
		    fail "$name: logged as closed without close_notify"
	fi
	grep -qF "sent $N bytes, closed first $how" "$T/$name.log" ||
	    fail "$name: the server says: $(cat "$T/$name.log")"
	ok "$name: $(tail -n 1 <<<"$out"); $(grep -E "\\($name\\): closed" "$T/agent.log")"
}
# the agent answers the upstream's close_notify with its own once the
# client is done (the server waits for it)
closes notify "with close_notify both ways" ""
closes fin "without close_notify (TCP FIN)" \
    "upstream closed without close_notify"
# the client acknowledges the data; the server then resets
closes rst "without close_notify (TCP RST)" \
    "upstream closed without close_notify \\(connection reset\\)" --ack

# a name that does not resolve
log_mark
out=$("$CLIENT" "$(listen_addr nores tcp)" expect-close \
    --timeout $((150 * SLOW))) || fail "nonexistent.invalid: $out"
wait_log "conn [0-9]+ \\(nores\\): closed" || fail "nores: not closed"
log_since_has "conn [0-9]+: upstream nonexistent.invalid:443: name resolution failed: " ||
    fail "nores: no 'name resolution failed' line"
log_since_has "conn [0-9]+ \\(nores\\): closed: upstream name does not resolve; .*, no TLS handshake; 0 bytes up, 0 down, [0-9]+ ms$" ||
    fail "nores: no close line"
ok "nonexistent.invalid: $out; $(grep -E 'name resolution failed' "$T/agent.log")"

# connect-timeout: the SYN is never answered
log_mark
start=$(date +%s%N)
out=$("$CLIENT" "$(listen_addr hang tcp)" expect-close \
    --timeout $((10 * SLOW))) || fail "connect timeout: $out"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
wait_log "conn [0-9]+ \\(hang\\): closed" || fail "hang: not closed"
log_since_has "conn [0-9]+: upstream localhost:$hang_port: connect timed out$" ||
    fail "hang: no 'connect timed out' line"
log_since_has "conn [0-9]+ \\(hang\\): closed: timeout; .*, no TLS handshake; 0 bytes up, 0 down, [0-9]+ ms$" ||
    fail "hang: no close line"
[ "$ms" -ge 1000 ] && [ "$ms" -lt $((3000 * SLOW)) ] ||
    fail "hang: the client was closed after $ms ms, not ~1 s"
ok "connect timeout: closed after $ms ms"
stop_agent || fail "the agent did not exit cleanly"
