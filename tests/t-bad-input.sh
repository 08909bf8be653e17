#!/bin/bash
# Bad input gets a clear message naming file:line:key or the URI and a
# non-zero exit: configuration errors, a bad URI, a token that is not
# there, a PIN file with loose permissions, a wrong PIN (with what the
# token says about the tries left, and never retried by the agent), a PIN
# on its final try (not risked at all), a locked PIN.
. "$top_srcdir/tests/lib.sh"
make_token

start_upstream s

# conf KEYLINE PINLINE [EXTRA]: a config with one identity and tunnel,
# and an [agent] section last allowing the build tree and ${ALLOW[@]}
ALLOW=()
conf() {
	{
		cat <<EOT
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
		agent_section "${ALLOW[@]}"
	} >"$T/bad.conf"
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

# module paths: the real path must be allowed (/usr/lib*, module-allow),
# and neither the module nor any directory above it may be writable by
# anyone but root or the user
mkdir -p -m 700 "$T/a/b/mods" "$T/links"
cp "$FAULT" "$T/a/b/mods/ok.so"
chmod 644 "$T/a/b/mods/ok.so"
M=$T/a/b/mods/ok.so
# (the unit to fix is the module-allow line, so it must be named)
setmod() {
	sed -i "s|^module = .*|module = $1|" "$T/bad.conf"
}
conf "$KEY" "$PIN"
setmod "$M"
expect_check "module $M: not in a directory allowed for modules" \
    "add 'module-allow = $M' to the [agent] section"
# an allowed symlink does not make its target allowed: the real path
# must match
ln -s "$M" "$T/links/mod.so"
ALLOW=("$T/links/*")
conf "$KEY" "$PIN"
setmod "$T/links/mod.so"
expect_check "module $M: not in a directory allowed" "module-allow = $M"

ALLOW=("$T/a/b/mods/*")
conf "$KEY" "$PIN"
setmod "$T/links/mod.so"
out=$("$P11AGENT" check -c "$T/bad.conf" 2>&1) ||
    fail "a symlink to an allowed module, below sticky /tmp: $out"
ok "a symlink to an allowed module works (realpath), below sticky /tmp"
setmod "$M"
"$P11AGENT" check -c "$T/bad.conf" >/dev/null 2>&1 || fail "the module itself"

chmod 666 "$M"
expect_check "module $M: mode 666: it is writable by group or others"
chmod 644 "$M"
chmod 775 "$T/a/b/mods"
expect_check "module $M: its directory $T/a/b/mods is writable by group or others (mode 0775)"
# sticky is fine above the module's directory, not as the directory
chmod 1777 "$T/a/b/mods"
expect_check "module $M: its directory $T/a/b/mods is writable by group or others (mode 1777)"
chmod 700 "$T/a/b/mods"
chmod 777 "$T/a/b"
expect_check "module $M: the directory $T/a/b above it is writable by group or others (mode 0777)"
chmod 770 "$T/a/b"
expect_check "module $M: the directory $T/a/b above it is writable by group or others (mode 0770)"
chmod 1777 "$T/a/b"
out=$("$P11AGENT" check -c "$T/bad.conf" 2>&1) ||
    fail "a root-owned sticky directory two levels above: $out"
ok "a root-owned sticky directory above the module's own is accepted"
chmod 757 "$T/a"
expect_check "module $M: the directory $T/a above it is writable by group or others (mode 0757)"
chmod 700 "$T/a" "$T/a/b"
if [ "$(id -u)" = 0 ]; then
	chown 65534 "$T/a"
	expect_check "module $M: the directory $T/a above it is owned by uid 65534; it must be owned by root or you"
	chown 0 "$T/a"
	chown 65534 "$M"
	expect_check "module $M: owned by uid 65534; it must be owned by root or you"
	chown 0 "$M"
fi
setmod "mods/evil.so"
expect_check "bad.conf:4: [identity corp] module: 'mods/evil.so' must be an absolute path"

# the module is loaded through the descriptor that was checked
# (/proc/self/fd/N: the dynamic linker says so), and the helper maps the
# real file
out=$(LD_DEBUG=files "$P11AGENT" tokens -m "$T/links/mod.so" 2>&1 >/dev/null) ||
    fail "tokens -m a symlink: $out"
grep -Eq 'file=/proc/self/fd/[0-9]+ .*dynamically loaded by' <<<"$out" ||
    fail "the module was not loaded through a descriptor: $(grep -E 'file=.*(ok\.so|mod\.so|/proc/self)' <<<"$out")"
grep -q "file=$M" <<<"$out" && fail "the module was loaded by its path"
ok "loaded through the checked descriptor: $(grep -Eo 'file=/proc/self/fd/[0-9]+' <<<"$out" | head -n 1)"
conf "$KEY" "$PIN"
setmod "$T/links/mod.so"
start_agent "$T/bad.conf" || fail "the agent did not start"
helper=$(pgrep -P "$AGENT_PID" -x p11agent-helper) || fail "no helper"
grep -q " $M\$" "/proc/$helper/maps" ||
    fail "the helper does not map $M: $(grep -E 'ok\.so|mod\.so|/proc/self' "/proc/$helper/maps")"
grep -Eq '/proc/self/fd|links/mod\.so' "/proc/$helper/maps" &&
    fail "the helper maps another name: $(grep -E '/proc/self|mod\.so' "/proc/$helper/maps")"
ok "the helper maps the real path $M"
stop_agent || fail "the agent did not exit cleanly"
ALLOW=()

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
# three identities on the same card with that PIN: still one C_Login
# (their OPENs are all sent at once; the others must not spend a try)
cp "$T/bad.conf" "$T/one.conf"
for k in ec:ec-key ec384:ec384-key; do
	printf '[identity %s]\nkey = pkcs11:token=%s;object=%s;type=private\n' \
	    "${k%%:*}" "$P11TEST_TOKEN" "${k#*:}"
	printf 'pin = file:%s\nmodule = %s\n\n' "$T/wrong.pin" "$FAULT"
	printf '[tunnel %s]\nlisten = tcp:127.0.0.1:0\n' "${k%%:*}"
	printf 'connect = localhost:%s\nidentity = %s\nca = %s\n\n' \
	    "$s_port" "${k%%:*}" "$TOK/ca.pem"
done >>"$T/bad.conf"
: >"$T/calls.log"
expect_check "[identity corp] key: token 'p11agent-test' rejected the PIN" \
    "[identity ec] key: token 'p11agent-test' rejected a PIN already" \
    "[identity ec384] key: token 'p11agent-test' rejected a PIN already"
[ "$(grep -c ' C_Login ' "$T/calls.log")" = 1 ] ||
    fail "C_Login calls for three identities: $(grep -c ' C_Login ' "$T/calls.log"), wanted 1"
ok "three identities on one card, a wrong PIN: exactly one C_Login"
cp "$T/one.conf" "$T/bad.conf"
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
