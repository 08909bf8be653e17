#!/bin/bash
# PINs on a real smartcard stack (issue 8, scope 3): a virtual PIV card
# (tests/vcard/) with its own retry counter, through pcscd and OpenSC.
# - a wrong PIN from a file costs the card one try per agent start, and
#   the agent never drives the card to locked: at one try left it does not
#   log in at all (the card keeps its last try);
# - a login with the right PIN resets the counter;
# - p11agent status shows the card's PIN state as the card counts down
#   (wrong PINs from another program): ok, final-try (1 left), locked (0);
# - a locked card: no login, the message says to unblock with the PUK;
#   unblocked with the PUK (RESET RETRY COUNTER) it works again;
# - the slot-9c key (PIN for each signature, CKA_ALWAYS_AUTHENTICATE):
#   every handshake gets its own context-specific login, and the card sees
#   a VERIFY right before each 9c signature.
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/card.sh"
make_token
make_card c 9a=p256 9c=p256
export P11FAULT_MODULE=$OPENSC_PKCS11
export P11FAULT_LOG=$T/calls.log

tries() {
	card_status c | sed -n 's/.*pin_tries=\([0-9]*\).*/\1/p'
}
logins() {
	grep -c " C_Login .* user=${1:-[0-9]}" "$T/calls.log"
}
# conf PINFILE ID: identity k (the key in slot ID's PIV id) behind tunnel t
conf() {
	{
		agent_section
		printf '[identity k]\nkey = pkcs11:token=%s;serial=%s;id=%%%s;type=private\n' \
		    "$CARD_TOKEN_LABEL" "$CARD_SERIAL" "$2"
		printf 'pin = file:%s\nmodule = %s\n\n' "$1" "$FAULT"
		tunnel t "localhost:$s_port" k
	} >"$T/agent.conf"
}
start_upstream s
printf '60283719\n' >"$T/wrong.pin"
chmod 600 "$T/wrong.pin"
[ "$(tries)" = 3 ] || fail "a new card has $(tries) PIN tries"

# ---- a wrong PIN: one try per start, and never the last one
conf "$T/wrong.pin" 01
for left in 2 1; do
	: >"$T/calls.log"
	rc=0
	timeout $((60 * SLOW)) "$P11AGENT" run -c "$T/agent.conf" 2>"$T/run.err" || rc=$?
	[ "$rc" = 1 ] || fail "run with a wrong PIN exited $rc: $(cat "$T/run.err")"
	grep -q "rejected the PIN from file:$T/wrong.pin.*p11agent does not retry: fix the PIN source" "$T/run.err" ||
	    fail "no clear message for the wrong PIN: $(cat "$T/run.err")"
	[ "$(logins)" = 1 ] || fail "C_Login calls: $(logins), wanted 1"
	[ "$(tries)" = "$left" ] || fail "the card has $(tries) tries left, wanted $left"
	ok "wrong PIN: run exits 1 after 1 C_Login; the card counts down to $left"
done
: >"$T/calls.log"
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) && fail "check passed with a wrong PIN"
grep -q "only one PIN try is left; p11agent will not risk it without you" <<<"$out" ||
    fail "no final-try refusal: $out"
[ "$(logins)" = 0 ] || fail "C_Login on the card's final try"
[ "$(tries)" = 1 ] || fail "the card has $(tries) tries left, wanted 1"
grep -q 60283719 "$T/run.err" && fail "the PIN is in a message"
grep -q 60283719 <<<"$out" && fail "the PIN is in a message"
ok "final try: no C_Login, the card keeps its last try ($(grep -o 'only one PIN try is left[^:]*' <<<"$out"))"

# the right PIN once, with the card's own tools, resets the counter
pkcs11-tool --module "$OPENSC_PKCS11" --login --pin "$CARD_PIN" -O \
    >/dev/null 2>&1 || fail "pkcs11-tool could not log in with the right PIN"
[ "$(tries)" = 3 ] || fail "after a right PIN the card has $(tries) tries"
conf "$CARD_PIN_FILE" 01
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || fail "check with the right PIN: $out"
ok "right PIN: counter back to 3, check signs"

