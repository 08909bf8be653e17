#!/bin/bash
# The tunnel over a TPM-backed token (issue 8, scope 4): tpm2-pkcs11 on a
# software TPM of the test's own (swtpm, a private session bus,
# tpm2-abrmd), an RSA-2048 and a P-256 key made in the TPM.
# - `p11agent tokens` lists the TPM token and its keys' URIs;
# - `p11agent check` test-signs with both keys;
# - RSA-2048 and P-256 x TLS 1.2 and 1.3: 256 KiB round-trip byte-exact to
#   an upstream that requires a client certificate, which saw the
#   certificate read from the TPM token (no cert = in the config);
# - the PKCS#11 call log (the fault module wrapping tpm2-pkcs11) has only
#   allowed calls and reads only public attributes of the private keys;
# - the module found through p11-kit's registry (no module =) works too.
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/tpm.sh"
make_token
t0=$(date +%s%N)
make_tpm_token
ok "TPM token '$TPM_TOKEN_LABEL' with RSA-2048 and P-256 keys in $(( ($(date +%s%N) - t0) / 1000000 )) ms"

# ---- tokens
out=$("$P11AGENT" tokens -m "$TPM_MODULE" --pin "file:$TPM_PIN_FILE" \
    "pkcs11:token=$TPM_TOKEN_LABEL" 2>&1) || fail "tokens: $out"
for want in "token: token '$TPM_TOKEN_LABEL' (IBM" \
    "key: private key, RSA 2048, sensitive, not extractable" \
    "key: private key, EC P-256, sensitive, not extractable" \
    "token=$TPM_TOKEN_LABEL;id=$TPM_RSA_ID;object=rsa-key;type=private" \
    "token=$TPM_TOKEN_LABEL;id=$TPM_EC_ID;object=ec-key;type=private" \
    "cert: certificate /O=p11agent tests/CN=p11agent-tpm-rsa" \
    "token=$TPM_TOKEN_LABEL;id=$TPM_EC_ID;object=ec-cert;type=cert"; do
	grep -qF -- "$want" <<<"$out" || fail "tokens does not list: $want
$out"
done
ok "tokens lists the TPM token, its keys and certificates with their URIs"

start_upstream s12 --tls1.2
start_upstream s13 --tls1.3
export P11FAULT_MODULE=$TPM_MODULE
# tpm_identity NAME ID [module line]
tpm_identity() {
	printf '[identity %s]\nkey = pkcs11:token=%s;id=%s;type=private\n' \
	    "$1" "$TPM_TOKEN_LABEL" "$2"
	printf 'pin = file:%s\n%s\n\n' "$TPM_PIN_FILE" "${3-module = $FAULT}"
}
{
	agent_section
	tpm_identity rsa "$TPM_RSA_ID"
	tpm_identity ec "$TPM_EC_ID"
	for key in rsa ec; do
		for v in 12 13; do
			port=s${v}_port
			tunnel "$key$v" "localhost:${!port}" "$key"
		done
	done
} >"$T/agent.conf"

# ---- check
export P11FAULT_LOG=$T/cli.calls
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || fail "check: $out"
grep -q "^identity rsa: ok: RSA key, certificate /O=p11agent tests/CN=p11agent-tpm-rsa, test signature verified$" <<<"$out" &&
    grep -q "^identity ec: ok: EC key, certificate /O=p11agent tests/CN=p11agent-tpm-ec, test signature verified$" <<<"$out" ||
    fail "check: no verified test signature by each key: $out"
ok "check: a verified test signature by each TPM key"

# ---- the tunnels
export P11FAULT_LOG=$T/run.calls
start_agent "$T/agent.conf" || fail "the agent did not start"
for key in rsa ec; do
	for v in 12 13; do
		out=$("$CLIENT" "$(listen_addr "$key$v" tcp)" roundtrip \
		    --bytes 262144 --expect-subject "CN=p11agent-tpm-$key") ||
		    fail "$key TLS1.${v#1}: $out"
		case $out in
		"subject="*"CN=p11agent-tpm-$key"*" version=TLSv1.${v#1} "*"ok bytes=262144"*) ;;
		*) fail "$key TLS1.${v#1}: unexpected: $out" ;;
		esac
		ok "$key TLSv1.${v#1}: $(tail -n 1 <<<"$out")"
	done
done
if grep -Eiq 'tpm2|tss2|p11fault|p11-kit' "/proc/$AGENT_PID/maps"; then
	fail "a PKCS#11 module or the TSS is mapped in the agent process"
fi
stop_agent || fail "the agent did not exit cleanly"
ok "no PKCS#11 module, p11-kit or TSS library in the agent process"

allowed='C_Initialize C_Finalize C_GetInfo C_GetSlotList C_GetSlotInfo
C_GetTokenInfo C_GetMechanismList C_GetMechanismInfo C_OpenSession
C_CloseSession C_Login C_Logout C_FindObjectsInit C_FindObjects
C_FindObjectsFinal C_GetAttributeValue C_SignInit C_Sign
C_GetSessionInfo C_WaitForSlotEvent'
key_attrs='0x0 0x1 0x2 0x3 0x100 0x102 0x103 0x120 0x121 0x122 0x162 0x164 0x165 0x170 0x180 0x202'
calls_allowed "$allowed" "$key_attrs" "$T/run.calls" "$T/cli.calls" ||
    fail "the call log shows a forbidden call"
signs=$(grep -c ' C_Sign 0x0' "$T/run.calls")
[ "$signs" -ge 2 ] && [ "$signs" -le 4 ] ||
    fail "$signs C_Sign for 4 handshakes with 2 keys (resumption allowed)"
ok "$(cat "$T/run.calls" "$T/cli.calls" | wc -l) PKCS#11 calls, all allowed, $signs C_Sign"

# ---- registry mode: tpm2-pkcs11 found through p11-kit's registry
unset P11FAULT_MODULE P11FAULT_LOG
grep -lqs 'tpm2_pkcs11' /usr/share/p11-kit/modules/*.module ||
    fail "tpm2-pkcs11 is not in p11-kit's registry (/usr/share/p11-kit/modules)"
{
	agent_section
	tpm_identity rsa "$TPM_RSA_ID" ""
	tunnel rsa13 "localhost:$s13_port" rsa
} >"$T/registry.conf"
start_agent "$T/registry.conf" || fail "the agent did not start (registry)"
out=$("$CLIENT" "$(listen_addr rsa13 tcp)" roundtrip --bytes 10000 \
    --expect-subject "CN=p11agent-tpm-rsa") || fail "registry: $out"
stop_agent || fail "the agent did not exit cleanly (registry)"
ok "registry: $(grep -m 1 -o "identity rsa: token '$TPM_TOKEN_LABEL'.* in [^ ;]*" "$T/agent.log" || echo found); $(tail -n 1 <<<"$out")"
