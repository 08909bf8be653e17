#!/bin/bash
# Lock and unlock over the control socket.  The agent serves
# $XDG_RUNTIME_DIR/p11agent/control (or control = PATH), mode 0600 in a
# 0700 directory, for its own uid only; `p11agent lock` logs every token
# out (C_Logout) and the next handshake logs in once again; `unlock` logs
# in at once (with pin = pinentry: a dialog at once, naming "p11agent
# unlock"), and starts again a helper stopped after a refused PIN;
# `lock --idle N` and lock-after = N lock by themselves once
# no signature happened for N s, and not again before the next one.  Bad
# requests (unknown, over 4096 bytes, none at all, too many clients) get
# an ERR line and leave the agent serving; a second agent, a stale socket,
# no agent, no XDG_RUNTIME_DIR and an open directory are each said clearly.
. "$top_srcdir/tests/lib.sh"
make_token
UNIXCAT=$top_builddir/tests/unix-cat
me=$(id -u)

logins() {
	grep -c ' C_Login ' "$P11FAULT_LOG" || :
}
logouts() {
	grep -c ' C_Logout ' "$P11FAULT_LOG" || :
}
inits() {
	grep -c ' C_Initialize ' "$P11FAULT_LOG" || :
}
handshake() {
	local out
	out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
	    --expect-subject CN=p11agent-test-ec) || fail "$1: $out"
}
# ctl ARGS...: runs p11agent ARGS; sets OUT (stdout and stderr) and RC
ctl() {
	RC=0
	OUT=$("$P11AGENT" "$@" 2>&1) || RC=$?
}
# raw [SECONDS]: stdin to the control socket as is; the answer on stdout
raw() {
	"$UNIXCAT" "$sock" "$((${1:-10} * SLOW))" ||
	    fail "the control socket did not answer and close"
}

