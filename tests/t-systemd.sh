#!/bin/bash
# systemd (issue 9, scope 4), with systemd-socket-activate standing in for
# systemd and tests/sd-notify-recv for its notification socket:
# - the generated units pass systemd-analyze verify;
# - socket activation: two named sockets (a Unix one, a loopback TCP one)
#   are two tunnels' listeners, each carrying traffic to its own
#   upstream, and the socket named control answers p11agent status;
# - READY=1, STATUS= (when it changes, never repeated), WATCHDOG=1 at half
#   of WATCHDOG_USEC, STOPPING=1, all from the agent's pid;
# - the helper inherits none of the sockets and no NOTIFY_SOCKET,
#   LISTEN_* or WATCHDOG_*; the agent leaves the sockets' paths in place;
# - errors, each naming what to fix and exiting non-zero: a socket no
#   tunnel takes, a systemd:NAME that was not passed, a non-loopback TCP
#   socket without allow-remote-listen, one name in two listen lines.
. "$top_srcdir/tests/lib.sh"
command -v systemd-socket-activate >/dev/null ||
    skip "systemd-socket-activate is missing (Debian package systemd)"
command -v systemd-analyze >/dev/null ||
    skip "systemd-analyze is missing (Debian package systemd)"
NOTIFY_RECV=$top_builddir/tests/sd-notify-recv

# ---- the units: as generated, but for ExecStart= (verify wants a program
# that exists: the one just built) and Documentation= (--man=no: the man
# pages are not installed)
mkdir "$T/units"
n=0
for u in p11agent.service p11agent.socket p11agent@.service p11agent@.socket; do
	[ -f "$top_builddir/contrib/systemd/$u" ] ||
	    fail "contrib/systemd/$u was not generated (make all)"
	grep -q '@[a-z]*@' "$top_builddir/contrib/systemd/$u" &&
	    fail "contrib/systemd/$u: unsubstituted $(grep -o '@[a-z]*@' "$top_builddir/contrib/systemd/$u")"
	sed -e "s|^ExecStart=[^ ]*/p11agent |ExecStart=$(cd "$top_builddir" && pwd)/p11agent |" -e "s|^ExecReload=[^ ]*/p11agent |ExecReload=$(cd "$top_builddir" && pwd)/p11agent |" \
	    "$top_builddir/contrib/systemd/$u" >"$T/units/$u"
	n=$((n + 1))
done
grep -q "^ExecStart=$(cd "$top_builddir" && pwd)/p11agent run$" "$T/units/p11agent.service" ||
    fail "p11agent.service: $(grep ExecStart "$T/units/p11agent.service")"
# verify: any line it says (an unknown option, a bad value) is a failure
verify() {
	(cd "$T/units" && systemd-analyze "$@") >"$T/verify.log" 2>&1 &&
	    [ ! -s "$T/verify.log" ] || {
		cat "$T/verify.log"
		fail "systemd-analyze $* (above)"
	}
}
verify --user verify --man=no ./p11agent.service ./p11agent.socket
verify verify --man=no ./p11agent@.service ./p11agent@.socket
verify verify --man=no ./p11agent@alice.service ./p11agent@alice.socket
ok "systemd-analyze verify: the $n units (the template also as p11agent@alice)"
# ... and it does see a bad one
sed 's/^KillMode=mixed$/KillMode=mixd/' "$T/units/p11agent.service" >"$T/units/bad.service"
(cd "$T/units" && systemd-analyze --user verify --man=no ./bad.service) >"$T/verify.log" 2>&1
grep -q "kill mode" "$T/verify.log" || fail "verify did not see KillMode=mixd as bad: $(cat "$T/verify.log")"
rm "$T/units/bad.service"

# ---- socket activation
make_token
start_upstream s1
start_upstream s2
free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
bport=$(free_port) || fail "no free port"
mkdir -m 700 "$T/sock" "$XDG_RUNTIME_DIR/p11agent"
: >"$T/agent.log"
CONTROL=$XDG_RUNTIME_DIR/p11agent/control
# what the agent needs of the test's environment: systemd-socket-activate
# passes only PATH, HOME and -E variables (not the test token's PIN,
# which the agent never needs: its PIN is in a file)
export -p | grep -v '^declare -x P11TEST_PIN=' >"$T/env.sh"

