#!/bin/bash
# p11agent status per token (issue 9, scope 1): present, logged in, PIN
# state and tries left, in the text, --json and --prometheus forms, asked
# of the token helper (PROTO_STATE) without a login and without blocking
# the agent:
# - after the login at start: present, logged in, PIN ok, tries unknown
#   (PKCS#11 gives no count), both identities on the one token;
# - after p11agent lock: not logged in;
# - a wrong PIN in the PIN file, then p11agent unlock: SoftHSM sets
#   CKF_USER_PIN_COUNT_LOW, shown as count-low, and the refused login;
#   the right PIN and unlock again: logged in;
# - a helper that cannot answer (stopped, as if in a dialog): status still
#   answers within STATUS_WAIT_MS, its tokens "unknown", the helper "not
#   answering", and the helper is not taken for hung once it goes on;
# - a card pulled (the fault module's removal): not present; put back:
#   present and logged in again.
. "$top_srcdir/tests/lib.sh"
make_token
export P11FAULT_TOKEN_ABSENT_FILE=$T/absent
start_upstream s
{
	agent_section
	identity ec 02
	identity rsa 01
	tunnel t "localhost:$s_port" ec
	tunnel r "localhost:$s_port" rsa
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"
"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 >/dev/null ||
    fail "the first connection"
helper=$(pgrep -P "$AGENT_PID") || fail "no helper"

st() {
	"$P11AGENT" status "$@" -c "$T/agent.conf"
}
# tokens WANT...: the --json tokens (and helper) match each PY expression
tokens() {
	st --json >"$T/s.json" || fail "status --json: $(cat "$T/s.json")"
	/usr/bin/python3 - "$T/s.json" "$@" <<'PY' || fail "status --json: $(cat "$T/s.json")"
import json, sys
d = json.load(open(sys.argv[1]))
toks = d["tokens"]
h = d["helpers"][0]
t = toks[0] if toks else None
for cond in sys.argv[2:]:
    if not eval(cond):
        sys.exit("not %s: tokens %r, helper %r" % (cond, toks, h))
PY
}
prom_has() {
	st --prometheus >"$T/s.prom" || fail "status --prometheus"
	local l
	for l in "$@"; do
		grep -qxF -- "$l" "$T/s.prom" || fail "--prometheus has no '$l':
$(grep token_ "$T/s.prom")"
	done
}
# the token's serial, as SoftHSM made it
serial=$(st --json | /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)["tokens"][0]["serial"])') ||
    fail "no token serial in status --json"
L="module=\"$FAULT\",token=\"$P11TEST_TOKEN\",serial=\"$serial\""

tokens 'len(toks) == 1' 't["identities"] == ["ec", "rsa"]' \
    't["present"] is True' 't["logged_in"] is True' 't["login_required"] is True' \
    't["pin_state"] == "ok"' 't["pin_tries_left"] is None' \
    't["login_refused"] is False' 'h["token_state"] == "answered"' \
    "t['label'] == '$P11TEST_TOKEN'" 't["module"] == h["module"]'
out=$(st) || fail "status: $out"
grep -Eq "^  token '$P11TEST_TOKEN' \(serial [0-9a-f]+\): present, logged in, PIN ok \(tries left: unknown\); identities ec, rsa$" <<<"$out" ||
    fail "status (text) does not say the token is there and logged in: $out"
prom_has "p11agent_token_present{$L} 1" "p11agent_token_logged_in{$L} 1" \
    "p11agent_token_pin_state{$L,state=\"ok\"} 1" \
    "p11agent_token_pin_state{$L,state=\"count-low\"} 0" \
    "p11agent_token_login_refused{$L} 0" "p11agent_helper_answering{module=\"$FAULT\"} 1"
! grep -q "^p11agent_token_pin_tries_left" "$T/s.prom" ||
    fail "tries left invented: $(grep tries "$T/s.prom")"
ok "after the login: present, logged in, PIN ok, tries unknown (all three forms)"

