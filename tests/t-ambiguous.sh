#!/bin/bash
# A PIN never goes to the wrong card.  With two tokens that both show an
# "ec-key", a key URI without token= or serial= is refused before any
# login, and the message names both tokens' URIs; a URI that only one
# token shows public objects for selects that token (one C_Login).
# 'p11agent tokens --pin' and the helper's PROBE follow the same rule;
# MODULES initialises no module.
. "$top_srcdir/tests/lib.sh"
make_token

# a second token in the same SoftHSM store, with an EC key pair of the
# same label (pkcs11-tool leaves its public key object readable)
softhsm2-util --init-token --free --label second --so-pin soP1n-9mW4z \
    --pin 2ndP1n-5hT8 >/dev/null || fail "a second token"
pkcs11-tool --module "$SOFTHSM" --token-label second --login --pin 2ndP1n-5hT8 \
    --keypairgen --key-type EC:prime256v1 --id 02 --label ec-key \
    --usage-sign >/dev/null 2>&1 || fail "a key pair on the second token"

# the two tokens' URIs as 'p11agent tokens' prints them
out=$("$P11AGENT" tokens -m "$FAULT") || fail "tokens: $out"
uri_test=$(grep -E "^      pkcs11:.*;token=$P11TEST_TOKEN$" <<<"$out" | tr -d ' ')
uri_second=$(grep -E '^      pkcs11:.*;token=second$' <<<"$out" | tr -d ' ')
[ -n "$uri_test" ] && [ -n "$uri_second" ] || fail "token URIs: $out"
grep -q "public key, EC P-256" <<<"$(grep -A20 "token 'second'" <<<"$out")" ||
    fail "the second token shows no public key: $out"

(umask 077 && echo 2ndP1n-5hT8 >"$T/second.pin")

# conf KEYURI [PINFILE]: one identity, checked by 'p11agent check'
conf() {
	agent_section >"$T/agent.conf"
	cat >>"$T/agent.conf" <<EOT
[identity corp]
key = $1
pin = file:${2:-$TOK/pin}
module = $FAULT

[tunnel t]
listen = tcp:127.0.0.1:0
connect = localhost:1
identity = corp
EOT
}

# both tokens show an ec-key: refused, no login anywhere
conf "pkcs11:object=ec-key;type=private"
: >"$P11FAULT_LOG"
rc=0
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "check of an ambiguous URI exited $rc: $out"
grep -Fq "pkcs11:object=ec-key;type=private: 2 tokens match: " <<<"$out" &&
    grep -Fq "'$uri_test'" <<<"$out" && grep -Fq "'$uri_second'" <<<"$out" &&
    grep -Fq "name the one you mean with token= or serial= in the URI" <<<"$out" ||
    fail "the message does not name both tokens: $out"
grep -q ' C_Login ' "$P11FAULT_LOG" && fail "C_Login although ambiguous"
grep -q ' C_Initialize ' "$P11FAULT_LOG" || fail "the fault module logged nothing"
ok "ambiguous key URI refused with no C_Login: $out"

# naming the token settles it: its PIN logs in there (the key is found;
# the second token has no certificate for it)
conf "pkcs11:token=second;object=ec-key;type=private" "$T/second.pin"
: >"$P11FAULT_LOG"
rc=0
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -q "no certificate on the token has the key's id" <<<"$out" ||
    fail "check on the named token ($rc): $out"
[ "$(grep -c ' C_Login 0x0 ' "$P11FAULT_LOG")" = 1 ] ||
    fail "not one successful C_Login: $(grep C_Login "$P11FAULT_LOG")"
ok "with token= the PIN goes to the named token"

# only the test token shows public objects called rsa-key
conf "pkcs11:object=rsa-key;type=private"
: >"$P11FAULT_LOG"
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || fail "check: $out"
grep -q "identity corp: ok: RSA key" <<<"$out" || fail "check: $out"
[ "$(grep -c ' C_Login ' "$P11FAULT_LOG")" = 1 ] ||
    fail "C_Login calls: $(grep -c ' C_Login ' "$P11FAULT_LOG"), wanted 1"
