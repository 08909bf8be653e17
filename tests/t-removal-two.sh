#!/bin/bash
# Two cards on one module (one token helper), both pulled, one put back:
# the card that is back works again while the other is still out (its
# reopen does not take the helper down), and the one still out is looked
# for without a login and comes back when it is put back.
. "$top_srcdir/tests/lib.sh"
make_token
command -v pkcs11-tool >/dev/null || skip "pkcs11-tool is missing"
"$top_srcdir/tests/mktoken.sh" "$T/tok2" >/dev/null || fail "a second token"
cp -a "$T/tok2/tokens/"* "$TOK/tokens/"
serial_of() {
	SOFTHSM2_CONF=$1 pkcs11-tool --module "$SOFTHSM" -L 2>/dev/null |
	    awk '/serial num/ {print $NF}'
}
SB=$(serial_of "$T/tok2/softhsm2.conf")
SA=$(serial_of "$SOFTHSM2_CONF" | grep -vx "$SB")
[ -n "$SA" ] && [ -n "$SB" ] || fail "serials: A '$SA' B '$SB'"
export P11FAULT_TOKEN_ABSENT_FILE=$T/absent P11FAULT_ABSENT_SERIALS=$T/out
cat "$TOK/ca.pem" "$T/tok2/ca.pem" >"$T/both-ca.pem"
start_server s --cert "$TOK/server.pem" --key "$TOK/server.key" \
    --ca "$T/both-ca.pem" --require-cert
{
	agent_section
	for x in "a $SA" "b $SB"; do
		set -- $x
		printf '[identity %s]\nkey = pkcs11:token=%s;serial=%s;id=%%02;type=private\n' \
		    "$1" "$P11TEST_TOKEN" "$2"
		printf 'pin = file:%s\nmodule = %s\n\n' "$TOK/pin" "$FAULT"
	done
	tunnel ta "localhost:$s_port" a
	tunnel tb "localhost:$s_port" b
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"
rt() {
	"$CLIENT" "$(listen_addr "$1" tcp)" roundtrip --bytes 100 >/dev/null 2>&1
}
rt ta || fail "tunnel ta before the removal"
rt tb || fail "tunnel tb before the removal"

# both pulled
log_mark
: >"$T/absent"
wait_log "identity a: token .*serial $SA.* was removed" 10 || fail "A not seen removed"
wait_log "identity b: token .*serial $SB.* was removed" 10 || fail "B not seen removed"
# B put back, A stays out
echo "$SA" >"$T/out"
log_mark
rm -f "$T/absent"
wait_log "identity b: token .*serial $SB.* is back" 20 ||
    fail "B did not come back while A is out: $(tail -n 8 "$T/agent.log")"
wait_log "identity a: token .*serial $SA.* is still out" 20 ||
    fail "A is not said to be still out"
rt tb || fail "tunnel tb with B back and A out"
rt tb || fail "tunnel tb, second connection"
rt ta && fail "tunnel ta went through with card A out"
log_since_has "exited; restarting it" &&
    fail "the helper was restarted while A is out: $(tail -n 8 "$T/agent.log")"
ok "B back, A out: tb works, ta fails naming A, the helper stays"

# A put back: found by the PROBE, opened again
log_mark
rm -f "$T/out"
wait_log "identity a: token .*serial $SA.* shows in a reader again" 20 ||
    fail "A was not found again: $(tail -n 8 "$T/agent.log")"
wait_log "identity a: token .*serial $SA.* is back" 20 || fail "A not opened again"
rt ta || fail "tunnel ta after A came back"
rt tb || fail "tunnel tb after A came back"
stop_agent || fail "the agent did not exit cleanly"
ok "A back: found without a login, reopened; both tunnels work"
