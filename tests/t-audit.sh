#!/bin/bash
# The audit trail of signatures (issue 10, scope 2): after 3 connections
# by two programs (tunnel-client and a copy of it under another path),
# each with a full handshake (session-cache = no: one signature each),
# the log and `p11agent status` (text and --json) attribute each of the
# 3 signatures to its program, pid and connection.
. "$top_srcdir/tests/lib.sh"
make_token
start_upstream s
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec "session-cache = no"
} >"$T/agent.conf"
# p11agent check's test signature is in its trail too (its own log)
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || fail "check: $out"
grep -Eq "^p11agent: signature 1 by identity ec, token '$P11TEST_TOKEN' serial [0-9a-f]+ for p11agent check's test signature: uid $(id -u) pid [0-9]+ /[^ ]+; CKM_ECDSA, [0-9]+ ms; signed$" <<<"$out" ||
    fail "check: no signature line: $out"
ok "check's test signature: $(grep 'signature 1' <<<"$out")"
start_agent "$T/agent.conf" || fail "the agent did not start"
log_mark
other="$T/bin/other-client"
mkdir -p "$T/bin"
cp "$(realpath "$CLIENT")" "$other"
prog=("$(realpath "$CLIENT")" "$other" "$(realpath "$CLIENT")")
pids=()
for i in 0 1 2; do
	"${prog[$i]}" "$(listen_addr t tcp)" roundtrip --bytes 100 >/dev/null &
	pid=$!
	wait "$pid" || fail "connection $((i + 1)) by ${prog[$i]} failed"
	pids+=("$pid")
done
wait_log_count "signature [0-9]+ by identity ec" 3 10 ||
    fail "not 3 signature lines: $(grep -c 'signature ' "$T/agent.log")"
uid=$(id -u)
for i in 0 1 2; do
	n=$(grep -cF "for conn $((i + 1)) (t): uid $uid pid ${pids[$i]} ${prog[$i]}; upstream localhost:$s_port; CKM_ECDSA, " "$T/agent.log") || true
	[ "$n" = 1 ] || fail "signature of connection $((i + 1)) (pid ${pids[$i]} ${prog[$i]}): $n lines: $(grep 'signature ' "$T/agent.log")"
	grep -E "signature $((i + 1)) by identity ec, token '$P11TEST_TOKEN' serial [0-9a-f]+ for conn $((i + 1)) \(t\): uid $uid pid ${pids[$i]} .*[0-9]+ ms; signed$" "$T/agent.log" >/dev/null ||
	    fail "signature $((i + 1)): $(grep 'signature ' "$T/agent.log")"
done
[ "$(grep -c 'signature [0-9]* by identity' "$T/agent.log")" = 3 ] ||
    fail "more than 3 signatures logged"
ok "the log names each signature's connection, pid and program"

"$P11AGENT" status -c "$T/agent.conf" >"$T/status.txt" ||
    fail "status: $(cat "$T/status.txt")"
grep -qxF "signatures: 3 since start; the last 3, newest first:" "$T/status.txt" ||
    fail "status: $(cat "$T/status.txt")"
for i in 0 1 2; do
	grep -E "^  $((i + 1)) at 20[0-9-]+ [0-9:]+ UTC: identity ec, conn $((i + 1)) \(t\) to localhost:$s_port; uid $uid pid ${pids[$i]} ${prog[$i]//./\\.}; CKM_ECDSA, [0-9]+ ms, signed$" "$T/status.txt" >/dev/null ||
	    fail "status: signature $((i + 1)) of pid ${pids[$i]}: $(cat "$T/status.txt")"
done
ok "status lists the 3 signatures with their programs"

"$P11AGENT" status --json -c "$T/agent.conf" >"$T/status.json" ||
    fail "status --json: $(cat "$T/status.json")"
/usr/bin/python3 - "$T/status.json" "$uid" "$s_port" "${pids[@]}" "${prog[@]}" <<'PY' ||
import json, sys, time
d = json.load(open(sys.argv[1]))
uid, port = int(sys.argv[2]), sys.argv[3]
pids = [int(x) for x in sys.argv[4:7]]
progs = sys.argv[7:10]
def want(what, got, exp):
    if got != exp:
        sys.exit("%s: %r, wanted %r" % (what, got, exp))