{
	agent_section
	identity ec 02
	identity rsa 01
	printf '[tunnel a]\nlisten = systemd:web-a\nconnect = localhost:%s\n' "$s1_port"
	printf 'identity = ec\nca = %s\n\n' "$TOK/ca.pem"
	printf '[tunnel b]\nlisten = systemd:web-b\nconnect = localhost:%s\n' "$s2_port"
	printf 'identity = rsa\nca = %s\n\n' "$TOK/ca.pem"
} >"$T/agent.conf"

# activate NAMES CONF ADDR...: systemd-socket-activate listening on each
# ADDR (named by NAMES, colon-separated), then running the agent on CONF
# with NOTIFY_SOCKET and WATCHDOG_USEC set once a client connects; waits
# until it listens on all; sets ACT_PID (the agent's pid, once it runs).
activate() {
	local names=$1 conf=$2 a
	shift 2
	local args=()
	for a in "$@"; do
		args+=(-l "$a")
	done
	log_mark
	systemd-socket-activate "${args[@]}" --fdname="$names" \
	    -E NOTIFY_SOCKET="$T/notify" -E WATCHDOG_USEC=1000000 \
	    /bin/bash -c '. "$1"; exec "$2" run -v -c "$3" --ready-fd 9 9>"$4"' \
	    _ "$T/env.sh" "$P11AGENT" "$conf" "$T/ready" 2>>"$T/agent.log" &
	ACT_PID=$!
	PIDS+=($ACT_PID)
	wait_log_count "^Listening on .* as [0-9]+\.$" $# 10 ||
	    fail "systemd-socket-activate did not listen on $*"
}

# the notification socket's reader
mkfifo "$T/notify.fifo"
"$NOTIFY_RECV" "$T/notify" 300 >"$T/notify.fifo" &
PIDS+=($!)
exec {nfd}<"$T/notify.fifo"
read -r -t $((10 * SLOW)) -u "$nfd" line && [ "$line" = listening ] ||
    fail "sd-notify-recv did not start"
cat <&"$nfd" >"$T/notify.log" &
PIDS+=($!)
# wait_notify REGEX [N]: the Nth (default 1st) notification line matching
wait_notify() {
	local n
	n=$(timeout $((20 * SLOW)) tail -n +1 -f "$T/notify.log" |
	    grep -E -c -m "${2:-1}" -- "$1")
	[ "$n" -ge "${2:-1}" ]
}

rm -f "$T/ready"
mkfifo "$T/ready"
activate web-a:web-b:control "$T/agent.conf" "$T/sock/a" "127.0.0.1:$bport" "$CONTROL"
AGENT=$ACT_PID
# the first connection starts the agent (as systemd would)
"$CLIENT" "unix:$T/sock/a" roundtrip --bytes 1111 \
    --expect-subject CN=p11agent-test-ec --timeout 60 >"$T/c1.out" 2>&1 &
c1=$!
# (this open waits for the wrapper's: once the client's connection made
# systemd-socket-activate run it; the agent's exit ends the reads)
exec {rfd}<"$T/ready"
ready=0
while read -r -t $((60 * SLOW)) -u "$rfd" line; do
	case $line in
	ready) ready=1; break ;;
	listen\ *) echo "$line" >>"$T/listen.lines" ;;
	esac
done
exec {rfd}<&-
[ "$ready" = 1 ] || fail "the socket-activated agent did not get ready"
grep -qx "listen a unix:$T/sock/a" "$T/listen.lines" &&
    grep -qx "listen b tcp:127.0.0.1:$bport" "$T/listen.lines" ||
    fail "listeners: $(cat "$T/listen.lines")"
wait "$c1" || fail "tunnel a (the connection that started the agent): $(cat "$T/c1.out")"
"$CLIENT" "tcp:127.0.0.1:$bport" roundtrip --bytes 2222 \
    --expect-subject CN=p11agent-test-rsa --timeout 30 >"$T/c2.out" 2>&1 ||
    fail "tunnel b: $(cat "$T/c2.out")"
grep -q "after echoing 1111 bytes" "$T/s1.log" &&
    ! grep -q "echoing 2222 bytes" "$T/s1.log" &&
    grep -q "after echoing 2222 bytes" "$T/s2.log" &&
    ! grep -q "echoing 1111 bytes" "$T/s2.log" ||
    fail "each tunnel to its own upstream: s1: $(cat "$T/s1.log"); s2: $(cat "$T/s2.log")"
