#!/bin/bash
# Administrator policies (issue 10, scope 1): a destination outside a
# policy's hosts, and a user configuration that widens a policy (another
# host, another user, a lower TLS floor, a forbidden PIN source, a longer
# pin-cache), are refused by p11agent check and p11agent run, one message
# per violation naming the configuration's file:line and the policy's;
# two policies binding one identity both apply; certificate selectors
# bind by the opened certificate; an identity no policy binds runs as
# before; bad policy files and directories are fatal with their message.
. "$top_srcdir/tests/lib.sh"

make_token
P=$T/policies.d
mkdir "$P"
me=$(id -u)
other=$(id -u nobody) || skip "no user nobody"

# conf FILE [TUNNEL-LINE...]: identity ec (extra identity lines in
# $IDLINES, one per line) and tunnel t to localhost:4443
conf() {
	local f=$1
	shift
	{
		agent_section
		identity ec 02
		[ -z "${IDLINES:-}" ] || printf '%s\n\n' "$IDLINES"
		tunnel t "localhost:4443" ec "$@"
	} >"$f"
}
# line FILE REGEX: the number of the first line matching
line() {
	grep -n -m1 -E -- "$2" "$1" | cut -d: -f1
}
check_ok() {
	out=$("$P11AGENT" check -c "$1" --policies "$P" 2>&1) ||
	    fail "check $1 refused: $out"
}
# check_fails FILE FIXED-STRING...: exit 1 and each string in the output
check_fails() {
	local f=$1 s rc=0
	shift
	out=$("$P11AGENT" check -c "$f" --policies "$P" 2>&1) || rc=$?
	[ "$rc" = 1 ] || fail "check $f: exit $rc, wanted 1: $out"
	for s in "$@"; do
		grep -qF -- "$s" <<<"$out" || fail "check $f: no '$s' in: $out"
	done
}

cat >"$P/10-bank.policy" <<EOT
# the test token's keys
[policy bank]
token-label = $P11TEST_TOKEN
connect = localhost:4443, *.bank.example:443
allow-users = $me
tls-min = 1.3
pin-cache-max = 60
EOT
pol=$P/10-bank.policy
conf "$T/ok.conf" "allow-users = $me" "tls-min = 1.3"
check_ok "$T/ok.conf"
grep -q "identity ec: bound by policy bank ($pol:2)" <<<"$out" ||
    fail "check did not say which policy binds the identity: $out"
ok "a configuration within the policy passes check: $(grep -m1 'bound by' <<<"$out")"

# ---- each widening, one at a time
C=$T/w.conf
cat >"$C" <<EOT
$(agent_section)
$(identity ec 02)

[tunnel t]
listen = tcp:127.0.0.1:0
connect = evil.example:443
identity = ec
ca = $TOK/ca.pem
EOT
check_fails "$C" "$C:$(line "$C" '^connect'): [tunnel t] connect = evil.example:443 is outside policy bank ($pol:4: connect = localhost:4443, *.bank.example:443)" \
    "1 policy violation"
ok "a destination outside the policy's hosts: $(grep -m1 outside <<<"$out")"

conf "$C" "connect-timeout = 5"
sed -i "s|^connect = .*|connect = localhost:4444|" "$C"
check_fails "$C" "$C:$(line "$C" '^connect'): [tunnel t] connect = localhost:4444 is outside policy bank"
ok "the right host on another port is outside too"

conf "$C" "allow-users = $other"
check_fails "$C" "$C:$(line "$C" '^allow-users'): [tunnel t] allow-users: uid $other is outside policy bank ($pol:5: allow-users = $me)"
ok "another user: $(grep -m1 outside <<<"$out")"

conf "$C" "tls-min = 1.2"
check_fails "$C" "$C:$(line "$C" '^tls-min'): [tunnel t] tls-min = 1.2 is below the floor of policy bank ($pol:6: tls-min = 1.3)"
ok "a lower TLS floor: $(grep -m1 'below' <<<"$out")"

IDLINES="pin-cache = 600" conf "$C"
check_fails "$C" "$C:$(line "$C" '^pin-cache'): [identity ec] pin-cache = 600 is longer than the pin-cache-max of policy bank ($pol:7: pin-cache-max = 60)"
ok "a longer pin-cache: $(grep -m1 'longer' <<<"$out")"

