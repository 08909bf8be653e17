#!/bin/bash
# pin = pinentry (issue 6, item 1): the token helper runs the identity's
# pinentry-program (here tests/pinentry-stub, which speaks Assuan and
# logs what it is told) at the first signature; the dialog names the
# program that connected (with its pid and user), the card and the server;
# a PIN with '%', a space, a newline and non-ASCII bytes reaches the token
# intact; cancel and timeout fail the handshake with no C_Login; five
# handshakes that start while the dialog is open share one dialog and one
# C_Login; the final try is said in the dialog; always-authenticate keys
# ask for every signature unless pin-cache keeps the PIN.
. "$top_srcdir/tests/lib.sh"
make_token
STUB=$top_srcdir/tests/pinentry-stub
[ -x "$STUB" ] || fail "no $STUB"
command -v pkcs11-tool >/dev/null || skip "pkcs11-tool is missing"

# a PIN that needs escaping both ways
PIN2=$'p%1 2\n3\xc3\xbc%25'
printf '%s' "$PIN2" >"$T/pin2"
pkcs11-tool --module "$SOFTHSM" --token-label "$P11TEST_TOKEN" --login \
    --pin "$P11TEST_PIN" --change-pin --new-pin "$PIN2" >/dev/null 2>&1 ||
    fail "cannot change the token's PIN"
PINLEN=$(wc -c <"$T/pin2")

# stub MODE: $T/pe runs the stub in MODE with the PIN (a wrapper, since
# the helper gives pinentry only a few environment variables)
stub() {
	cat >"$T/pe" <<EOT
#!/bin/sh
PINENTRY_STUB_LOG='$T/pe.log' PINENTRY_STUB_MODE='$1' \
PINENTRY_STUB_PIN="\$(cat '$T/pin2')" exec '$STUB' "\$@"
EOT
	chmod 755 "$T/pe"
	: >"$T/pe.log"
}
# conf [EXTRA-LINE]: identity ec with pin = pinentry behind tunnel t
conf() {
	{
		agent_section
		identity ec 02 | sed "s|^pin = .*|pin = pinentry\\
pinentry-program = $T/pe${1:+\\
$1}|"
		tunnel t "localhost:$s_port" ec
	} >"$T/agent.conf"
}
logins() {
	grep -c " C_Login .* user=${1:-[0-9]}" "$T/calls.log"
}
dialogs() {
	grep -c 'GETPIN$' "$T/pe.log"
}
# a client whose name needs escaping: '%', a space
mkdir -p "$T/bin"
CLI="$T/bin/cli%41 x"
cp "$CLIENT" "$CLI"
connect() {
	"$CLI" "$(listen_addr t tcp)" roundtrip --bytes 100 \
	    --expect-subject CN=p11agent-test-ec
}
start_upstream s
export DISPLAY=:97 GPG_TTY=/dev/pts/97

# ---- the dialog: who, which card, which server; the PIN intact
stub pin
conf
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start"
[ "$(dialogs)" = 0 ] || fail "a dialog at start-up: $(cat "$T/pe.log")"
out=$(connect 2>&1) || fail "through the tunnel after the dialog: $out"
[ "$(dialogs)" = 1 ] || fail "dialogs: $(dialogs), wanted 1: $(cat "$T/pe.log")"
grep -Eq "SETDESC cli%41 x \(pid [0-9]+, $(id -un)\) wants to use your card '$P11TEST_TOKEN' \(serial [0-9a-f]+\) for localhost\." "$T/pe.log" ||
    fail "the description: $(grep SETDESC "$T/pe.log")"
grep -q 'OPTION display=:97' "$T/pe.log" || fail "no OPTION display: $(cat "$T/pe.log")"
grep -q 'OPTION ttyname=/dev/pts/97' "$T/pe.log" || fail "no OPTION ttyname"
[ "$(logins)" = 1 ] || fail "C_Login calls: $(logins), wanted 1"
grep -q " C_Login 0x0 .*pinlen=$PINLEN" "$T/calls.log" ||
    fail "the PIN did not reach the token whole: $(grep C_Login "$T/calls.log")"