# ---- locked: three wrong PINs by another program; the status of an agent
# started after them shows the card's counter as OpenSC reports it (final
# try: 1 left, then locked: 0); the agent does not log in, says what to
# do; the PUK unblocks it
wrong() {
	pkcs11-tool --module "$OPENSC_PKCS11" --login --pin 60283719 -O \
	    >/dev/null 2>&1 && fail "pkcs11-tool logged in with a wrong PIN"
}
# pin_status STATE TRIES: the card's token in status --json and the text
pin_status() {
	"$P11AGENT" status --json -c "$T/agent.conf" >"$T/s.json" || fail "status --json"
	/usr/bin/python3 - "$T/s.json" "$1" "$2" <<'PY' || fail "status --json: $(cat "$T/s.json")"
import json, sys
d = json.load(open(sys.argv[1]))
t = d["tokens"][0]
tries = None if sys.argv[3] == "null" else int(sys.argv[3])
if (t["present"], t["pin_state"], t["pin_tries_left"], t["identities"]) != (True, sys.argv[2], tries, ["k"]):
    sys.exit("token %r: wanted present, PIN %s, %s tries left" % (t, sys.argv[2], sys.argv[3]))
PY
	"$P11AGENT" status -c "$T/agent.conf" | grep -q "^  token '$CARD_TOKEN_LABEL' (serial $CARD_SERIAL): present, .*, PIN $1 (tries left: ${2/null/unknown}); identities k$" ||
	    fail "status: $("$P11AGENT" status -c "$T/agent.conf")"
}
# OpenSC's PIV driver reads the card's counter (an empty VERIFY) when it
# binds the card and at a login, not at each C_GetTokenInfo: a helper
# started after the wrong PINs shows it.  pin = pinentry: no login at open
# (the first signature would ask), so the agent starts on a final try and
# on a locked card, and no signature is asked here.
sed 's|^pin = file:.*|pin = pinentry|' "$T/agent.conf" >"$T/ask.conf"
start_agent "$T/agent.conf" || fail "the agent did not start (status)"
pin_status ok null
stop_agent || fail "the agent did not exit cleanly (status)"
wrong
wrong
[ "$(tries)" = 1 ] || fail "after 2 wrong PINs the card has $(tries) tries"
cp "$T/ask.conf" "$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start (final try)"
pin_status final-try 1
stop_agent || fail "the agent did not exit cleanly (final try)"
wrong
[ "$(tries)" = 0 ] || fail "after 3 wrong PINs the card has $(tries) tries"
start_agent "$T/agent.conf" || fail "the agent did not start (locked)"
pin_status locked 0
stop_agent || fail "the agent did not exit cleanly (locked)"
conf "$CARD_PIN_FILE" 01
ok "status of the card: PIN ok, then final-try (tries left: 1), then locked (tries left: 0)"
: >"$T/calls.log"
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) && fail "check passed on a locked card"
grep -q "the user PIN is locked; p11agent will not try to log in: unblock it with the PUK" <<<"$out" ||
    fail "no clear message for a locked card: $out"
[ "$(logins)" = 0 ] || fail "C_Login on a locked card"
pivprov c unblock "$CARD_PUK" "$CARD_PIN" >/dev/null || fail "the PUK did not unblock the card"
[ "$(tries)" = 3 ] || fail "after the PUK the card has $(tries) tries"
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || fail "check after the PUK: $out"
ok "locked: no C_Login, 'unblock it with the PUK'; unblocked, check signs"

# ---- the 9c key: PIN for each signature
conf "$CARD_PIN_FILE" 02
: >"$T/calls.log"
: >"$T/card-c.log"
start_agent "$T/agent.conf" || fail "the agent did not start (9c)"
for i in 1 2 3; do
	out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
	    --expect-subject CN=p11agent-card-c-9c 2>&1) ||
	    fail "handshake $i with the 9c key: $out"
done
stop_agent || fail "the agent did not exit cleanly (9c)"
[ "$(logins 2)" = 3 ] || fail "context logins: $(logins 2), wanted 3"
seq=$(awk '$2 == "C_SignInit" || $2 == "C_Sign" ||
    ($2 == "C_Login" && / user=2/) {print $2}' "$T/calls.log" | paste -sd' ')
[ "$seq" = "C_SignInit C_Login C_Sign C_SignInit C_Login C_Sign C_SignInit C_Login C_Sign" ] ||
    fail "not SignInit, context login, Sign per handshake: $seq"
# on the card: each 9c signature comes right after a successful VERIFY
# (the APDU before it; chained parts and GET RESPONSE aside), 3 of them
n=$(awk '$1 == "GET-RESPONSE" || / chain/ { next }
    $1 == "GEN-AUTH" && /slot=9C/ && /sw=9000/ { if (prev != "V") bad = 1; s++ }
    { prev = ($1 == "VERIFY" && / lc=8 / && /sw=9000/) ? "V" : "x" }
    END { print bad ? "bad" : s }' "$T/card-c.log")
[ "$n" = 3 ] || fail "9c signatures on the card, each after its VERIFY: $n
$(grep -E '^(VERIFY|GEN-AUTH)' "$T/card-c.log")"
ok "9c key: 3 handshakes, 3 context-specific logins, VERIFY before each signature on the card"
