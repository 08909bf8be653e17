#!/bin/bash
# p11agent status (issue 9, scope 1, first part): over the control socket,
# for people and with --json for programs.
# - no agent running: it says so and how to start one, exit 3;
# - after traffic, --json has each tunnel's exact counters (connections,
#   handshakes, bytes each way, failures by reason, the last error), the
#   identities and the token helper (its pid, its signatures and their
#   latency);
# - the text form says the same.
. "$top_srcdir/tests/lib.sh"
make_token

rc=0
out=$("$P11AGENT" status --control "$T/run/nobody" 2>&1) || rc=$?
[ "$rc" = 3 ] || fail "status with no agent exited $rc: $out"
grep -q "no p11agent is running (no control socket at $T/run/nobody); start one with p11agent run" <<<"$out" ||
    fail "status with no agent: $out"
ok "no agent: exit 3, '$out'"

start_upstream s
# a port bound but not listening, held for the whole test (so no other
# test takes it): connections to it are refused
mkfifo "$T/closed.fifo" "$T/port.fifo"
/usr/bin/python3 -c '
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
sys.stdin.read()' <"$T/closed.fifo" >"$T/port.fifo" &
PIDS+=($!)
exec {HOLD}>"$T/closed.fifo"
exec {PORTFD}<"$T/port.fifo"
closed=
read -r -t $((20 * SLOW)) -u "$PORTFD" closed || true
exec {PORTFD}<&-
[ -n "$closed" ] || fail "no port held"
{
	agent_section
	identity ec 02
	identity rsa 01
	tunnel t "localhost:$s_port" ec
	tunnel r "localhost:$s_port" rsa
	tunnel dead "127.0.0.1:$closed" ec
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"
for i in 1 2 3; do
	"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 >/dev/null ||
	    fail "t: connection $i"
done
for i in 1 2; do
	"$CLIENT" "$(listen_addr r tcp)" roundtrip --bytes 5000 >/dev/null ||
	    fail "r: connection $i"
done
log_mark
"$CLIENT" "$(listen_addr dead tcp)" expect-close --timeout 10 >/dev/null ||
    fail "dead: the connection was not closed"
wait_log "conn [0-9]+ \(dead\): closed" 10 || fail "dead: no closing line"
# the bytes each tunnel's connections carried, from their closing lines
down() {
	grep -E "conn [0-9]+ \($1\): closed.*; [0-9]+ bytes up, [0-9]+ down, [0-9]+ ms$" "$T/agent.log" |
	    sed -E 's/.* ([0-9]+) down, [0-9]+ ms$/\1/' | paste -sd+ | bc
}
t_down=$(down t) r_down=$(down r)
helper=$(pgrep -P "$AGENT_PID") || fail "no helper"

"$P11AGENT" status --json -c "$T/agent.conf" >"$T/status.json" ||
    fail "status --json: $(cat "$T/status.json")"
/usr/bin/python3 - "$T/status.json" "$t_down" "$r_down" "$helper" "$AGENT_PID" <<'EOF' ||
import json, sys
d = json.load(open(sys.argv[1]))
t_down, r_down, helper, agent = (int(x) for x in sys.argv[2:6])
tun = {t["name"]: t for t in d["tunnels"]}
def want(what, got, exp):
    if got != exp:
        sys.exit("%s: %r, wanted %r" % (what, got, exp))
want("version", d["version"], 1)
want("agent pid", d["agent"]["pid"], agent)
want("tunnels", sorted(tun), ["dead", "r", "t"])
for name, n, up, dn in (("t", 3, 3000, t_down), ("r", 2, 10000, r_down)):
    t = tun[name]
    want(name + " connections", t["connections"], n)
    want(name + " handshakes", t["handshakes"], n)
    want(name + " resumed", t["handshakes_resumed"], 0)  # the echo server issues no tickets
    want(name + " bytes_up", t["bytes_up"], up)
    want(name + " bytes_down", t["bytes_down"], dn)
    want(name + " open", t["connections_open"], 0)
    want(name + " failures", sum(t["failed"].values()), 0)
    want(name + " last_error", t["last_error"], None)
    want(name + " upstream", t["upstream"], "localhost")
    if not t["listen"][0].startswith("tcp:127.0.0.1:"):
        sys.exit("%s listen: %r" % (name, t["listen"]))
x = tun["dead"]
want("dead connections", x["connections"], 1)
want("dead handshakes", x["handshakes"], 0)
want("dead failed.connect", x["failed"]["connect"], 1)
if not x["last_error"]["text"].startswith("connect: "):
    sys.exit("dead last_error: %r" % x["last_error"])
want("identities", [i["name"] for i in d["identities"]], ["ec", "rsa"])
want("identity state", d["identities"][0]["state"], "open")
want("helpers", len(d["helpers"]), 1)
want("helper pid", d["helpers"][0]["pid"], helper)
want("helper state", d["helpers"][0]["state"], "running")
want("helper restarts", d["helpers"][0]["restarts"], 0)
h = d["helpers"][0]
want("signatures", h["signatures"], 5)   # 5 full handshakes
want("signatures failed", h["signatures_failed"], 0)
want("sign buckets +Inf", h["sign_ms_buckets"]["+Inf"], 5)
b = list(h["sign_ms_buckets"].values())
if b != sorted(b) or h["sign_ms_max"] * 5 < h["sign_ms_total"]:
    sys.exit("sign latency buckets not cumulative, or the max below the mean: %r" % h)
want("pin prompts", h["pin_prompts"], 0)
want("removals", d["identities"][0]["removals"], 0)
want("queue depth", d["identities"][0]["queue_depth"], 0)
EOF
    fail "status --json does not match the traffic: $(cat "$T/status.json")"
ok "status --json: exact counters for t (3 x 1000 up, $t_down down), r (2 x 5000 up, $r_down down), dead (1 connect failure), helper $helper"

out=$("$P11AGENT" status -c "$T/agent.conf") || fail "status: $out"
for want in "agent: pid $AGENT_PID, " \
    "tunnel t: listen tcp:127.0.0.1:" \
    "  0 open, 3 connections, 3 handshakes (0 resumed), 3000 bytes up, $t_down down, failed: none" \
    "  0 open, 2 connections, 2 handshakes (0 resumed), 10000 bytes up, $r_down down, failed: none" \
    "  0 open, 1 connections, 0 handshakes (0 resumed), 0 bytes up, 0 down, failed: connect 1" \
    "identity ec: open; pkcs11:token=$P11TEST_TOKEN;id=%02;type=private" \
    "token helper for $FAULT: running, pid $helper, 0 restarts" \
    "  5 signatures (0 failed), "; do
	grep -qF -- "$want" <<<"$out" || fail "status does not say: $want
$out"
done
grep -Eq "^  last error at [0-9-]+ [0-9:]+ UTC: connect: " <<<"$out" ||
    fail "status has no last error line for dead: $out"
ok "status (text): $(grep -c . <<<"$out") lines, the same counters"

for bad in --bogus "--json --prometheus"; do
	rc=0
	out=$("$P11AGENT" status $bad -c "$T/agent.conf" 2>&1) || rc=$?
	[ "$rc" = 2 ] || fail "status $bad exited $rc: $out"
done
stop_agent || fail "the agent did not exit cleanly"
ok "status --bogus, status --json --prometheus: usage, exit 2"

# ---- a status too big for one answer: an error, never a part as the whole
{
	agent_section
	identity ec 02
	for i in $(seq 1 70); do
		tunnel "t$i" "localhost:$s_port" ec
	done
} >"$T/many.conf"
start_agent "$T/many.conf" || fail "the agent did not start (70 tunnels)"
rc=0
"$P11AGENT" status --prometheus -c "$T/many.conf" >"$T/many.prom" 2>"$T/many.err" || rc=$?
[ "$rc" = 1 ] || fail "a cut status exited $rc"
grep -q "the status does not fit in the 64 KiB of a control answer" "$T/many.err" ||
    fail "a cut status: $(cat "$T/many.err")"
"$P11AGENT" status --json -c "$T/many.conf" >"$T/many.json" ||
    fail "status --json with 70 tunnels: $(tail -n 3 "$T/many.json")"
/usr/bin/python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); assert len(d["tunnels"]) == 70' \
    "$T/many.json" || fail "status --json with 70 tunnels is not whole"
stop_agent || fail "the agent did not exit cleanly (70 tunnels)"
ok "70 tunnels: --prometheus does not fit and says so (exit 1); --json does, 70 tunnels"
