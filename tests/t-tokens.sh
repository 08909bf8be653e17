#!/bin/bash
# 'p11agent tokens' lists modules, slots, tokens, keys and certificates,
# each with its pkcs11: URI, key type and size, and whether the key is
# extractable; a listed URI works as-is in a config.  A slot without a
# description reads cleanly; a URI that matches no token says which
# modules it searched (and their tokens) and which it ruled out.  Also
# --help and usage errors.
. "$top_srcdir/tests/lib.sh"
make_token

out=$("$P11AGENT" tokens -m "$FAULT" --pin "file:$TOK/pin") ||
    fail "tokens: $out"
echo "$out"
want() {
	grep -Eq -- "$1" <<<"$out" || fail "tokens output lacks: $1"
}
want "^module: .*libp11fault.so"
want "^  slot: slot [0-9]+"
want "^    token: token 'p11agent-test' \(SoftHSM project SoftHSM v2, serial [0-9a-f]+\)"
want "^      pkcs11:.*token=p11agent-test$"
want "^      key: private key, RSA 2048, sensitive, not extractable$"
want "^      key: private key, EC P-256, sensitive, not extractable$"
want "^      key: public key, RSA 2048$"
want "^      cert: certificate /CN=p11agent-test-rsa/O=p11agent tests$"
want "^        pkcs11:.*token=p11agent-test;id=%01;object=rsa-key;type=private$"
want "^        pkcs11:.*token=p11agent-test;id=%02;object=ec-key;type=cert$"
ok "listing with a login"

# without a PIN the private keys stay hidden, the rest shows
out=$("$P11AGENT" tokens -m "$FAULT") || fail "tokens without PIN: $out"
grep -q "private key" <<<"$out" && fail "private keys listed without login"
want "^      key: public key, EC P-256$"
ok "listing without a login"

# a URI from the listing works in a config
uri=$("$P11AGENT" tokens -m "$FAULT" --pin "file:$TOK/pin" |
    grep -E '^        pkcs11:.*object=ec-key;type=private$' | tr -d ' ')
{
	agent_section
	cat <<EOT
[identity listed]
key = $uri
pin = file:$TOK/pin
module = $FAULT

[tunnel t]
listen = tcp:127.0.0.1:0
connect = localhost:1
identity = listed
EOT
} >"$T/agent.conf"
out=$("$P11AGENT" check -c "$T/agent.conf") || fail "check: $out"
grep -q "identity listed: ok: EC key" <<<"$out" || fail "check: $out"
ok "the listed URI works: $(head -n 1 <<<"$out")"

# a certificate from a file instead of the token; a file that belongs to
# another key is refused when the identity opens (the token's own
# certificate for the key has another public key)
sed -i "s|^key = .*|&\ncert = $TOK/client-ec.pem|" "$T/agent.conf"
out=$("$P11AGENT" check -c "$T/agent.conf") || fail "check with cert file: $out"
grep -q "identity listed: ok: EC key, certificate /CN=p11agent-test-ec/" <<<"$out" ||
    fail "check: $out"
sed -i "s|^cert = .*|cert = $TOK/client-ec384.pem|" "$T/agent.conf"
rc=0
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -qF "[identity listed] key: cert = $TOK/client-ec384.pem: its public key is not the key's (the token's certificate for the key has another)" <<<"$out" ||
    fail "a certificate of another key ($rc): $out"
ok "cert = FILE: used, and refused when it belongs to another key"
sed -i '/^cert = /d' "$T/agent.conf"

# through p11-kit's registry (no module given): the softhsm2 package
# registers itself, so an installed SoftHSM without its entry is a broken
# install, not a reason to skip this case
moddir=$(pkg-config --variable=p11_module_configs p11-kit-1 2>/dev/null) ||
    moddir=
reg=${moddir:-/usr/share/p11-kit/modules}/softhsm2.module
if [ -f "$reg" ]; then
	out=$("$P11AGENT" tokens) || fail "tokens via the registry: $out"
	want "^module: .*libsofthsm2.so \(Implementation of PKCS11, SoftHSM\)"
	want "^    token: token 'p11agent-test'"
	sed -i '/^module = /d' "$T/agent.conf"
	out=$("$P11AGENT" check -c "$T/agent.conf") || fail "check: $out"
	grep -q "identity listed: ok: EC key" <<<"$out" || fail "check: $out"
	ok "found through p11-kit's registry: $(head -n 1 <<<"$out")"
elif dpkg -s softhsm2 >/dev/null 2>&1 || [ -e "$SOFTHSM" ]; then
	fail "softhsm2 is installed ($SOFTHSM) but not registered with" \
	    "p11-kit: $reg is missing (reinstall the softhsm2 package)"
else
	echo "skipped: the registry case (softhsm2 is not installed)"
fi

# a slot without a description: no dangling colon, no trailing blank
out=$(P11FAULT_SLOT_DESC= "$P11AGENT" tokens -m "$FAULT") ||
    fail "tokens with empty slot descriptions: $out"
want "^  slot: slot [0-9]+ \(no description\)$"
grep -n ' $' <<<"$out" && fail "a line ends in a blank"
ok "a slot without a description"

