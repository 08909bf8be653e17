#!/bin/bash
# The virtual PIV card (tests/vcard/) through a private pcscd and OpenSC's
# opensc-pkcs11.so, with pkcs11-tool (not the agent): the token, its keys
# and certificates, signatures that verify, the PIN counter and PUK, the
# 9c key's always-authenticate, removal and reinsertion, the state across
# an emulator restart, no PKCS#11 key generation, and no private key bytes
# out of the card.
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/card.sh"

make_card c 9a=rsa2048 9c=p256 9e=p256
echo "card_start: ${CARD_START_MS} ms (pcscd + emulator until pcscd has the card)"
P11=(pkcs11-tool --module "$OPENSC_PKCS11")

# mark; ...; apdus_since: the emulator's APDU lines after the mark
mark() {
	CMARK=$(wc -l <"$T/card-c.log")
}
apdus_since() {
	tail -n "+$((CMARK + 1))" "$T/card-c.log" | grep -v '^#'
}
# tries_is N: the card's own counter
tries_is() {
	card_status c | grep -q " pin_tries=$1 " ||
	    fail "card PIN tries not $1: $(card_status c)"
}
# flags: OpenSC's token flags for the card's reader
flags() {
	"${P11[@]}" -L 2>/dev/null | awk -v r="$CARD_READER" '
	    /^Slot / { s = index($0, r) > 0 }
	    s && /token flags/ { print; exit }'
}

# --- the token: serial from the CHUID's GUID, label from the 9a certificate
"${P11[@]}" -L >"$T/list" 2>&1 || fail "pkcs11-tool -L: $(cat "$T/list")"
grep -q "serial num *: $CARD_SERIAL\$" "$T/list" ||
    fail "token serial $CARD_SERIAL not listed: $(cat "$T/list")"
[ "$CARD_TOKEN_LABEL" = p11agent-card-c-9a ] ||
    fail "token label is '$CARD_TOKEN_LABEL', not the 9a certificate's CN"
ok "token $CARD_TOKEN_LABEL serial $CARD_SERIAL"

# --- keys and certificates: 9a RSA-2048 (id 01), 9c P-256 (02, always
# authenticate), 9e P-256 (04); each certificate is the one written
"${P11[@]}" -O >"$T/objs" 2>&1 || fail "pkcs11-tool -O: $(cat "$T/objs")"
for spec in "01 9a Public Key Object; RSA 2048 bits" \
    "02 9c Public Key Object; EC  EC_POINT 256 bits" \
    "04 9e Public Key Object; EC  EC_POINT 256 bits"; do
	read -r id slot what <<<"$spec"
	grep -A4 -F "$what" "$T/objs" | grep -q "ID: *$id\$" ||
	    fail "no '$what' with id $id: $(cat "$T/objs")"
	"${P11[@]}" --read-object --type cert --id "$id" -o "$T/cert-$id.der" \
	    >/dev/null 2>&1 || fail "certificate $id not readable"
	openssl x509 -in "$T/card-c-$slot.pem" -outform DER | cmp -s - "$T/cert-$id.der" ||
	    fail "certificate $id is not the one written to slot $slot"
done
"${P11[@]}" --login --pin "$CARD_PIN" -O >"$T/privs" 2>&1 ||
    fail "pkcs11-tool -O --login: $(cat "$T/privs")"
grep -c '^Private Key Object' "$T/privs" | grep -qx 3 ||
    fail "not three private keys: $(cat "$T/privs")"
grep -A4 '^Private Key Object; EC' "$T/privs" | grep -A3 'label: *SIGN key' |
    grep -q 'Access: *always authenticate' ||
    fail "the 9c key has no CKA_ALWAYS_AUTHENTICATE: $(cat "$T/privs")"
if grep -A4 'label: *\(PIV AUTH\|CARD AUTH\) key' "$T/privs" |
    grep -q 'always authenticate'; then
	fail "a 9a/9e key is always-authenticate: $(cat "$T/privs")"
fi
ok "9a RSA-2048, 9c and 9e P-256 keys and certificates; 9c always-authenticate"

