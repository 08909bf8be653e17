#!/bin/bash
# Token failures reach the connection's log line with their CKR name and
# the agent reacts as it should: a C_Sign that fails (the helper stays), a
# C_Sign that says the device was removed while the card is there (the
# helper is restarted), a C_Login that fails at start-up and at a reopen, and a
# token that is pulled and put back (P11FAULT_TOKEN_ABSENT_FILE): the
# helper says so, and the card put back is served again.
. "$top_srcdir/tests/lib.sh"
make_token

one_tunnel_conf

# expect_sign_failure CKR: one connection fails, its log line names CKR
expect_sign_failure() {
	local out
	log_mark
	out=$("$CLIENT" "$(listen_addr t tcp)" expect-close --timeout 10) ||
	    fail "the client was not closed: $out"
	wait_log "conn [0-9]+: upstream localhost:$s_port: TLS handshake failed: the token did not sign: signing \(mechanism 0x1041\): $1" ||
	    fail "no log line naming $1"
	ok "C_Sign failed: $(grep -E "TLS handshake failed: .*$1" "$T/agent.log" | tail -n 1)"
}

# a C_Sign that fails: the connection's line says CKR_FUNCTION_FAILED,
# the helper stays, the next connection signs
P11FAULT_FAIL=C_Sign=0x6:1 start_agent "$T/agent.conf" ||
    fail "the agent did not start"
helper=$(pgrep -P "$AGENT_PID") || fail "no helper"
expect_sign_failure CKR_FUNCTION_FAILED
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-ec) || fail "the next connection: $out"
[ "$(pgrep -P "$AGENT_PID")" = "$helper" ] || fail "the helper was replaced"
ok "after CKR_FUNCTION_FAILED the same helper signs the next handshake"
log_mark
stop_agent || fail "the agent did not exit cleanly"
# the tunnel counted both: one handshake, one token failure, the bytes
log_since_has "tunnel t: 2 connections, 1 handshakes \(0 resumed\), 1000 bytes up, [0-9]+ down, failed: token 1$" ||
    fail "the tunnel's counters: $(grep 'tunnel t: [0-9]* connections' "$T/agent.log")"
ok "the tunnel's counters: $(grep 'tunnel t: [0-9]* connections' "$T/agent.log" | tail -n 1)"

# CKR_DEVICE_REMOVED from C_Sign with the card still there (its session
# alive, its serial the same): a loss no removal explains, so the helper
# exits and is restarted, as before the presence watch (t-removal.sh: a
# card really gone keeps the helper)
P11FAULT_FAIL=C_Sign=0x32:1 start_agent "$T/agent.conf" ||
    fail "the agent did not start"
expect_sign_failure CKR_DEVICE_REMOVED
wait_log "token helper for .*libp11fault.so \(pid [0-9]+\) exited; restarting it" ||
    fail "the helper was not restarted after CKR_DEVICE_REMOVED"
log_since_has "\\(serial [^)]*\\) was removed" &&
    fail "a card that is there taken for removed"
ok "CKR_DEVICE_REMOVED with the card there: the helper was restarted"
stop_agent || fail "the agent did not exit cleanly"

# CKR_GENERAL_ERROR (the module's state unknown) from a module that has
# signed in this helper: the helper exits and the agent starts a new one,
# which signs (OpenSC after pcscd restarted: t-card-removal.sh).  From a
# module that never signed in it: the helper stays, and a key that always
# fails so costs no restart (nor a login) per connection.
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec "session-cache = no"
} >"$T/nocache.conf"
P11FAULT_FAIL=C_Sign=0x5:1@2 start_agent "$T/nocache.conf" ||
    fail "the agent did not start"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-ec) || fail "the first connection: $out"
expect_sign_failure CKR_GENERAL_ERROR
wait_log "token helper for .*libp11fault.so \(pid [0-9]+\) exited; restarting it" ||
    fail "the helper was not restarted after CKR_GENERAL_ERROR"