want("signatures_total", d["signatures_total"], 3)
rec = d["signatures_recent"]
want("recent", [s["seq"] for s in rec], [3, 2, 1])
for s in rec:
    i = s["seq"] - 1
    want("conn of %d" % s["seq"], s["conn"], i + 1)
    want("pid of %d" % s["seq"], s["pid"], pids[i])
    want("exe of %d" % s["seq"], s["exe"], progs[i])
    want("uid of %d" % s["seq"], s["uid"], uid)
    want("ok of %d" % s["seq"], (s["ok"], s["error"]), (True, None))
    want("identity", (s["identity"], s["tunnel"]), ("ec", "t"))
    want("upstream", s["upstream"], "localhost:" + port)
    want("mechanism", s["mechanism"], "CKM_ECDSA")
    if abs(s["at"] - time.time()) > 120:
        sys.exit("at %r is not now" % s["at"])
PY
    fail "status --json: $(cat "$T/status.json")"
ok "status --json: signatures_recent attributes each signature"
stop_agent

# a signature the token refuses is in the trail too, as failed, with its
# reason and the connection that asked
P11FAULT_FAIL=C_Sign=0x6:1 start_agent "$T/agent.conf" ||
    fail "the agent did not start"
log_mark
"$CLIENT" "$(listen_addr t tcp)" expect-close --timeout 10 >/dev/null &
pid=$!
wait "$pid" || fail "the refused signature's client was not closed"
wait_log "signature 1 by identity ec.* for conn 1 \(t\): uid $uid pid $pid $(realpath "$CLIENT"); upstream localhost:$s_port; CKM_ECDSA, [0-9]+ ms; failed: signing \(mechanism 0x1041\): CKR_FUNCTION_FAILED" ||
    fail "no failed signature line: $(grep 'signature ' "$T/agent.log")"
"$P11AGENT" status --json -c "$T/agent.conf" >"$T/status2.json" ||
    fail "status --json: $(cat "$T/status2.json")"
/usr/bin/python3 - "$T/status2.json" "$pid" <<'PY' ||
import json, sys
s = json.load(open(sys.argv[1]))["signatures_recent"]
if len(s) != 1 or s[0]["ok"] or s[0]["pid"] != int(sys.argv[2]) or \
        "CKR_FUNCTION_FAILED" not in s[0]["error"]:
    sys.exit("signatures_recent: %r" % s)
PY
    fail "status --json: $(cat "$T/status2.json")"
ok "a refused signature: logged and in status as failed, with its pid"
stop_agent

# a connection closed while its token signs (handshake-timeout): the
# card signed all the same, and the line says so when the token answers;
# then the agent stopped while a signature is pending: no crash, the
# signature is in the trail (the token helper gone), exit 0
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec "session-cache = no" \
	    "handshake-timeout = 1"
} >"$T/slow.conf"
P11FAULT_SIGN_DELAY_MS=2500 start_agent "$T/slow.conf" ||
    fail "the agent did not start"
log_mark
"$CLIENT" "$(listen_addr t tcp)" expect-close --timeout 20 >/dev/null &
pid=$!
wait_log "conn 1 \(t\): closed: timeout" 10 ||
    fail "the slow handshake did not time out"
log_since_has "signature 1 " && fail "signature 1 logged before the token answered"
wait_log "signature 1 by identity ec, token '$P11TEST_TOKEN' serial [0-9a-f]+ for conn 1 \(t\): uid $uid pid $pid $(realpath "$CLIENT"); upstream localhost:$s_port; CKM_ECDSA, 2[0-9]{3} ms; signed" 10 ||
    fail "no signature line for the closed connection: $(grep 'signature ' "$T/agent.log")"
wait "$pid" || true
ok "a connection closed while the token signed: $(grep 'signature 1 ' "$T/agent.log" | tail -n 1 | sed 's/^ *//')"
log_mark
"$CLIENT" "$(listen_addr t tcp)" expect-close --timeout 20 >/dev/null &
pid=$!
wait_log "conn 2: the handshake waits for the token" 10 ||
    fail "connection 2 did not wait for the token"
kill -TERM "$AGENT_PID"
wait_log "stopping" 5 || fail "the agent did not begin to stop"
kill -TERM "$AGENT_PID"
rc=0
wait "$AGENT_PID" || rc=$?
AGENT_PID=
[ "$rc" = 0 ] || fail "the agent exited with status $rc, a signature pending at stop"
grep -E "signature 2 by identity ec, token '$P11TEST_TOKEN' serial [0-9a-f]+ for conn 2 \(t\): uid $uid pid $pid .*; (signed|failed: .*)$" "$T/agent.log" >/dev/null ||
    fail "no line for the signature pending at stop: $(grep 'signature ' "$T/agent.log")"
wait "$pid" || true
ok "stopped with a signature pending: exit 0, $(grep 'signature 2 ' "$T/agent.log" | tail -n 1 | sed 's/^ *//')"
