#!/bin/bash
# Enrollment: 'p11agent enroll' generates a key pair on the token and
# writes a CSR signed there; a test CA (openssl CLI) issues certificates;
# 'p11agent import-cert' writes them (and a chain certificate) beside the
# keys; the agent then uses each new identity in a TLS handshake to a
# server that requires a client certificate from that CA.  The call log
# shows no key material leaving the token.  Refusals: no key-pair
# generation mechanism, a size out of the mechanism's range, a
# write-protected token, C_CreateObject refused, another key's
# certificate, an id already taken, bad options.
. "$top_srcdir/tests/lib.sh"
command -v pkcs11-tool >/dev/null || skip "pkcs11-tool is missing"
make_token

PIN=file:$TOK/pin
uri() { echo "pkcs11:token=$P11TEST_TOKEN;id=%$1;object=$2"; }
enroll() { "$P11AGENT" enroll -m "$FAULT" "$@"; }
import() { "$P11AGENT" import-cert -m "$FAULT" "$@"; }
# count FUNCTION LOG: how many calls of FUNCTION the log has
count() { grep -c " $1 " "$2" || true; }

# ---- the test CA: a root and an issuing CA (the chain certificate)
mkdir "$T/ca"
(
	cd "$T/ca" || exit 1
	printf 'basicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign\n' >ca.ext
	printf 'basicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = clientAuth\n' >leaf.ext
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -keyout root.key -out root.pem -subj "/CN=p11agent enroll root" \
	    -days 30 -addext "basicConstraints = critical, CA:TRUE" &&
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
	    -keyout issuing.key -out issuing.csr -subj "/CN=p11agent enroll issuing CA" &&
	openssl x509 -req -in issuing.csr -CA root.pem -CAkey root.key \
	    -set_serial 0x1001 -days 30 -extfile ca.ext -out issuing.pem &&
	cat root.pem issuing.pem >bundle.pem
) >"$T/ca/log" 2>&1 || fail "the test CA: $(cat "$T/ca/log")"
# issue NAME: the issuing CA signs NAME.csr (its SANs copied)
issue() {
	openssl x509 -req -in "$T/$1.csr" -CA "$T/ca/issuing.pem" \
	    -CAkey "$T/ca/issuing.key" -set_serial "0x$(openssl rand -hex 8)" \
	    -days 30 -extfile "$T/ca/leaf.ext" -copy_extensions copy \
	    -out "$T/$1.pem" 2>"$T/ca/log" || fail "issuing $1: $(cat "$T/ca/log")"
	cat "$T/$1.pem" "$T/ca/issuing.pem" >"$T/$1-chain.pem"
}

# ---- enroll: RSA-2048 (PIN from a file), EC P-256 (fd:), EC P-384 (env:)
export P11FAULT_LOG=$T/enroll.calls
enroll --key "$(uri 21 rsa-new)" --type rsa:2048 \
    --subject "/CN=enrolled rsa/O=p11agent tests" --san DNS:rsa.client.example \
    --san IP:127.0.0.1 --pin "$PIN" -o "$T/rsa.csr" 2>"$T/rsa.err" ||
    fail "enroll rsa:2048: $(cat "$T/rsa.err")"
enroll --key "$(uri 22 ec-new)" --type ec:p256 \
    --subject "/CN=enrolled ec/O=p11agent tests" --san DNS:ec.client.example \
    --pin fd:5 5<"$TOK/pin" >"$T/ec.csr" 2>"$T/ec.err" ||
    fail "enroll ec:p256: $(cat "$T/ec.err")"
ENROLL_PIN=$P11TEST_PIN enroll --key "$(uri 23 ec384-new)" --type ec:p384 \
    --subject "/CN=enrolled ec384/O=p11agent tests" \
    --san DNS:ec384.client.example --pin env:ENROLL_PIN -o "$T/ec384.csr" \
    2>"$T/ec384.err" || fail "enroll ec:p384: $(cat "$T/ec384.err")"