"$P11AGENT" lock -c "$T/agent.conf" >/dev/null || fail "lock"
tokens 't["present"] is True' 't["logged_in"] is False'
grep -q ": present, not logged in, PIN ok" <<<"$(st)" || fail "status after lock: $(st)"
prom_has "p11agent_token_logged_in{$L} 0"
ok "after p11agent lock: not logged in"

# a wrong PIN: the token counts it (SoftHSM sets CKF_USER_PIN_COUNT_LOW)
printf 'wrongpin7f3a\n' >"$TOK/pin"
rc=0
"$P11AGENT" unlock -c "$T/agent.conf" >"$T/unlock.out" 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "unlock with a wrong PIN exited $rc: $(cat "$T/unlock.out")"
tokens 't["logged_in"] is False' 't["pin_state"] == "count-low"' \
    't["login_refused"] is True' 't["pin_tries_left"] is None' 't["present"] is True'
grep -q ": present, not logged in, PIN count-low (tries left: unknown); its PIN was refused: none is tried until p11agent unlock; identities ec, rsa" <<<"$(st)" ||
    fail "status after a wrong PIN: $(st)"
prom_has "p11agent_token_pin_state{$L,state=\"count-low\"} 1" \
    "p11agent_token_pin_state{$L,state=\"ok\"} 0" "p11agent_token_login_refused{$L} 1"
printf '%s\n' "$P11TEST_PIN" >"$TOK/pin"
"$P11AGENT" unlock -c "$T/agent.conf" >"$T/unlock.out" 2>&1 || fail "unlock: $(cat "$T/unlock.out")"
tokens 't["logged_in"] is True' 't["login_refused"] is False'
ok "a wrong PIN: count-low and refused; the right one: logged in ($(grep -o 'PIN [a-z-]*' <<<"$(st)" | head -n 1) now)"

# a helper that does not answer: status waits for it at most 2 s
kill -STOP "$helper"
start=$(date +%s%N)
out=$(st) || { kill -CONT "$helper"; fail "status with a stopped helper: $out"; }
ms=$(( ($(date +%s%N) - start) / 1000000 ))
tokens 'h["token_state"] == "not answering"' 't["present"] is None' \
    't["logged_in"] is None' 't["pin_state"] == "unknown"' 't["identities"] == ["ec", "rsa"]'
prom_has "p11agent_helper_answering{module=\"$FAULT\"} 0"
kill -CONT "$helper"
grep -q "^  tokens: unknown, the token helper is not answering within 2 s" <<<"$out" ||
    fail "status with a stopped helper: $out"
[ "$ms" -lt $((4000 * SLOW)) ] || fail "status with a stopped helper took $ms ms"
grep -q -- "token_present" <<<"$(grep -v '^#' "$T/s.prom")" &&
    fail "samples for a token nobody answered for: $(grep token_ "$T/s.prom")"
tokens 'h["token_state"] == "answered"' 't["logged_in"] is True' "h['pid'] == $helper"
ok "a stopped helper: status in $ms ms, tokens unknown, helper not answering; answered again after, same helper"

# a card pulled: not present
log_mark
touch "$T/absent"
wait_log "identity ec: .* was removed; insert it again" 10 || fail "no removal"
tokens 't["present"] is False' 't["logged_in"] is False' 'len(toks) == 1' \
    't["identities"] == ["ec", "rsa"]' 't["login_required"] is None'
grep -q ": not present (card removed), not logged in, PIN [a-z-]* (tries left: unknown); identities ec, rsa$" <<<"$(st)" ||
    fail "status after removal: $(st)"
prom_has "p11agent_token_present{$L} 0"
log_mark
rm "$T/absent"
wait_log "identity ec: .* is back; new connections use it" 20 || fail "not back"
wait_log "identity rsa: .* is back; new connections use it" 20 || fail "rsa not back"
tokens 't["present"] is True' 't["logged_in"] is True' 'len(toks) == 1'
ok "a card pulled: not present; put back: present and logged in"
stop_agent || fail "the agent did not exit cleanly"