# --- a signature by each key verifies with its public key
echo "the data the card signs" >"$T/data"
openssl dgst -sha256 -binary "$T/data" >"$T/hash"
# sign ID MECH SLOT [rsa]: one pkcs11-tool process (RSA: SHA256-RSA-PKCS
# over the data; EC: ECDSA over its hash), verified by openssl over the
# hash; sets SIGN_MS and SIGN_APDUS
sign() {
	local t0 in=hash
	[ -z "${4:-}" ] || in=data
	mark
	t0=$(date +%s%N)
	"${P11[@]}" --sign --id "$1" -m "$2" --login --pin "$CARD_PIN" \
	    -i "$T/$in" -o "$T/sig-$1" --signature-format openssl \
	    >"$T/sign.out" 2>&1 || fail "sign with $1: $(cat "$T/sign.out")"
	SIGN_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
	SIGN_APDUS=$(apdus_since | wc -l)
	openssl pkeyutl -verify -pubin -inkey "$T/card-c-$3-pub.pem" \
	    -in "$T/hash" -sigfile "$T/sig-$1" ${4:+-pkeyopt digest:sha256} \
	    >"$T/verify.out" 2>&1 || fail "the $3 signature does not verify: $(cat "$T/verify.out")"
}
sign 01 SHA256-RSA-PKCS 9a rsa
# the signature itself: chained GENERAL AUTHENTICATE (256-byte block) and
# the answer's tail by GET RESPONSE
apdus_since | grep -q '^GEN-AUTH .*slot=9A alg=07 chain=1 .*sw=9000' ||
    fail "no chained RSA GENERAL AUTHENTICATE: $(apdus_since)"
rsa_sign_apdus=$(apdus_since | sed -n '/^GEN-AUTH .*slot=9A/,$p' |
    grep -c '^GEN-AUTH\|^GET-RESPONSE')
echo "RSA: pkcs11-tool --sign ${SIGN_MS} ms, ${SIGN_APDUS} APDUs, of which $rsa_sign_apdus for the signature"
sign 04 ECDSA 9e
apdus_since | grep -q '^GEN-AUTH .*slot=9E alg=11 lc=38 .*sw=9000' ||
    fail "no P-256 GENERAL AUTHENTICATE over a 32-byte hash: $(apdus_since)"
echo "EC (9e): pkcs11-tool --sign ${SIGN_MS} ms, ${SIGN_APDUS} APDUs"
# 9c: pkcs11-tool logs in, then does the context-specific login: the card
# sees a VERIFY with the PIN right before the signature
sign 02 ECDSA 9c
apdus_since | grep -B1 '^GEN-AUTH .*slot=9C' | head -n 1 | grep -q '^VERIFY .*lc=8 .*sw=9000' ||
    fail "the 9c signature did not follow a VERIFY: $(apdus_since)"
ok "RSA (9a), P-256 (9e) and P-256 always-authenticate (9c) signatures verify"

# the card's side of PIN-always: one VERIFY, one 9c signature; the second
# one, or one after another command, is refused (6982)
pivprov c sign 9c p256 "$T/hash" --out "$T/sig-9c" --pin "$CARD_PIN" ||
    fail "9c signature after a VERIFY refused"
if pivprov c sign 9c p256 "$T/hash" --out "$T/sig-9c" --pin "$CARD_PIN" --count 2 \
    2>"$T/err"; then
	fail "two 9c signatures after one VERIFY"
fi
grep -q '(2 of 2): card said 6982' "$T/err" || fail "second 9c signature: $(cat "$T/err")"
# 9a: the PIN stays verified for many
pivprov c sign 9a rsa2048 "$T/hash" --out "$T/sig-9a" --pin "$CARD_PIN" --count 3 ||
    fail "9a signatures after one VERIFY refused"
openssl pkeyutl -verify -pubin -inkey "$T/card-c-9a-pub.pem" -in "$T/hash" \
    -sigfile "$T/sig-9a" -pkeyopt digest:sha256 >/dev/null 2>&1 ||
    fail "pivprov's 9a signature does not verify"
ok "9c: one signature per VERIFY; 9a: several"

# ms per signature at the card through pcscd (pyscard, one connection)
for spec in "9a rsa2048" "9e p256"; do
	read -r slot alg <<<"$spec"
	pivprov c sign "$slot" "$alg" "$T/hash" --out "$T/sig-x" --pin "$CARD_PIN" \
	    --count 50 --time >"$T/time" || fail "50 $alg signatures"
	echo "$alg via pcscd: $(cat "$T/time")"
done
# the card re-arms TCP_QUICKACK: a P-256 signature in ~1 ms, not ~45
# (vpcd's delayed ACK)
ms=$(sed -n 's/.*, \([0-9]*\)\.[0-9]* ms each/\1/p' "$T/time")
[ -n "$ms" ] && [ "$ms" -lt $((20 * SLOW)) ] ||
    fail "P-256 signature at the card: $(cat "$T/time") (TCP_QUICKACK lost?)"

