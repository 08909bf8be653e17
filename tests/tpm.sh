# p11agent integration tests: a TPM-backed token (tpm2-pkcs11) on a
# software TPM of the test's own.  Sourced after tests/lib.sh:
#
#	. "$top_srcdir/tests/lib.sh"
#	. "$top_srcdir/tests/tpm.sh"
#	make_tpm_token
#
# tpm_start       swtpm on loopback ports of its own, a private session bus
#                 and tpm2-abrmd on it, each started and stopped by pid;
#                 the TPM's dictionary-attack lockout is set up so that wrong
#                 PINs cannot lock it; exports TPM2TOOLS_TCTI,
#                 TPM2_PKCS11_TCTI, TPM2_PKCS11_STORE and
#                 DBUS_SESSION_BUS_ADDRESS for everything the test runs after
#                 (the agent passes them on to its helpers).
# make_tpm_token  tpm_start, then (tpm2_ptool) a token with an RSA-2048 key
#                 (id "01", ASCII: %30%31) and a P-256 key (id "02": %30%32)
#                 made in the TPM, and certificates for them from make_token's
#                 CA written beside them; sets TPM_MODULE, TPM_TOKEN_LABEL,
#                 TPM_PIN_FILE, TPM_RSA_ID, TPM_EC_ID and $T/tpm-rsa.pem,
#                 $T/tpm-ec.pem.
#
# Logs: $T/swtpm.log, $T/dbus.log, $T/abrmd.log.
# (FACTS.md, "TPM-backed tokens", has the pitfalls this avoids.)

TPM_MODULE=
for _m in /usr/lib/x86_64-linux-gnu/libtpm2_pkcs11.so.1 \
    /usr/lib/*/libtpm2_pkcs11.so.1 /usr/lib/*/pkcs11/libtpm2_pkcs11.so \
    /usr/lib64/libtpm2_pkcs11.so.1; do
	if [ -e "$_m" ]; then
		TPM_MODULE=$_m
		break
	fi
done
TPM_TOKEN_LABEL=p11agent-tpm
TPM_PIN=1234
TPM_SOPIN=5678
TPM_RSA_ID=%30%31
TPM_EC_ID=%30%32
TPM_PORT=

