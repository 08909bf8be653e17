#!/bin/bash
# The shipped policies (issue 10, scope 3): every file in policies/ parses
# (p11agent check --policies), the active default.policy changes nothing
# for a sane configuration, and each example, with this machine's values
# put in (token, CA, destination, program), lets a configuration within
# it pass check and refuses one that widens it, naming both lines; the
# banking example also runs: its browser is served over TLS 1.3 with the
# pinned CA, another program is refused.
. "$top_srcdir/tests/lib.sh"

make_token
start_upstream s
me=$(id -u)
STUB=$top_srcdir/tests/pinentry-stub
# the stub is the dialog; the helper wants a display to start one
export DISPLAY=:99
client=$(realpath "$CLIENT")
P=$T/policies.d
mkdir "$P"
ca_pin=$(openssl x509 -in "$TOK/ca.pem" -pubkey -noout | openssl pkey -pubin -outform DER |
    openssl dgst -sha256 -binary | base64)

# conf FILE CONNECT [IDENTITY-SED [TUNNEL-LINE...]]
conf() {
	local f=$1 connect=$2 idsed=${3:-}
	shift 3 2>/dev/null || shift $#
	{
		agent_section
		identity ec 02 | sed "${idsed:-p;d}"
		printf '[tunnel t]\nlisten = tcp:127.0.0.1:0\nlisten = unix:%s/sock/t.sock\nconnect = %s\nidentity = ec\n' \
		    "$T" "$connect"
		[ $# = 0 ] || printf '%s\n' "$@"
	} >"$f"
}
line() {
	grep -n -m1 -E -- "$2" "$1" | cut -d: -f1
}
check_ok() {
	out=$("$P11AGENT" check -c "$1" --policies "$2" 2>&1) ||
	    fail "check $1 with $2 refused: $out"
}
check_fails() {
	local f=$1 dir=$2 s rc=0
	shift 2
	out=$("$P11AGENT" check -c "$f" --policies "$dir" 2>&1) || rc=$?
	[ "$rc" = 1 ] || fail "check $f: exit $rc, wanted 1: $out"
	for s in "$@"; do
		grep -qF -- "$s" <<<"$out" || fail "check $f: no '$s' in: $out"
	done
}
# example NAME SED: policies/NAME.policy with this machine's values, alone
# in $P
example() {
	rm -f "$P"/*.policy
	sed "$2" "$top_srcdir/policies/$1.policy" >"$P/$1.policy"
	cmp -s "$P/$1.policy" "$top_srcdir/policies/$1.policy" &&
	    fail "the substitutions changed nothing in $1.policy"
}
pinentry_sed="s|^pin = .*|pin = pinentry\\
pinentry-program = $STUB|"

# ---- as shipped: they all parse; none binds the test token, so a
# configuration runs as without them
ls "$top_srcdir"/policies/*.policy >/dev/null || fail "no shipped policies"
mkdir -m 700 "$T/sock"
conf "$T/plain.conf" "localhost:$s_port" "" "ca = $TOK/ca.pem" "tls-min = 1.2"
check_ok "$T/plain.conf" "$top_srcdir/policies"
grep -q "bound by" <<<"$out" && fail "a shipped policy bound the test identity: $out"
for f in "$top_srcdir"/policies/*.policy; do
	rm -f "$P"/*.policy
	cp "$f" "$P/"
	check_ok "$T/plain.conf" "$P"
done
ok "the shipped policies parse: $(cd "$top_srcdir/policies" && echo *.policy)"
# the active default, with its suggested floor switched on, still lets
# a sane configuration (file: PIN, TLS 1.2, no pin-cache) through
rm -f "$P"/*.policy
sed 's/^#\([a-z[]\)/\1/' "$top_srcdir/policies/default.policy" >"$P/default.policy"
grep -q '^\[policy floor\]' "$P/default.policy" || fail "default.policy has no floor section"
check_ok "$T/plain.conf" "$P"
grep -q "bound by policy floor" <<<"$out" || fail "the floor did not bind: $out"
ok "default.policy's floor, uncommented, binds every identity and lets a sane configuration pass"

# ---- banking: one host, one browser, TLS 1.3, pinned CA, a PIN each time
example banking "s|^token-label = .*|token-label = $P11TEST_TOKEN|
s|^cert-issuer = .*|cert-issuer = *CN=p11agent test CA*|
s|^connect = .*|connect = localhost:$s_port|
s|^allow-programs = .*|allow-programs = $client|
s|^ca = .*|ca = $TOK/ca.pem|
s|^pin-sha256 = .*|pin-sha256 = $ca_pin|"
conf "$T/bank.conf" "localhost:$s_port" "$pinentry_sed
/^module/a pin-per-handshake = yes"
check_ok "$T/bank.conf" "$P"
grep -q "bound by policy bank" <<<"$out" || fail "the banking example did not bind: $out"
ok "banking: a configuration within it passes check"
pol=$P/banking.policy
conf "$T/w.conf" "localhost:$s_port" "$pinentry_sed" "tls-min = 1.2"
check_fails "$T/w.conf" "$P" \
    "$T/w.conf:$(line "$T/w.conf" '^tls-min'): [tunnel t] tls-min = 1.2 is below the floor of policy bank ($pol:$(line "$pol" '^tls-min'): tls-min = 1.3)"
conf "$T/w.conf" "localhost:$s_port"
check_fails "$T/w.conf" "$P" \
    "$T/w.conf:$(line "$T/w.conf" '^pin ='): [identity ec] pin = file:... is a PIN source forbidden by policy bank ($pol:$(line "$pol" '^pin-sources'): pin-sources = pinentry)"
conf "$T/w.conf" "localhost:$s_port" "$pinentry_sed
/^pin-cache/d
/^module/a pin-cache = 300"
check_fails "$T/w.conf" "$P" "[identity ec] pin-cache = 300 is longer than the pin-cache-max of policy bank"
ok "banking: a lower TLS floor, a PIN file, a kept PIN are refused"
# run it: the browser (tunnel-client) is served over TLS 1.3 with the
# policy's CA and pin filled in; another program is refused
AGENT_ARGS=(--policies "$P")
start_agent "$T/bank.conf" || fail "the agent did not start under the banking policy"
AGENT_ARGS=()
log_mark
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 --expect-subject CN=p11agent-test-ec \
    --timeout 20) || fail "the bank's program was not served: $out"
wait_log "conn [0-9]+ \(t\): closed by the client; .*policy bank \($pol:[0-9]+: allow-programs\)\); upstream localhost:$s_port, TLSv1.3 full handshake" ||
    fail "no TLS 1.3 connection allowed by the policy"
cp "$client" "$T/wget"
log_mark
"$T/wget" "$(listen_addr t unix)" expect-close --timeout 5 >/dev/null ||
    fail "another program was not closed at once"
wait_log "refused: .*program $T/wget is not in allow-programs of policy bank" ||
    fail "another program was not refused by the policy"
stop_agent || fail "the agent did not exit cleanly"
ok "banking: its program is served over TLSv1.3, another is refused"

# ---- intranet: a group, a domain pattern
grp=$(id -gn)
example intranet "s|^cert-subject = .*|cert-subject = *O=p11agent tests*|
s|^allow-groups = .*|allow-groups = $grp|
s|^ca = .*|ca = $TOK/ca.pem|"
pol=$P/intranet.policy
conf "$T/in.conf" "api.intranet.example:443"
check_ok "$T/in.conf" "$P"
grep -q "bound by policy intranet" <<<"$out" || fail "the intranet example did not bind: $out"
conf "$T/in.conf" "10.20.3.4:443"
check_ok "$T/in.conf" "$P"
ok "intranet: a name under the domain and an address in the range pass"
conf "$T/w.conf" "api.intranet.example.evil.example:443"
check_fails "$T/w.conf" "$P" "[tunnel t] connect = api.intranet.example.evil.example:443 is outside policy intranet ($pol:$(line "$pol" '^connect'): connect = *.intranet.example:443, *.intranet.example:8443, 10.20.0.0/16:443)"
conf "$T/w.conf" "10.21.0.1:443"
check_fails "$T/w.conf" "$P" "[tunnel t] connect = 10.21.0.1:443 is outside policy intranet"
nobody=$(id -u nobody)
id -Gn nobody | grep -qw "$grp" && skip "nobody is in group $grp"
conf "$T/w.conf" "api.intranet.example:443" "" "allow-users = nobody"
check_fails "$T/w.conf" "$P" "[tunnel t] allow-users: uid $nobody is outside policy intranet ($pol:$(line "$pol" '^allow-groups'): allow-groups = $grp)"
ok "intranet: another domain, another network, a user outside the group are refused"

# ---- IoT/CI: a service account, mutual TLS to an MQTT broker
example iot-ci "s|^token-label = .*|token-label = $P11TEST_TOKEN|
s|^allow-users = .*|allow-users = $me|
s|^ca = .*|ca = $TOK/ca.pem|"
pol=$P/iot-ci.policy
conf "$T/iot.conf" "mqtt.iot.example:8883"
check_ok "$T/iot.conf" "$P"
grep -q "bound by policy iot" <<<"$out" || fail "the IoT example did not bind: $out"
ok "iot-ci: the broker with a PIN file passes"
conf "$T/w.conf" "mqtt.iot.example:8883" "" "ocsp = request"
check_fails "$T/w.conf" "$P" "$T/w.conf:$(line "$T/w.conf" '^ocsp'): [tunnel t] ocsp = request is weaker than policy iot ($pol:$(line "$pol" '^ocsp'): ocsp = require)"
conf "$T/w.conf" "mqtt.iot.example:8883" "$pinentry_sed"
check_fails "$T/w.conf" "$P" "[identity ec] pin = pinentry is a PIN source forbidden by policy iot"
conf "$T/w.conf" "mqtt.iot.example:1883"
check_fails "$T/w.conf" "$P" "[tunnel t] connect = mqtt.iot.example:1883 is outside policy iot"
ok "iot-ci: OCSP only requested, a PIN dialog, the plain MQTT port are refused"