# the token's signature of each request is in the audit trail
grep -Eq "^p11agent: signature 1 by identity pkcs11:[^ ]*id=%21[^ ]* for p11agent enroll's certificate request: uid $(id -u) pid [0-9]+ [^ ]+; CKM_RSA_PKCS(_PSS)?, [0-9]+ ms; signed$" "$T/rsa.err" ||
    fail "enroll rsa:2048: no signature line: $(cat "$T/rsa.err")"
grep -Eq "^p11agent: signature 1 by identity pkcs11:[^ ]*id=%22[^ ]* for p11agent enroll's certificate request: .*; CKM_ECDSA, [0-9]+ ms; signed$" "$T/ec.err" ||
    fail "enroll ec:p256: no signature line: $(cat "$T/ec.err")"
ok "enroll's request signatures are in the audit trail: $(cat "$T/ec.err")"
for kind in rsa ec ec384; do
	openssl req -in "$T/$kind.csr" -verify -noout 2>&1 | grep -q 'verify OK' ||
	    fail "$kind: openssl req -verify does not accept the CSR"
	subj=$(openssl req -in "$T/$kind.csr" -noout -subject -nameopt RFC2253)
	[ "$subj" = "subject=O=p11agent tests,CN=enrolled $kind" ] ||
	    fail "$kind: CSR subject is '$subj'"
	openssl req -in "$T/$kind.csr" -noout -text |
	    grep -q "DNS:$kind.client.example" || fail "$kind: no SAN in the CSR"
	grep -q "sensitive, never extractable, sign$" "$T/$kind.err" ||
	    fail "$kind: the enroll log does not describe the key: $(cat "$T/$kind.err")"
done
openssl req -in "$T/rsa.csr" -noout -text | grep -q 'IP Address:127.0.0.1' ||
    fail "rsa: no IP SAN in the CSR"
openssl req -in "$T/ec384.csr" -noout -text | grep -q 'ecdsa-with-SHA384' ||
    fail "ec384: the CSR is not signed with SHA-384"
[ "$(count C_GenerateKeyPair "$T/enroll.calls")" = 3 ] ||
    fail "3 enrollments, $(count C_GenerateKeyPair "$T/enroll.calls") C_GenerateKeyPair"
ok "enroll: RSA-2048, EC P-256, EC P-384 CSRs verify, with subject and SANs (PINs from file:, fd:, env:)"

# the token's own view of the new private keys (pkcs11-tool, not us)
pkcs11-tool --module "$SOFTHSM" --token-label "$P11TEST_TOKEN" --login \
    --pin "$P11TEST_PIN" --list-objects --type privkey >"$T/privkeys" 2>&1 ||
    fail "pkcs11-tool --list-objects: $(cat "$T/privkeys")"
