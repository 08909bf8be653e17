# p11agent integration tests: a software TPM and a tpm2-pkcs11 token on it.
# Sourced by tests/t-*.sh after tests/lib.sh.
#
# tpm_start starts, for this test alone, a swtpm on two free loopback
# ports, a private D-Bus session bus and a tpm2-abrmd on that bus (each
# started and stopped by pid, each waited for with a deadline) and exports
# what TPM clients need: TPM2TOOLS_TCTI, TPM2_PKCS11_TCTI, TPM2_PKCS11_STORE
# and DBUS_SESSION_BUS_ADDRESS.  The agent passes its environment to its
# helpers, so the tpm2-pkcs11 module they load finds the same TPM.
#
# make_tpm_token (after make_token and tpm_start) puts a tpm2-pkcs11
# token on that TPM with an RSA-2048 and a P-256 key made in the TPM, and
# certificates for them issued by the test CA written beside the keys.
#
# A missing package skips the test (77), naming the package; under CI
# (CI set) it fails instead: CI must run this suite.

TPM_PKGS=

# tpm_need FILE PACKAGE: notes PACKAGE as missing when FILE (a path, or a
# command name) is not there.
tpm_need() {
	case $1 in
	/*) [ -e "$1" ] && return 0 ;;
	*) command -v "$1" >/dev/null 2>&1 && return 0 ;;
	esac
	TPM_PKGS="${TPM_PKGS}${TPM_PKGS:+ }$2"
}

# tpm_find_module: sets TPM_MODULE to tpm2-pkcs11's module, found by path.
tpm_find_module() {
	local m
	TPM_MODULE=
	for m in /usr/lib/*-linux-gnu/libtpm2_pkcs11.so.1 \
	    /usr/lib64/libtpm2_pkcs11.so.1 /usr/lib/libtpm2_pkcs11.so.1; do
		if [ -e "$m" ]; then
			TPM_MODULE=$m
			return 0
		fi
	done
	return 1
}

# tpm_tcti_lib NAME: true when libtss2-tcti-NAME.so.0 is installed.
tpm_tcti_lib() {
	local l
	for l in /usr/lib/*-linux-gnu/libtss2-tcti-"$1".so.0 \
	    /usr/lib64/libtss2-tcti-"$1".so.0 /usr/lib/libtss2-tcti-"$1".so.0; do
		[ -e "$l" ] && return 0
	done
	return 1
}

# tpm_check_tools: skips (fails under CI) unless every tool is there.
tpm_check_tools() {
	tpm_need swtpm swtpm
	tpm_need tpm2_dictionarylockout tpm2-tools
	tpm_need tpm2-abrmd tpm2-abrmd
	tpm_need dbus-daemon dbus-daemon
	tpm_need gdbus libglib2.0-bin
	tpm_need tpm2_ptool libtpm2-pkcs11-tools
	tpm_need pkcs11-tool opensc
	tpm_need openssl openssl
	tpm_find_module || TPM_PKGS="${TPM_PKGS}${TPM_PKGS:+ }libtpm2-pkcs11-1"
	tpm_tcti_lib tabrmd || TPM_PKGS="${TPM_PKGS}${TPM_PKGS:+ }libtss2-tcti-tabrmd0"
	tpm_tcti_lib swtpm || TPM_PKGS="${TPM_PKGS}${TPM_PKGS:+ }libtss2-tcti-swtpm0"
	[ -z "$TPM_PKGS" ] && return 0
	[ -z "${CI:-}" ] || fail "the TPM suite must run in CI, but these packages are missing: $TPM_PKGS"
	skip "TPM suite: missing packages: $TPM_PKGS (apt-get install $TPM_PKGS)"
}

# tpm_race PID CMD...: runs CMD in the background and waits until it or
# PID ends, whichever is first; returns 0 when CMD ended first and
# succeeded.  (A daemon that dies cannot leave its waiter hanging until
# the deadline.)
tpm_race() {
	local pid=$1 w= rc job
	shift
	"$@" &
	job=$!
	rc=0
	wait -n -p w "$pid" "$job" || rc=$?
	if [ "$w" = "$job" ]; then
		return "$rc"
	fi
	kill "$job" 2>/dev/null
	wait "$job" 2>/dev/null
	return 1
}

# tpm_swtpm PORT: a swtpm on PORT (commands) and PORT+1 (control), the
# pair the swtpm TCTI expects; returns 0 once it listens (it writes its
# pid into a fifo after binding both), 2 when a port is taken, 1 on any
# other failure.
tpm_swtpm() {
	local port=$1 pid
	rm -f "$TPMD/pid.fifo" "$TPMD/pid"
	mkfifo "$TPMD/pid.fifo"
	swtpm socket --tpm2 \
	    --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
	    --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
	    --tpmstate "dir=$TPMD/state" --flags not-need-init,startup-clear \
	    --pid "file=$TPMD/pid.fifo" --log "file=$TPMD/swtpm.log" \
	    2>"$TPMD/swtpm.err" &
	pid=$!
	if tpm_race "$pid" timeout $((20 * SLOW)) head -n 1 "$TPMD/pid.fifo" \
	    >"$TPMD/pid" && [ "$(cat "$TPMD/pid")" = "$pid" ]; then
		PIDS+=("$pid")
		TPM_SWTPM_PID=$pid
		TPM_PORT=$port
		return 0
	fi
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	grep -q 'Address already in use' "$TPMD/swtpm.err" && return 2
	return 1
}

# tpm_start: swtpm, a private session bus and tpm2-abrmd, for this test.
tpm_start() {
	local i rc port fd addr
	tpm_check_tools
	TPMD=$T/tpm
	mkdir -p "$TPMD/state" "$TPMD/store"
	# a random even port below the ephemeral range (where the kernel
	# puts other tests' ports), never the TCTIs' default 2321: another
	# test of this suite may hold it, so a taken pair means another try
	for i in 1 2 3 4 5 6 7 8; do
		port=$((20000 + (RANDOM % 6000) * 2))
		rc=0
		tpm_swtpm "$port" || rc=$?
		[ "$rc" = 2 ] || break
	done
	[ "$rc" = 0 ] || fail "swtpm did not start: $(cat "$TPMD/swtpm.err" "$TPMD/swtpm.log" 2>/dev/null)"

	# a session bus of our own: abrmd owns its name there, on no bus
	# the machine has
	mkfifo "$TPMD/bus.fifo"
	dbus-daemon --session --nofork --nopidfile --print-address=3 \
	    3>"$TPMD/bus.fifo" 2>"$TPMD/dbus.log" &
	PIDS+=($!)
	exec {fd}<"$TPMD/bus.fifo"
	read -t $((20 * SLOW)) -u "$fd" addr ||
	    fail "dbus-daemon did not start: $(cat "$TPMD/dbus.log")"
	exec {fd}<&-
	export DBUS_SESSION_BUS_ADDRESS=$addr

	tpm2-abrmd --session --allow-root --flush-all \
	    --tcti="swtpm:host=127.0.0.1,port=$TPM_PORT" \
	    >"$TPMD/abrmd.log" 2>&1 &
	TPM_ABRMD_PID=$!
	PIDS+=($TPM_ABRMD_PID)
	tpm_race "$TPM_ABRMD_PID" gdbus wait --session \
	    --timeout $((20 * SLOW)) com.intel.tss2.Tabrmd ||
	    fail "tpm2-abrmd did not start: $(cat "$TPMD/abrmd.log")"

	export TPM2TOOLS_TCTI=tabrmd:bus_type=session
	export TPM2_PKCS11_TCTI=tabrmd:bus_type=session
	export TPM2_PKCS11_STORE=$TPMD/store
	# without this, three wrong PINs lock the whole TPM for minutes
	tpm2_dictionarylockout --setup-parameters --max-tries=4294967295 \
	    --recovery-time=0 --lockout-recovery-time=0 \
	    >"$TPMD/lockout.log" 2>&1 ||
	    fail "tpm2_dictionarylockout: $(cat "$TPMD/lockout.log")"
}

# tpm_run CMD...: runs CMD quietly, failing the test with its output.
tpm_run() {
	"$@" >"$TPMD/cmd.log" 2>&1 || fail "$*: $(cat "$TPMD/cmd.log")"
}

# tpm_issue KIND ID: a certificate by the test CA for the TPM key ID
# (ASCII hex, e.g. 3031), written to the TPM token with that ID.
tpm_issue() {
	local kind=$1 id=$2
	tpm_run pkcs11-tool --module "$TPM_MODULE" --token-label "$TPM_TOKEN_LABEL" \
	    --read-object --type pubkey --id "$id" -o "$TPMD/$kind-pub.der"
	tpm_run openssl pkey -pubin -inform DER -in "$TPMD/$kind-pub.der" \
	    -out "$TPMD/$kind-pub.pem"
	tpm_run openssl x509 -new -force_pubkey "$TPMD/$kind-pub.pem" \
	    -subj "/CN=p11agent-tpm-$kind/O=p11agent tests" \
	    -CA "$TOK/ca.pem" -CAkey "$TOK/ca.key" \
	    -set_serial "0x$(openssl rand -hex 8)" -days 30 -sha256 \
	    -extfile "$TPMD/client.ext" -out "$TPMD/client-$kind.pem"
	tpm_run openssl x509 -in "$TPMD/client-$kind.pem" -outform DER \
	    -out "$TPMD/client-$kind.der"
	tpm_run pkcs11-tool --module "$TPM_MODULE" --token-label "$TPM_TOKEN_LABEL" \
	    --login --pin "$(cat "$TPM_PIN")" --write-object "$TPMD/client-$kind.der" \
	    --type cert --id "$id" --label "$kind-key"
}

# make_tpm_token: a tpm2-pkcs11 token on the TPM of tpm_start, with keys
# made in the TPM: "rsa-key" (RSA-2048) and "ec-key" (P-256), their
# certificates (CN=p11agent-tpm-rsa / -ec, by $TOK/ca.pem) beside them.
# Sets TPM_TOKEN_LABEL, TPM_PIN (a file), TPM_MODULE, TPM_RSA_ID and
# TPM_EC_ID (URI-encoded: tpm2_ptool stores --id=01 as the ASCII "01").
make_tpm_token() {
	local sopin=tpmSo-8nB1 pin=tpmP1n-6rK3
	: "${TOK:?make_token first}" "${TPMD:?tpm_start first}"
	TPM_TOKEN_LABEL=p11agent-tpm
	TPM_PIN=$TPMD/pin
	(umask 077 && printf '%s\n' "$pin" >"$TPM_PIN")
	printf '%s\n' "basicConstraints = critical, CA:FALSE" \
	    "keyUsage = critical, digitalSignature" \
	    "extendedKeyUsage = clientAuth" "subjectKeyIdentifier = hash" \
	    "authorityKeyIdentifier = keyid" >"$TPMD/client.ext"
	tpm_run tpm2_ptool init --path "$TPM2_PKCS11_STORE"
	tpm_run tpm2_ptool addtoken --path "$TPM2_PKCS11_STORE" --pid=1 \
	    --label="$TPM_TOKEN_LABEL" --sopin="$sopin" --userpin="$pin"
	tpm_run tpm2_ptool addkey --path "$TPM2_PKCS11_STORE" \
	    --label="$TPM_TOKEN_LABEL" --key-label=rsa-key --id=01 \
	    --userpin="$pin" --algorithm=rsa2048
	tpm_run tpm2_ptool addkey --path "$TPM2_PKCS11_STORE" \
	    --label="$TPM_TOKEN_LABEL" --key-label=ec-key --id=02 \
	    --userpin="$pin" --algorithm=ecc256
	TPM_RSA_ID=%30%31
	TPM_EC_ID=%30%32
	tpm_issue rsa 3031
	tpm_issue ec 3032
}

# tpm_identity NAME ID [MODULE]: an [identity] section for the TPM key ID
# (URI-encoded); without MODULE, found through p11-kit's registry.
tpm_identity() {
	printf '[identity %s]\nkey = pkcs11:token=%s;id=%s;type=private\n' \
	    "$1" "$TPM_TOKEN_LABEL" "$2"
	printf 'pin = file:%s\n' "$TPM_PIN"
	[ -z "${3:-}" ] || printf 'module = %s\n' "$3"
	echo
}