# tpm_tools: skip (77) when a package the TPM suite needs is missing.
tpm_tools() {
	local t
	for t in swtpm:swtpm tpm2-abrmd:tpm2-abrmd dbus-daemon:dbus-daemon \
	    tpm2_ptool:libtpm2-pkcs11-tools tpm2_dictionarylockout:tpm2-tools \
	    tpm2_getrandom:tpm2-tools pkcs11-tool:opensc ss:iproute2; do
		command -v "${t%%:*}" >/dev/null ||
		    skip "${t%%:*} is missing (package ${t#*:})"
	done
	[ -n "$TPM_MODULE" ] ||
	    skip "libtpm2_pkcs11.so.1 is missing (package libtpm2-pkcs11-1)"
	ls /usr/lib/*/libtss2-tcti-tabrmd.so* >/dev/null 2>&1 ||
	    skip "the tabrmd TCTI is missing (package libtss2-tcti-tabrmd0)"
}

# tpm_wait WHAT CMD...: runs CMD every 50 ms until it succeeds, for at
# most 20 s (times $SLOW): the daemons say nothing when they are ready.
tpm_wait() {
	local what=$1 i
	shift
	for ((i = 0; i < 400 * SLOW; i++)); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.05
	done
	fail "$what: not ready in $((20 * SLOW)) s"
}

# tpm_listening PID PORT: PID listens on loopback TCP PORT.
tpm_listening() {
	ss -Hltnp "sport = :$2" | grep -q "pid=$1,"
}

tpm_start() {
	local try port pid addr fd i
	tpm_tools
	mkdir -p "$T/tpm-state" "$T/tpm-store"
	# swtpm: server and control ports, a pair below the ephemeral range
	# that nobody else holds (checked: another test may pick it too)
	for try in 1 2 3 4 5; do
		port=$((20000 + 2 * (RANDOM % 6000)))
		port_free_tpm "$port" && port_free_tpm $((port + 1)) || continue
		swtpm socket --tpm2 \
		    --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
		    --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" \
		    --tpmstate "dir=$T/tpm-state" \
		    --flags not-need-init,startup-clear \
		    --log "file=$T/swtpm.log" >>"$T/swtpm.log" 2>&1 &
		pid=$!
		PIDS+=($pid)
		# until it listens on both, or exits (a port taken meanwhile)
		for ((i = 0; i < 400 * SLOW; i++)); do
			kill -0 "$pid" 2>/dev/null || break
			tpm_listening "$pid" "$port" &&
			    tpm_listening "$pid" $((port + 1)) && break
			sleep 0.05
		done
		if kill -0 "$pid" 2>/dev/null &&
		    tpm_listening "$pid" $((port + 1)); then
			TPM_PORT=$port
			break
		fi
		kill "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
	done
	[ -n "$TPM_PORT" ] || fail "swtpm: no free port pair in 5 tries: $(tail -n 5 "$T/swtpm.log")"
	# a session bus of the test's own, for tpm2-abrmd (its address is
	# printed on a fifo once it listens)
	mkfifo "$T/dbus.fifo"
	dbus-daemon --session --nofork --nosyslog \
	    --address="unix:path=$T/dbus.sock" --print-address=1 \
	    >"$T/dbus.fifo" 2>>"$T/dbus.log" &
	PIDS+=($!)
	exec {fd}<"$T/dbus.fifo"
	read -r -t $((20 * SLOW)) -u "$fd" addr ||
	    fail "dbus-daemon did not start: $(cat "$T/dbus.log")"
	exec {fd}<&-
	export DBUS_SESSION_BUS_ADDRESS=$addr
	# tpm2-abrmd: without it tpm2_ptool runs out of object contexts and a
	# killed client leaks TPM objects
	tpm2-abrmd --session --allow-root --flush-all \
	    --tcti="swtpm:host=127.0.0.1,port=$TPM_PORT" >>"$T/abrmd.log" 2>&1 &
	PIDS+=($!)
	export TPM2TOOLS_TCTI=tabrmd:bus_type=session
	export TPM2_PKCS11_TCTI=tabrmd:bus_type=session
	export TPM2_PKCS11_STORE=$T/tpm-store
	tpm_wait "tpm2-abrmd ($(tail -n 3 "$T/abrmd.log"))" tpm2_getrandom 8
	# three wrong PINs must not lock the whole TPM for minutes
	tpm2_dictionarylockout --setup-parameters --max-tries=4294967295 \
	    --recovery-time=0 --lockout-recovery-time=0 >>"$T/abrmd.log" 2>&1 ||
	    fail "tpm2_dictionarylockout failed: $(tail -n 3 "$T/abrmd.log")"
}

# port_free_tpm PORT: nothing listens on TCP PORT.
port_free_tpm() {
	[ -z "$(ss -Hltn "sport = :$1")" ]
}

# tpm_run CMD...: runs quietly; on failure fails the test with its output.
tpm_run() {
	"$@" >"$T/tpm-cmd.log" 2>&1 ||
	    fail "$1 failed: $(tail -n 20 "$T/tpm-cmd.log")"
}

make_tpm_token() {
	local name id alg
	[ -n "${TOK:-}" ] || make_token
	tpm_start
	tpm_run tpm2_ptool init --path="$TPM2_PKCS11_STORE"
	tpm_run tpm2_ptool addtoken --path="$TPM2_PKCS11_STORE" --pid=1 \
	    --label="$TPM_TOKEN_LABEL" --sopin="$TPM_SOPIN" --userpin="$TPM_PIN"
	(umask 077 && printf '%s\n' "$TPM_PIN" >"$T/tpm.pin")
	TPM_PIN_FILE=$T/tpm.pin
	printf '%s\n' "basicConstraints = critical, CA:FALSE" \
	    "keyUsage = critical, digitalSignature" \
	    "extendedKeyUsage = clientAuth" "subjectKeyIdentifier = hash" \
	    "authorityKeyIdentifier = keyid" >"$T/tpm-client.ext"
	for name in rsa:01:rsa2048 ec:02:ecc256; do
		IFS=: read -r name id alg <<<"$name"
		# --id is stored as ASCII: "01" is CKA_ID 0x3031
		tpm_run tpm2_ptool addkey --path="$TPM2_PKCS11_STORE" \
		    --label="$TPM_TOKEN_LABEL" --key-label="$name-key" --id="$id" \
		    --userpin="$TPM_PIN" --algorithm="$alg"
		tpm_run pkcs11-tool --module "$TPM_MODULE" \
		    --token-label "$TPM_TOKEN_LABEL" --read-object --type pubkey \
		    --id "$(printf '%s' "$id" | od -An -tx1 | tr -d ' \n')" \
		    -o "$T/tpm-$name-pub.der"
		tpm_run openssl pkey -pubin -inform DER -in "$T/tpm-$name-pub.der" \
		    -out "$T/tpm-$name-pub.pem"
		tpm_run openssl x509 -new -force_pubkey "$T/tpm-$name-pub.pem" \
		    -subj "/O=p11agent tests/CN=p11agent-tpm-$name" \
		    -CA "$TOK/ca.pem" -CAkey "$TOK/ca.key" \
		    -set_serial "0x$(openssl rand -hex 8)" -days 30 -sha256 \
		    -extfile "$T/tpm-client.ext" -out "$T/tpm-$name.pem"
		tpm_run openssl x509 -in "$T/tpm-$name.pem" -outform DER \
		    -out "$T/tpm-$name.der"
		tpm_run pkcs11-tool --module "$TPM_MODULE" \
		    --token-label "$TPM_TOKEN_LABEL" --login --pin "$TPM_PIN" \
		    --write-object "$T/tpm-$name.der" --type cert \
		    --id "$(printf '%s' "$id" | od -An -tx1 | tr -d ' \n')" \
		    --label "$name-cert"
	done
}
