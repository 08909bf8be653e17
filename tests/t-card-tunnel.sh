#!/bin/bash
# The tunnel over a real smartcard stack (issue 8, scope 3): two virtual
# PIV cards (tests/vcard/) in a pcscd of the test's own, read by OpenSC's
# PIV driver through opensc-pkcs11.so.  Card r holds an RSA-2048 key in
# slot 9a, card e a P-256 key in slot 9a and a P-384 one in 9e; all were
# born on the card.
# - `p11agent tokens` lists both cards with their token and key URIs;
# - RSA-2048 and P-256 x TLS 1.2 and 1.3: 256 KiB round-trip byte-exact to
#   an upstream that requires a client certificate, and the upstream saw
#   the certificate read from the card (no cert = in the config); and
#   P-384 (card e's slot 9e, which needs no PIN) in TLS 1.3;
# - `p11agent check` test-signs with both keys;
# - opensc-pkcs11.so found through p11-kit's registry (no module =);
# - no key material leaves either card: the PKCS#11 call log (the fault
#   module wrapping opensc-pkcs11.so) has only allowed calls and reads only
#   public attributes of private keys, and the cards' own logs show they
#   were asked for public objects, PIN checks and signatures only.
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/card.sh"
make_token
make_card r 9a=rsa2048
R_SERIAL=$CARD_SERIAL R_LABEL=$CARD_TOKEN_LABEL R_PIN=$CARD_PIN_FILE
make_card e 9a=p256 9e=p384
E_SERIAL=$CARD_SERIAL E_LABEL=$CARD_TOKEN_LABEL E_PIN=$CARD_PIN_FILE
[ "$R_SERIAL" != "$E_SERIAL" ] || fail "both cards have serial $R_SERIAL"
ok "cards r (serial $R_SERIAL, token '$R_LABEL') and e (serial $E_SERIAL, token '$E_LABEL') in $CARD_START_MS ms"

# ---- tokens: each card, its token URI and its keys' URIs
out=$("$P11AGENT" tokens -m "$OPENSC_PKCS11" 2>&1) || fail "tokens: $out"
out+=$'\n'$("$P11AGENT" tokens -m "$OPENSC_PKCS11" --pin "file:$R_PIN" \
    "pkcs11:serial=$R_SERIAL" 2>&1) || fail "tokens --pin: $out"
for want in "token: token '$R_LABEL' (piv_II PKCS#15 emulated, serial $R_SERIAL)" \
    "pkcs11:model=PKCS%2315%20emulated;manufacturer=piv_II;serial=$R_SERIAL;token=$R_LABEL" \
    "key: private key, RSA 2048, sensitive, not extractable" \
    "serial=$R_SERIAL;token=$R_LABEL;id=%01;object=PIV%20AUTH%20key;type=private" \
    "serial=$R_SERIAL;token=$R_LABEL;id=%01;object=Certificate%20for%20PIV%20Authentication;type=cert" \
    "token: token '$E_LABEL' (piv_II PKCS#15 emulated, serial $E_SERIAL)" \
    "serial=$E_SERIAL;token=$E_LABEL;id=%01;object=PIV%20AUTH%20pubkey;type=public"; do
	grep -qF -- "$want" <<<"$out" || fail "tokens does not list: $want
$out"
done
ok "tokens lists both cards, their token URIs and the key URIs"

start_upstream s12 --tls1.2
start_upstream s13 --tls1.3
export P11FAULT_MODULE=$OPENSC_PKCS11
# card_identity NAME LABEL SERIAL PINFILE [module line [ID]]
card_identity() {
	printf '[identity %s]\nkey = pkcs11:token=%s;serial=%s;id=%%%s;type=private\n' \
	    "$1" "$2" "$3" "${6:-01}"
	printf 'pin = file:%s\n%s\n\n' "$4" "${5-module = $FAULT}"
}
{
	agent_section
	card_identity rsa "$R_LABEL" "$R_SERIAL" "$R_PIN"
	card_identity ec "$E_LABEL" "$E_SERIAL" "$E_PIN"
	# the card-authentication key of slot 9e (id 04): P-384, no PIN
	card_identity ec384 "$E_LABEL" "$E_SERIAL" "$E_PIN" "module = $FAULT" 04
	tunnel ec384 "localhost:$s13_port" ec384
	for key in rsa ec; do
		for v in 12 13; do
			port=s${v}_port
			tunnel "$key$v" "localhost:${!port}" "$key"
		done
	done
} >"$T/agent.conf"

# ---- check: a test signature with each card's key
export P11FAULT_LOG=$T/cli.calls
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || fail "check: $out"
grep -q "^identity rsa: ok: RSA key, certificate /O=p11agent tests/CN=p11agent-card-r-9a, test signature verified$" <<<"$out" &&
    grep -q "^identity ec: ok: EC key, certificate /O=p11agent tests/CN=p11agent-card-e-9a, test signature verified$" <<<"$out" &&
    grep -q "^identity ec384: ok: EC key, certificate /O=p11agent tests/CN=p11agent-card-e-9e, test signature verified$" <<<"$out" ||
    fail "check: no verified test signature by each card: $out"