out=$(connect 2>&1) || fail "second connection: $out"
[ "$(dialogs)" = 1 ] || fail "a second dialog for a logged-in token"
[ "$(logins)" = 1 ] || fail "a second C_Login for a logged-in token"
stop_agent || fail "the agent did not exit cleanly"
grep -Fq "$PIN2" "$T/agent.log" && fail "the PIN is in the agent's log"
grep -q "p%1 2" "$T/agent.log" "$T/calls.log" && fail "the PIN is in a log"
ok "pinentry: one dialog naming the program, pid, user, card and host; the escaped PIN logs in"

# ---- cancel and timeout: the handshake fails, no C_Login
for mode in cancel timeout; do
	stub "$mode"
	: >"$T/calls.log"
	start_agent "$T/agent.conf" || fail "the agent did not start ($mode)"
	log_mark
	connect >/dev/null 2>&1 && fail "a connection went through after $mode"
	wait_log "TLS handshake failed" || fail "no failure logged ($mode)"
	case $mode in
	cancel) log_since_has "PIN dialog was cancelled|cancelled" ||
		    fail "the log does not say cancelled: $(tail -n 3 "$T/agent.log")" ;;
	timeout) log_since_has "the PIN dialog timed out" ||
		    fail "the log does not say timed out: $(tail -n 3 "$T/agent.log")" ;;
	esac
	[ "$(logins)" = 0 ] || fail "C_Login after $mode"
	stop_agent || fail "the agent did not exit cleanly ($mode)"
	ok "pinentry $mode: $(grep 'TLS handshake failed: ' "$T/agent.log" | tail -n 1 | sed 's/.*failed: //')"
done

# ---- five handshakes while the dialog is open: one dialog, one login
rm -f "$T/go"
stub "wait:$T/go"
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start (burst)"
log_mark
pids=()
for i in 1 2 3 4 5; do
	connect >"$T/burst.$i" 2>&1 &
	pids+=($!)
done
wait_log_count "the handshake waits for the token|waits for the session of a handshake in flight" 5 ||
    fail "the five handshakes did not all wait for the token"
timeout $((20 * SLOW)) tail -n +1 -f "$T/pe.log" | grep -q -m 1 'GETPIN waiting' ||
    fail "the dialog is not open: $(cat "$T/pe.log")"
touch "$T/go"
for i in 1 2 3 4 5; do
	wait "${pids[$((i - 1))]}" || fail "handshake $i: $(cat "$T/burst.$i")"
done
[ "$(dialogs)" = 1 ] || fail "dialogs for 5 handshakes: $(dialogs)"
[ "$(logins)" = 1 ] || fail "C_Login calls for 5 handshakes: $(logins)"
stop_agent || fail "the agent did not exit cleanly (burst)"
ok "5 handshakes during one open dialog: 1 dialog, 1 C_Login, 5 tunnels"

# ---- three handshakes wait for a dialog that is cancelled: all three
# fail with it, and no second dialog opens
rm -f "$T/go"
stub "waitcancel:$T/go"
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start (shared cancel)"
log_mark
pids=()
for i in 1 2 3; do
	connect >"$T/burst.$i" 2>&1 &
	pids+=($!)
done
wait_log_count "the handshake waits for the token|waits for the session of a handshake in flight" 3 ||
    fail "the three handshakes did not all wait for the token"
touch "$T/go"
for i in 1 2 3; do
	wait "${pids[$((i - 1))]}" && fail "handshake $i went through after a cancel"
done
wait_log_count "PIN dialog was cancelled" 3 ||
    fail "not all three failed with the cancel: $(grep 'handshake failed' "$T/agent.log")"
