#!/bin/bash
# Server trust, complete (issue 10, scope 4): the bad-server-certificate
# matrix.  A PKI of the test's own (tests/mkpki.sh: root, intermediate,
# leaves, CRLs, OCSP responses) behind one echo server per case, and one
# agent with a tunnel per case.  Each refusal: the plaintext client gets
# no byte, and the agent's log says what was wrong (a fixed string, the
# whole message after "TLS handshake failed: ").  Then the good
# certificate with pin-sha256, crl and ocsp = require all on, ca-dir
# (hashed and not) supplying an intermediate the server does not send,
# ALPN, and p11agent check naming the CA/CRL file that does not load.
. "$top_srcdir/tests/lib.sh"
make_token
P=$T/pki
rc=0
"$top_srcdir/tests/mkpki.sh" "$P" || rc=$?
[ "$rc" = 77 ] && skip "openssl is missing"
[ "$rc" = 0 ] || fail "mkpki.sh failed"
# a staple whose nextUpdate passed a day ago (the CLI cannot date one back)
"$top_builddir/tests/ocsp-stale" "$P/inter.pem" "$P/inter.key" "$P/good.pem" \
    "$P/stale.ocsp" || fail "ocsp-stale failed"

pin() {	# pin CERT: base64 of the SHA-256 of its SPKI
	openssl x509 -in "$1" -pubkey -noout | openssl pkey -pubin -outform DER |
	    openssl dgst -sha256 -binary | base64
}
# utc "Dec  2 00:49:28 2026 GMT": as the agent writes times
utc() {
	date -u -d "$1" '+%Y-%m-%d %H:%M UTC'
}