ok "check: a verified test signature by each card"

# ---- the tunnels; the cards' logs from here on are the agent's
: >"$T/card-r.log"
: >"$T/card-e.log"
export P11FAULT_LOG=$T/run.calls
start_agent "$T/agent.conf" || fail "the agent did not start"
for key in rsa ec; do
	[ $key = rsa ] && card=r || card=e
	for v in 12 13; do
		out=$("$CLIENT" "$(listen_addr "$key$v" tcp)" roundtrip \
		    --bytes 262144 --expect-subject "CN=p11agent-card-$card-9a") ||
		    fail "$key TLS1.${v#1}: $out"
		case $out in
		"subject="*"CN=p11agent-card-$card-9a"*" version=TLSv1.${v#1} "*"ok bytes=262144"*) ;;
		*) fail "$key TLS1.${v#1}: unexpected: $out" ;;
		esac
		ok "$key (card $card) TLSv1.${v#1}: $(tail -n 1 <<<"$out")"
	done
done
out=$("$CLIENT" "$(listen_addr ec384 tcp)" roundtrip --bytes 65536 \
    --expect-subject "CN=p11agent-card-e-9e") || fail "P-384 (9e): $out"
case $out in
"subject="*"CN=p11agent-card-e-9e"*" version=TLSv1.3 "*"ok bytes=65536"*) ;;
*) fail "P-384 (9e): unexpected: $out" ;;
esac
card_log_has '^GEN-AUTH .* slot=9E alg=14 .*sw=9000' e ||
    fail "card e made no P-384 signature in 9e: $(grep GEN-AUTH "$T/card-e.log" | tail -n 3)"
ok "P-384 (card e, 9e: GENERAL AUTHENTICATE alg 14) TLSv1.3: $(tail -n 1 <<<"$out")"
if grep -Eiq 'opensc|pcsclite|p11fault|p11-kit' "/proc/$AGENT_PID/maps"; then
	fail "a PKCS#11 module or PC/SC is mapped in the agent process"
fi
stop_agent || fail "the agent did not exit cleanly"
ok "no PKCS#11 module, p11-kit or libpcsclite in the agent process"

# ---- no key material: the PKCS#11 calls ...
calls_allowed "$SIGN_ONLY_CALLS" "$KEY_PUBLIC_ATTRS" "$T/run.calls" "$T/cli.calls" ||
    fail "the call log shows a forbidden call"
signs=$(grep -c ' C_Sign 0x0' "$T/run.calls")
[ "$signs" -ge 3 ] && [ "$signs" -le 5 ] ||
    fail "$signs C_Sign for 5 handshakes with 3 keys on 2 cards (resumption allowed)"
ok "$(cat "$T/run.calls" "$T/cli.calls" | wc -l) PKCS#11 calls, all allowed, $signs C_Sign"
# ... and what the cards were asked: public objects (discovery, CCC, key
# history, CHUID, certificates), PIN checks, signatures with slot 9a and
# responses to them; never a key generation, a write, or a management-key
# authentication
for c in r e; do
	bad=$(grep -Ev '^(SELECT|GET-RESPONSE|VERIFY) |^GET-DATA .* obj=(7E|5FC107|5FC10C|5FC102|5FC105|5FC10A|5FC10B|5FC101) |^GEN-AUTH .* slot=9A ' \
	    "$T/card-$c.log" | grep -v '^ *$' | grep -Ev '^GEN-AUTH .* slot=9E alg=14 ' || true)
	[ -z "$bad" ] || fail "card $c was asked more than public objects, PINs and signatures:
$bad"
	card_log_has '^GEN-AUTH .* slot=9A .*sw=9000' "$c" ||
	    fail "card $c made no signature: $(tail -n 5 "$T/card-$c.log")"
done
ok "cards: $(grep -c . "$T/card-r.log") + $(grep -c . "$T/card-e.log") APDUs, only public objects, PIN checks and 9a signatures"

# ---- registry mode: opensc-pkcs11 found through p11-kit's registry
unset P11FAULT_MODULE P11FAULT_LOG
grep -lqs 'opensc-pkcs11' /usr/share/p11-kit/modules/*.module ||
    fail "opensc-pkcs11 is not in p11-kit's registry (/usr/share/p11-kit/modules)"
{
	agent_section
	card_identity ec "$E_LABEL" "$E_SERIAL" "$E_PIN" ""
	tunnel ec13 "localhost:$s13_port" ec
} >"$T/registry.conf"
start_agent "$T/registry.conf" || fail "the agent did not start (registry)"
out=$("$CLIENT" "$(listen_addr ec13 tcp)" roundtrip --bytes 10000 \
    --expect-subject "CN=p11agent-card-e-9a") || fail "registry: $out"
stop_agent || fail "the agent did not exit cleanly (registry)"
agent_log_has "opensc-pkcs11" || fail "the log does not name the module it found"
ok "registry: $(grep -m 1 -o 'identity ec: .*opensc-pkcs11[^ ]*' "$T/agent.log" || echo found); $(tail -n 1 <<<"$out")"
