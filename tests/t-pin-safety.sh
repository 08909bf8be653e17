#!/bin/bash
# PIN safety in the running agent (issue 6, items 2 and 3): a wrong PIN
# from a file costs exactly one C_Login per agent start; a locked PIN or one the token wants changed gets no
# C_Login at all and a message saying what to do; a key with
# CKA_ALWAYS_AUTHENTICATE signs each handshake after its own
# C_Login(CKU_CONTEXT_SPECIFIC).
. "$top_srcdir/tests/lib.sh"
make_token

logins() {
	grep -c " C_Login .* user=${1:-[0-9]}" "$T/calls.log"
}
# conf PINFILE: identity ec (P-256) behind tunnel t
conf() {
	{
		agent_section
		identity ec 02 | sed "s|^pin = .*|pin = file:$1|"
		tunnel t "localhost:$s_port" ec
	} >"$T/agent.conf"
}
start_upstream s
printf 'wrongpin7f3a\n' >"$T/wrong.pin"
chmod 600 "$T/wrong.pin"

# ---- a wrong PIN: one C_Login for this agent start, and run stops
# with the reason (the PIN source must be fixed; nothing is retried)
conf "$T/wrong.pin"
: >"$T/calls.log"
rc=0
timeout 60 "$P11AGENT" run -c "$T/agent.conf" 2>"$T/run.err" || rc=$?
[ "$rc" = 1 ] || fail "run with a wrong PIN exited $rc: $(cat "$T/run.err")"
grep -q "rejected the PIN from file:$T/wrong.pin.*p11agent does not retry: fix the PIN source" "$T/run.err" ||
    fail "no clear message for the wrong PIN: $(cat "$T/run.err")"
[ "$(logins)" = 1 ] || fail "C_Login calls: $(logins), wanted 1"
grep -q "wrongpin7f3a" "$T/run.err" && fail "the PIN is in the message"
ok "wrong PIN from a file: run exits 1 after exactly 1 C_Login"

# ---- locked, and to be changed: no C_Login, a message with what to do
conf "$TOK/pin"
: >"$T/calls.log"
out=$(P11FAULT_TOKEN_FLAGS=0x40000 "$P11AGENT" check -c "$T/agent.conf" 2>&1) &&
    fail "check passed on a locked PIN"
grep -q "the user PIN is locked; p11agent will not try to log in: unblock it with the PUK or SO PIN.*then run 'p11agent unlock' or reinsert the card" <<<"$out" ||
    fail "no clear message for a locked PIN: $out"
[ "$(logins)" = 0 ] || fail "C_Login on a locked PIN"
ok "locked PIN: no C_Login; $(grep -o "the user PIN is locked[^;]*" <<<"$out")"
out=$(P11FAULT_TOKEN_FLAGS=0x80000 "$P11AGENT" check -c "$T/agent.conf" 2>&1) &&
    fail "check passed on a PIN to be changed"
grep -q "wants its PIN changed before it is used; change it with the card's own tool" <<<"$out" ||
    fail "no clear message for a PIN to be changed: $out"
[ "$(logins)" = 0 ] || fail "C_Login on a PIN to be changed"
ok "PIN to be changed: no C_Login, the message says how"

# ---- always-authenticate: a context login after each C_SignInit
: >"$T/calls.log"
export P11FAULT_ALWAYS_AUTH=$P11TEST_PIN
start_agent "$T/agent.conf" || fail "the agent did not start (always-auth)"
for i in 1 2 3; do
	out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 100 \
	    --expect-subject CN=p11agent-test-ec 2>&1) ||
	    fail "handshake $i with an always-authenticate key: $out"
done
stop_agent || fail "the agent did not exit cleanly"
[ "$(logins 1)" = 1 ] || fail "user logins: $(logins 1), wanted 1"
[ "$(logins 2)" = 3 ] || fail "context logins: $(logins 2), wanted 3"
# each C_Sign directly after its C_SignInit and context login
seq=$(awk '$2 == "C_SignInit" || $2 == "C_Sign" ||
    ($2 == "C_Login" && / user=2/) {print $2}' "$T/calls.log" | paste -sd' ')
[ "$seq" = "C_SignInit C_Login C_Sign C_SignInit C_Login C_Sign C_SignInit C_Login C_Sign" ] ||
    fail "not SignInit, context login, Sign per handshake: $seq"
ok "always-authenticate key: 3 handshakes, 3 C_Login(CKU_CONTEXT_SPECIFIC), 1 user login"

# a wrong context PIN fails the handshake, without a retry
P11FAULT_ALWAYS_AUTH=not-the-pin
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start (bad context PIN)"
log_mark
"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 10 >/dev/null 2>&1 &&
    fail "a handshake went through with a rejected context login"
wait_log "rejected the PIN" || fail "no log line for the rejected context login"
stop_agent || fail "the agent did not exit cleanly"
[ "$(logins 2)" = 1 ] || fail "context logins: $(logins 2), wanted 1"
[ "$(grep -c ' C_Sign ' "$T/calls.log")" = 0 ] || fail "C_Sign after a failed context login"
ok "a rejected context login: one try, no C_Sign, the handshake fails"
unset P11FAULT_ALWAYS_AUTH
