#!/bin/bash
# Administrator policies at connection time (issue 10, scopes 1 and 2): a
# policy allowing one user and one program.  That program is served; a
# copy of it under another path (another program of the same user) is
# refused on the Unix listener; a second local user (created here) is
# refused on TCP IPv4, TCP IPv6 and the Unix socket, and served once the
# policy names it.  Each decision is logged when it is made (uid, pid,
# program, identity, destination, decision, rule) and each refusal names
# the policy rule (file:line) that made it; the end line's access field
# names the rule that let the client in.
. "$top_srcdir/tests/lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root (creates a user, runs a client as it)"
for c in setpriv useradd userdel; do
	command -v "$c" >/dev/null || skip "$c is missing"
done

make_token
user=p11a-pol$$
make_user "$user" || skip "cannot create a user"
uid=$TEST_UID gid=$TEST_GID
me=$(id -u)
mygid=$(id -g)

v6=1
if [ ! -e /proc/net/if_inet6 ] || ! grep -q '^0*1 .* lo$' /proc/net/if_inet6 ||
    [ "$(cat /proc/sys/net/ipv6/conf/lo/disable_ipv6 2>/dev/null)" = 1 ]; then
	v6=
	echo "note: ::1 is not configured on lo here: the IPv6 parts are skipped"
fi

client=$(realpath "$CLIENT")
mkdir "$T/bin"
cp "$client" "$T/bin/other-client"
other_client=$T/bin/other-client

P=$T/policies.d
mkdir "$P"
# policy USERS: binds the test token's identity; allow-users on line 4,
# allow-programs on line 5
policy() {
	cat >"$P/card.policy" <<EOT
# the test card
[policy card]
token-label = $P11TEST_TOKEN
allow-users = $1
allow-programs = $client, /usr/bin/no-such-browser
EOT
}
pol=$P/card.policy

AGENT_ARGS=(--policies "$P")

start_upstream s
mkdir -m 700 "$T/sock"
l6=()
[ -z "$v6" ] || l6=("listen = tcp:[::1]:0")
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec "${l6[@]}" "listen = unix:$T/sock/t.sock"
} >"$T/agent.conf"

# the Unix socket reachable by the test user (the agent makes it 0600 in
# a 0700 directory: the first line of defence; the policy is the second)
open_unix() {
	chmod 711 "$T" "$T/sock"
	chmod 666 "$T/sock/t.sock"
}

sign_count() {
	grep -c ' C_Sign ' "$P11FAULT_LOG" || :
}

# served UID GID PROGRAM ADDR RULE-RE: a round trip as UID with PROGRAM;
# the decision line and the end line name RULE
served() {
	local out
	log_mark
	out=$(setpriv --reuid="$1" --regid="$2" --clear-groups "$3" "$4" roundtrip \
	    --bytes 1000 --expect-subject CN=p11agent-test-ec --timeout 20) ||
	    fail "uid $1 ($3) not served on $4: $out"
	wait_log "conn [0-9]+ \(t\): decision: allowed: uid $1 pid [0-9]+ program $3, identity ec, destination localhost:$s_port; rule: $5$" ||
	    fail "no decision line for uid $1 ($3) on $4"
	wait_log "conn [0-9]+ \(t\): closed by the client; uid $1 pid [0-9]+ $3 \($5\)" ||
	    fail "the end line does not name the rule for uid $1 on $4"
	ok "uid $1 $3 served on $4: $(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -m1 -o 'rule: .*')"
}

# refused UID GID PROGRAM ADDR LISTENER-RE RULE: closed at once, no
# signature; the decision and the refusal name the rule
refused() {
	local out before rule
	rule=$(sed 's/[][().*+?^$|\\]/\\&/g' <<<"$6")
	before=$(sign_count)
	log_mark
	out=$(setpriv --reuid="$1" --regid="$2" --clear-groups "$3" "$4" expect-close \
	    --timeout 5) || fail "uid $1 ($3) on $4: not closed at once: $out"
	wait_log "conn [0-9]+ \(t\): refused: uid $1 \(program $3, pid [0-9]+\) is not allowed on $5 \($rule\)$" 5 ||
	    fail "no refusal line naming the rule for uid $1 ($3) on $4"
	log_since_has "conn [0-9]+ \(t\): decision: refused: uid $1 pid [0-9]+ program $3, identity ec, destination localhost:$s_port; rule: $rule$" ||
	    fail "no decision line for the refusal of uid $1 on $4"
	log_since_has "resolve_start|handshake: conn" &&
	    fail "a refused connection went on to the upstream"
	[ "$(sign_count)" = "$before" ] || fail "C_Sign for a refused connection on $4"
	ok "uid $1 $3 refused on $4: $(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -m1 -o 'refused: .*')"
}

# ---- one user (the agent's) and one program
policy "$me"
start_agent "$T/agent.conf" || fail "the agent did not start"
open_unix
a4=$(listen_addr t tcp:127.0.0.1) || fail "no 127.0.0.1 listener"
au=$(listen_addr t unix) || fail "no Unix listener"
rule_ok="own uid, policy card \($pol:4: allow-users, 5: allow-programs\)"
served "$me" "$mygid" "$client" "$au" "$rule_ok"
served "$me" "$mygid" "$client" "$a4" "$rule_ok"
refused "$me" "$mygid" "$other_client" "$au" "$au" \
    "program $other_client is not in allow-programs of policy card ($pol:5)"
