# p11agent integration tests: virtual PIV smartcards (tests/vcard/) in a
# pcscd of the test's own.  Sourced after tests/lib.sh:
#
#	. "$top_srcdir/tests/lib.sh"
#	. "$top_srcdir/tests/card.sh"
#	make_card c 9a=rsa2048 9c=p256 9e=p256
#
# card_start NAME      a card in the test's pcscd (started on first use:
#                      foreground, in a private mount namespace with its own
#                      /run, reader config for vpcd on ports of its own);
#                      exports PCSCLITE_CSOCK_NAME and OPENSC_CONF; returns
#                      once pcscd has the card in its reader.
#                      Up to two cards a test (vpcd's two readers).
# card_remove NAME     the card pulled: returns once pcscd saw it go
# card_insert NAME     put back: returns once pcscd has it again
# card_restart NAME    the emulator killed and started again (same state)
# card_status NAME     the emulator's status line (pin_tries=N ...)
# pcscd_restart        pcscd stopped and started again (the emulators
#                      reconnect): returns once it has every card back
# make_card NAME SPEC  card_start + keys born on the card and certificates
#                      from make_token's CA: SPEC is SLOT=ALG, e.g. 9a=rsa2048
#                      9c=p256 9e=p384; sets CARD_PIN, CARD_PUK, CARD_PIN_FILE,
#                      CARD_SERIAL, CARD_TOKEN_LABEL, CARD_READER, and
#                      $T/card-NAME-SLOT.pem (certificate), -pub.pem (key)
# card_log_has REGEX [NAME]  the emulator logged a matching APDU line
#
# The emulator's APDU log is $T/card-NAME.log, its state $T/card-NAME.state,
# pcscd's log $T/pcscd.log.

