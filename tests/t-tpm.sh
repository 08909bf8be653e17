#!/bin/bash
# TPM-backed keys: tpm2-pkcs11 on a software TPM of this test's own
# (swtpm, a private session bus, tpm2-abrmd: tests/tpm.sh), keys made in
# the TPM.  {RSA-2048, P-256} x {TLS 1.2, TLS 1.3}: 1 MiB round-trips
# byte-exact through the tunnel to an upstream that requires a client
# certificate and reports the subject of the certificate read from the
# TPM token (no cert = in the config).  Once with the module loaded
# through the fault module (its call log proves no key left the TPM),
# once found through p11-kit's registry by token=.  'p11agent tokens'
# lists the TPM token's keys with their URIs; 'p11agent check'
# test-signs with both keys.  The agent's helpers reach the TPM through
# the environment the agent passes them (TPM2_PKCS11_TCTI,
# TPM2_PKCS11_STORE, DBUS_SESSION_BUS_ADDRESS).
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/tpm.sh"
make_token
: >>"$T/agent.log"
begin=$(date +%s%N)
tpm_start
ok "swtpm (pid $TPM_SWTPM_PID, port $TPM_PORT), bus and tpm2-abrmd (pid $TPM_ABRMD_PID) up in $(( ($(date +%s%N) - begin) / 1000000 )) ms"
make_tpm_token
ok "tpm2-pkcs11 token '$TPM_TOKEN_LABEL' with RSA-2048 and P-256 keys and their certificates in $(( ($(date +%s%N) - begin) / 1000000 )) ms"
export P11FAULT_MODULE=$TPM_MODULE

# --- p11agent tokens: the TPM token, its keys and their URIs -------------
export P11FAULT_LOG=$T/cli.calls
out=$("$P11AGENT" tokens -m "$FAULT" --pin "file:$TPM_PIN") ||
    fail "tokens: $out"
want() {
	grep -Eq -- "$1" <<<"$out" || fail "tokens output lacks: $1
$out"
}
want "^module: .*libp11fault.so \(TPM2.0 Cryptoki, "
want "^    token: token '$TPM_TOKEN_LABEL' \("
want "^      key: private key, RSA 2048, sensitive, not extractable$"
want "^      key: private key, EC P-256, sensitive, not extractable$"
want "^      cert: certificate /CN=p11agent-tpm-rsa/O=p11agent tests$"
want "^      cert: certificate /CN=p11agent-tpm-ec/O=p11agent tests$"
want "^        pkcs11:.*token=$TPM_TOKEN_LABEL;id=$TPM_RSA_ID;object=rsa-key;type=private$"
want "^        pkcs11:.*token=$TPM_TOKEN_LABEL;id=$TPM_EC_ID;object=ec-key;type=private$"
want "^        pkcs11:.*token=$TPM_TOKEN_LABEL;id=$TPM_EC_ID;object=ec-key;type=cert$"
ok "tokens lists the TPM token's keys and certificates with their URIs"
# the listed URI, as it is, in a config (tpm2-pkcs11 pads its model
# with NUL bytes: the URI carries them as %00)
listed=$(grep -E "^        pkcs11:.*object=ec-key;type=private$" <<<"$out" | tr -d ' ')

# and through p11-kit's registry: the tpm2-pkcs11 module is registered
# (libtpm2-pkcs11-1's entry) and finds the TPM from the environment
out=$("$P11AGENT" tokens 2>"$T/tokens.err") || fail "tokens via the registry: $out"
want "^module: .*libtpm2_pkcs11.so \(TPM2.0 Cryptoki, "
want "^    token: token '$TPM_TOKEN_LABEL' \("
want "^      cert: certificate /CN=p11agent-tpm-rsa/O=p11agent tests$"
ok "tokens through the registry lists the TPM token"

# --- the full tunnel, the module through the fault module ----------------
start_upstream s12 --tls1.2
start_upstream s13 --tls1.3

# tpm_conf MODULE: identities rsa and ec on the TPM token (MODULE empty:
# through the registry), a tunnel for each key and TLS version
tpm_conf() {
	agent_section
	tpm_identity rsa "$TPM_RSA_ID" "$1"
	tpm_identity ec "$TPM_EC_ID" "$1"
	for key in rsa ec; do
		for v in 12 13; do
			port=s${v}_port
			tunnel "$key$v" "localhost:${!port}" "$key"
		done
	done
}