wait_log "token helper for .*libp11fault.so is back" 10 || fail "no new helper"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-ec) || fail "after the new helper: $out"
stop_agent || fail "the agent did not exit cleanly"
ok "CKR_GENERAL_ERROR after a signature: the helper was restarted, the next connection signs"
P11FAULT_FAIL=C_Sign=0x5 start_agent "$T/nocache.conf" ||
    fail "the agent did not start"
helper=$(pgrep -P "$AGENT_PID") || fail "no helper"
since=$(wc -l <"$T/agent.log")
expect_sign_failure CKR_GENERAL_ERROR
expect_sign_failure CKR_GENERAL_ERROR
[ "$(pgrep -P "$AGENT_PID")" = "$helper" ] || fail "the helper was replaced"
LOG_MARK=$since
log_since_has "exited; restarting it" && fail "a helper restart for a key that never signed"
stop_agent || fail "the agent did not exit cleanly"
ok "CKR_GENERAL_ERROR from a module that never signed: the same helper, no restart"

# C_Login fails at start-up: run and check exit 1 naming the CKR
rc=0
P11FAULT_FAIL=C_Login=0x30 "$P11AGENT" run -c "$T/agent.conf" 2>"$T/run.err" ||
    rc=$?
[ "$rc" = 1 ] || fail "run with a failing C_Login exited $rc"
grep -q "agent.conf:[0-9]*: \[identity ec\] key: token 'p11agent-test': C_Login: CKR_DEVICE_ERROR" "$T/run.err" ||
    fail "run said: $(cat "$T/run.err")"
ok "C_Login at start-up: $(grep CKR_ "$T/run.err")"

# C_Login fails when the identity is opened again after a restart: a
# helper wrapper turns the fault on once $T/login-fails exists
cat >"$T/wrap-helper" <<EOT
#!/bin/bash
[ -e "$T/login-fails" ] && export P11FAULT_FAIL=C_Login=0xe0
exec "$P11AGENT_HELPER" "\$@"
EOT
chmod +x "$T/wrap-helper"
P11AGENT_HELPER=$T/wrap-helper start_agent "$T/agent.conf" ||
    fail "the agent did not start"
log_mark
: >"$T/login-fails"
kill -KILL "$(pgrep -P "$AGENT_PID")"
wait_log "identity ec: cannot open it again: token 'p11agent-test': C_Login: CKR_TOKEN_NOT_PRESENT" ||
    fail "the failed reopen does not name its CKR"
ok "C_Login at a reopen: $(grep 'cannot open it again' "$T/agent.log" | tail -n 1)"
rm -f "$T/login-fails"
wait_log "token helper for .* is back" 30 || fail "the helper did not come back"
stop_agent || fail "the agent did not exit cleanly"

# the token is pulled while the agent runs, then put back: the helper
# stays and says so, the next connection fails at once naming the card,
# and the card put back is served again (more in t-removal.sh)
export P11FAULT_TOKEN_ABSENT_FILE=$T/absent
start_agent "$T/agent.conf" || fail "the agent did not start"
helper=$(pgrep -P "$AGENT_PID") || fail "no helper"
log_mark
: >"$T/absent"
wait_log "identity ec: token 'p11agent-test' \(serial [0-9a-f]+\) was removed; insert it again" ||
    fail "the removal was not noticed"
out=$("$CLIENT" "$(listen_addr t tcp)" expect-close --timeout 10) ||
    fail "the client was not closed with the token gone: $out"
wait_log "conn [0-9]+ \(t\): token 'p11agent-test' \(serial [0-9a-f]+\) was removed" ||
    fail "the connection's line does not name the card"
[ "$(pgrep -P "$AGENT_PID")" = "$helper" ] || fail "the helper exited"
ok "token pulled: the helper stays, a new connection fails naming the card"
log_mark
rm -f "$T/absent"
wait_log "token helper for .* is back" 30 || fail "the helper did not come back after the token did"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-ec) || fail "after the token came back: $out"
ok "token put back: served again without a restart of the agent"
