#!/bin/bash
# Bad input gets a clear message naming file:line:key or the URI and a
# non-zero exit: configuration errors, a bad URI, a token that is not
# there, a PIN file with loose permissions, a wrong PIN (with what the
# token says about the tries left, and never retried by the agent), a PIN
# on its final try (not risked at all), a locked PIN.
. "$top_srcdir/tests/lib.sh"
make_token

start_upstream s

# conf KEYLINE PINLINE [EXTRA]: a config with one identity and tunnel
conf() {
	cat >"$T/bad.conf" <<EOT
[identity corp]
$1
$2
module = $FAULT

[tunnel api]
listen = tcp:127.0.0.1:0
connect = localhost:$s_port
identity = corp
ca = $TOK/ca.pem
${3:-}
EOT
}

# expect_check WANT...: 'p11agent check' fails and says each WANT
expect_check() {
	local out rc=0 w
	out=$("$P11AGENT" check -c "$T/bad.conf" 2>&1) || rc=$?
	echo "$out" >>"$T/outputs"
	[ "$rc" != 0 ] || fail "check succeeded; wanted: $*"
	for w in "$@"; do
		grep -Fq -- "$w" <<<"$out" || fail "check said: $out
wanted: $w"
	done
	ok "exit $rc: $(head -n 1 <<<"$out")"
}

KEY="key = pkcs11:token=$P11TEST_TOKEN;object=rsa-key;type=private"
PIN="pin = file:$TOK/pin"

# the good case first, so the failures below mean something
conf "$KEY" "$PIN"
out=$("$P11AGENT" check -c "$T/bad.conf") || fail "check of a good config: $out"
grep -q "identity corp: ok: RSA key, certificate .*CN=p11agent-test-rsa.*, test signature verified" <<<"$out" ||
    fail "check output: $out"
ok "a good config passes check"

# configuration errors: file:line and key
conf "$KEY" "$PIN" "colour = blue"
expect_check "bad.conf:11: [tunnel api] colour: unknown key"
conf "$KEY" "$PIN"
sed -i 's/^identity = corp$/identity = nobody/' "$T/bad.conf"
expect_check "bad.conf:9: [tunnel api] identity: no [identity nobody] section"
conf "$KEY" "$PIN"
sed -i '/^connect = /d' "$T/bad.conf"
expect_check "bad.conf:6: [tunnel api]: missing connect (HOST:PORT)"
"$P11AGENT" run -c "$T/bad.conf" 2>"$T/run.err" && fail "run accepted a bad config"
grep -q "bad.conf:6: \[tunnel api\]: missing connect" "$T/run.err" ||
    fail "run said: $(cat "$T/run.err")"
ok "run refuses the same config"
expect_check_missing() {
	local out rc=0
	out=$("$P11AGENT" check -c "$T/does-not-exist.conf" 2>&1) || rc=$?
	[ "$rc" = 1 ] && grep -q "does-not-exist.conf: No such file" <<<"$out" ||
	    fail "missing file: $out"
}
expect_check_missing

# listeners: no network-facing TCP port unless asked; Unix sockets only
# in a private directory
conf "$KEY" "$PIN"
sed -i 's/^listen = .*/listen = tcp:0.0.0.0:0/' "$T/bad.conf"
rc=0
"$P11AGENT" run -c "$T/bad.conf" 2>"$T/run.err" || rc=$?
[ "$rc" = 1 ] && grep -q "bad.conf:7: \[tunnel api\] listen: 0.0.0.0 is not a loopback address.*allow-remote-listen = yes" "$T/run.err" ||
    fail "non-loopback listen ($rc): $(cat "$T/run.err")"
ok "non-loopback listen refused: $(grep listen "$T/run.err")"
mkdir -m 755 "$T/public"
sed -i "s|^listen = .*|listen = unix:$T/public/api.sock|" "$T/bad.conf"
rc=0
"$P11AGENT" run -c "$T/bad.conf" 2>"$T/run.err" || rc=$?
[ "$rc" = 1 ] && grep -q "listen: $T/public: the directory must be yours with mode 0700" "$T/run.err" ||
    fail "public socket directory ($rc): $(cat "$T/run.err")"