# roundtrips WHAT: 1 MiB through every tunnel, the TPM certificate's
# subject seen by the upstream
roundtrips() {
	local key v out
	for key in rsa ec; do
		for v in 12 13; do
			out=$("$CLIENT" "$(listen_addr "$key$v" tcp)" roundtrip \
			    --bytes 1048576 --expect-subject "CN=p11agent-tpm-$key") ||
			    fail "$1: $key TLS1.${v#1}: $out"
			case $out in
			"subject=O=p11agent tests,CN=p11agent-tpm-$key version=TLSv1.${v#1} "*"ok bytes=1048576"*) ;;
			*) fail "$1: $key TLS1.${v#1}: unexpected: $out" ;;
			esac
			ok "$1: $key TLSv1.${v#1}: $(tr '\n' ' ' <<<"$out")"
		done
	done
}

tpm_conf "$FAULT" >"$T/agent.conf"
grep -q '^cert =' "$T/agent.conf" && fail "the config names a certificate file"
out=$("$P11AGENT" check -c "$T/agent.conf") || fail "check: $out"
for key in rsa ec; do
	kind=RSA
	[ "$key" = ec ] && kind=EC
	grep -q "^identity $key: ok: $kind key, certificate /CN=p11agent-tpm-$key/O=p11agent tests, test signature verified$" <<<"$out" ||
	    fail "check: $out"
done
ok "check test-signs with both TPM keys: $(grep -c 'test signature verified' <<<"$out") identities"

export P11FAULT_LOG=$T/run.calls
log_mark
start_agent "$T/agent.conf" || fail "the agent did not start"
roundtrips "fault module"
if grep -Eiq 'tpm2|tss2|p11fault|pkcs11|p11-kit' "/proc/$AGENT_PID/maps"; then
	fail "a PKCS#11 module, the TSS or p11-kit is mapped in the agent process"
fi
ok "the agent process maps neither tpm2-pkcs11 nor the TSS"
stop_agent || fail "the agent did not exit cleanly"
handshakes=$(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -c ': TLSv1\.[23] to ')
signs=$(grep -c ' C_Sign 0x0' "$T/run.calls")
inits=$(grep -c ' C_SignInit 0x0' "$T/run.calls")
[ "$handshakes" = 4 ] || fail "$handshakes handshakes, wanted 4"
[ "$signs" = 4 ] && [ "$inits" = 4 ] ||
    fail "$signs C_Sign and $inits C_SignInit for 4 full handshakes"
ok "4 full handshakes, 4 C_SignInit + C_Sign on the TPM"

# every call is one signing needs (lib.sh: SIGN_ONLY_CALLS); of a private key
# only public attributes were read
calls_allowed "$SIGN_ONLY_CALLS" "$KEY_PUBLIC_ATTRS" "$T/run.calls" "$T/cli.calls" ||
    fail "the call log shows a forbidden call"
grep -q ' C_GetAttributeValue .* class=0x3 ' "$T/run.calls" ||
    fail "the call log shows no private key's attributes read: it proves nothing"
ok "$(cat "$T/run.calls" "$T/cli.calls" | wc -l) logged calls, all allowed; private keys: only public attributes read"

# the URI 'p11agent tokens' listed works as it is
{
	agent_section
	printf '[identity listed]\nkey = %s\npin = file:%s\nmodule = %s\n\n' \
	    "$listed" "$TPM_PIN" "$FAULT"
	tunnel t "localhost:$s13_port" listed
} >"$T/listed.conf"
out=$("$P11AGENT" check -c "$T/listed.conf") || fail "check of the listed URI: $out"
grep -q "^identity listed: ok: EC key, certificate /CN=p11agent-tpm-ec/" <<<"$out" ||
    fail "check of the listed URI: $out"
ok "the listed URI works: $listed"

# --- the same through p11-kit's registry, by token= ----------------------
# (in a --enable-sanitizers build: tpm2-pkcs11 1.9.0 leaks in C_SignInit
# for EC keys; the helper's built-in suppression names the module, which
# works above, where the fault module keeps it loaded, but p11-kit
# unloads a registry module before the helper exits and the leak's stack
# then names no module: no leak check from here on)
export ASAN_OPTIONS=$ASAN_OPTIONS:detect_leaks=0
tpm_conf "" >"$T/registry.conf"
grep -q '^module =' "$T/registry.conf" && fail "the registry config names a module"
out=$("$P11AGENT" check -c "$T/registry.conf" 2>&1) || fail "check (registry): $out"
[ "$(grep -c "test signature verified" <<<"$out")" = 2 ] || fail "check (registry): $out"
log_mark
start_agent "$T/registry.conf" || fail "the agent did not start (registry)"
for key in rsa ec; do
	log_since_has "identity $key: token '$TPM_TOKEN_LABEL' .* in tpm2_pkcs11" ||
	    fail "identity $key was not found in tpm2_pkcs11"
done
ok "registry: $(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -m 1 "identity rsa: token '$TPM_TOKEN_LABEL'" | sed 's/^p11agent: //')"
roundtrips "registry"
stop_agent || fail "the agent did not exit cleanly"