ok "a URI that one token's public objects match: $(head -n 1 <<<"$out")"

# the same rule for 'p11agent tokens --pin'
: >"$P11FAULT_LOG"
rc=0
out=$("$P11AGENT" tokens -m "$FAULT" --pin "file:$TOK/pin" 'pkcs11:object=ec-key' 2>&1) ||
    rc=$?
[ "$rc" = 1 ] && grep -Fq "pkcs11:object=ec-key: 2 tokens match: " <<<"$out" &&
    grep -Fq "'$uri_test'" <<<"$out" && grep -Fq "'$uri_second'" <<<"$out" ||
    fail "tokens --pin with an ambiguous URI ($rc): $out"
grep -q ' C_Login ' "$P11FAULT_LOG" && fail "C_Login although ambiguous"
ok "tokens --pin refuses the same way"
: >"$P11FAULT_LOG"
out=$("$P11AGENT" tokens -m "$FAULT" --pin "file:$TOK/pin" 'pkcs11:object=rsa-key') ||
    fail "tokens --pin rsa-key: $out"
[ "$(grep -c ' C_Login ' "$P11FAULT_LOG")" = 1 ] || fail "not one C_Login"
# both tokens are listed, but only the test token's private keys show
grep -q "token 'second'" <<<"$out" || fail "the second token is not listed: $out"
[ "$(grep -c 'key: private key, EC P-256' <<<"$out")" = 1 ] ||
    fail "private keys of more than one token: $out"
ok "tokens --pin logs in to the one token selected"

# PROBE (the agent's registry mode asks each module's helper this way)
# gives the same candidates, without a login
PROBE="$top_builddir/tests/engine-tests probe $FAULT"
: >"$P11FAULT_LOG"
out=$($PROBE 'pkcs11:object=ec-key;type=private') || fail "probe: $out"
[ "$(head -n 1 <<<"$out")" = "candidates: 2" ] &&
    grep -Fq "$uri_test	token '$P11TEST_TOKEN' (SoftHSM project SoftHSM v2, serial " <<<"$out" &&
    grep -Fq "$uri_second	token 'second' (" <<<"$out" ||
    fail "probe of an ambiguous URI: $out"
out=$($PROBE 'pkcs11:object=rsa-key;type=private') || fail "probe: $out"
[ "$out" = "candidates: 1
$uri_test	$(grep -o "token '$P11TEST_TOKEN' (.*)" <<<"$("$P11AGENT" tokens -m "$FAULT")")" ] ||
    fail "probe of rsa-key: $out"
rc=0
out=$($PROBE 'pkcs11:object=no-such-key' 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -q "error: pkcs11:object=no-such-key: no token matches" <<<"$out" ||
    fail "probe of no-such-key ($rc): $out"
grep -q ' C_Login ' "$P11FAULT_LOG" && fail "C_Login during a probe"
rc=0
out=$($PROBE 'pkcs11:token=%zz' 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -Fq "error: pkcs11:token=%zz: URI encoding invalid" <<<"$out" ||
    fail "probe of a bad URI ($rc): $out"
ok "PROBE: two candidates, one, none, a bad URI; no C_Login"

# MODULES lists what the helper loaded and initialises nothing
: >"$P11FAULT_LOG"
out=$("$top_builddir/tests/engine-tests" modules "$FAULT") || fail "modules: $out"
[ "$out" = "modules: 1
-	$FAULT" ] || fail "modules: $out"
[ -s "$P11FAULT_LOG" ] && fail "MODULES called the module: $(cat "$P11FAULT_LOG")"
if [ -f /usr/share/p11-kit/modules/softhsm2.module ]; then
	out=$("$top_builddir/tests/engine-tests" modules registry) ||
	    fail "modules of the registry: $out"
	grep -q "^softhsm2	/.*libsofthsm2.so$" <<<"$out" ||
	    fail "modules of the registry: $out"
	ok "MODULES of the registry: $(tr '\n\t' '; ' <<<"$out")"
fi
ok "MODULES initialises no module"
