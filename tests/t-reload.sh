#!/bin/bash
# Reload without dropping traffic (issue 9, scope 5): p11agent reload and
# SIGHUP read the configuration again.
# - while tunnel a carries a 64 MiB transfer, a reload removes tunnel b
#   and adds tunnel c: b's port stops listening, c serves, a's transfer
#   completes byte-exact, and the unchanged identity makes no new C_Login;
# - a changed tunnel keeps its listening socket (same address, no
#   rebind) and its open connection, and counts on in one set of counters;
# - a new identity is opened (on the running helper: still no C_Login);
# - bad reloads (a syntax error, a key that is not there, a port in use,
#   an env: PIN the agent never read) leave the running configuration
#   serving, and say why in reload's answer (exit 1) and in the log;
# - SIGHUP does the same as p11agent reload.
. "$top_srcdir/tests/lib.sh"
make_token
start_upstream s
start_upstream u

logins() {
	grep -c " C_Login " "$T/calls.log"
}
# addr TUNNEL: its first listener, from status --json
addr() {
	"$P11AGENT" status --json -c "$T/agent.conf" |
	    /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
for t in d["tunnels"]:
    if t["name"] == sys.argv[1]:
        print(t["listen"][0]); break
else:
    sys.exit("no tunnel " + sys.argv[1])' "$1"
}
conf() {	# conf TUNNEL-SECTIONS...: the config, written whole
	{
		agent_section
		identity ec 02
		identity rsa 01
		cat
	} >"$T/agent.conf.new"
	mv "$T/agent.conf.new" "$T/agent.conf"
}
reload() {
	"$P11AGENT" reload -c "$T/agent.conf" >"$T/reload.out" 2>&1
}

{
	tunnel a "localhost:$s_port" ec
	tunnel b "localhost:$u_port" ec
} | conf
start_agent "$T/agent.conf" || fail "the agent did not start"
a=$(listen_addr a tcp) b=$(listen_addr b tcp)
"$CLIENT" "$b" roundtrip --bytes 1000 >/dev/null || fail "b before the reload"
[ "$(logins)" = 1 ] || fail "C_Login calls at start: $(logins)"

# ---- a 64 MiB transfer through a, paused half-way while the reload runs
start_xfer "$a" 64M 32M

{
	tunnel a "localhost:$s_port" ec
	tunnel c "localhost:$u_port" ec
} | conf
log_mark
reload || fail "reload: $(cat "$T/reload.out")"
grep -q "^reloaded $T/agent.conf: tunnels: 1 new, 0 changed, 1 unchanged, 1 removed; identities: 0 opened, 0 retired" \
    "$T/reload.out" || fail "reload said: $(cat "$T/reload.out")"
log_since_has "tunnel b: removed by the reload" || fail "no log line for b"
refused "$b" || fail "b's port $b still accepts"
c=$(addr c) || fail "no tunnel c in status"
"$CLIENT" "$c" roundtrip --bytes 100K >/dev/null || fail "c after the reload"
[ "$(addr a)" = "$a" ] || fail "a moved: $(addr a), was $a"
"$CLIENT" "$a" roundtrip --bytes 100K >/dev/null || fail "a after the reload"
echo go >&$GO
wait "$XFER" || fail "the 64 MiB transfer: $(cat <&$XOUT)"
out=$(cat <&$XOUT)
grep -q "^ok bytes=67108864 " <<<"$out" || fail "the transfer: $out"
[ "$(logins)" = 1 ] || fail "C_Login calls after the reload: $(logins)"
ok "reload removed b, added c, while a carried 64 MiB byte-exact; still 1 C_Login"

