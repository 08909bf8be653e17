#!/bin/bash
# Logging (issue 9, scope 3), on stderr:
# - one line per connection when it ends, with its peer (uid, pid,
#   program), the access rule that let it in (own uid, allow-users), the
#   upstream, the TLS version and full or resumed handshake, the exact
#   bytes each way, the duration and how it ended (closed by the client,
#   by the upstream with or without close_notify, idle timeout, a failed
#   handshake);
# - levels: by default info and no debug, -q only warnings and errors,
#   -v debug; log-level in [agent] sets it, -q/-v win over it; a bad
#   log or log-level names file, line and the values allowed;
# - with $JOURNAL_STREAM naming stderr (systemd), and with log = journal
#   where no journald listens (this container), the lines carry sd-daemon
#   "<N>" priority prefixes; a JOURNAL_STREAM of another file is ignored.
# tests/t-log-sinks.sh checks the native journal and syslog.
. "$top_srcdir/tests/lib.sh"
make_token
me=$(id -u)
client_re=$(realpath "$CLIENT" | sed 's/[.]/[.]/g')

start_upstream s --resume
start_upstream n --send 5000 --close notify
start_upstream f --send 5000 --close fin
start_server plain --plain
mkdir -m 700 "$T/sock"
other=$(id -u nobody 2>/dev/null) || other=
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec "listen = unix:$T/sock/t.sock"
	tunnel n "localhost:$n_port" ec
	tunnel f "localhost:$f_port" ec
	tunnel p "localhost:$plain_port" ec
	tunnel i "localhost:$s_port" ec "idle-timeout = 1"
	[ -z "$other" ] || tunnel o "localhost:$s_port" ec "allow-users = $other"
} >"$T/agent.conf"

# ---- the line at each connection's end
start_agent "$T/agent.conf" || fail "the agent did not start"
# line_for TUNNEL: the end line of the tunnel's latest connection
line_for() {
	grep -E "^p11agent: conn [0-9]+ \($1\): closed" "$T/agent.log" | tail -n 1
}
log_mark
out=$("$CLIENT" "$(listen_addr t unix)" roundtrip --bytes 1000) || fail "t: $out"
wait_log "conn [0-9]+ \(t\): closed" 10 || fail "t: no end line"
line=$(line_for t)
[[ $line =~ ^p11agent:\ conn\ [0-9]+\ \(t\):\ closed\ by\ the\ client\;\ uid\ $me\ pid\ [0-9]+\ $client_re\ \(own\ uid\)\;\ upstream\ localhost:$s_port,\ TLSv1[.]3\ full\ handshake\;\ 1000\ bytes\ up,\ [0-9]+\ down,\ [0-9]+\ ms$ ]] ||
    fail "t (unix, full): $line"