# ---- a second policy binding the same identity: both apply
cat >"$P/20-nofile.policy" <<EOT
[policy nofile]
key = pkcs11:*token=$P11TEST_TOKEN;*
pin-sources = pinentry, env, fd
EOT
conf "$C" "allow-users = $me"
check_fails "$C" "$C:$(line "$C" '^pin ='): [identity ec] pin = file:... is a PIN source forbidden by policy nofile ($P/20-nofile.policy:3: pin-sources = pinentry, env, fd)"
grep -q "bound by policy bank" <<<"$out" && grep -q "bound by policy nofile" <<<"$out" ||
    fail "both policies should bind the identity: $out"
ok "file: where a second policy forbids it: $(grep -m1 'forbidden' <<<"$out")"

# several violations: one message each
IDLINES="pin-cache = 600" conf "$C" "tls-min = 1.2" "allow-users = $other"
check_fails "$C" "[tunnel t] tls-min = 1.2" "[tunnel t] allow-users: uid $other" \
    "[identity ec] pin-cache = 600" "[identity ec] pin = file:" "4 policy violations"
ok "four violations, four messages"
rm "$P/20-nofile.policy"

# ---- where the configuration says nothing, the policy's value applies:
# the tunnel has no ca =, the policy's CA verifies the upstream (the
# system store would not), tls-min comes from the policy
start_upstream s
cat >"$P/10-bank.policy" <<EOT
[policy bank]
token-label = $P11TEST_TOKEN
connect = localhost:$s_port
ca = $TOK/ca.pem
tls-min = 1.3
EOT
cat >"$T/fill.conf" <<EOT
$(agent_section)
$(identity ec 02)

[tunnel t]
listen = tcp:127.0.0.1:0
connect = localhost:$s_port
identity = ec
EOT
AGENT_ARGS=(--policies "$P")
start_agent "$T/fill.conf" || fail "the agent did not start under the policy"
a=$(listen_addr t tcp) || fail "no listener"
log_mark
out=$("$CLIENT" "$a" roundtrip --bytes 1000 --expect-subject CN=p11agent-test-ec --timeout 20) ||
    fail "not served with the policy's CA: $out"
wait_log "conn [0-9]+ \(t\): closed.*upstream localhost:$s_port, TLSv1.3 full handshake" ||
    fail "no TLS 1.3 connection line"
ok "the policy's ca and tls-min are filled in: served over TLSv1.3 with the policy's CA"

# ---- reload: a configuration the policy forbids changes nothing
sed -i "s|^connect = .*|connect = elsewhere.example:443|" "$T/fill.conf"
log_mark
kill -HUP "$AGENT_PID"
wait_log "reload: .*1 policy violation \(above\); the running configuration stays" ||
    fail "the reload was not refused"
log_since_has "fill.conf:[0-9]+: \[tunnel t\] connect = elsewhere.example:443 is outside policy bank \($P/10-bank.policy:3: connect = localhost:$s_port\)" ||
    fail "the reload's refusal does not name both lines"
ok "a reload to a forbidden destination is refused naming both files"
# a policy that tightens on reload applies to the unchanged tunnel too
sed -i "s|^connect = .*|connect = localhost:$s_port|" "$T/fill.conf"
log_mark
kill -HUP "$AGENT_PID"
wait_log "reload: .*tunnels: 0 new, 0 changed, 1 unchanged" || fail "the plain reload failed"
echo "connect = other.example:443" >>"$P/10-bank.policy"
sed -i "s|^connect = localhost.*|connect = nothing.example:1|" "$P/10-bank.policy"
log_mark
kill -HUP "$AGENT_PID"
wait_log "reload: .*policy violation" || fail "a tightened policy was not applied at reload"
ok "a policy tightened under a running agent: the reload is refused"
stop_agent || fail "the agent did not exit cleanly"