# one process, several connections over TCP (a browser): each allowed
# (the second is found through the agent's cache of recent clients)
log_mark
out=$("$client" "$a4" burst --count 3 --bytes 100 --timeout 20) ||
    fail "three connections from one process: $out"
wait_log_count "decision: allowed: uid $me pid [0-9]+ program $client" 3 10 ||
    fail "not 3 allowed decisions for one process: $(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep decision)"
log_since_has "refused" && fail "a connection of the same process was refused"
ok "three TCP connections from one allowed process: all allowed"
refused "$uid" "$gid" "$client" "$a4" "$a4" \
    "uid $uid is not in allow-users of policy card ($pol:4)"
refused "$uid" "$gid" "$client" "$au" "$au" \
    "uid $uid is not in allow-users of policy card ($pol:4)"
if [ -n "$v6" ]; then
	a6=$(listen_addr t "tcp:[::1]") || fail "no [::1] listener"
	refused "$uid" "$gid" "$client" "$a6" "tcp:\\[::1\\]:[0-9]+" \
	    "uid $uid is not in allow-users of policy card ($pol:4)"
fi
stop_agent || fail "the agent did not exit cleanly"
chmod 700 "$T" "$T/sock"

# ---- the policy names the second user: a policy never lets in anyone
# the user's configuration does not (the card is the user's): still
# refused by the tunnel's own rule; once the tunnel's allow-users names
# the user too, served everywhere; its other program is still refused
policy "$me, $user"
start_agent "$T/agent.conf" || fail "the agent did not start"
open_unix
refused "$uid" "$gid" "$client" "$(listen_addr t unix)" "$(listen_addr t unix)" \
    "only uid $me; allow-users/allow-groups widen it"
stop_agent || fail "the agent did not exit cleanly"
chmod 700 "$T" "$T/sock"
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec "${l6[@]}" "listen = unix:$T/sock/t.sock" \
	    "allow-users = $user"
} >"$T/agent2.conf"
start_agent "$T/agent2.conf" || fail "the agent did not start"
open_unix
a4=$(listen_addr t tcp:127.0.0.1)
au=$(listen_addr t unix)
rule_u="allow-users $uid, policy card \($pol:4: allow-users, 5: allow-programs\)"
served "$uid" "$gid" "$client" "$a4" "$rule_u"
served "$uid" "$gid" "$client" "$au" "$rule_u"
[ -z "$v6" ] || served "$uid" "$gid" "$client" "$(listen_addr t "tcp:[::1]")" "$rule_u"
refused "$uid" "$gid" "$other_client" "$a4" "$a4" \
    "program $other_client is not in allow-programs of policy card ($pol:5)"
stop_agent || fail "the agent did not exit cleanly"
chmod 700 "$T" "$T/sock"

# ---- TCP: the allowed program holds the socket, a child of another
# program connects with it: which one connected is not known, and
# allow-programs refuses (rather than credit the parent)
policy "$me"
sed "s|^allow-programs = .*|allow-programs = /usr/bin/sleep|" "$pol" >"$pol.new" && mv "$pol.new" "$pol"
start_agent "$T/agent.conf" || fail "the agent did not start"
port=$(listen_addr t tcp:127.0.0.1)
port=${port##*:}
log_mark
/usr/bin/python3 - "$port" <<'PY' || fail "the shared-socket client failed"
import os, signal, socket, sys
# this process forks X; X makes the socket and forks Y, then becomes
# /usr/bin/sleep; Y connects with the socket once X's exec closed the
# close-on-exec pipe (no polling) and says through res whether data came
res_r, res_w = os.pipe()
if os.fork() == 0:
    s = socket.socket()
    s.set_inheritable(True)
    r, w = os.pipe()
    if os.fork():
        os.close(r)
        os.execv("/usr/bin/sleep", ["sleep", "60"])
    os.close(w)
    os.read(r, 1)
    s.settimeout(10)
    try:
        s.connect(("127.0.0.1", int(sys.argv[1])))
        s.sendall(b"stolen\n")
        d = s.recv(100)
    except ConnectionError:
        d = b""		# closed with a reset: refused all the same
    os.write(res_w, b"served" if d else b"refused")
    os.kill(os.getppid(), signal.SIGTERM)
    os._exit(0)
os.close(res_w)
got = os.read(res_r, 16)
sys.exit(0 if got == b"refused" else 1)
PY
wait_log "conn [0-9]+ \(t\): refused: uid $me \(program /usr/bin/sleep, pid [0-9]+\) is not allowed on tcp:127.0.0.1:$port \(program unknown: the connection's socket is held by /usr/bin/sleep and another program, so allow-programs of policy card \($pol:5\) cannot tell\)" 5 ||
    fail "a socket shared by two programs was not refused: $(tail -n 5 "$T/agent.log")"
ok "TCP: a socket held by the allowed program and another: refused, program unknown"
stop_agent || fail "the agent did not exit cleanly"

# ---- without policy files: today's rule (own uid), logged as such
rm "$pol"
start_agent "$T/agent.conf" || fail "the agent did not start"
open_unix
served "$me" "$mygid" "$other_client" "$(listen_addr t unix)" "own uid"
refused "$uid" "$gid" "$client" "$(listen_addr t unix)" "$(listen_addr t unix)" \
    "only uid $me; allow-users/allow-groups widen it"
stop_agent || fail "the agent did not exit cleanly"
chmod 700 "$T" "$T/sock"