PY3=/usr/bin/python3
VCARD=$top_srcdir/tests/vcard/vcard.py
PIVPROV=$top_srcdir/tests/vcard/pivprov.py
VPCD_DRIVER=/usr/lib/pcsc/drivers/serial/libifdvpcd.so
OPENSC_PKCS11=
for _m in /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so \
    /usr/lib/*/opensc-pkcs11.so /usr/lib64/opensc-pkcs11.so \
    /usr/lib/opensc-pkcs11.so; do
	if [ -e "$_m" ]; then
		OPENSC_PKCS11=$_m
		break
	fi
done
export OPENSC_PKCS11
CARD_PIN=73915846
CARD_PUK=46290513
CARD_MGMT_KEY=000102030405060708090a0b0c0d0e0f
PCSCD_PID=
PCSCD_PORT=
CARD_LAST=
declare -A CARD_PID=() CARD_READER_OF=()

# card_tools: skip (77) when a package the cards need is missing.
card_tools() {
	local t
	for t in pcscd opensc-tool pkcs11-tool unshare openssl ss; do
		command -v "$t" >/dev/null ||
		    skip "$t is missing (packages pcscd opensc iproute2)"
	done
	[ -e "$VPCD_DRIVER" ] || skip "vpcd is missing (vsmartcard-vpcd)"
	[ -n "$OPENSC_PKCS11" ] || skip "opensc-pkcs11.so is missing (opensc-pkcs11)"
	[ -x "$PY3" ] || skip "$PY3 is missing"
	"$PY3" -c 'import cryptography' 2>/dev/null ||
	    skip "python3-cryptography is missing"
	"$PY3" -c 'import smartcard' 2>/dev/null ||
	    skip "python3-pyscard is missing"
	unshare -m --propagation private true 2>/dev/null ||
	    skip "unshare -m is not permitted here (a private pcscd needs it)"
}

# pcscd_log_wait REGEX N [SECONDS]: waits for the Nth matching line of
# pcscd's log (or for pcscd to exit).
pcscd_log_wait() {
	local n
	n=$(timeout $((${3:-20} * SLOW)) tail --pid="$PCSCD_PID" -s 0.05 \
	    -n +1 -f "$T/pcscd.log" | grep -E -c -m "$2" -- "$1")
	[ "$n" -ge "$2" ]
}

# port_free PORT: nothing listens on TCP PORT.
port_free() {
	[ -z "$(ss -Hltn "sport = :$1")" ]
}

# pcscd_run: pcscd in the foreground.  Its socket is /run/pcscd/pcscd.comm,
# fixed: a private /run in a private mount namespace (clients follow
# PCSCLITE_CSOCK_NAME).
pcscd_run() {
	unshare -m --propagation private sh -c \
	    'mount --bind "$1" /run && exec pcscd -f -i -c "$2"' sh \
	    "$T/pcscd-run" "$T/pcscd-conf" >>"$T/pcscd.log" 2>&1 &
	PCSCD_PID=$!
	PIDS+=($PCSCD_PID)
}

# pcscd_restart: pcscd stopped (its cards see EOF) and started again on
# the same ports; returns once it has every card back.
pcscd_restart() {
	local name n
	local -A marks=()
	kill "$PCSCD_PID"
	wait "$PCSCD_PID" 2>/dev/null
	# (not killed again at the end: its pid may be another's by then)
	local p keep=()
	for p in "${PIDS[@]}"; do
		[ "$p" = "$PCSCD_PID" ] || keep+=("$p")
	done
	PIDS=("${keep[@]}")
	n=$(grep -c 'daemon ready' "$T/pcscd.log")
	for name in "${!CARD_READER_OF[@]}"; do
		card_mark "$name" inserted
		marks[$name]=$CARD_MARK
	done
	pcscd_run
	pcscd_log_wait 'daemon ready' $((n + 1)) ||
	    fail "pcscd did not start again: $(tail -n 20 "$T/pcscd.log")"
	for name in "${!CARD_READER_OF[@]}"; do
		CARD_MARK=${marks[$name]}
		card_wait "$name" inserted
	done
}

# pcscd_start: the test's pcscd, on a port pair below the ephemeral range
# (vpcd binds 0.0.0.0:PORT and PORT+1), owned by it (checked: another
# test may have picked the same pair at the same moment).
pcscd_start() {
	local try port
	card_tools
	mkdir -p "$T/pcscd-conf" "$T/pcscd-run"
	printf 'app default {\n\tcard_drivers = PIV-II;\n\tframework pkcs15 {\n%s\n\t}\n}\n' \
	    $'\t\tuse_file_caching = no;' >"$T/opensc.conf"
	export OPENSC_CONF=$T/opensc.conf
	# OpenSC tells the desktop of card events through GIO (a D-Bus
	# notification): no session bus here, and a bus it cannot reach must
	# fail at once
	export DBUS_SESSION_BUS_ADDRESS=unix:path=$T/no-session-bus
	export PCSCLITE_CSOCK_NAME=$T/pcscd-run/pcscd/pcscd.comm
	for try in 1 2 3 4 5; do
		port=$((20000 + 2 * (RANDOM % 6000)))
		port_free "$port" && port_free $((port + 1)) || continue
		printf 'FRIENDLYNAME "Virtual PCD"\nDEVICENAME /dev/null:%s\nLIBPATH %s\n' \
		    "$port" "$VPCD_DRIVER" >"$T/pcscd-conf/vpcd"
		: >"$T/pcscd.log"
		pcscd_run
		pcscd_log_wait 'daemon ready' 1 ||
		    fail "pcscd did not start: $(cat "$T/pcscd.log")"
		if ss -Hltnp "sport = :$port" | grep -q "pid=$PCSCD_PID," &&
		    ss -Hltnp "sport = :$((port + 1))" | grep -q "pid=$PCSCD_PID,"; then
			PCSCD_PORT=$port
			return 0
		fi
		kill "$PCSCD_PID"
		wait "$PCSCD_PID" 2>/dev/null
	done
	fail "pcscd: no free port pair for vpcd in 5 tries: $(cat "$T/pcscd.log")"
}

# card_run NAME: the emulator for NAME (its state exists).
card_run() {
	local r=${CARD_READER_OF[$1]}
	"$PY3" "$VCARD" run --state "$T/card-$1.state" \
	    --port $((PCSCD_PORT + r)) --ctl "$T/card-$1.ctl" \
	    --log "$T/card-$1.log" 2>>"$T/card-$1.err" &
	CARD_PID[$1]=$!
	PIDS+=($!)
}

# card_event_re NAME inserted|removed: pcscd's log line for the event.
card_event_re() {
	case $2 in
	inserted) echo "Card inserted into Virtual PCD 00 0${CARD_READER_OF[$1]}" ;;
	*) echo "Card Removed From Virtual PCD 00 0${CARD_READER_OF[$1]}" ;;
	esac
}

# card_mark NAME inserted|removed: counts the event so far (before the
# action that makes it); card_wait NAME inserted|removed: waits for one
# more (event-driven: pcscd's own log).
card_mark() {
	CARD_MARK=$(grep -c -- "$(card_event_re "$1" "$2")" "$T/pcscd.log")
}
card_wait() {
	pcscd_log_wait "$(card_event_re "$1" "$2")" $((CARD_MARK + 1)) ||
	    fail "card $1 not $2 in pcscd: $(tail -n 20 "$T/pcscd.log")"
}

card_start() {
	local name=$1 t0 n
	t0=$(date +%s%N)
	[ -n "$PCSCD_PID" ] || pcscd_start
	[ -z "${CARD_PID[$name]:-}" ] || fail "card $name already started"
	n=${#CARD_READER_OF[@]}
	[ "$n" -lt 2 ] || fail "card_start $name: at most two cards a test"
	CARD_READER_OF[$name]=$n
	CARD_READER="Virtual PCD 00 0$n"
	if [ ! -e "$T/card-$name.state" ]; then
		"$PY3" "$VCARD" init --state "$T/card-$name.state" \
		    --pin "$CARD_PIN" --puk "$CARD_PUK" \
		    --serial "$(openssl rand -hex 8)" --mgmt-key "$CARD_MGMT_KEY" ||
		    fail "vcard.py init failed"
	fi
	(umask 077 && printf '%s\n' "$CARD_PIN" >"$T/card-$name.pin")
	CARD_PIN_FILE=$T/card-$name.pin
	CARD_LAST=$name
	card_mark "$name" inserted
	card_run "$name"
	card_wait "$name" inserted
	CARD_START_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}

# card_ctl NAME COMMAND: a command to the emulator's control socket.
card_ctl() {
	"$PY3" "$VCARD" ctl --ctl "$T/card-$1.ctl" "$2"
}

card_status() {
	card_ctl "$1" status
}

card_remove() {
	card_mark "$1" removed
	card_ctl "$1" remove >/dev/null || fail "card $1: remove refused"
	card_wait "$1" removed
}

card_insert() {
	card_mark "$1" inserted
	card_ctl "$1" insert >/dev/null || fail "card $1: insert refused"
	card_wait "$1" inserted
}

# card_restart NAME: the emulator process ends (the card goes) and a new
# one starts from the state file (the card comes back).
card_restart() {
	card_mark "$1" removed
	kill "${CARD_PID[$1]}"
	wait "${CARD_PID[$1]}" 2>/dev/null
	card_wait "$1" removed
	card_mark "$1" inserted
	card_run "$1"
	card_wait "$1" inserted
}

# card_log_has REGEX [NAME]
card_log_has() {
	grep -Eq -- "$1" "$T/card-${2:-$CARD_LAST}.log"
}

# pivprov NAME ARGS...: the provisioning tool on NAME's reader.
pivprov() {
	local name=$1
	shift
	"$PY3" "$PIVPROV" --reader "Virtual PCD 00 0${CARD_READER_OF[$name]}" \
	    --mgmt-key "$CARD_MGMT_KEY" "$@"
}

make_card() {
	local name=$1 spec slot alg label
	shift
	[ -n "${TOK:-}" ] || make_token
	card_start "$name"
	printf '%s\n' "basicConstraints = critical, CA:FALSE" \
	    "keyUsage = critical, digitalSignature" \
	    "extendedKeyUsage = clientAuth" "subjectKeyIdentifier = hash" \
	    "authorityKeyIdentifier = keyid" >"$T/card-client.ext"
	for spec in "$@"; do
		slot=${spec%%=*}
		alg=${spec#*=}
		pivprov "$name" genkey "$slot" "$alg" \
		    --out "$T/card-$name-$slot-pub.pem" ||
		    fail "make_card $name: key $spec not generated"
		openssl x509 -new -force_pubkey "$T/card-$name-$slot-pub.pem" \
		    -subj "/O=p11agent tests/CN=p11agent-card-$name-$slot" \
		    -CA "$TOK/ca.pem" -CAkey "$TOK/ca.key" \
		    -set_serial "0x$(openssl rand -hex 8)" -days 30 -sha256 \
		    -extfile "$T/card-client.ext" \
		    -out "$T/card-$name-$slot.pem" 2>"$T/openssl.err" ||
		    fail "make_card $name: $(cat "$T/openssl.err")"
		pivprov "$name" put-cert "$slot" "$T/card-$name-$slot.pem" ||
		    fail "make_card $name: certificate $slot not written"
	done
	CARD_SERIAL=$("$PY3" -c 'import json,sys; print(json.load(open(sys.argv[1]))["serial"])' \
	    "$T/card-$name.state")
	# the label OpenSC gives the token (the CN of its first certificate)
	label=$(pkcs11-tool --module "$OPENSC_PKCS11" -L 2>/dev/null |
	    awk -v r="$CARD_READER" -F': ' '
	    /^Slot / { s = index($0, r) > 0 }
	    s && /token label/ { sub(/ +$/, "", $2); print $2; exit }')
	[ -n "$label" ] || fail "make_card $name: OpenSC lists no token in $CARD_READER"
	CARD_TOKEN_LABEL=$label
}