# --- the PIN counter: wrong PIN 3 -> 2 (OpenSC shows no "count low" on
# PIV: its PIN object has no maximum), 1 is OpenSC's final try, a right
# PIN resets it; three wrong lock it; the PUK unblocks
wrong_pin() {
	if "${P11[@]}" --login --pin 60283719 -O >"$T/login.out" 2>&1; then
		fail "login with a wrong PIN worked"
	fi
	grep -q "$1" "$T/login.out" || fail "wrong PIN: not $1: $(cat "$T/login.out")"
}
tries_is 3
wrong_pin CKR_PIN_INCORRECT
tries_is 2
[ "$(pivprov c tries)" = 2 ] || fail "pivprov tries: $(pivprov c tries)"
flags | grep -q 'final user PIN try\|locked' && fail "after one wrong PIN: $(flags)"
wrong_pin CKR_PIN_INCORRECT
tries_is 1
flags | grep -q 'final user PIN try' || fail "after two wrong PINs: $(flags)"
"${P11[@]}" --login --pin "$CARD_PIN" -O >/dev/null 2>&1 || fail "right PIN refused"
tries_is 3
flags | grep -q 'final user PIN try' && fail "after the right PIN: $(flags)"
ok "a wrong PIN counts the card down (3 -> 2 -> 1), the right one resets it"
wrong_pin CKR_PIN_INCORRECT
wrong_pin CKR_PIN_INCORRECT
wrong_pin CKR_PIN_INCORRECT
tries_is 0
wrong_pin CKR_PIN_LOCKED
if "${P11[@]}" --login --pin "$CARD_PIN" -O >"$T/login.out" 2>&1; then
	fail "login with the right PIN on a locked card worked"
fi
grep -q CKR_PIN_LOCKED "$T/login.out" || fail "locked: $(cat "$T/login.out")"
flags | grep -q 'user PIN locked' || fail "locked card: $(flags)"
card_log_has '^VERIFY .*lc=8 .*sw=6983' || fail "no 6983 from VERIFY"
# a wrong PUK counts its own counter
if pivprov c unblock 38176452 "$CARD_PIN" 2>"$T/err"; then
	fail "a wrong PUK unblocked"
fi
grep -q '63C2 (wrong, 2 tries left)' "$T/err" || fail "wrong PUK: $(cat "$T/err")"
card_status c | grep -q ' puk_tries=2 ' || fail "PUK counter: $(card_status c)"
pivprov c unblock "$CARD_PUK" "$CARD_PIN" || fail "the PUK did not unblock"
tries_is 3
card_status c | grep -q ' puk_tries=3 ' || fail "PUK counter not reset: $(card_status c)"
"${P11[@]}" --login --pin "$CARD_PIN" -O >/dev/null 2>&1 || fail "PIN refused after unblock"
ok "three wrong PINs lock it (CKR_PIN_LOCKED), the PUK (own counter) unblocks"

# change the PIN and back (CHANGE REFERENCE DATA through OpenSC)
"${P11[@]}" --login --pin "$CARD_PIN" --change-pin --new-pin 24682468 >"$T/out" 2>&1 ||
    fail "C_SetPIN: $(cat "$T/out")"
"${P11[@]}" --login --pin 24682468 -O >/dev/null 2>&1 || fail "new PIN refused"
pivprov c change-pin 24682468 "$CARD_PIN" || fail "change-pin back"
"${P11[@]}" --login --pin "$CARD_PIN" -O >/dev/null 2>&1 || fail "PIN refused after change back"
ok "CHANGE REFERENCE DATA (pkcs11-tool --change-pin, pivprov change-pin)"

# --- removal: the token goes; reinserted, the same token comes back
"${P11[@]}" --read-object --type pubkey --id 01 -o "$T/pub-before" >/dev/null 2>&1 ||
    fail "public key 01 not readable"
card_remove c
"${P11[@]}" -L >"$T/list" 2>&1
awk -v r="$CARD_READER" '/^Slot / { s = index($0, r) > 0; next } s && /^ /' \
    "$T/list" | grep -q '(empty)' || fail "removed card still listed: $(cat "$T/list")"
if "${P11[@]}" -T 2>/dev/null | grep -q "$CARD_SERIAL"; then
	fail "removed card's token still present"