for id in 21 22 23; do
	block=$(awk -v id="$id" '/^Private Key Object/ { b = "" }
	    { b = b $0 "\n" } /^ *ID: / && $2 == id { found = 1 }
	    found && /^ *Access:/ { printf "%s", b; exit }' "$T/privkeys")
	grep -Eq 'Usage: +sign$' <<<"$block" ||
	    fail "key $id: usage is not sign only: $block"
	grep -q 'Access: *sensitive, always sensitive, never extractable, local' \
	    <<<"$block" || fail "key $id: not sensitive/never extractable: $block"
done
ok "pkcs11-tool: the new private keys are sensitive, never extractable, local, usage sign only"

# ---- the CA issues; import-cert writes certificate + chain certificate
export P11FAULT_LOG=$T/import.calls
for kind in rsa ec ec384; do
	issue "$kind"
done
import --key "$(uri 21 rsa-new)" --pin "$PIN" "$T/rsa-chain.pem" \
    2>"$T/imp-rsa.err" || fail "import-cert rsa: $(cat "$T/imp-rsa.err")"
grep -q "certificate 'rsa-new' written" "$T/imp-rsa.err" &&
    grep -q "chain certificate 'p11agent enroll issuing CA' written" "$T/imp-rsa.err" ||
    fail "import-cert rsa did not say what it wrote: $(cat "$T/imp-rsa.err")"
import --key "pkcs11:token=$P11TEST_TOKEN;id=%22" --pin "$PIN" "$T/ec-chain.pem" \
    2>"$T/imp-ec.err" || fail "import-cert ec: $(cat "$T/imp-ec.err")"
grep -q "chain certificate 'p11agent enroll issuing CA' was already on the token" \
    "$T/imp-ec.err" || fail "the chain certificate was not skipped: $(cat "$T/imp-ec.err")"
import --key "$(uri 23 ec384-new)" --pin "$PIN" "$T/ec384.pem" \
    2>"$T/imp-ec384.err" || fail "import-cert ec384: $(cat "$T/imp-ec384.err")"
[ "$(count C_CreateObject "$T/import.calls")" = 4 ] ||
    fail "$(count C_CreateObject "$T/import.calls") C_CreateObject, wanted 4 (3 certificates, 1 chain certificate)"
pkcs11-tool --module "$SOFTHSM" --token-label "$P11TEST_TOKEN" --list-objects \
    --type cert >"$T/certs" 2>&1 || fail "pkcs11-tool: $(cat "$T/certs")"
for want in "rsa-new:21" "ec-new:22" "ec384-new:23"; do
	awk -v l="${want%%:*}" -v id="${want##*:}" '
	    /label:/ { lab = $2 } /ID:/ && lab == l && $2 == id { ok = 1 }
	    END { exit !ok }' "$T/certs" || fail "no certificate $want on the token"
done
grep -q 'label: *p11agent enroll issuing CA' "$T/certs" ||
    fail "no chain certificate on the token"
ok "import-cert: 3 certificates with their keys' id and label, 1 chain certificate (once)"

# ---- a real agent with the new identities, against a server that
# accepts only client certificates from the test CA
start_server s --cert "$TOK/server.pem" --key "$TOK/server.key" \
    --ca "$T/ca/bundle.pem" --require-cert
{
	agent_section
	for spec in "rsa 21" "ec 22" "ec384 23"; do
		read -r kind id <<<"$spec"
		printf '[identity %s]\nkey = pkcs11:token=%s;id=%%%s;type=private\n' \
		    "$kind" "$P11TEST_TOKEN" "$id"
		printf 'pin = %s\nmodule = %s\n\n' "$PIN" "$FAULT"
		tunnel "$kind" "localhost:$s_port" "$kind"
	done
} >"$T/agent.conf"
export P11FAULT_LOG=$T/run.calls
start_agent "$T/agent.conf" || fail "the agent did not start with the new identities"
for kind in rsa ec ec384; do
	"$CLIENT" "$(listen_addr "$kind" tcp)" roundtrip --bytes 1000 \
	    --expect-subject "CN=enrolled $kind" >/dev/null ||
	    fail "TLS with the enrolled $kind identity"
done
stop_agent || fail "the agent did not exit cleanly"
ok "TLS handshakes with the enrolled RSA, P-256 and P-384 identities"

# ---- the call logs: no key material left the token
allowed='C_Initialize C_Finalize C_GetInfo C_GetSlotList C_GetSlotInfo
C_GetTokenInfo C_GetMechanismList C_GetMechanismInfo C_OpenSession
C_CloseSession C_GetSessionInfo C_Login C_Logout C_FindObjectsInit C_FindObjects
C_FindObjectsFinal C_GetAttributeValue C_SignInit C_Sign
C_GenerateKeyPair C_CreateObject C_WaitForSlotEvent'
# public attributes and booleans of a private key that may be read
key_attrs='0x0 0x1 0x2 0x3 0x100 0x102 0x103 0x105 0x107 0x108 0x10c 0x120
0x121 0x122 0x162 0x164 0x165 0x170 0x180 0x202'
calls_allowed "$allowed" "$key_attrs" "$T/enroll.calls" "$T/import.calls" "$T/run.calls" ||
    fail "the call log shows a forbidden call"
# the private key template: sensitive, not extractable; the log has types
grep ' C_GenerateKeyPair 0x0 ' "$T/enroll.calls" | grep -v 'priv=.*0x103.*0x162' &&
    fail "a key pair was generated without CKA_SENSITIVE/CKA_EXTRACTABLE in its template"
[ "$(cat "$T/enroll.calls" "$T/import.calls" | wc -l)" -gt 100 ] ||
    fail "the call logs are too short to prove anything"
ok "$(cat "$T/enroll.calls" "$T/import.calls" "$T/run.calls" | wc -l) logged calls, all allowed; private keys: only public attributes read"

# ---- refusals
# refused NAME WANT CMD...: CMD fails, its message matches WANT, and the
# token saw no C_GenerateKeyPair and no C_CreateObject
refused() {
	local name=$1 want=$2 rc=0
	shift 2
	export P11FAULT_LOG=$T/$name.calls
	: >"$P11FAULT_LOG"
	"$@" >"$T/$name.out" 2>"$T/$name.err" || rc=$?
	[ "$rc" != 0 ] || fail "$name: not refused"
	grep -Fq -- "$want" "$T/$name.err" ||
	    fail "$name: the message does not say '$want': $(cat "$T/$name.err")"
	[ "$(count C_GenerateKeyPair "$P11FAULT_LOG")" = 0 ] &&
	    [ "$(count C_CreateObject "$P11FAULT_LOG")" = 0 ] ||
	    fail "$name: the token was written to"
	REFUSED_RC=$rc
}

P11FAULT_HIDE_MECHS=0x0 refused nogen-rsa \
    "token 'p11agent-test' offers no RSA key-pair generation through PKCS#11 (C_GetMechanismList has no CKM_RSA_PKCS_KEY_PAIR_GEN); generate the key with the card's own tool and use import-cert" \
    enroll --key "$(uri 31 x)" --type rsa:2048 --subject /CN=x --pin "$PIN"
P11FAULT_HIDE_MECHS=0x1040 refused nogen-ec \
    "offers no EC key-pair generation through PKCS#11 (C_GetMechanismList has no CKM_EC_KEY_PAIR_GEN)" \
    enroll --key "$(uri 31 x)" --type ec:p256 --subject /CN=x --pin "$PIN"
P11FAULT_MECH_MAX_BITS=2048 refused size \
    "generates RSA keys of" \
    enroll --key "$(uri 31 x)" --type rsa:3072 --subject /CN=x --pin "$PIN"
grep -q 'bits only (CKM_INFO of CKM_RSA_PKCS_KEY_PAIR_GEN), not 3072' "$T/size.err" ||
    fail "size: $(cat "$T/size.err")"
P11FAULT_TOKEN_FLAGS=0x2 refused ro-enroll "is write-protected (CKF_WRITE_PROTECTED)" \
    enroll --key "$(uri 31 x)" --type ec:p256 --subject /CN=x --pin "$PIN"
P11FAULT_TOKEN_FLAGS=0x2 refused ro-import "is write-protected (CKF_WRITE_PROTECTED)" \
    import --key "pkcs11:token=$P11TEST_TOKEN;id=%02" --pin "$PIN" "$TOK/client-ec.pem"
[ "$(count C_Login "$T/ro-import.calls")" = 0 ] ||
    fail "ro-import: a login although the token is write-protected"
for name in nogen-rsa nogen-ec size ro-enroll; do
	[ "$(count C_Login "$T/$name.calls")" = 0 ] ||
	    fail "$name: a login, although the token's mechanisms or flags refuse"
done
ok "refused with what to do, before any login: no RSA/EC key-pair generation mechanism, a size out of CKM_INFO's range, CKF_WRITE_PROTECTED (enroll and import-cert)"

# C_CreateObject refused (0x54 CKR_FUNCTION_NOT_SUPPORTED): nothing
# written (the fault module refuses without forwarding)
export P11FAULT_LOG=$T/nocreate.calls
if P11FAULT_FAIL=C_CreateObject=0x54 import --key "pkcs11:token=$P11TEST_TOKEN;id=%02" \
    --pin "$PIN" "$TOK/client-ec.pem" 2>"$T/nocreate.err"; then
	: # the test token holds client-ec.pem already: skipped, not written
fi
grep -q "was already on the token" "$T/nocreate.err" ||
    fail "nocreate: an existing certificate was not recognised: $(cat "$T/nocreate.err")"
enroll --key "$(uri 32 spare)" --type ec:p256 --subject /CN=spare --pin "$PIN" \
    -o "$T/spare.csr" 2>/dev/null || fail "enroll spare"
issue spare
if P11FAULT_FAIL=C_CreateObject=0x54 import --key "$(uri 32 spare)" --pin "$PIN" \
    "$T/spare.pem" 2>"$T/nocreate.err"; then
	fail "nocreate: not refused"
fi
grep -q "refused to store the certificate (C_CreateObject: CKR_FUNCTION_NOT_SUPPORTED" \
    "$T/nocreate.err" || fail "nocreate: $(cat "$T/nocreate.err")"
grep -q "cert = FILE" "$T/nocreate.err" || fail "nocreate: no advice: $(cat "$T/nocreate.err")"
ok "C_CreateObject refused: a clear refusal naming CKR_FUNCTION_NOT_SUPPORTED and cert = FILE"

# another key's certificate: refused, nothing written
refused wrongcert "the certificate's public key is not the key's" \
    import --key "$(uri 21 rsa-new)" --pin "$PIN" "$T/ec-chain.pem"
refused wrongcert2 "the certificate's public key is not the key's" \
    import --key "$(uri 32 spare)" --pin "$PIN" "$TOK/client-ec.pem"
# an id (or label) already taken: refused before generating
echo keep >"$T/keep.csr"
refused taken-id "already has an object with that id" \
    enroll --key "$(uri 01 brand-new)" --type rsa:2048 --subject /CN=x --pin "$PIN" \
    -o "$T/keep.csr"
[ "$(cat "$T/keep.csr")" = keep ] || fail "a refused enrollment changed the existing -o file"
refused no-outdir "-o $T/nodir/x.csr: No such file or directory" \
    enroll --key "$(uri 35 x)" --type ec:p256 --subject /CN=x --pin "$PIN" -o "$T/nodir/x.csr"
[ ! -s "$T/no-outdir.calls" ] || fail "no-outdir: a module was loaded before -o was checked"
refused taken-label "already has a key with that label" \
    enroll --key "$(uri 33 ec-key)" --type ec:p256 --subject /CN=x --pin "$PIN"
refused no-id "the URI must name the new key with id=" \
    enroll --key "pkcs11:token=$P11TEST_TOKEN;object=x" --type ec:p256 --subject /CN=x --pin "$PIN"
ok "refused: another key's certificate, an id or label already taken (an existing -o file kept), no id=, an -o that cannot be written (before any module is loaded)"

# bad options: usage errors (exit 2) naming the option, no helper started
for spec in "--type|rsa:1024|--type rsa:1024" "--type|ec:p521|--type ec:p521" \
    "--subject|CN=x|--subject 'CN=x'" "--subject|/CN|--subject '/CN'" \
    "--subject|/XX=y|unknown attribute type 'XX'" "--subject|/C=USA|C= is two letters" \
    "--san|DNS:bad_name|--san 'DNS:bad_name'" "--san|IP:1.2.3|--san 'IP:1.2.3'" \
    "--san|ftp:x|--san 'ftp:x'"; do
	IFS='|' read -r opt val want <<<"$spec"
	args=(--key "$(uri 34 x)" --type ec:p256 --subject /CN=x --pin "$PIN")
	case $opt in
	--type) args[3]=$val ;;
	--subject) args[5]=$val ;;
	--san) args+=(--san "$val") ;;
	esac
	refused "opt$opt" "$want" enroll "${args[@]}"
	[ "$REFUSED_RC" = 2 ] || fail "$opt $val: exit status $REFUSED_RC, wanted 2"
	[ ! -s "$T/opt$opt.calls" ] || fail "$opt $val: a module was loaded"
done
refused opt-missing "--subject DN is required" \
    enroll --key "$(uri 34 x)" --type ec:p256
[ "$REFUSED_RC" = 2 ] || fail "missing --subject: exit status $REFUSED_RC"
refused opt-import "give exactly one certificate FILE" \
    import --key "$(uri 21 rsa-new)"
printf 'not a certificate\n' >"$T/junk.pem"
refused junk "no certificate (-----BEGIN CERTIFICATE-----) in it" \
    import --key "$(uri 21 rsa-new)" --pin "$PIN" "$T/junk.pem"
ok "bad --type, --subject, --san and missing options: usage errors naming them, nothing loaded"