ok "socket activation: systemd:web-a (unix) -> s1 as ec, systemd:web-b (tcp 127.0.0.1:$bport) -> s2 as rsa"

agent_log_has "control socket unix:$CONTROL \(passed by systemd\)" ||
    fail "the control socket was not the inherited one"
! agent_log_has "look for it at" || fail "the control socket's path was said to differ"
out=$("$P11AGENT" status --json 2>&1) || fail "status over the inherited control socket: $out"
hpid=$(/usr/bin/python3 -c '
import json, sys
s = json.load(sys.stdin)
assert s["agent"]["pid"] == int(sys.argv[1]), s["agent"]
assert sorted(t["name"] for t in s["tunnels"]) == ["a", "b"], s["tunnels"]
print(s["helpers"][0]["pid"])' "$AGENT" <<<"$out") || fail "status --json: $out"
ok "p11agent status answers on the inherited control socket (agent pid $AGENT, helper pid $hpid)"

# nothing inherited reaches the helper: not the sockets, nor the variables
for fd in 3 4 5; do
	ino=$(readlink "/proc/$AGENT/fd/$fd") || fail "the agent holds no fd $fd"
	case $ino in socket:*) ;; *) fail "agent fd $fd is $ino" ;; esac
	for h in /proc/"$hpid"/fd/*; do
		[ "$(readlink "$h")" != "$ino" ] ||
		    fail "the helper inherited the agent's fd $fd ($ino) as $h"
	done
done
tr '\0' '\n' <"/proc/$hpid/environ" | grep -E '^(NOTIFY_SOCKET|LISTEN_[A-Z]+|WATCHDOG_[A-Z]+)=' &&
    fail "the helper's environment has systemd's variables (above)"
ok "the helper has none of the 3 inherited sockets and no NOTIFY_SOCKET/LISTEN_*/WATCHDOG_*"

# the notifications, all from the agent
wait_notify "^$AGENT READY=1$" || fail "no READY=1: $(cat "$T/notify.log")"
grep -qx "$AGENT STATUS=serving 2 tunnels, 0 connections" "$T/notify.log" ||
    fail "no STATUS= with READY=1: $(cat "$T/notify.log")"
# a connection held open shows in STATUS=, and its end too (the earlier
# connections may have shown already)
n1=$(grep -c "STATUS=serving 2 tunnels, 1 connection$" "$T/notify.log")
exec {held}<>"/dev/tcp/127.0.0.1/$bport"
wait_notify "^$AGENT STATUS=serving 2 tunnels, 1 connection$" $((n1 + 1)) ||
    fail "STATUS= did not count the open connection: $(cat "$T/notify.log")"
n0=$(grep -c "STATUS=serving 2 tunnels, 0 connections$" "$T/notify.log")
exec {held}<&-
wait_notify "^$AGENT STATUS=serving 2 tunnels, 0 connections$" $((n0 + 1)) ||
    fail "STATUS= did not see the connection close: $(cat "$T/notify.log")"
# WATCHDOG_USEC=1 s: WATCHDOG=1 every 0.5 s
n0=$(grep -c "WATCHDOG=1" "$T/notify.log")
wait_notify "^$AGENT WATCHDOG=1$" $((n0 + 4)) || fail "WATCHDOG=1 stopped: $(cat "$T/notify.log")"
start_ms=$(date +%s%N)
wait_notify "^$AGENT WATCHDOG=1$" $((n0 + 8)) || fail "WATCHDOG=1 stopped"
wd_ms=$(( ($(date +%s%N) - start_ms) / 1000000 ))
[ "$wd_ms" -ge 1200 ] && [ "$wd_ms" -le $((3500 * SLOW)) ] ||
    fail "4 WATCHDOG=1 took $wd_ms ms (expected about 2000 at one per 500 ms)"
ok "READY=1, STATUS= as connections come and go, WATCHDOG=1 4 times in $wd_ms ms"

