#!/bin/bash
# The token helper's life: found beside a p11agent that runs from its
# build tree; a helper that cannot be run is an error of the agent with
# the path and what to do (also on a restart); replacing a dead helper
# never waits for a process on the event loop (checked with strace).
. "$top_srcdir/tests/lib.sh"
make_token

one_tunnel_conf

# a helper that does not exist: check and run fail at once, exit 1
for cmd in check run; do
	rc=0
	out=$(P11AGENT_HELPER=/nonexistent timeout 20 "$P11AGENT" "$cmd" \
	    -c "$T/agent.conf" 2>&1) || rc=$?
	[ "$rc" = 1 ] || fail "$cmd with no helper: exit $rc: $out"
	grep -q "cannot run the token helper /nonexistent: No such file or directory; set P11AGENT_HELPER" \
	    <<<"$out" || fail "$cmd with no helper: $out"
	grep -q "it exited" <<<"$out" && fail "$cmd: the helper's exit was reported: $out"
	ok "P11AGENT_HELPER=/nonexistent: $cmd: $(grep -m 1 'cannot run' <<<"$out")"
done

# from the build tree, without P11AGENT_HELPER: the helper beside it
out=$(env -u P11AGENT_HELPER "$P11AGENT" check -c "$T/agent.conf" 2>&1) ||
    fail "check from the build tree without P11AGENT_HELPER: $out"
grep -q "identity ec: ok" <<<"$out" || fail "check: $out"
ok "the build tree's p11agent finds its helper"

# a libtool-style tree: the binary in .libs/, the helper one level up
mkdir -p "$T/tree/.libs"
cp "$P11AGENT" "$T/tree/.libs/p11agent"
ln -s "$(realpath "$P11AGENT_HELPER")" "$T/tree/p11agent-helper"
out=$(env -u P11AGENT_HELPER "$T/tree/.libs/p11agent" check \
    -c "$T/agent.conf" 2>&1) || fail "check from .libs/: $out"
ok "a p11agent in .libs/ finds the helper one directory up"

# a copy of p11agent with no helper anywhere: which paths, what to do
mkdir "$T/bin"
cp "$P11AGENT" "$T/bin/p11agent"
rc=0
out=$(env -u P11AGENT_HELPER "$T/bin/p11agent" check -c "$T/agent.conf" 2>&1) ||
    rc=$?
[ "$rc" = 1 ] || fail "a lone copy of p11agent: exit $rc: $out"
grep -q "cannot run the token helper: there is no p11agent-helper at $T/bin/p11agent-helper or /.*; set P11AGENT_HELPER to the path of p11agent-helper" \
    <<<"$out" || fail "a lone copy of p11agent: $out"
ok "no helper anywhere: $(grep -m 1 'cannot run' <<<"$out")"

# a restart that cannot run the helper says so, and the next one works
ln -s "$(realpath "$P11AGENT_HELPER")" "$T/h"
P11AGENT_HELPER=$T/h start_agent "$T/agent.conf" || fail "the agent did not start"
log_mark
rm "$T/h"
kill -KILL "$(pgrep -P "$AGENT_PID")"
wait_log "token helper for .*: cannot run the token helper $T/h: No such file or directory; set P11AGENT_HELPER" ||
    fail "no message for the failed restart"
ln -s "$(realpath "$P11AGENT_HELPER")" "$T/h"
wait_log "token helper for .* is back" || fail "the helper did not come back"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-ec) || fail "after the restart: $out"
ok "a helper that cannot be run on a restart is reported, then retried"
stop_agent || fail "the agent did not exit cleanly"

# restarting never blocks on the old process: the agent's main thread
# makes no wait4/waitid without WNOHANG while a helper is killed and
# replaced, nor when it stops (strace: only the main thread is traced)
command -v strace >/dev/null || skip "strace is missing (Debian package strace)"
cat >"$T/traced" <<EOT
#!/bin/sh
exec strace -qq -o "$T/strace.out" -e trace=wait4,waitid -e signal=none \
    "$P11AGENT" "\$@"
EOT
chmod +x "$T/traced"
P11AGENT=$T/traced start_agent "$T/agent.conf" || fail "the agent did not start under strace"
tracer=$AGENT_PID
agent=$(pgrep -P "$tracer") || fail "no agent under strace"
old=$(pgrep -P "$agent") || fail "no helper"
log_mark
kill -KILL "$old"
wait_log "token helper for .* is back" || fail "the helper did not come back"
new=$(pgrep -P "$agent") || fail "no helper after the restart"
[ "$new" != "$old" ] || fail "the same helper"
[ -e "/proc/$old" ] && fail "the killed helper $old was not reaped: $(cat "/proc/$old/stat")"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-ec) || fail "after the restart: $out"
kill -TERM "$agent"
rc=0
wait "$tracer" || rc=$?
AGENT_PID=
[ "$rc" = 0 ] || fail "the agent exited with status $rc under strace"
# (LeakSanitizer's exit-time check, in a sanitizer build, waits for its
# own tracer thread with __WALL: not ours)
if grep -E '^wait(4|id)\(' "$T/strace.out" | grep -v -e WNOHANG -e __WALL; then
	fail "the agent waited for a process without WNOHANG (above)"
fi
grep -Eq "^wait(4|id)\(.*WNOHANG.* = $old$" "$T/strace.out" ||
    fail "helper $old was not reaped with WNOHANG: $(cat "$T/strace.out")"
grep -Eq "^wait(4|id)\(.*WNOHANG.* = $new$" "$T/strace.out" ||
    fail "helper $new was not reaped at the end: $(cat "$T/strace.out")"
ok "no blocking wait: $(grep -c '^wait' "$T/strace.out") non-blocking wait calls"

# ---- -q: warnings and errors only, no line per connection
: >"$T/agent.log"
# (start_agent passes -v: the quiet agent is started by hand)
mkfifo "$T/ready.q"
"$P11AGENT" run -q -c "$T/agent.conf" --ready-fd 3 3>"$T/ready.q" \
    2>>"$T/agent.log" &
qpid=$!
PIDS+=($qpid)
declare -gA LISTEN=()
exec {qfd}<"$T/ready.q"
while read -t 30 -u "$qfd" line; do
	case $line in
	ready) break ;;
	listen\ *) read -r _ name addr <<<"$line"; LISTEN[$name]="${LISTEN[$name]:-} $addr" ;;
	esac
done
exec {qfd}<&-
[ "$line" = ready ] || fail "the quiet agent did not start: $(cat "$T/agent.log")"
"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 10 >/dev/null ||
    fail "a connection through the quiet agent"
kill -TERM "$qpid"
wait "$qpid" || fail "the quiet agent exited with status $?"
grep -q "conn 1 " "$T/agent.log" && fail "-q logged the connection: $(cat "$T/agent.log")"
[ -s "$T/agent.log" ] && fail "-q logged: $(cat "$T/agent.log")"
ok "-q: a connection and a clean stop log nothing"