[ "$(dialogs)" = 1 ] || fail "dialogs after a shared cancel: $(dialogs)"
[ "$(logins)" = 0 ] || fail "C_Login after a cancel"
# a connection after the cancel is a new attempt: it asks again
stub pin
out=$(connect 2>&1) || fail "after the cancel: $out"
[ "$(dialogs)" = 1 ] || fail "no new dialog after the cancel"
[ "$(logins)" = 1 ] || fail "C_Login calls after the new dialog: $(logins)"
stop_agent || fail "the agent did not exit cleanly (shared cancel)"
ok "3 handshakes waiting on a cancelled dialog: all fail with it, 1 dialog, 0 C_Login; the next one asks again"

# ---- a handshake that starts while the dialog is open waits for it,
# beyond its sign-timeout (3 s here; the stub's user answers after 5 s)
stub "late:5000"
conf "sign-timeout = 3"
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start (late handshake)"
log_mark
connect >"$T/late.1" 2>&1 &
p1=$!
timeout $((20 * SLOW)) tail -n +1 -f "$T/pe.log" | grep -q -m 1 'GETPIN waiting' ||
    fail "the dialog is not open"
connect >"$T/late.2" 2>&1 &
p2=$!
wait_log_count "the handshake waits for the token|waits for the session of a handshake in flight" 2 ||
    fail "the second handshake does not wait for the token"
wait "$p1" || fail "the first handshake: $(cat "$T/late.1")"
wait "$p2" || fail "the handshake started during the dialog: $(cat "$T/late.2")"
[ "$(dialogs)" = 1 ] && [ "$(logins)" = 1 ] ||
    fail "dialogs $(dialogs), logins $(logins)"
stop_agent || fail "the agent did not exit cleanly (late handshake)"
conf
ok "a handshake started during an open dialog waits for it past sign-timeout"

# ---- few tries left: said in the dialog
stub pin
: >"$T/calls.log"
export P11FAULT_TOKEN_FLAGS=0x10000
start_agent "$T/agent.conf" || fail "the agent did not start (count low)"
out=$(connect 2>&1) || fail "count low: $out"
stop_agent || fail "the agent did not exit cleanly (count low)"
unset P11FAULT_TOKEN_FLAGS
grep -q 'Few tries are left before the card locks' "$T/pe.log" ||
    fail "the dialog does not say few tries are left: $(cat "$T/pe.log")"
ok "few tries left: the dialog says so"

# ---- lock wipes a kept PIN: the next handshake asks again
stub pin
conf "pin-cache = 60"
: >"$T/calls.log"
start_agent "$T/agent.conf" || fail "the agent did not start (lock)"
out=$(connect 2>&1) || fail "before the lock: $out"
out=$("$P11AGENT" lock 2>&1) || fail "p11agent lock: $out"
out=$(connect 2>&1) || fail "after the lock: $out"
stop_agent || fail "the agent did not exit cleanly (lock)"
[ "$(dialogs)" = 2 ] || fail "dialogs with pin-cache across a lock: $(dialogs), wanted 2"
[ "$(logins)" = 2 ] || fail "logins across a lock: $(logins), wanted 2"
conf
ok "p11agent lock wipes the kept PIN: the next handshake asks again"

# ---- the final try is said, and an interactive PIN may use it
stub pin
: >"$T/calls.log"
export P11FAULT_TOKEN_FLAGS=0x20000
start_agent "$T/agent.conf" || fail "the agent did not start (final try)"
out=$(connect 2>&1) || fail "final try: $out"
stop_agent || fail "the agent did not exit cleanly (final try)"
unset P11FAULT_TOKEN_FLAGS
grep -q 'SETERROR Last try before the card locks' "$T/pe.log" ||
    fail "the dialog does not say last try: $(cat "$T/pe.log")"
grep -q 'This is the LAST try before the card locks' "$T/pe.log" ||
    fail "the description does not say last try"
[ "$(logins)" = 1 ] || fail "C_Login calls on the final try: $(logins)"
ok "final try: the dialog says so, the typed PIN logs in"