# down: the echo server's session line, then the echo
first=$(head -n 1 <<<"$out")
[[ $line =~ \ $((1000 + ${#first} + 1))\ down, ]] || fail "t: bytes down: $line"
ok "unix, full handshake: $line"
log_mark
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000) || fail "t: second: $out"
first=$(head -n 1 <<<"$out")
down=$((1000 + ${#first} + 1))
wait_log "conn [0-9]+ \(t\): closed" 10 || fail "t: no second end line"
line=$(line_for t)
[[ $line =~ \):\ closed\ by\ the\ client\;\ uid\ $me\ pid\ [0-9]+\ $client_re\ \(own\ uid\)\;\ upstream\ localhost:$s_port,\ TLSv1[.]3\ resumed\ handshake\;\ 1000\ bytes\ up,\ $down\ down,\ [0-9]+\ ms$ ]] ||
    fail "t (tcp, resumed): $line"
ok "tcp, resumed: $line"

log_mark
out=$("$CLIENT" "$(listen_addr n tcp)" drain --bytes 5000) || fail "n: $out"
wait_log "conn [0-9]+ \(n\): closed" 10 || fail "n: no end line"
line=$(line_for n)
[[ $line =~ \):\ closed\ by\ the\ upstream\;\ .*\ TLSv1[.]3\ full\ handshake\;\ 0\ bytes\ up,\ [0-9]+\ down ]] ||
    fail "n (upstream close_notify): $line"
ok "the upstream closed first: $line"
log_mark
"$CLIENT" "$(listen_addr f tcp)" drain --bytes 5000 >/dev/null || fail "f"
wait_log "conn [0-9]+ \(f\): closed" 10 || fail "f: no end line"
line=$(line_for f)
[[ $line =~ \):\ closed\ by\ the\ upstream\ \(no\ close_notify\)\; ]] ||
    fail "f (upstream FIN): $line"
ok "the upstream closed without close_notify: $line"

log_mark
"$CLIENT" "$(listen_addr p tcp)" expect-close --timeout 10 >/dev/null || fail "p"
wait_log "conn [0-9]+ \(p\): closed" 10 || fail "p: no end line"
line=$(line_for p)
[[ $line =~ \):\ closed:\ TLS\ handshake\ failed\;\ uid\ $me\ .*\(own\ uid\)\;\ upstream\ localhost:$plain_port,\ no\ TLS\ handshake\;\ 0\ bytes\ up,\ 0\ down,\ [0-9]+\ ms$ ]] ||
    fail "p (not TLS): $line"
ok "a failed handshake: $line"

log_mark
# a client that reads (the server's line) and sends nothing
addr=$(listen_addr i tcp) && addr=${addr#tcp:}
exec {fd}<>"/dev/tcp/${addr%:*}/${addr##*:}" || fail "i: connect"
timeout $((10 * SLOW)) cat <&"$fd" >/dev/null || fail "i: not closed"
exec {fd}<&-
wait_log "conn [0-9]+ \(i\): closed" 10 || fail "i: no end line"
line=$(line_for i)
[[ $line =~ \):\ closed:\ idle\ timeout\;\ .*\ full\ handshake\;\ 0\ bytes\ up,\ [0-9]+\ down,\ ([0-9]+)\ ms$ ]] ||
    fail "i (idle): $line"
[ "${BASH_REMATCH[1]}" -ge 1000 ] || fail "i: idle after ${BASH_REMATCH[1]} ms"
ok "idle timeout: $line"

if [ -n "$other" ] && command -v setpriv >/dev/null; then
	log_mark
	setpriv --reuid="$other" --regid="$(id -g nobody)" --clear-groups \
	    "$CLIENT" "$(listen_addr o tcp)" roundtrip --bytes 10 >/dev/null ||
	    fail "o: as nobody"
	wait_log "conn [0-9]+ \(o\): closed" 10 || fail "o: no end line"
	line=$(line_for o)
	[[ $line =~ \):\ closed\ by\ the\ client\;\ uid\ $other\ pid\ [0-9]+\ $client_re\ \(allow-users\ $other\)\; ]] ||
	    fail "o (allow-users): $line"
	ok "allow-users: $line"
else
	echo "note: no user nobody or no setpriv: the allow-users line is not checked"
fi
stop_agent || fail "stop"

# ---- levels
# bare_agent LOG ARGS...: the agent without start_agent's -v, stderr to
# LOG, until it is ready
bare_agent() {
	local log=$1 fd line
	shift
	rm -f "$T/ready"
	mkfifo "$T/ready"
	"${VALGRIND[@]}" "$P11AGENT" run "$@" --ready-fd 3 3>"$T/ready" \
	    2>>"$log" &
	AGENT_PID=$!
	PIDS+=($AGENT_PID)
	exec {fd}<"$T/ready"
	while read -t $((30 * SLOW)) -u "$fd" line; do
		case $line in
		ready) exec {fd}<&-; return 0 ;;
		listen\ p\ tcp:*) PLAIN=${line#listen p } ;;
		esac
	done
	exec {fd}<&-
	return 1
}
# levels NAME ARGS...: runs the agent, makes one failing connection
# (a warning, an info end line, debug lines), stops it
levels() {
	local name=$1
	shift
	bare_agent "$T/$name.log" "$@" || fail "$name: did not start"
	"$CLIENT" "$PLAIN" expect-close --timeout 10 >/dev/null || fail "$name: p"
	stop_agent || fail "$name: stop"
}
has() {
	if [ "$2" = "$DEBUG" ]; then
		grep -E -- "$DEBUG" "$T/$1.log" | grep -Evq '^p11agent: (warning|error): '
	else
		grep -Eq -- "$2" "$T/$1.log"
	fi
}
WARN='^p11agent: warning: conn [0-9]+: upstream .*TLS handshake failed'
INFO='^p11agent: conn [0-9]+ \(p\): closed: TLS handshake failed'
DEBUG='^p11agent: [a-z_]+: '

levels default -c "$T/agent.conf"
has default "$WARN" && has default "$INFO" && has default '^p11agent: ready$' ||
    fail "default: no warning or info: $(cat "$T/default.log")"
has default "$DEBUG" && fail "default: debug lines: $(cat "$T/default.log")"
ok "default: warnings and info, no debug"
levels quiet -q -c "$T/agent.conf"
has quiet "$WARN" || fail "-q: no warning: $(cat "$T/quiet.log")"
has quiet '^p11agent: [^w]' && fail "-q: more than warnings: $(cat "$T/quiet.log")"
ok "-q: only warnings ($(wc -l <"$T/quiet.log") lines)"
levels verbose -v -c "$T/agent.conf"
has verbose "$DEBUG" && has verbose "$INFO" || fail "-v: no debug: $(cat "$T/verbose.log")"
ok "-v: debug lines, e.g. $(grep -E -m 1 "$DEBUG" "$T/verbose.log")"

# log-level in the file, and the command line over it
with_level() {
	sed "s/^\[agent\]$/[agent]\nlog-level = $1/" "$T/agent.conf" >"$T/level-$1.conf"
}
for l in error warning info debug; do
	with_level $l
done
levels f-debug -c "$T/level-debug.conf"
has f-debug "$DEBUG" || fail "log-level = debug: no debug"
levels f-warning -c "$T/level-warning.conf"
has f-warning "$WARN" || fail "log-level = warning: no warning"
has f-warning '^p11agent: [^w]' && fail "log-level = warning: $(cat "$T/f-warning.log")"
levels f-error -c "$T/level-error.conf"
[ -s "$T/f-error.log" ] && fail "log-level = error: $(cat "$T/f-error.log")"
ok "log-level = debug, warning, error"
levels f-warning-v -v -c "$T/level-warning.conf"
has f-warning-v "$DEBUG" || fail "-v with log-level = warning: no debug"
levels f-debug-q -q -c "$T/level-debug.conf"
has f-debug-q '^p11agent: [^w]' && fail "-q with log-level = debug: $(cat "$T/f-debug-q.log")"
ok "-q and -v win over log-level"

# bad values: file, line, key, what is allowed; nothing starts
printf '[agent]\nlog-level = loud\n' >"$T/bad1.conf"
printf '[agent]\nlog = /var/log/x\n' >"$T/bad2.conf"
printf '[agent]\nlog = stderr\nlog = syslog\n' >"$T/bad3.conf"
rc=0; out=$("$P11AGENT" run -c "$T/bad1.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -q "$T/bad1.conf:2: \[agent\] log-level: 'loud' is not one of error, warning, info, debug" <<<"$out" ||
    fail "bad log-level ($rc): $out"
rc=0; out=$("$P11AGENT" run -c "$T/bad2.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -q "$T/bad2.conf:2: \[agent\] log: '/var/log/x' is not one of auto, stderr, journal, syslog" <<<"$out" ||
    fail "bad log ($rc): $out"
rc=0; out=$("$P11AGENT" run -c "$T/bad3.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -q "$T/bad3.conf:3: \[agent\] log: given twice" <<<"$out" ||
    fail "log twice ($rc): $out"
rc=0; out=$("$P11AGENT" run --log file -c "$T/agent.conf" 2>&1) || rc=$?
[ "$rc" = 2 ] && grep -q "^p11agent: error: --log: 'file' is not one of auto, stderr, journal, syslog" <<<"$out" ||
    fail "--log file ($rc): $out"
rc=0; out=$("$P11AGENT" status --log stderr 2>&1) || rc=$?
[ "$rc" = 2 ] && grep -q "^p11agent: error: --log is for p11agent run" <<<"$out" ||
    fail "status --log ($rc): $out"
ok "bad log, log-level, --log: $(head -n 1 <<<"$out")"

# ---- the journal's stream: "<N>" prefixes
: >"$T/journal.log"
JOURNAL_STREAM=$(stat -c %d:%i "$T/journal.log") levels journal -c "$T/agent.conf"
grep -Eq '^<6>ready$' "$T/journal.log" &&
    grep -Eq '^<4>conn [0-9]+: upstream .*TLS handshake failed' "$T/journal.log" &&
    grep -Eq '^<6>conn [0-9]+ \(p\): closed: TLS handshake failed; ' "$T/journal.log" ||
    fail "JOURNAL_STREAM: $(cat "$T/journal.log")"
grep -v '^p11agent-helper' "$T/journal.log" | grep -Ev '^<[0-7]>' &&
    fail "JOURNAL_STREAM: a line without a priority"
ok "JOURNAL_STREAM names stderr: <N> prefixes ($(grep -m 1 '^<4>' "$T/journal.log"))"
: >"$T/other.log"
JOURNAL_STREAM=$(stat -c %d:%i "$T/other.log") levels notjournal -c "$T/agent.conf"
has notjournal '^p11agent: ready$' && ! has notjournal '^<' ||
    fail "JOURNAL_STREAM of another file: $(cat "$T/notjournal.log")"
[ -s "$T/other.log" ] && fail "wrote to the other file"
ok "JOURNAL_STREAM of another file: plain stderr"
sed "s/^\[agent\]$/[agent]\nlog = journal\nlog-level = debug/" "$T/agent.conf" >"$T/journal.conf"
levels forced -c "$T/journal.conf"
grep -Eq '^<6>ready$' "$T/forced.log" && grep -Eq '^<7>[a-z_]+: ' "$T/forced.log" ||
    fail "log = journal: $(cat "$T/forced.log")"
ok "log = journal with no journald: <N> on stderr, debug as <7>"
levels overridden --log stderr -c "$T/journal.conf"
has overridden '^p11agent: ready$' && ! has overridden '^<' ||
    fail "--log stderr over log = journal: $(cat "$T/overridden.log")"
ok "--log stderr wins over log = journal"