start_upstream s
# conf FILE [AGENT-LINE...]: identity ec, tunnel t; lines for [agent]
conf() {
	local f=$1
	shift
	{
		agent_section
		[ $# = 0 ] || printf '%s\n' "$@" ""
		identity ec 02
		tunnel t "localhost:$s_port" ec
	} >"$f"
}
conf "$T/agent.conf"
sock=$XDG_RUNTIME_DIR/p11agent/control

# ---- where the socket goes, said clearly when it cannot
# no XDG_RUNTIME_DIR and no control =: the agent runs without a control
# socket (a CI job, a service without a session) and says so
AGENT_WRAP=(env -u XDG_RUNTIME_DIR)
log_mark
start_agent "$T/agent.conf" || fail "run without XDG_RUNTIME_DIR did not start"
AGENT_WRAP=()
log_since_has "XDG_RUNTIME_DIR is not set, so there is no default place for the control socket: set control = PATH in the \[agent\] section.*running without a control socket" ||
    fail "no warning without XDG_RUNTIME_DIR: $(tail -n 3 "$T/agent.log")"
"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 10 >/dev/null ||
    fail "no tunnel without XDG_RUNTIME_DIR"
stop_agent || fail "the agent did not exit cleanly (no XDG_RUNTIME_DIR)"
ok "no XDG_RUNTIME_DIR: the agent runs without a control socket and says how to get one"
: >"$P11FAULT_LOG"
mkdir -m 755 "$T/open"
conf "$T/open.conf" "control = $T/open/control"
rc=0
"$P11AGENT" run -c "$T/open.conf" 2>"$T/err" || rc=$?
[ "$rc" = 1 ] && grep -q "$T/open: the directory must be yours with mode 0700" "$T/err" ||
    fail "a 0755 directory for the socket ($rc): $(cat "$T/err")"
ok "a directory with mode 0755 is refused: $(cat "$T/err")"
conf "$T/bad.conf" "lock-after = soon"
rc=0
"$P11AGENT" check -c "$T/bad.conf" >"$T/err" 2>&1 || rc=$?
line=$(grep -n '^lock-after' "$T/bad.conf" | cut -d: -f1)
[ "$rc" = 1 ] && grep -q "bad.conf:$line: \[agent\] lock-after: 'soon' is not a number of seconds between 0 (off) and 86400" "$T/err" ||
    fail "lock-after = soon ($rc): $(cat "$T/err")"
ok "a bad lock-after names file, line and key"

# ---- no agent
ctl lock
[ "$RC" = 3 ] && [ "$OUT" = "p11agent: error: no p11agent is running (no control socket at $sock); start one with p11agent run" ] ||
    fail "lock with no agent: exit $RC: $OUT"
ok "lock with no agent: exit 3: $OUT"

# ---- the socket
start_agent "$T/agent.conf" || fail "the agent did not start"
[ -S "$sock" ] || fail "no control socket at $sock"
[ "$(stat -c '%a %u' "$sock")" = "600 $me" ] ||
    fail "the control socket: mode and owner $(stat -c '%a %u' "$sock")"
[ "$(stat -c '%a %u' "${sock%/*}")" = "700 $me" ] ||
    fail "its directory: mode and owner $(stat -c '%a %u' "${sock%/*}")"
ok "control socket $sock: mode 0600, in a directory the agent made with mode 0700"

# ---- (a) lock: C_Logout, and the next handshake logs in once again
handshake "the first handshake"
[ "$(logins)" = 1 ] || fail "C_Login calls before the lock: $(logins), wanted 1"
log_mark
ctl lock
[ "$RC" = 0 ] || fail "lock: exit $RC: $OUT"
grep -qx "token helper for .* (pid [0-9]*): 1 token logged out" <<<"$OUT" &&
    grep -qx "locked: 1 token logged out (1 token helper)" <<<"$OUT" ||
    fail "lock said: $OUT"
log_since_has "locked by uid $me pid [0-9]+ \(.*/p11agent\): 1 token logged out \(1 token helper\)" ||
    fail "the lock is not in the log"
[ "$(logouts)" -ge 1 ] || fail "no C_Logout in the call log after the lock"
handshake "the handshake after the lock"
[ "$(logins)" = 2 ] || fail "C_Login calls after the lock: $(logins), wanted 2 (one new)"
ok "lock: $(tr '\n' ';' <<<"$OUT") C_Logout; the next handshake logged in once again"

# ---- (d) unlock: logs in at once, so the next handshake needs no login
ctl lock --control "$sock"
[ "$RC" = 0 ] || fail "lock --control: exit $RC: $OUT"
n=$(logins)
ctl unlock --control "$sock"
[ "$RC" = 0 ] && grep -qx "unlocked: 1 token logged in (1 token helper)" <<<"$OUT" ||
    fail "unlock: exit $RC: $OUT"
[ "$(logins)" = $((n + 1)) ] || fail "C_Login calls after unlock: $(logins), wanted $((n + 1))"
handshake "the handshake after unlock"
[ "$(logins)" = $((n + 1)) ] || fail "the handshake after unlock logged in again"
ok "unlock: $(tail -n1 <<<"$OUT"); one C_Login at once, none at the next handshake"

# ---- unlock starts again a helper that was stopped after a refused PIN
cp "$TOK/pin" "$T/pin.good"
printf 'wrP1n-3vL6\n' >"$TOK/pin"
log_mark
kill -KILL "$(pgrep -P "$AGENT_PID")"
wait_log "token helper for .* exited; not restarting it" 20 ||
    fail "a wrong PIN at the reopen did not stop the restarts"
cp "$T/pin.good" "$TOK/pin"
log_mark
ctl unlock
[ "$RC" = 0 ] && grep -qx "token helper for .* (pid [0-9]*): was stopped after the token refused its PIN; starting it again (it logs in as it opens its identities)" <<<"$OUT" &&
    grep -qx "unlocked: no token helper is running, so no token was logged in; 1 token helper started again" <<<"$OUT" ||
    fail "unlock of a stopped helper: exit $RC: $OUT"
wait_log "token helper for .* is back" 20 || fail "unlock did not start the helper again"
handshake "the handshake after unlock started the helper again"
ok "unlock starts a helper stopped after a refused PIN again: $(tail -n1 <<<"$OUT")"

# ---- lock --idle N at run time
ctl lock --idle 1
[ "$RC" = 0 ] && [ "$OUT" = "lock-after 1 s (was 0 s): the agent locks when no signature happened for 1 s" ] ||
    fail "lock --idle 1: exit $RC: $OUT"
n=$(logouts)
log_mark
handshake "a handshake with lock --idle 1"
wait_log "locked: no signature for 1 s; 1 token logged out \(1 token helper\)" 5 ||
    fail "lock --idle 1: no lock by itself"
[ "$(logouts)" -gt "$n" ] || fail "lock --idle 1: no C_Logout"
ok "lock --idle 1: the agent locked by itself"
# a client that sends nothing is closed after 5 s; meanwhile nothing was
# signed, so nothing was locked again
log_mark
out=$(raw 30 </dev/null)
[ "$out" = "ERR timeout no request within 5 s" ] || fail "a silent client got: $out"
log_since_has "control: no request from pid [0-9]+ within 5000 ms; closed" ||
    fail "the silent client's close is not in the log"
log_since_has "locked" && fail "locked again with no signature since the last lock"
ok "a silent client is closed after 5 s; no second lock without a signature"
ctl lock --idle 0
[ "$RC" = 0 ] && [ "$OUT" = "lock-after off (was 1 s)" ] || fail "lock --idle 0: $RC: $OUT"
ctl lock --idle 86401
[ "$RC" = 1 ] && [ "$OUT" = "p11agent: error: lock [--idle SECONDS] (SECONDS from 0, off, to 86400)" ] ||
    fail "lock --idle 86401: exit $RC: $OUT"
ctl lock --idle soon
[ "$RC" = 2 ] || fail "lock --idle soon: exit $RC: $OUT"
ok "lock --idle 0 turns it off; out of range and not a number are refused"

# ---- bad requests: an ERR line, and the agent serves on
out=$(printf 'rehash\n' | raw)
[ "$out" = "ERR unknown-request 'rehash' is not a request; requests: lock [--idle SECONDS]; unlock; status [--json | --prometheus]; reload" ] ||
    fail "an unknown request got: $out"
out=$({ head -c 4095 /dev/zero | tr '\0' x; echo; } | raw)
grep -q "^ERR unknown-request 'xxxxxxxx*' is not a request" <<<"$out" ||
    fail "a request of 4096 bytes with its newline got: $out"
log_mark
out=$({ head -c 4096 /dev/zero | tr '\0' x; echo; } | raw)
[ "$out" = "ERR too-long the request is longer than 4096 bytes" ] ||
    fail "a request of 4097 bytes got: $out"
out=$(head -c 1000000 /dev/zero | tr '\0' x | raw)
[ "$out" = "ERR too-long the request is longer than 4096 bytes" ] ||
    fail "a request of 1 MB got: $out"
wait_log_count "control: a request from uid $me pid [0-9]+ is longer than 4096 bytes; closed" 2 5 ||
    fail "the requests over the limit are not in the log"
out=$(printf 'lock\0\n' | raw)
[ "$out" = "ERR bad-request a NUL byte in the request" ] || fail "a NUL got: $out"
kill -0 "$AGENT_PID" || fail "the agent died"
ctl lock
[ "$RC" = 0 ] || fail "lock after the bad requests: exit $RC: $OUT"
ok "unknown, over-long (4097 bytes, 1 MB) and NUL requests: an ERR line each; the agent serves on"

# ---- at most 8 clients at once
mkfifo "$T/hold"
exec {hold}<>"$T/hold"
log_mark
held=()
for i in 1 2 3 4 5 6 7 8; do
	"$UNIXCAT" "$sock" $((30 * SLOW)) <"$T/hold" >"$T/held.$i" {hold}>&- &
	held+=($!)
done
wait_log_count "control: a client: uid $me pid [0-9]+ \([0-9] of at most 8\)" 8 10 ||
    fail "the agent did not take 8 clients"
out=$(printf 'lock\n' | raw)
[ "$out" = "ERR busy too many control clients at once; try again" ] ||
    fail "a ninth client got: $out"
exec {hold}>&-
for p in "${held[@]}"; do
	wait "$p" || fail "a held client was not closed"
done
ctl lock
[ "$RC" = 0 ] || fail "lock after the held clients: exit $RC: $OUT"
ok "a ninth client at once: $out"

# ---- another uid is refused (SO_PEERCRED), and logged
if [ "$me" = 0 ] && command -v setpriv >/dev/null &&
    command -v useradd >/dev/null && command -v userdel >/dev/null; then
	user=p11a-l$$
	make_user "$user" || fail "cannot create a user"
	uid=$TEST_UID gid=$TEST_GID
	# the 0700 directory keeps it out (the first line of defence); open
	# the way to test the second, the uid check
	chmod 711 "$T" "$XDG_RUNTIME_DIR" "${sock%/*}"
	chmod 666 "$sock"
	n=$(logouts)
	log_mark
	rc=0
	out=$(setpriv --reuid="$uid" --regid="$gid" --clear-groups \
	    "$P11AGENT" lock --control "$sock" 2>&1) || rc=$?
	[ "$rc" = 1 ] && [ "$out" = "p11agent: error: uid $uid may not control this agent (it runs as uid $me)" ] ||
	    fail "uid $uid: exit $rc: $out"
	wait_log "control: refused uid $uid \(program .*/p11agent, pid [0-9]+\): only uid $me may control this agent" 5 ||
	    fail "the refusal of uid $uid is not in the log"
	[ "$(logouts)" = "$n" ] || fail "a refused lock logged out"
	chmod 700 "$T" "$XDG_RUNTIME_DIR" "${sock%/*}"
	chmod 600 "$sock"
	ok "uid $uid is refused: $out"
else
	echo "note: not root or no setpriv/useradd: the second user's part is skipped"
fi

# ---- a second agent on the same socket refuses to start, helpers unborn
n=$(inits)
rc=0
"$P11AGENT" run -c "$T/agent.conf" 2>"$T/err" || rc=$?
[ "$rc" = 1 ] && grep -q "control socket $sock: another p11agent is running and answers there" "$T/err" ||
    fail "a second agent ($rc): $(cat "$T/err")"
[ "$(inits)" = "$n" ] || fail "the second agent started a token helper"
ctl lock
[ "$RC" = 0 ] || fail "the first agent after the second one: exit $RC: $OUT"
ok "a second agent: $(cat "$T/err")"

# ---- a clean exit removes the socket
stop_agent || fail "the agent did not exit cleanly"
[ -e "$sock" ] && fail "the control socket is still there after a clean exit"
ctl lock
[ "$RC" = 3 ] || fail "lock after the agent stopped: exit $RC: $OUT"
ok "the socket is gone after a clean exit"

# ---- a stale socket (an agent killed) is replaced at the next start
start_agent "$T/agent.conf" || fail "the agent did not start"
{ kill -KILL "$AGENT_PID"; wait "$AGENT_PID"; } 2>/dev/null
AGENT_PID=
[ -S "$sock" ] || fail "SIGKILL left no socket behind: nothing stale to test"
ctl lock
[ "$RC" = 3 ] && grep -q "no p11agent is running (a stale control socket, nobody answers, at $sock)" <<<"$OUT" ||
    fail "lock on a stale socket: exit $RC: $OUT"
log_mark
start_agent "$T/agent.conf" || fail "the agent did not start over a stale socket"
log_since_has "control socket $sock: replaced a stale socket \(no agent answered on it\)" ||
    fail "the stale socket's replacement is not in the log"
ctl lock
[ "$RC" = 0 ] || fail "lock after the stale socket: exit $RC: $OUT"
stop_agent || fail "the agent did not exit cleanly"
ok "a stale socket is replaced at start"

# ---- (b) lock-after = 1, control = PATH (no XDG_RUNTIME_DIR needed)
conf "$T/after.conf" "control = $T/ctl/control" "lock-after = 1"
: >"$P11FAULT_LOG"
AGENT_WRAP=(env -u XDG_RUNTIME_DIR)
start_agent "$T/after.conf" || fail "the agent did not start with lock-after = 1"
AGENT_WRAP=()
[ "$(stat -c %a "$T/ctl" "$T/ctl/control" | tr '\n' ' ')" = "700 600 " ] ||
    fail "control = PATH: modes $(stat -c '%a' "$T/ctl" "$T/ctl/control")"
log_mark
t0=$(date +%s%N)
handshake "a handshake with lock-after = 1"
[ "$(logins)" = 1 ] || fail "C_Login calls: $(logins), wanted 1"
wait_log "locked: no signature for 1 s; 1 token logged out \(1 token helper\)" 3 ||
    fail "lock-after = 1: no lock within 3 s"
ms=$((($(date +%s%N) - t0) / 1000000))
[ "$ms" -ge 1000 ] || fail "lock-after = 1 locked $ms ms after the handshake began"
[ "$(logouts)" -ge 1 ] || fail "lock-after: no C_Logout in the call log"
handshake "the handshake after lock-after"
[ "$(logins)" = 2 ] || fail "C_Login calls after lock-after: $(logins), wanted 2"
# an unlock logs in too: lock-after counts from it, with no signature
wait_log_count "locked: no signature for 1 s" 2 4 ||
    fail "lock-after = 1: no second lock"
ctl unlock --control "$T/ctl/control"
[ "$RC" = 0 ] || fail "unlock --control: exit $RC: $OUT"
n=$(logouts)
wait_log_count "locked: no signature for 1 s" 3 4 ||
    fail "lock-after = 1: no lock after an unlock with no signature since"
[ "$(logouts)" -gt "$n" ] || fail "no C_Logout after the unlock"
ctl lock --control "$T/ctl/control"
[ "$RC" = 0 ] || fail "lock --control $T/ctl/control: exit $RC: $OUT"
stop_agent || fail "the agent did not exit cleanly"
[ -e "$T/ctl/control" ] && fail "control = PATH: the socket is left after a clean exit"
ok "lock-after = 1: locked by itself $ms ms after the handshake began; the next handshake logged in once again"

# ---- pin = pinentry: unlock asks at once, in a dialog that names
# "p11agent unlock" as who wants the card; a lock makes the next
# handshake ask again
STUB=$top_srcdir/tests/pinentry-stub
[ -x "$STUB" ] || fail "no $STUB"
cat >"$T/pe" <<EOT
#!/bin/sh
PINENTRY_STUB_LOG='$T/pe.log' PINENTRY_STUB_PIN='$P11TEST_PIN' exec '$STUB' "\$@"
EOT
chmod 755 "$T/pe"
: >"$T/pe.log"
{
	agent_section
	identity ec 02 | sed "s|^pin = .*|pin = pinentry\\
pinentry-program = $T/pe|"
	tunnel t "localhost:$s_port" ec
} >"$T/pe.conf"
dialogs() {
	grep -c 'GETPIN$' "$T/pe.log" || :
}
export DISPLAY=:97
: >"$P11FAULT_LOG"
start_agent "$T/pe.conf" || fail "the agent did not start with pin = pinentry"
handshake "pinentry: the first handshake"
[ "$(dialogs) $(logins)" = "1 1" ] ||
    fail "pinentry: dialogs and C_Login calls $(dialogs) $(logins), wanted 1 1"
ctl lock
[ "$RC" = 0 ] || fail "pinentry: lock: exit $RC: $OUT"
ctl unlock
[ "$RC" = 0 ] && [ "$(tail -n1 <<<"$OUT")" = "unlocked: 1 token logged in (1 token helper)" ] ||
    fail "pinentry: unlock: exit $RC: $OUT"
[ "$(dialogs) $(logins)" = "2 2" ] ||
    fail "pinentry: after unlock, dialogs and C_Login calls $(dialogs) $(logins), wanted 2 2"
grep -Eq "SETDESC p11agent unlock \(pid [0-9]+, $(id -un)\) wants to use your card '$P11TEST_TOKEN'" "$T/pe.log" ||
    fail "the unlock dialog's description: $(grep SETDESC "$T/pe.log")"
handshake "pinentry: the handshake after unlock"
[ "$(dialogs) $(logins)" = "2 2" ] || fail "pinentry: the handshake after unlock asked again"
ctl lock
[ "$RC" = 0 ] || fail "pinentry: the second lock: exit $RC: $OUT"
handshake "pinentry: the handshake after the second lock"
[ "$(dialogs) $(logins)" = "3 3" ] ||
    fail "pinentry: after the second lock, dialogs and C_Login calls $(dialogs) $(logins), wanted 3 3"
stop_agent || fail "the agent did not exit cleanly"
ok "pin = pinentry: unlock opens the dialog at once ($(grep -m1 'SETDESC p11agent unlock' "$T/pe.log" | cut -d' ' -f2- | tr '\n' ' ')); after a lock the next handshake asks again"