# a reload: RELOADING=1, then READY=1 again; the passed sockets serve on
n0=$(grep -c " READY=1$" "$T/notify.log")
kill -HUP "$AGENT"
wait_notify "^$AGENT RELOADING=1$" || fail "no RELOADING=1: $(cat "$T/notify.log")"
wait_notify "^$AGENT READY=1$" $((n0 + 1)) ||
    fail "no READY=1 after the reload: $(cat "$T/notify.log")"
grep -q "^$AGENT MONOTONIC_USEC=[0-9]" "$T/notify.log" ||
    fail "RELOADING=1 without MONOTONIC_USEC=: $(cat "$T/notify.log")"
"$CLIENT" "tcp:127.0.0.1:$bport" roundtrip --bytes 2222 >/dev/null ||
    fail "web-b after the reload"
ok "SIGHUP: RELOADING=1 (with MONOTONIC_USEC=), READY=1; web-b serves on"

kill -TERM "$AGENT"
rc=0
wait "$AGENT" || rc=$?
[ "$rc" = 0 ] || fail "the agent exited $rc after SIGTERM"
wait_notify "^$AGENT STOPPING=1$" || fail "no STOPPING=1: $(cat "$T/notify.log")"
# STATUS= only when it changed: never the same line twice in a row
awk '/ STATUS=/ { if ($0 == last) { print "repeated: " $0; bad = 1 } last = $0 }
END { exit bad }' "$T/notify.log" || fail "STATUS= sent again unchanged"
if awk '{ print $1 }' "$T/notify.log" | grep -vqx "$AGENT"; then
	fail "a notification not from the agent: $(cat "$T/notify.log")"
fi
[ -S "$T/sock/a" ] && [ -S "$CONTROL" ] ||
    fail "the agent removed the paths of sockets it was given"
ok "STOPPING=1 at SIGTERM, exit 0; STATUS= never repeated; the sockets' paths left to their unit"

# ---- errors: each exits non-zero, naming what to do
# expect_error NAMES CONF REGEX ADDR...: the activated agent exits 1
# saying REGEX (a client's connection starts it)
expect_error() {
	local names=$1 conf=$2 re=$3 rc=0
	shift 3
	activate "$names" "$conf" "$@"
	"$top_builddir/tests/unix-cat" "$1" 20 </dev/null >/dev/null 2>&1 &
	PIDS+=($!)
	exec {rfd}<"$T/ready"
	wait "$ACT_PID" || rc=$?
	exec {rfd}<&-
	[ "$rc" = 1 ] || fail "expected exit 1, got $rc (want: $re)"
	log_since_has "$re" || fail "no message '$re'"
	ok "exit 1: $(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -E -m 1 -o -- "$re")"
}

# a socket no tunnel takes
sed '/^\[tunnel b\]$/,$d' "$T/agent.conf" >"$T/one.conf"
expect_error web-a:web-x "$T/one.conf" \
    "systemd passed a socket named web-x \(fd 4\) that no tunnel of $T/one.conf takes: add listen = systemd:web-x to a \[tunnel\] section" \
    "$T/sock/e1" "$T/sock/e2"
# a tunnel's systemd:NAME that was not passed
expect_error web-a:control "$T/agent.conf" \
    "$T/agent.conf:[0-9]+: \[tunnel b\] listen = systemd:web-b: systemd passed no socket of that name \(it passed: web-a, control\); name one FileDescriptorName=web-b" \
    "$T/sock/e3" "$T/sock/e4"
# not a loopback address
rport=$(free_port) || fail "no free port"
expect_error web-a:web-b "$T/agent.conf" \
    "\[tunnel b\] listen: the socket systemd passed as web-b is tcp:0.0.0.0:$rport, not a loopback address.*allow-remote-listen = yes" \
    "$T/sock/e5" "0.0.0.0:$rport"

# one name in two listen lines: refused by the parser (p11agent check too)
printf '[tunnel c]\nlisten = systemd:web-a\nconnect = localhost:1\nidentity = ec\n' \
    >>"$T/agent.conf"
rc=0
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || rc=$?
[ "$rc" != 0 ] && grep -Eq "agent.conf:[0-9]+: \[tunnel c\] listen: systemd:web-a is taken already by \[tunnel a\] \(line [0-9]+\)" <<<"$out" ||
    fail "one socket in two tunnels: $rc: $out"
ok "one name in two listen lines: $(grep -o 'systemd:web-a is taken.*' <<<"$out")"