[ -e "$T/public/api.sock" ] && fail "a socket was created in a public directory"
ok "socket in a public directory refused"

# a URI p11-kit cannot parse
conf "key = pkcs11:token=%zz;type=private" "$PIN"
expect_check "bad.conf:2: [identity corp] key: pkcs11:token=%zz;type=private:" \
    "URI encoding invalid"
# a token that is not there
conf "key = pkcs11:token=no-such-card;type=private" "$PIN"
expect_check "pkcs11:token=no-such-card;type=private: no token matches" \
    "p11agent tokens"
# a key that is not there
conf "key = pkcs11:token=$P11TEST_TOKEN;object=no-such-key;type=private" "$PIN"
# (the token shows certificates and public keys, none of them this key)
expect_check "object=no-such-key;type=private: no token matches; searched $FAULT (2 tokens: 1 not initialised, 1 showing no certificate or public key with the URI's id/object)"

# a module others could replace is not loaded (checked after realpath)
mkdir -p "$T/mods"
cp "$FAULT" "$T/mods/evil.so"
chmod 666 "$T/mods/evil.so"
ln -s "$T/mods/evil.so" "$T/mods/link.so"
conf "$KEY" "$PIN"
sed -i "s|^module = .*|module = $T/mods/link.so|" "$T/bad.conf"
expect_check "module $T/mods/evil.so: owned by uid 0 with mode 666; it must be owned by root or you and writable by no one else"
chmod 644 "$T/mods/evil.so"
chmod 777 "$T/mods"
expect_check "module $T/mods/evil.so: its directory $T/mods is writable by others"
sed -i "s|^module = .*|module = mods/evil.so|" "$T/bad.conf"
expect_check "bad.conf:4: [identity corp] module: 'mods/evil.so' must be an absolute path"

# PIN file readable by others: refused before the token sees it
cp "$TOK/pin" "$T/loose.pin"
chmod 644 "$T/loose.pin"
conf "$KEY" "pin = file:$T/loose.pin"
: >"$T/calls.log"
expect_check "PIN file $T/loose.pin: mode 644" "chmod 600 $T/loose.pin"
grep -q C_Login "$T/calls.log" && fail "C_Login with a loose PIN file"

# a wrong PIN: one C_Login, no retry, the tries left as the token says
printf 'wrongpin7f3a\n' >"$T/wrong.pin"
chmod 600 "$T/wrong.pin"
conf "$KEY" "pin = file:$T/wrong.pin"
: >"$T/calls.log"
# (SoftHSM itself sets CKF_USER_PIN_COUNT_LOW after a wrong PIN)
expect_check "token 'p11agent-test' rejected the PIN from file:$T/wrong.pin" \
    "(the token reports few tries left)" "does not retry"
[ "$(grep -c ' C_Login ' "$T/calls.log")" = 1 ] ||
    fail "C_Login calls: $(grep -c ' C_Login ' "$T/calls.log"), wanted 1"
ok "exactly one C_Login"
P11FAULT_TOKEN_FLAGS=0x10000 expect_check "the token reports few tries left"

# the token says one try is left: the agent does not risk it
: >"$T/calls.log"
P11FAULT_TOKEN_FLAGS=0x20000 expect_check "only one PIN try is left"
grep -q C_Login "$T/calls.log" && fail "C_Login on the final try"
ok "no C_Login on the final try"
P11FAULT_TOKEN_FLAGS=0x40000 expect_check "the user PIN is locked"

# an environment variable that is not set
conf "$KEY" "pin = env:P11AGENT_TEST_NO_SUCH_VAR"
expect_check "env:P11AGENT_TEST_NO_SUCH_VAR: the environment variable is not set"

# the wrong PIN never reached any message
grep -q wrongpin7f3a "$T/outputs" "$T/run.err" && fail "a PIN was printed"
ok "no PIN in any message"