fi
card_status c | grep -q '^inserted=0 connected=0' || fail "status: $(card_status c)"
card_insert c
"${P11[@]}" -L 2>&1 | grep -q "serial num *: $CARD_SERIAL\$" ||
    fail "reinserted card: serial $CARD_SERIAL not listed"
"${P11[@]}" --read-object --type pubkey --id 01 -o "$T/pub-after" >/dev/null 2>&1 ||
    fail "public key 01 not readable after reinsertion"
cmp -s "$T/pub-before" "$T/pub-after" || fail "not the same key after reinsertion"
sign 01 SHA256-RSA-PKCS 9a rsa
ok "removed, the token is absent; reinserted, the same token (serial, keys)"

# --- the state survives the emulator's restart: counter and keys
wrong_pin CKR_PIN_INCORRECT
tries_is 2
card_restart c
tries_is 2
sign 04 ECDSA 9e
tries_is 3
[ "$(stat -c %a "$T/card-c.state")" = 600 ] || fail "state file mode $(stat -c %a "$T/card-c.state")"
ok "restarted emulator: same counter, same keys (state file, mode 0600)"

# --- pcscd restarted: the card reconnects by itself
pcscd_restart
"${P11[@]}" -L 2>&1 | grep -q "serial num *: $CARD_SERIAL\$" ||
    fail "after pcscd's restart: serial $CARD_SERIAL not listed"
sign 04 ECDSA 9e
card_log_has '^# vpcd closed the connection' || fail "the card saw no EOF from pcscd"
ok "pcscd restarted: the card is back by itself"

# --- no key-pair generation through PKCS#11 on PIV (OpenSC 0.23)
gens=$(grep -c '^GENERATE' "$T/card-c.log")
if "${P11[@]}" --login --pin "$CARD_PIN" --keypairgen --key-type EC:prime256v1 \
    --id 05 --label new >"$T/keygen.out" 2>&1; then
	fail "pkcs11-tool --keypairgen worked on the card"
fi
echo "pkcs11-tool --keypairgen: $(grep -m1 -i 'error\|not supported' "$T/keygen.out")"
grep -q 'C_GenerateKeyPair failed: rv = CKR_\|Generate EC key mechanism .* not supported\|mechanism .* not supported' \
    "$T/keygen.out" || fail "keypairgen: $(cat "$T/keygen.out")"
card_log_has '^GENERATE .*lc=[0-9]+ .*sw=9000' || fail "no GENERATE in the log"
[ "$(grep -c '^GENERATE' "$T/card-c.log")" = "$gens" ] ||
    fail "pkcs11-tool --keypairgen sent a GENERATE to the card"
ok "no PKCS#11 key generation (GENERATE only through the provisioning tool)"

# --- no private key bytes from the card: GET DATA only of public objects
# (or PIN-protected ones the card does not hold), GENERATE answered the
# public key only (RSA: 270 bytes in 256 + GET RESPONSE 14; P-256: 70)
awk '$1 == "GET-DATA" { for (i = 2; i <= NF; i++) if ($i ~ /^obj=/) print substr($i, 5) }' \
    "$T/card-c.log" | sort -u >"$T/objs-read"
bad=$(grep -vxE '7E|5FC10[1-57ABC]|5FC10[389]|5FC121' "$T/objs-read" || true)
[ -z "$bad" ] || fail "GET DATA of objects beyond the public ones: $bad"
awk '/^GENERATE/ { if (g) print g; g = $0; n = 0
	for (i = 2; i <= NF; i++) if ($i ~ /^resp=/) n = substr($i, 6); t = n; next }
g && /^GET-RESPONSE/ { for (i = 2; i <= NF; i++) if ($i ~ /^resp=/) t += substr($i, 6); next }
g { print g " total=" t; g = "" }
END { if (g) print g " total=" t }' "$T/card-c.log" >"$T/gen"
grep -q 'alg=07 .* total=270$' "$T/gen" || fail "RSA GENERATE answer: $(cat "$T/gen")"
[ "$(grep -c 'alg=11 .* total=70$' "$T/gen")" = 2 ] || fail "P-256 GENERATE answers: $(cat "$T/gen")"
[ "$(wc -l <"$T/gen")" = 3 ] || fail "GENERATE answers: $(cat "$T/gen")"
# the log never holds the PIN (it has no data bytes at all)
! grep -q "$CARD_PIN\|$(printf %s "$CARD_PIN" | od -An -tx1 | tr -d ' \n')" "$T/card-c.log" ||
    fail "the PIN is in the emulator's log"
ok "the card sent public objects and public keys only"