# no_match ARGS...: 'p11agent tokens ARGS' fails with "no token matches"
no_match() {
	rc=0
	out=$("$P11AGENT" tokens "$@" 2>&1) || rc=$?
	[ "$rc" = 1 ] && grep -q "no token matches" <<<"$out" ||
	    fail "tokens $* ($rc): $out"
}
# a URI that rules out the only module says so, rather than "0 tokens"
no_match -m "$FAULT" 'pkcs11:?module-name=nonexistent'
grep -Fq "pkcs11:?module-name=nonexistent: no token matches: the URI's module attributes (module-name, module-path, library-*) rule out every module ($FAULT), so none was searched" <<<"$out" ||
    fail "module ruled out: $out"
ok "$out"
# a token that is not there: the module searched and what it had
no_match -m "$FAULT" 'pkcs11:token=nonexistent'
grep -Fq "pkcs11:token=nonexistent: no token matches; searched $FAULT (2 tokens: 1 not initialised); run 'p11agent tokens'" <<<"$out" ||
    fail "no such token: $out"
ok "$out"
# module-name= in the path is an attribute p11-kit does not know, and a
# URI with one matches nothing: say so
no_match -m "$FAULT" 'pkcs11:module-name=nonexistent'
grep -Fq "pkcs11:module-name=nonexistent: no token matches: the URI has an attribute p11-kit does not know, and then it matches nothing (module-name= and module-path= belong in the query, after '?'" <<<"$out" ||
    fail "module-name in the path: $out"
ok "$out"
if [ -f /usr/share/p11-kit/modules/softhsm2.module ]; then
	# through the registry: every module named
	nmods=$(ls /usr/share/p11-kit/modules/*.module | wc -l)
	no_match 'pkcs11:?module-name=nonexistent'
	grep -Eq "rule out every module \(([^,]+, ){$((nmods - 1))}[^,]+\), so none was searched" <<<"$out" &&
	    grep -q "softhsm2" <<<"$out" || fail "registry, module ruled out: $out"
	ok "$out"
	no_match 'pkcs11:module-name=nonexistent'
	grep -q "the URI has an attribute p11-kit does not know" <<<"$out" ||
	    fail "registry, module-name in the path: $out"
	no_match 'pkcs11:token=nonexistent?module-name=softhsm2'
	grep -q "no token matches; searched softhsm2 (2 tokens: 1 not initialised)" <<<"$out" ||
	    fail "registry, no such token: $out"
	[ "$nmods" = 1 ] || grep -q "; not searched, ruled out by the URI's module attributes: [a-z]" <<<"$out" ||
	    fail "registry, the other modules: $out"
	ok "$out"
	# the same words when an identity's key is looked for
	sed "s|^key = .*|key = pkcs11:object=ec-key;type=private?module-name=nonexistent|" \
	    "$T/agent.conf" >"$T/none.conf"
	rc=0
	out=$("$P11AGENT" check -c "$T/none.conf" 2>&1) || rc=$?
	[ "$rc" = 1 ] && grep -q "module-name=nonexistent: no token in the p11-kit registry matches; module " <<<"$out" &&
	    grep -q "module softhsm2: no token matches: the URI's module attributes (module-name, module-path, library-\*) rule out every module (softhsm2), so none was searched" <<<"$out" ||
	    fail "check with a URI that rules out every module ($rc): $out"
	ok "check: $out"
fi

# a module that does not load: a clear message, exit 1
rc=0
out=$("$P11AGENT" tokens -m /nonexistent/module.so 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -q "module /nonexistent/module.so: No such file" <<<"$out" ||
    fail "bad module ($rc): $out"
ok "bad module: $out"

# with two tokens that want a login, a PIN goes to one named token only
softhsm2-util --init-token --free --label second --so-pin soP1n-9mW4z \
    --pin 2ndP1n-5hT8 >/dev/null || fail "a second token"
: >"$P11FAULT_LOG"
rc=0
out=$("$P11AGENT" tokens -m "$FAULT" --pin "file:$TOK/pin" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -q "^p11agent: error: (no URI): 2 tokens match: .*; a PIN is for one token only, so none was sent: name the one you mean with token= or serial= in the URI$" <<<"$out" &&
    grep -q "'pkcs11:[^']*;token=p11agent-test'" <<<"$out" &&
    grep -q "'pkcs11:[^']*;token=second'" <<<"$out" ||
    fail "PIN to two tokens ($rc): $out"
grep -q C_Login "$P11FAULT_LOG" && fail "C_Login although refused"
out=$("$P11AGENT" tokens -m "$FAULT" --pin "file:$TOK/pin" 'pkcs11:token=p11agent-test') ||
    fail "tokens with a URI: $out"
want "^      key: private key, RSA 2048, sensitive, not extractable$"
grep -q "token 'second'" <<<"$out" && fail "the filter let another token through"
[ "$(grep -c ' C_Login ' "$P11FAULT_LOG")" = 1 ] || fail "not exactly one C_Login"
ok "a PIN is sent to one named token only"

# the command line
"$P11AGENT" --help | grep -q "^usage: p11agent run" || fail "--help"
"$P11AGENT" --version | grep -q "^p11agent [0-9]" || fail "--version"
rc=0
"$P11AGENT" frobnicate 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "an unknown command exits $rc, not 2"
rc=0
"$P11AGENT" run --no-such-option 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "an unknown option exits $rc, not 2"
ok "command line"