# srv NAME CERT KEY [ARGS...]: an echo server with that chain and key
# (client certificates of the token's CA required); sets NAME_port
srv() {
	local n=$1 c=$2 k=$3
	shift 3
	start_server "$n" --cert "$P/$c" --key "$P/$k" --ca "$TOK/ca.pem" \
	    --require-cert "$@"
}
# tun NAME SERVER SERVER-NAME [LINE...]: a tunnel to 127.0.0.1:SERVER's
# port (HOST=[::1]: there) checking SERVER-NAME; trusts ca = root.pem unless a line says
# otherwise ("-" as the first line: no ca =)
tun() {
	local n=$1 port="${2}_port" name=$3
	shift 3
	printf '[tunnel %s]\nlisten = tcp:127.0.0.1:0\nconnect = %s:%s\n' \
	    "$n" "${HOST:-127.0.0.1}" "${!port}"
	printf 'identity = ec\nserver-name = %s\n' "$name"
	if [ "${1:-}" = - ]; then
		shift
	else
		printf 'ca = %s\n' "$P/root.pem"
	fi
	[ $# = 0 ] || printf '%s\n' "$@"
	echo
}

# ---- the servers
srv good good-chain.pem good.key --ocsp-staple "$P/good.ocsp"
srv plain good-chain.pem good.key
srv resume good-chain.pem good.key --ocsp-staple "$P/good.ocsp" --resume
srv v6 good-chain.pem good.key --ipv6
srv leafonly good.pem good.key
srv other other.pem other.key
srv expired expired-chain.pem expired.key
srv notyet notyet-chain.pem notyet.key
srv wrongname wrongname-chain.pem wrongname.key
srv self self.pem self.key
srv revoked revoked-chain.pem revoked.key
srv revstaple revoked-chain.pem revoked.key --ocsp-staple "$P/revoked.ocsp"
srv forged good-chain.pem good.key --ocsp-staple "$P/forged.ocsp"
srv noeku good-chain.pem good.key --ocsp-staple "$P/noeku.ocsp"
srv leafsigned good-chain.pem good.key --ocsp-staple "$P/leafsigned.ocsp"
srv only13 good-chain.pem good.key --tls1.3
srv stale good-chain.pem good.key --ocsp-staple "$P/stale.ocsp"
srv under2 under2-chain.pem under2.key
srv rsa1024 rsa1024-chain.pem rsa1024.key --seclevel 0
srv sha1 sha1-chain.pem sha1.key --seclevel 0
srv tls11 good-chain.pem good.key --tls-max 1.1
srv tls10 good-chain.pem good.key --tls-max 1.0
start_server oldhello --old-hello 1.1
srv cbc good-chain.pem good.key --tls-max 1.2 --ciphers ECDHE-ECDSA-AES128-SHA256
srv h2 good-chain.pem good.key --alpn h2,http/1.1
srv noalpn good-chain.pem good.key --alpn none

good_pin=$(pin "$P/good.pem") other_pin=$(pin "$P/other.pem")
[ ${#good_pin} = 44 ] || fail "no pin computed: '$good_pin'"
CRLS=("crl = $P/root.crl" "crl = $P/inter.crl" "crl = $P/inter2.crl")
{
	agent_section
	identity ec 02
	tun good good localhost "pin-sha256 = $good_pin" "${CRLS[@]}" \
	    "ocsp = require"
	tun other other localhost
	tun othersys other localhost -
	tun otherboth other localhost "ca-dir = $P/plain"
	tun expired expired localhost
	tun notyet notyet localhost
	tun wrongname wrongname localhost
	tun wrongip plain 127.0.0.2
	tun ipok plain 127.0.0.1
	# connect = [::1]:port: its address checked against the IP SANs
	printf '[tunnel v6]\nlisten = tcp:127.0.0.1:0\nconnect = [::1]:%s\n' "$v6_port"
	printf 'identity = ec\nca = %s\n\n' "$P/root.pem"
	HOST=[::1] tun v6bracket v6 "[::1]"
	HOST=[::1] tun v6wrong v6 "::2"
	tun self self localhost
	tun crlleaf revoked localhost "${CRLS[@]}"
	tun crlinter under2 localhost "${CRLS[@]}"
	tun crlmissing plain localhost "crl = $P/inter.crl"
	tun crlreload revoked localhost "crl = $P/root.crl" "crl = $T/current.crl"
	tun nostaple plain localhost "ocsp = require"
	tun revstaple revstaple localhost
	tun good12 good localhost "tls-max = 1.2" "ocsp = require"
	tun resumed resume localhost "ocsp = require"
	tun revstaple12 revstaple localhost "tls-max = 1.2"
	tun forged forged localhost
	tun noeku noeku localhost
	tun leafsigned leafsigned localhost
	tun only13 only13 localhost "tls-max = 1.2"
	tun nostaple12 plain localhost "ocsp = require" "tls-max = 1.2"
	tun dirr0 revoked localhost - "ca-dir = $P/hashcrl"
	tun dirgood plain localhost - "ca-dir = $P/hashcrl"
	tun stale stale localhost
	tun pin plain localhost "pin-sha256 = $other_pin"
	tun rsa1024 rsa1024 localhost
	tun sha1 sha1 localhost
	tun tls11 tls11 localhost
	tun tls10 tls10 localhost
	tun tls11max tls11 localhost "tls-max = 1.2"
	tun oldhello oldhello localhost
	tun cbc cbc localhost
	tun nodir leafonly localhost
	tun hashed leafonly localhost - "ca-dir = $P/hashed"
	tun plaindir leafonly localhost - "ca-dir = $P/plain"
	tun h2 h2 localhost "alpn = h2,http/1.1"
	tun noalpn noalpn localhost "alpn = h2"
} >"$T/agent.conf"
cp "$P/inter-before.crl" "$T/current.crl"
"$P11AGENT" check -c "$T/agent.conf" >"$T/check.out" 2>&1 || fail "check: $(cat "$T/check.out")"
start_agent "$T/agent.conf" || fail "the agent did not start"

# wait_fixed STRING: the agent logs STRING (a fixed string) after the
# mark, bounded
wait_fixed() {
	timeout $((20 * SLOW)) tail -n "+$((LOG_MARK + 1))" -f "$T/agent.log" |
	    grep -F -q -m 1 -- "$1"
}
# refusal TUNNEL SERVER MESSAGE: no byte reaches the client, and the
# failure line for that server (at 127.0.0.1, or UP=::1) says MESSAGE
refusal() {
	local port="${2}_port"
	log_mark
	"$CLIENT" "$(listen_addr "$1" tcp)" expect-close --timeout $((10 * SLOW)) \
	    >"$T/client.out" 2>&1 || fail "$1: $(cat "$T/client.out")"
	wait_fixed "upstream ${UP:-127.0.0.1}:${!port}: TLS handshake failed: $3" ||
	    fail "$1: not logged: '$3'; the log has: $(grep -F ":${!port}: TLS" "$T/agent.log")"
	ok "$1: $3"
}
# passes TUNNEL: data goes through
passes() {
	log_mark
	"$CLIENT" "$(listen_addr "$1" tcp)" roundtrip --bytes 100000 >"$T/client.out" 2>&1 ||
	    fail "$1: $(cat "$T/client.out"); $(grep -F "TLS handshake failed" "$T/agent.log" | tail -n 1)"
}

passes good
ok "the good certificate, with pin-sha256, crl (3 files) and ocsp = require (a delegated responder's staple): data passes"
passes ipok
ok "an IP address as server-name, matched against the IP SAN"
passes v6
passes v6bracket
ok "connect = [::1]:PORT (no server-name) and server-name = [::1]: the IPv6 SAN matched"

R=$P/root.pem
refusal other other "server certificate refused: issuer CN=other root not trusted by ca = $R (of the certificate for localhost)"
refusal othersys other "server certificate refused: issuer CN=other root not trusted by the system store (of the certificate for localhost)"
refusal otherboth other "server certificate refused: issuer CN=other root not trusted by ca = $R and ca-dir = $P/plain (of the certificate for localhost)"
refusal expired expired "server certificate refused: certificate for localhost expired 2021-01-01 00:00 UTC"
refusal notyet notyet "server certificate refused: certificate for localhost not yet valid: from 2099-01-01 00:00 UTC"
refusal wrongname wrongname "server certificate refused: the certificate CN=a.example is not for localhost: names in the certificate: a.example, b.example"
refusal wrongip plain "server certificate refused: the certificate CN=localhost is not for 127.0.0.2: names in the certificate: localhost, good.test, 127.0.0.1, ::1"
UP=::1 refusal v6wrong v6 "server certificate refused: the certificate CN=localhost is not for ::2: names in the certificate: localhost, good.test, 127.0.0.1, ::1"
refusal self self "server certificate refused: self-signed certificate CN=self-signed localhost not trusted by ca = $R"

when=$(openssl crl -in "$P/inter.crl" -noout -text | sed -n 's/^ *Revocation Date: //p' | head -n 1)
refusal crlleaf revoked "server certificate refused: server certificate CN=localhost revoked $(utc "$when") (CRL $P/inter.crl)"
when=$(openssl crl -in "$P/root.crl" -noout -text | sed -n 's/^ *Revocation Date: //p' | head -n 1)
refusal crlinter under2 "server certificate refused: intermediate CN=revoked intermediate revoked $(utc "$when") (CRL $P/root.crl)"
# a CRL renewed in place is read again at a reload (the tunnel's lines
# are the same)
passes crlreload
cp "$P/inter.crl" "$T/current.crl"
log_mark
kill -HUP "$AGENT_PID"
wait_log "reload: .*tunnels: 0 new, 1 changed, [0-9]+ unchanged, 0 removed" ||
    fail "SIGHUP: not only the tunnel whose CRL changed was rebuilt: $(tail -n 5 "$T/agent.log")"
refusal crlreload revoked "server certificate refused: server certificate CN=localhost revoked"
ok "crl: a renewed CRL file is read again at a reload"
# a file saved beside the ca-dir directories (their parent's mtime
# changes) rebuilds nothing
: >"$P/saved-beside"
log_mark
kill -HUP "$AGENT_PID"
wait_log "reload: .*tunnels: 0 new, 0 changed, [0-9]+ unchanged, 0 removed" ||
    fail "SIGHUP after a file saved beside ca-dir: $(tail -n 5 "$T/agent.log")"
ok "a reload with no trust file changed keeps every tunnel (a file beside ca-dir changes nothing)"
refusal crlmissing plain "server certificate refused: no CRL from CN=trust root, the issuer of the intermediate CN=trust intermediate, among the CRLs of crl = and ca-dir"

refusal nostaple plain "server certificate refused: no OCSP staple, and ocsp = require"
when=$(openssl ocsp -respin "$P/revoked.ocsp" -resp_text -noverify 2>/dev/null | sed -n 's/^ *Revocation Time: //p' | head -n 1)
[ -n "$when" ] || fail "no revocation time in revoked.ocsp"
refusal revstaple revstaple "server certificate refused: OCSP staple: revoked $(utc "$when") (server certificate CN=localhost, keyCompromise)"
# TLS 1.2: the staple comes in its own CertificateStatus message
passes good12
refusal revstaple12 revstaple "server certificate refused: OCSP staple: revoked $(utc "$when") (server certificate CN=localhost, keyCompromise)"
ok "OCSP in TLS 1.2 too: a good staple required and taken, a revoked one refused"
# a resumed session has no staple: it was checked in its full handshake
passes resumed
log_mark
passes resumed
wait_log "conn [0-9]+ \(resumed\): TLSv1.3 to .*, resumed \(no signature\)" ||
    fail "the second connection did not resume: $(grep "(resumed)" "$T/agent.log")"
ok "ocsp = require: a resumed session (no staple) is taken"
refusal forged forged "server certificate refused: OCSP staple: signed by CN=other root, which is neither the issuer CN=trust intermediate of CN=localhost nor a responder it delegated to"
refusal noeku noeku "server certificate refused: OCSP staple: signed by CN=a.example, issued by CN=trust intermediate but not for OCSP (no extendedKeyUsage OCSPSigning)"
refusal leafsigned leafsigned "server certificate refused: OCSP staple: signed by CN=localhost, issued by CN=trust intermediate but not for OCSP (no extendedKeyUsage OCSPSigning)"
refusal nostaple12 plain "server certificate refused: no OCSP staple, and ocsp = require"
when=$(openssl ocsp -respin "$P/stale.ocsp" -resp_text -noverify 2>/dev/null | sed -n 's/^ *Next Update: //p' | head -n 1)
[ -n "$when" ] || fail "no nextUpdate in stale.ocsp"
refusal stale stale "server certificate refused: OCSP staple: expired $(utc "$when") (its nextUpdate)"

refusal pin plain "pin mismatch: no pin-sha256 of the tunnel matches the server's chain; got sha256//$good_pin (server CN=localhost), sha256//$(pin "$P/inter.pem") (issuer CN=trust intermediate)"
refusal rsa1024 rsa1024 "server certificate refused: RSA key of 1024 bits in the certificate for localhost, below 2048 (security level 2)"
refusal sha1 sha1 "server certificate refused: certificate for localhost signed with SHA-1, refused at security level 2"

refusal only13 only13 "the server refused TLS 1.2 (protocol_version alert): it speaks only TLS 1.3, which this tunnel does not offer (tls-max = 1.2), or only versions older than 1.2"
refusal tls11 tls11 "the server refused TLS 1.2 to 1.3 (protocol_version alert): it speaks only older versions, tls-min is 1.2"
refusal tls10 tls10 "the server refused TLS 1.2 to 1.3 (protocol_version alert): it speaks only older versions, tls-min is 1.2"
# offering TLS 1.2 at most (no supported_versions), the server takes 1.1
# and then finds no suite it may use there (ours are AEAD: 1.2 and up)
refusal tls11max tls11 "the server refused the handshake (handshake failure alert): no TLS version, cipher suite, group or signature algorithm in common? offered: TLS 1.2, and in TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305 only"
# a server that answers with a TLS 1.1 ServerHello instead of refusing
refusal oldhello oldhello "the server speaks only TLS 1.1, tls-min is 1.2"
refusal cbc cbc "the server refused the handshake (handshake failure alert): no TLS version, cipher suite, group or signature algorithm in common? offered: TLS 1.2 to 1.3, and in TLS 1.2 ECDHE with AES-GCM or ChaCha20-Poly1305 only"

# ca-dir: the intermediate the server does not send
refusal nodir leafonly "server certificate refused: issuer CN=trust intermediate not trusted by ca = $R (of the certificate for localhost)"
passes hashed
passes plaindir
# the CRLs of a hashed ca-dir (.r0) are checked, for the whole chain
when=$(openssl crl -in "$P/inter.crl" -noout -text | sed -n 's/^ *Revocation Date: //p' | head -n 1)
refusal dirr0 revoked "server certificate refused: server certificate CN=localhost revoked $(utc "$when") (CRL $P/hashcrl/$(openssl crl -hash -noout -in "$P/inter.crl").r0)"
passes dirgood
ok "ca-dir's CRLs (.r0): a revoked server refused, naming the file; the good one passes"
ok "ca-dir (hashed names, and plain ones) gives the intermediate the server does not send"

# ALPN
passes h2
grep -q "conn [0-9]* (h2): TLSv1.3 to 127.0.0.1:${h2_port} in [0-9]* ms, server .*, ALPN h2$" "$T/agent.log" ||
    fail "ALPN h2 not logged at the handshake: $(grep "(h2)" "$T/agent.log")"
wait_fixed "full handshake, ALPN h2;" || fail "ALPN h2 not in the end line: $(grep "(h2)" "$T/agent.log")"
passes noalpn
wait_fixed "(noalpn): the server chose none of the ALPN protocols offered (alpn =); going on without" ||
    fail "no warning for a server choosing no ALPN protocol"
ok "ALPN: h2 chosen and logged (handshake and end line); none chosen: a warning, and the tunnel works"
stop_agent || fail "the agent did not stop cleanly"

# ---- p11agent check: a CA directory, CA or CRL file that does not load
printf 'not PEM at all\n' >"$T/junk.pem"
printf -- '-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n' >"$T/damaged.pem"
mkdir "$T/emptydir" "$T/junkdir"
cp "$T/junk.pem" "$T/junkdir/README"
check_bad() {	# check_bad LINE MESSAGE
	{
		agent_section
		identity ec 02
		printf '[tunnel t]\nlisten = tcp:127.0.0.1:0\nconnect = 127.0.0.1:%s\nidentity = ec\n%s\n' \
		    "$plain_port" "$1"
	} >"$T/bad.conf"
	! "$P11AGENT" check -c "$T/bad.conf" >"$T/bad.out" 2>&1 || fail "check took '$1'"
	grep -qF -- "bad.conf:9: [tunnel t]: $2" "$T/bad.out" ||
	    fail "check, '$1': $(cat "$T/bad.out")"
}
check_bad "crl = $P/root.pem" "crl = $P/root.pem: no CRL in it (PEM, -----BEGIN X509 CRL----- expected"
check_bad "crl = $P/expired.crl" "crl = $P/expired.crl: the CRL of CN=trust intermediate expired 2020-02-01 00:00 UTC (its nextUpdate): put a current one in its place"
check_bad "crl = $T/none.crl" "crl = $T/none.crl: No such file or directory"
check_bad "ca = $T/junk.pem" "ca = $T/junk.pem: no certificate in it"
check_bad "ca = $T/damaged.pem" "ca = $T/damaged.pem: a damaged PEM block"
check_bad "ca-dir = $T/nodir" "ca-dir = $T/nodir: No such file or directory"
check_bad "ca-dir = $T/emptydir" "ca-dir = $T/emptydir: no certificate in it"
check_bad "ca-dir = $T/junkdir" "ca-dir = $T/junkdir: README: neither a certificate nor a CRL in it"
ok "check names the key and the file that does not load: $(grep -o 'ca-dir = .*' "$T/bad.out" | head -n 1)"