# ---- run: refused at start-up naming both files and lines
cat >"$P/10-bank.policy" <<EOT
[policy bank]
token-label = $P11TEST_TOKEN
connect = localhost:$s_port
EOT
conf "$C"
sed -i "s|^connect = .*|connect = evil.example:443|" "$C"
rc=0
out=$("$P11AGENT" run -c "$C" --policies "$P" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "run: exit $rc, wanted 1: $out"
grep -qF "$C:$(line "$C" '^connect'): [tunnel t] connect = evil.example:443 is outside policy bank ($P/10-bank.policy:3: connect = localhost:$s_port)" <<<"$out" ||
    fail "run: no message naming both lines: $out"
grep -qF "p11agent: warning: policies from $P (--policies), not from " <<<"$out" ||
    fail "run --policies: no warning naming both directories: $out"
ok "run refuses it at start-up: $(grep -m1 outside <<<"$out")"
AGENT_ARGS=()

# ---- certificate selectors bind by the certificate the identity opened;
# a policy that binds nothing changes nothing
cert=$TOK/client-ec.pem
[ -f "$cert" ] || cert=$(ls "$TOK"/client-ec*.pem | head -n 1)
fp=$(openssl x509 -in "$cert" -noout -fingerprint -sha256 | sed 's/.*=//')
for sel in "cert-sha256 = $fp" "cert-subject = *CN=p11agent-test-ec*" \
    "cert-issuer = CN=p11agent test CA" "token-label = ${P11TEST_TOKEN:0:3}*" \
    "key = pkcs11:type=private;token=${P11TEST_TOKEN:0:3}*" "key = pkcs11:id=%02"; do
	printf '[policy c]\n%s\nconnect = localhost:1\n' "$sel" >"$P/10-bank.policy"
	check_fails "$C" "[tunnel t] connect = evil.example:443 is outside policy c"
	ok "$sel binds the identity"
done
# token selectors see the token the key was found on, also when the key
# URI does not name it (the helper says which token it opened)
serial=$("$P11AGENT" tokens --module "$FAULT" 2>/dev/null |
    sed -n "s/.*token '$P11TEST_TOKEN' (.*serial \([0-9a-f]*\)).*/\1/p" | head -n 1)
[ -n "$serial" ] || fail "no serial of the test token from p11agent tokens"
sed 's|^key = .*|key = pkcs11:id=%02;type=private|' "$C" >"$T/nolabel.conf"
grep -q '^key = pkcs11:id=%02;type=private$' "$T/nolabel.conf" ||
    fail "no key line to rewrite in $C"
for sel in "token-label = $P11TEST_TOKEN" "token-serial = $serial"; do
	printf '[policy c]\n%s\nconnect = localhost:1\n' "$sel" >"$P/10-bank.policy"
	check_fails "$T/nolabel.conf" "[tunnel t] connect = evil.example:443 is outside policy c"
	ok "$sel binds an identity whose key URI names no token"
done
printf '[policy c]\ncert-subject = *CN=someone-else*\nconnect = localhost:1\n' >"$P/10-bank.policy"
printf '[policy e]\nkey = pkcs11:id=%%01;token=%s\nconnect = localhost:1\n' "$P11TEST_TOKEN" >"$P/30-e.policy"
printf '[policy d]\ntoken-label = other-token\nallow-users = %s\n' "$other" >"$P/20-d.policy"
check_ok "$C"
grep -q "bound by" <<<"$out" && fail "a policy bound an identity it does not select: $out"
grep -qF "identity ec: no policy binds it (3 read)" <<<"$out" ||
    fail "check does not say that no policy binds the identity: $out"
ok "policies whose selectors do not match bind nothing: the configuration runs as without policies"
rm "$P/20-d.policy" "$P/30-e.policy"

# ---- an identity does not escape its policy by what its configuration
# says: a second certificate for the key (cert = FILE), a duplicate
# token= in the key URI, or none at all
printf '[policy c]\ncert-sha256 = %s\nconnect = localhost:1\n' "$fp" >"$P/10-bank.policy"
openssl x509 -in "$cert" -pubkey -noout >"$T/pub.pem"
printf 'basicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n' >"$T/second.ext"
openssl x509 -new -force_pubkey "$T/pub.pem" -subj "/CN=second cert" \
    -CA "$TOK/ca.pem" -CAkey "$TOK/ca.key" -set_serial 0x1234 -days 30 \
    -sha256 -extfile "$T/second.ext" -out "$T/second.pem" 2>"$T/second.err" ||
    fail "the second certificate: $(cat "$T/second.err")"
awk -v c="$T/second.pem" '{ print } /^key = / { print "cert = " c }' "$C" >"$T/second.conf"
grep -q "^cert = $T/second.pem" "$T/second.conf" || fail "no cert line in $T/second.conf"
check_fails "$T/second.conf" "[tunnel t] connect = evil.example:443 is outside policy c"
ok "cert = FILE with a second certificate for the key: still bound by the token certificate's policy"
# a name with UTF-8 in it is matched as written (not RFC 2253's \\C3\\B6)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/koeln.key" -utf8 -subj "/CN=client/O=Sparkasse Köln" \
    -out "$T/koeln.csr" 2>"$T/second.err" &&
    openssl x509 -req -in "$T/koeln.csr" -force_pubkey "$T/pub.pem" \
    -CA "$TOK/ca.pem" -CAkey "$TOK/ca.key" -set_serial 0x1235 -days 30 \
    -sha256 -extfile "$T/second.ext" -out "$T/koeln.pem" 2>>"$T/second.err" ||
    fail "the UTF-8 certificate: $(cat "$T/second.err")"
openssl x509 -in "$T/koeln.pem" -noout -subject -nameopt RFC2253,-esc_msb | grep -q "O=Sparkasse Köln" ||
    fail "the UTF-8 certificate's subject: $(openssl x509 -in "$T/koeln.pem" -noout -subject)"
awk -v c="$T/koeln.pem" '{ print } /^key = / { print "cert = " c }' "$C" >"$T/koeln.conf"
printf '[policy c]\ncert-subject = *O=Sparkasse Köln*\nconnect = localhost:1\n' >"$P/10-bank.policy"
check_fails "$T/koeln.conf" "[tunnel t] connect = evil.example:443 is outside policy c"
ok "cert-subject with UTF-8 (O=Sparkasse Köln) binds"
printf '[policy c]\ncert-sha256 = %s\nconnect = localhost:1\n' "$fp" >"$P/10-bank.policy"
# a certificate for another key is refused at open
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/other.key" 2>/dev/null
openssl req -new -x509 -key "$T/other.key" -subj "/CN=other key" -days 30 \
    -out "$T/otherkey.pem" 2>/dev/null || fail "no certificate for another key"
awk -v c="$T/otherkey.pem" '{ print } /^key = / { print "cert = " c }' "$C" >"$T/otherkey.conf"
rm -f "$P"/*.policy
rc=0
out=$("$P11AGENT" check -c "$T/otherkey.conf" --policies "$P" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -qF "cert = $T/otherkey.pem: its public key is not the key's (the token's certificate for the key has another)" <<<"$out" ||
    fail "a certificate for another key: exit $rc: $out"
ok "cert = FILE for another key: refused at open"
printf '[policy k]\nkey = pkcs11:token=%s\nconnect = localhost:1\n' "$P11TEST_TOKEN" >"$P/10-bank.policy"
sed "s|^key = pkcs11:token=|key = pkcs11:token=decoy;token=|" "$C" >"$T/dup.conf"
grep -q "^key = pkcs11:token=decoy;token=" "$T/dup.conf" || fail "no key line to rewrite"
check_fails "$T/dup.conf" "[tunnel t] connect = evil.example:443 is outside policy k"
sed "s|^key = .*|key = pkcs11:id=%02;type=private|" "$C" >"$T/notok.conf"
check_fails "$T/notok.conf" "[tunnel t] connect = evil.example:443 is outside policy k"
ok "key = pkcs11:token=...: bound by the token the key is on (a duplicate token= or none in the URI)"
rm -f "$P"/*.policy

# ---- a second certificate for the key written to the token (another
# CA, the same key, the same CKA_ID): the identity stays bound, whether
# its cert = names a file, that object, or nothing (the token gives
# either)
if command -v pkcs11-tool >/dev/null; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -keyout "$T/ca2.key" -out "$T/ca2.pem" -subj "/CN=my own CA" -days 30 2>/dev/null &&
	    openssl req -new -key "$T/ca2.key" -subj "/CN=p11agent-test-ec/O=p11agent tests" \
	    -out "$T/d.csr" 2>/dev/null &&
	    openssl x509 -req -in "$T/d.csr" -CA "$T/ca2.pem" -CAkey "$T/ca2.key" \
	    -force_pubkey "$T/pub.pem" -set_serial 77 -days 30 -out "$T/mine.pem" 2>/dev/null &&
	    openssl x509 -in "$T/mine.pem" -outform DER -out "$T/mine.der" ||
	    fail "a certificate of another CA for the key"
	iss=$(openssl x509 -in "$cert" -noout -issuer -nameopt RFC2253 | sed 's/^issuer=//')
	printf '[policy bank]\ncert-issuer = %s\nconnect = localhost:1\n' "$iss" >"$P/10-bank.policy"
	pkcs11-tool --module "$SOFTHSM" --token-label "$P11TEST_TOKEN" --login \
	    --pin "$(cat "$TOK/pin")" --write-object "$T/mine.der" --type cert \
	    --id 02 --label mine >"$T/write.out" 2>&1 || fail "pkcs11-tool: $(cat "$T/write.out")"
	awk -v c="$T/mine.pem" '{ print } /^key = / { print "cert = " c }' "$C" >"$T/mine-file.conf"
	awk -v c="pkcs11:token=$P11TEST_TOKEN;object=mine;type=cert" '{ print } /^key = / { print "cert = " c }' "$C" >"$T/mine-uri.conf"
	for f in mine-file mine-uri w; do
		check_fails "$T/$f.conf" "[tunnel t] connect = evil.example:443 is outside policy bank"
	done
	ok "a second certificate for the key on the token: still bound (cert = FILE, cert = its URI, no cert =)"
	rm -f "$P"/*.policy
fi

# ---- bad policy files and directories
bad() {
	local name=$1 text=$2 want=$3
	rm -f "$P"/*.policy
	printf '%b' "$text" >"$P/$name"
	check_fails "$C" "$want"
	ok "bad policy: $(grep -m1 -F -- "$want" <<<"$out")"
}
bad s.policy '[policy x\nkey = pkcs11:*\n' "$P/s.policy:1: syntax error"
bad k.policy '[policy x]\nkey = pkcs11:*\nallow-everything = yes\n' \
    "$P/k.policy:3: [policy x] allow-everything: unknown key"
bad p.policy '[policy x]\nkey = pkcs11:[a-\ntls-min = 1.3\n' \
    "$P/p.policy:2: [policy x] key: 'pkcs11:[a-': '[' opens a character class"
bad h.policy '[policy x]\nkey = pkcs11:*\nconnect = bad_host!:443\n' \
    "$P/h.policy:3: [policy x] connect: 'bad_host!:443': a host pattern has"
bad c.policy '[policy x]\nkey = pkcs11:*\nconnect = 10.1.2.3/16:443\n' \
    "$P/c.policy:3: [policy x] connect: '10.1.2.3/16': bits are set past the /16 prefix"
bad c6.policy '[policy x]\nkey = pkcs11:*\nconnect = [2001:db8::/200]:443\n' \
    "$P/c6.policy:3: [policy x] connect: '2001:db8::/200': the prefix length must be 0 to 128"
bad n.policy '[policy x]\nconnect = a.example:443\n' "$P/n.policy:1: [policy x]: no selector"
rm -f "$P"/*.policy
ln -s "$T/nowhere" "$P/gone.policy"
check_fails "$C" "$P/gone.policy: No such file or directory"
ok "an unreadable policy file: $(grep -m1 gone <<<"$out")"
rm "$P/gone.policy"
mkdir "$P/dir.policy"
check_fails "$C" "$P/dir.policy: not a regular file"
rmdir "$P/dir.policy"
rc=0
out=$("$P11AGENT" check -c "$C" --policies /etc/passwd 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -qF "policies: /etc/passwd: Not a directory" <<<"$out" ||
    fail "--policies FILE: exit $rc: $out"
rc=0
out=$("$P11AGENT" check -c "$C" --policies "$T/missing" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -qF "policies: $T/missing: No such file or directory" <<<"$out" ||
    fail "--policies MISSING: exit $rc: $out"
ok "--policies naming a file or nothing: $(grep -m1 policies: <<<"$out")"
# an empty directory: no policy, today's behaviour
check_ok "$C"
ok "an empty policy directory: no policy"
chmod 0777 "$P"
rc=0
out=$("$P11AGENT" check -c "$C" --policies "$P" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -qF "$P: writable by every user (mode 0777): not read (chmod go-w)" <<<"$out" ||
    fail "a world-writable policy directory: exit $rc: $out"
chmod 0755 "$P"
ok "a policy directory every user may write to: refused: $(grep -m1 writable <<<"$out")"
rc=0
out=$("$P11AGENT" tokens --policies "$P" 2>&1) || rc=$?
[ "$rc" = 2 ] || fail "--policies on tokens: exit $rc: $out"