# ---- always-authenticate: a dialog per signature, or pin-cache
export P11FAULT_ALWAYS_AUTH=$PIN2
for cache in 0 60; do
	stub pin
	conf "pin-cache = $cache"
	: >"$T/calls.log"
	start_agent "$T/agent.conf" || fail "the agent did not start (cache $cache)"
	for i in 1 2 3; do
		out=$(connect 2>&1) || fail "always-auth handshake $i (cache $cache): $out"
	done
	stop_agent || fail "the agent did not exit cleanly (cache $cache)"
	want=$([ "$cache" = 0 ] && echo 3 || echo 1)
	[ "$(dialogs)" = "$want" ] ||
	    fail "pin-cache = $cache: $(dialogs) dialogs, wanted $want"
	[ "$(logins 1)" = 1 ] || fail "user logins: $(logins 1)"
	[ "$(logins 2)" = 3 ] || fail "context logins: $(logins 2)"
	[ "$cache" = 60 ] ||
	    grep -q 'This key asks for the PIN for every signature' "$T/pe.log" ||
	    fail "the dialog does not say why it asks again"
	ok "always-authenticate, pin-cache = $cache: 3 handshakes, $want dialogs, 3 context logins"
done
unset P11FAULT_ALWAYS_AUTH

# ---- a PIN pad: the dialog says to use the reader, C_Login has no PIN
stub pin
conf
: >"$T/calls.log"
P11FAULT_PINPAD_PIN=$PIN2 start_agent "$T/agent.conf" ||
    fail "the agent did not start (PIN pad)"
out=$(connect 2>&1) || fail "with a PIN pad: $out"
stop_agent || fail "the agent did not exit cleanly (PIN pad)"
grep -q 'Enter your PIN on the reader' "$T/pe.log" ||
    fail "the dialog does not say to use the reader: $(cat "$T/pe.log")"
[ "$(dialogs)" = 0 ] || fail "a PIN was asked for a PIN pad"
grep ' C_Login ' "$T/calls.log" | grep -q 'pin=NULL' ||
    fail "the PIN pad login had a PIN: $(grep C_Login "$T/calls.log")"
ok "PIN pad: a notice names who asks and says to use the reader; C_Login with no PIN"

# ---- the PIN in the helper's memory: gone after C_Login with pin-cache
# = 0; kept with pin-cache = 3, and gone once the 3 s are over
if [ "$(id -u)" = 0 ]; then
	for cache in 0 3; do
		stub pin
		conf "pin-cache = $cache"
		start_agent "$T/agent.conf" || fail "the agent did not start (memory, $cache)"
		log_mark
		out=$(connect 2>&1) || fail "memory test, pin-cache $cache: $out"
		helper=$(pgrep -P "$AGENT_PID") || fail "no helper"
		n=$("$top_srcdir/tests/memscan" "$helper" "$T/pin2") ||
		    fail "cannot scan the helper's memory"
		if [ "$cache" = 0 ]; then
			[ "$n" = 0 ] || fail "the PIN is in the helper's memory $n times after C_Login"
		else
			[ "$n" -ge 1 ] || fail "the cached PIN is not in the helper's memory (the scan sees nothing)"
			wait_log "kept PIN wiped: its pin-cache time is over" 10 ||
			    fail "the kept PIN was not wiped when pin-cache ended"
			n=$("$top_srcdir/tests/memscan" "$helper" "$T/pin2")
			[ "$n" = 0 ] || fail "the PIN is still in the helper's memory $n times after pin-cache"
		fi
		stop_agent || fail "the agent did not exit cleanly (memory, $cache)"
	done
	ok "helper memory: no PIN after C_Login; a cached PIN is there for pin-cache and wiped after"
fi

# ---- no display and no terminal: an error that says what to set
sed -i '/^pinentry-program/d' "$T/agent.conf"
out=$(env -u DISPLAY -u WAYLAND_DISPLAY -u GPG_TTY "$P11AGENT" check \
    -c "$T/agent.conf" 2>&1) && fail "check passed with no display"
grep -q "no display and no terminal for pinentry" <<<"$out" ||
    fail "no clear error without a display: $out"
ok "no display, no tty: $(grep -o 'no display and no terminal[^;]*' <<<"$out")"