# ---- a changed tunnel: the same listening socket, its open connection
# finishes on the old settings, the counters go on
start_xfer "$a" 4M 1M
before=$("$P11AGENT" status --json -c "$T/agent.conf" | /usr/bin/python3 -c '
import json, sys
print([t["connections"] for t in json.load(sys.stdin)["tunnels"] if t["name"] == "a"][0])')
{
	tunnel a "localhost:$s_port" rsa "idle-timeout = 300"
	tunnel c "localhost:$u_port" ec
} | conf
reload || fail "reload 2: $(cat "$T/reload.out")"
grep -q "tunnels: 0 new, 1 changed, 1 unchanged, 0 removed; identities: 1 opened, 0 retired" \
    "$T/reload.out" || fail "reload 2 said: $(cat "$T/reload.out")"
[ "$(addr a)" = "$a" ] || fail "a changed moved: $(addr a), was $a"
"$CLIENT" "$a" roundtrip --bytes 1000 --expect-subject "rsa" >/dev/null ||
    fail "a with the rsa identity"
echo go >&$GO
wait "$XFER" || fail "the open transfer on the changed tunnel: $(cat <&$XOUT)"
grep -q "^ok bytes=4194304 " <<<"$(cat <&$XOUT)" || fail "the second transfer"
"$P11AGENT" status --json -c "$T/agent.conf" | /usr/bin/python3 -c '
import json, sys
a = [t for t in json.load(sys.stdin)["tunnels"] if t["name"] == "a"][0]
want = int(sys.argv[1]) + 1
if a["connections"] != want or a["connections_open"] != 0 or a["identity"] != "rsa":
    sys.exit("a: %r, wanted %d connections" % (a, want))' "$before" ||
    fail "a's counters after the change"
[ "$(logins)" = 1 ] || fail "C_Login calls after reload 2: $(logins)"
ok "a changed (identity rsa): same socket $a, its open 4 MiB transfer finished, counters went on"

# ---- bad reloads: each leaves the running configuration serving
serving() {
	"$CLIENT" "$a" roundtrip --bytes 10K >/dev/null || fail "$1: a stopped"
	"$CLIENT" "$c" roundtrip --bytes 10K >/dev/null || fail "$1: c stopped"
}
bad() {		# bad WHAT EXPECTED-REGEX: reload must fail saying so
	log_mark
	! reload || fail "$1: the reload succeeded: $(cat "$T/reload.out")"
	grep -Eq -- "$2" "$T/reload.out" || fail "$1: $(cat "$T/reload.out")"
	grep -q "the running configuration stays" "$T/reload.out" ||
	    fail "$1: $(cat "$T/reload.out")"
	log_since_has "reload: .*the running configuration stays" ||
	    fail "$1: not in the log"
	serving "$1"
	ok "bad reload, $1: $(grep -Eo -- "$2" "$T/reload.out" | head -n 1)"
}
good=$(cat "$T/agent.conf")
{
	agent_section
	echo "this is not a setting"
} >"$T/agent.conf"
# p11agent reload reads the file first (for the control socket's path):
# it says what is wrong and asks nothing of the agent
! reload || fail "syntax error: the reload succeeded"
grep -Eq "agent.conf:4: syntax error" "$T/reload.out" &&
    grep -q "nothing was reloaded: the running agent's configuration stays" \
    "$T/reload.out" || fail "syntax error: $(cat "$T/reload.out")"
serving "syntax error, p11agent reload"
# SIGHUP: the agent reads it, logs why, and serves on
log_mark
kill -HUP "$AGENT_PID"
wait_log "reload: .*agent.conf:4: syntax error.*; the running configuration stays" ||
    fail "syntax error, SIGHUP: $(tail -n 3 "$T/agent.log")"
serving "syntax error, SIGHUP"
ok "bad reload, a syntax error: refused by p11agent reload and by the agent on SIGHUP"
{
	tunnel a "localhost:$s_port" rsa "idle-timeout = 300"
	tunnel c "localhost:$u_port" ec
	tunnel d "localhost:$u_port" nokey
	printf '[identity nokey]\nkey = pkcs11:token=%s;id=%%99;type=private\npin = file:%s\nmodule = %s\n' \
	    "$P11TEST_TOKEN" "$TOK/pin" "$FAULT"
} | conf
bad "a key that is not on the token" "\[identity nokey\] key: .*"
{
	tunnel a "localhost:$s_port" rsa "idle-timeout = 300"
	tunnel c "localhost:$u_port" ec
	printf '[tunnel busy]\nlisten = tcp:127.0.0.1:%s\nconnect = localhost:%s\nidentity = ec\nca = %s\n' \
	    "$s_port" "$u_port" "$TOK/ca.pem"
} | conf
bad "a port in use" "\[tunnel busy\] listen: .*"
{
	tunnel a "localhost:$s_port" rsa "idle-timeout = 300"
	tunnel c "localhost:$u_port" envpin
	printf '[identity envpin]\nkey = pkcs11:token=%s;id=%%02;type=private\npin = env:NEVER_READ\nmodule = %s\n' \
	    "$P11TEST_TOKEN" "$FAULT"
} | conf
bad "an env: PIN" "\[identity envpin\] pin: env:NEVER_READ is read only when the agent starts"
{
	agent_section "/opt/other/*"
	identity ec 02
	identity rsa 01
	tunnel a "localhost:$s_port" rsa "idle-timeout = 300"
	tunnel c "localhost:$u_port" ec
} >"$T/agent.conf"
bad "module-allow changed" "\[agent\] module-allow changed: the token helpers check it when they start; restart p11agent to apply it"
{
	printf '[tunnel twin]\nlisten = %s\nconnect = localhost:%s\nidentity = ec\nca = %s\n\n' \
	    "$a" "$u_port" "$TOK/ca.pem"
	tunnel a "localhost:$s_port" rsa "idle-timeout = 300"
	tunnel c "localhost:$u_port" ec
} | conf
# (a's line says tcp:127.0.0.1:0, twin, before it in the file, names the
# port a was given: a keeps its socket, twin cannot have it)
bad "a new tunnel on an unchanged one's port" "\[tunnel twin\] listen: 127.0.0.1:[0-9]+: Address already in use"
[ "$(addr a)" = "$a" ] || fail "a lost its socket to twin"
[ "$(logins)" = 1 ] || fail "C_Login calls after the bad reloads: $(logins)"

# ---- SIGHUP: the same, from the log
printf '%s\n' "$good" >"$T/agent.conf"
tunnel d "localhost:$s_port" ec >>"$T/agent.conf"
log_mark
kill -HUP "$AGENT_PID"
wait_log "reload: .*tunnels: 1 new, 0 changed, 2 unchanged, 0 removed" ||
    fail "SIGHUP: $(tail -n 5 "$T/agent.log")"
"$CLIENT" "$(addr d)" roundtrip --bytes 10K >/dev/null || fail "d after SIGHUP"
ok "SIGHUP reloaded: tunnel d serves"

# ---- an identity no tunnel uses any more retires (after its tunnels'
# last connection); the helper stays for the identity that remains
c=$(addr c)
start_xfer "$c" 1M 100K
tunnel a "localhost:$s_port" rsa "idle-timeout = 300" | conf
log_mark
reload || fail "reload 4: $(cat "$T/reload.out")"
grep -q "tunnels: 0 new, 0 changed, 1 unchanged, 2 removed; identities: 0 opened, 1 retired" \
    "$T/reload.out" || fail "reload 4 said: $(cat "$T/reload.out")"
log_since_has "identity ec: replaced or removed by the reload" || fail "ec not retired"
echo go >&$GO
wait "$XFER" || fail "c's open transfer after its tunnel and identity retired"
wait_log "identity ec: retired, its last tunnel gone" ||
    fail "ec was not freed after c's last connection"
"$CLIENT" "$a" roundtrip --bytes 10K --expect-subject rsa >/dev/null ||
    fail "a after ec retired"
ok "identity ec retired with tunnel c, after c's open transfer finished"

# ---- the helper restarts after all that: the helper numbers the keys in
# the order they are opened, which the reloads changed; they open again
helper=$(pgrep -P "$AGENT_PID" -f p11agent-helper) || fail "no helper"
log_mark
kill -KILL "$helper"
wait_log "token helper for .* is back" || fail "the helper did not come back"
"$CLIENT" "$a" roundtrip --bytes 10K --expect-subject rsa >/dev/null ||
    fail "a after the helper restart"
! log_since_has "cannot open it again" || fail "$(grep "cannot open" "$T/agent.log")"
ok "helper restart after the reloads: rsa opens again, a serves"
[ "$(logins)" = 2 ] || fail "C_Login calls with the restart: $(logins)"

# ---- cert = FILE renewed on disk: its identity opens again, its tunnel
# changes (and the summary counts a new tunnel before a changed one)
cp "$TOK/client-rsa.pem" "$T/rsa.pem"
rsaf() {
	printf '[identity rsaf]\nkey = pkcs11:token=%s;id=%%01;type=private\n' "$P11TEST_TOKEN"
	printf 'cert = %s\npin = file:%s\nmodule = %s\n\n' "$T/rsa.pem" "$TOK/pin" "$FAULT"
}
{
	rsaf
	tunnel e "localhost:$u_port" rsaf
	tunnel a "localhost:$s_port" rsaf
} | conf
reload || fail "reload 5: $(cat "$T/reload.out")"
grep -q "tunnels: 1 new, 1 changed, 0 unchanged, 0 removed; identities: 1 opened, 1 retired" \
    "$T/reload.out" || fail "reload 5 said: $(cat "$T/reload.out")"
cp "$TOK/client-rsa.pem" "$T/rsa.pem.new"
mv "$T/rsa.pem.new" "$T/rsa.pem"
reload || fail "reload 6: $(cat "$T/reload.out")"
grep -q "tunnels: 0 new, 2 changed, 0 unchanged, 0 removed; identities: 1 opened, 1 retired" \
    "$T/reload.out" || fail "the renewed certificate file: $(cat "$T/reload.out")"
"$CLIENT" "$a" roundtrip --bytes 10K --expect-subject rsa >/dev/null ||
    fail "a with the renewed certificate"
ok "a renewed cert = FILE: its identity opened again, both its tunnels changed"

stop_agent || fail "the agent did not stop cleanly"
[ "$(logins)" = 2 ] || fail "C_Login calls in all: $(logins)"
ok "1 C_Login per helper: 2 for 6 reloads, 6 refused ones and a helper restart"
