#!/bin/bash
# Identities: a PIN from pin = env:NAME reaches the helper only (the
# agent's environment loses it, its bytes wiped, and the agent cannot be
# read by other processes of its user); a card swapped while the helper
# was down is noticed at the reopen and its tunnels use the new key and
# certificate; a signal during start-up stops the agent at once, even
# while a module hangs.
. "$top_srcdir/tests/lib.sh"
make_token

# ---- pin = env:NAME
start_upstream s
{
	agent_section
	identity ec 02 | sed 's|^pin = .*|pin = env:P11AGENT_TEST_PIN|'
	tunnel t "localhost:$s_port" ec
} >"$T/env.conf"
P11AGENT_TEST_PIN=$P11TEST_PIN start_agent "$T/env.conf" ||
    fail "the agent did not start with pin = env:"
helper=$(pgrep -P "$AGENT_PID") || fail "no helper"
tr '\0' '\n' <"/proc/$AGENT_PID/environ" >"$T/agent.env"
tr '\0' '\n' <"/proc/$helper/environ" >"$T/helper.env"
grep -qx "P11AGENT_TEST_PIN=$P11TEST_PIN" "$T/agent.env" &&
    fail "the PIN is still in the agent's environment block"
grep -qx "P11AGENT_TEST_PIN=$P11TEST_PIN" "$T/helper.env" ||
    fail "the helper did not get the PIN variable"
ok "pin = env: the variable is in the helper's environment, wiped from the agent's"
log_mark
kill -KILL "$helper"
wait_log "token helper for .* is back" || fail "the helper did not come back"
new=$(pgrep -P "$AGENT_PID") || fail "no helper after the restart"
tr '\0' '\n' <"/proc/$new/environ" | grep -qx "P11AGENT_TEST_PIN=$P11TEST_PIN" ||
    fail "the restarted helper did not get the PIN variable"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-ec) || fail "after the restart: $out"
ok "a restarted helper logs in with the same env: PIN"
stop_agent || fail "the agent did not exit cleanly"

# the agent (like its helper) is not dumpable: another process of the
# same user cannot read its memory or environment
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
	nobody=$(id -u nobody) || skip "no user nobody"
	chmod 711 "$T"
	chown -R nobody "$TOK"
	chown nobody "$T/env.conf"
	mkfifo "$T/nready"
	chown nobody "$T/nready"
	mkdir -m 700 "$T/nrun"	# its control socket's runtime directory
	chown nobody "$T/nrun"
	XDG_RUNTIME_DIR=$T/nrun P11AGENT_TEST_PIN=$P11TEST_PIN P11FAULT_LOG= setpriv --reuid="$nobody" \
	    --regid="$nobody" --clear-groups "$P11AGENT" run -c "$T/env.conf" \
	    --ready-fd 3 3>"$T/nready" 2>>"$T/agent.log" &
	npid=$!
	PIDS+=($npid)
	exec {rfd}<"$T/nready"
	line=
	while [ "$line" != ready ]; do
		read -r -t 30 -u "$rfd" line ||
		    fail "the agent as nobody did not start"
	done
	exec {rfd}<&-
	# setpriv execs the agent: $npid is the agent
	if setpriv --reuid="$nobody" --regid="$nobody" --clear-groups \
	    cat "/proc/$npid/environ" >/dev/null 2>&1; then
		fail "a process of the agent's user read its environment"
	fi
	kill "$npid"
	wait "$npid" || fail "the agent as nobody did not exit cleanly"
	chown -R root "$TOK"
	ok "the agent is not dumpable: its own user cannot read /proc/PID/environ"
fi

# ---- a card swapped while the helper was down
"$top_srcdir/tests/mktoken.sh" "$T/tok2" || fail "a second token world"
cat "$TOK/ca.pem" "$T/tok2/ca.pem" >"$T/both-ca.pem"
start_server s2 --cert "$TOK/server.pem" --key "$TOK/server.key" \
    --ca "$T/both-ca.pem" --require-cert
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s2_port" ec
} >"$T/swap.conf"
start_agent "$T/swap.conf" || fail "the agent did not start"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-ec) || fail "before the swap: $out"
# the other card: same label, same key id, another key and certificate
mv "$TOK/tokens" "$TOK/tokens.first"
mv "$T/tok2/tokens" "$TOK/tokens"
log_mark
kill -KILL "$(pgrep -P "$AGENT_PID")"
wait_log "identity ec: the token came back with a different key \(its certificate changed; certificate was .*, now .*\); its tunnels now use the new one" ||
    fail "the swapped card was not noticed"
wait_log "token helper for .* is back" || fail "the helper did not come back"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-ec) ||
    fail "a connection after the swap (old certificate with the new key?): $out"
ok "swapped card: noticed at the reopen, new connections use its key and certificate"
stop_agent || fail "the agent did not exit cleanly"
mv "$TOK/tokens" "$T/tok2/tokens"
mv "$TOK/tokens.first" "$TOK/tokens"

# ---- SIGTERM while a module hangs at start-up
mkfifo "$T/hung.fifo"
cat >"$T/hung-helper" <<EOT
#!/bin/bash
echo up >"$T/hung.fifo"
exec tail -f /dev/null
EOT
chmod +x "$T/hung-helper"
P11AGENT_HELPER=$T/hung-helper "$P11AGENT" run -c "$T/swap.conf" \
    2>>"$T/agent.log" &
pid=$!
PIDS+=($pid)
read -r -t 20 line <"$T/hung.fifo" || fail "no helper was started"
term_within "$pid" 5000 "SIGTERM during start-up"
ok "SIGTERM while a module hangs at start-up: stopped in $STOP_MS ms"
