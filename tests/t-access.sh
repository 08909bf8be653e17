#!/bin/bash
# My card for me alone: only the uid that runs the agent may use its
# tunnels.  A second local user (created here) is refused on a TCP
# listener on 127.0.0.1 and on [::1], on an IPv4-mapped connection to a
# [::] listener, and on a Unix socket: closed at once, logged with its
# uid, program, listener and the rule, counted, and never signed for.
# allow-users naming it, or allow-groups naming a group of its account,
# lets it in; the agent's own uid is always served.
. "$top_srcdir/tests/lib.sh"

[ "$(id -u)" = 0 ] || skip "needs root (creates a user, runs a client as it)"
for c in setpriv useradd userdel groupadd groupdel; do
	command -v "$c" >/dev/null || skip "$c is missing"
done

make_token
user=p11a-t$$
group=p11a-g$$
made_user=
made_group=
# drop_user keeps the exit status for cleanup (lib.sh), which exits
drop_user() {
	local rc=$?
	[ -z "$made_user" ] || userdel "$user" 2>/dev/null
	[ -z "$made_group" ] || groupdel "$group" 2>/dev/null
	return "$rc"
}
trap 'drop_user; cleanup' EXIT
groupadd -r "$group" || skip "cannot create a group"
made_group=1
useradd -M -N -r -s /usr/sbin/nologin -G "$group" "$user" ||
    skip "cannot create a user"
made_user=1
uid=$(id -u "$user") && gid=$(id -g "$user") || fail "no uid for $user"
other=$(id -u nobody) || fail "no user nobody"
me=$(id -u)

# as_user UID GID CMD...: CMD with that uid and gid and no other groups
as_user() {
	local u=$1 g=$2
	shift 2
	setpriv --reuid="$u" --regid="$g" --clear-groups "$@"
}

v6=1
if [ ! -e /proc/net/if_inet6 ] || ! grep -q '^0*1 .* lo$' /proc/net/if_inet6 ||
    [ "$(cat /proc/sys/net/ipv6/conf/lo/disable_ipv6 2>/dev/null)" = 1 ]; then
	v6=
	echo "note: ::1 is not configured on lo here: the IPv6 parts are skipped"
fi
mapped=$v6
[ "$(cat /proc/sys/net/ipv6/bindv6only 2>/dev/null)" = 1 ] && mapped=

start_upstream s
mkdir -m 700 "$T/sock"
# access_conf FILE [LINE...]: tunnel t on 127.0.0.1, [::1] and a Unix
# socket; tunnel m on [::] (IPv4 clients arrive IPv4-mapped); LINEs in
# both
access_conf() {
	local f=$1 l6=() lm=()
	shift
	[ -z "$v6" ] || l6=("listen = tcp:[::1]:0")
	[ -z "$mapped" ] || lm=(1)
	{
		agent_section
		identity ec 02
		tunnel t "localhost:$s_port" ec "${l6[@]}" \
		    "listen = unix:$T/sock/t.sock" "$@"
		[ -z "${lm[*]}" ] ||
		    printf '[tunnel m]\nlisten = tcp:[::]:0\nallow-remote-listen = yes\nconnect = localhost:%s\nidentity = ec\nca = %s\n%s\n' \
		    "$s_port" "$TOK/ca.pem" "$(printf '%s\n' "$@")"
	} >"$f"
}

# open_unix: the Unix socket reachable by the test user.  The agent
# insists on a 0700 directory of its own when it creates the socket (so
# no other user can reach it: the first line of defence); to test the
# second one, the uid check, the test opens the way after start-up.
open_unix() {
	chmod 711 "$T" "$T/sock"
	chmod 666 "$T/sock/t.sock"
}

# close_unix: back to 0700 for the next start
close_unix() {
	chmod 700 "$T" "$T/sock"
}

sign_count() {
	grep -c ' C_Sign ' "$P11FAULT_LOG" || :
}

# served UID GID ADDR: a round trip through the tunnel as UID
served() {
	local out
	out=$(as_user "$1" "$2" "$CLIENT" "$3" roundtrip --bytes 1000 \
	    --expect-subject CN=p11agent-test-ec --timeout 20) ||
	    fail "uid $1 not served on $3: $out"
}

# refused UID GID ADDR LISTENER PROGRAM-RE PID-RE RULE-RE: closed at once,
# the refusal logged, no signature, no upstream lookup
refused() {
	local out before
	before=$(sign_count)
	log_mark
	out=$(as_user "$1" "$2" "$CLIENT" "$3" expect-close --timeout 5) ||
	    fail "uid $1 on $3: not closed at once: $out"
	wait_log "conn [0-9]+ \([tm]\): refused: uid $1 \(program $5, pid $6\) is not allowed on $4 \($7\)$" 5 ||
	    fail "no refusal line for uid $1 on $4"
	log_since_has "resolving|handshake" &&
	    fail "a refused connection went on to the upstream"
	[ "$(sign_count)" = "$before" ] ||
	    fail "C_Sign for a refused connection on $3"
	ok "uid $1 refused on $3: $(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -m1 refused)"
}

client_re=$(realpath "$CLIENT" | sed 's/[.]/[.]/g')
rule0="only uid $me; allow-users/allow-groups widen it"

# ---- the default: only the agent's uid
access_conf "$T/a.conf"
start_agent "$T/a.conf" || fail "the agent did not start"
open_unix
a4=$(listen_addr t tcp:127.0.0.1) || fail "no 127.0.0.1 listener"
au=$(listen_addr t unix) || fail "no Unix listener"
served "$me" "$(id -g)" "$a4"
served "$me" "$(id -g)" "$au"
agent_log_has "conn [0-9]+ \(t\): from 127[.]0[.]0[.]1 port [0-9]+ on $a4, uid $me pid [0-9]+ $client_re$" ||
    fail "no uid, pid and program on the TCP connection's line"
[ "$(sign_count)" -ge 2 ] || fail "the call log shows no C_Sign for served connections"
ok "the agent's own uid ($me) is served on TCP and on the Unix socket"
refused "$uid" "$gid" "$a4" "$a4" "$client_re" "[0-9]+" "$rule0"
refused "$uid" "$gid" "$au" "$au" "$client_re" "[0-9]+" "$rule0"
denied=2
if [ -n "$v6" ]; then
	a6=$(listen_addr t "tcp:[::1]") || fail "no [::1] listener"
	served "$me" "$(id -g)" "$a6"
	refused "$uid" "$gid" "$a6" "tcp:\\[::1\\]:[0-9]+" "$client_re" "[0-9]+" "$rule0"
	denied=$((denied + 1))
fi
if [ -n "$mapped" ]; then
	am=$(listen_addr m "tcp:[::]") || fail "no [::] listener"
	am4=tcp:127.0.0.1:${am##*:}
	served "$me" "$(id -g)" "$am4"
	ok "an IPv4-mapped client of the agent's uid is served (its uid was found)"
	refused "$uid" "$gid" "$am4" "tcp:\\[::\\]:[0-9]+" "$client_re" "[0-9]+" "$rule0"
	denied=$((denied + 1))
fi
log_mark
stop_agent || fail "the agent did not exit cleanly"
close_unix
n=$(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -Eo 'tunnel [tm]: .*failed: .*denied [0-9]+' |
    grep -Eo 'denied [0-9]+$' | awk '{ s += $2 } END { print s + 0 }')
[ "$n" = "$denied" ] || fail "the tunnels counted $n denied, wanted $denied"
ok "the stats count $denied denied connections"

# ---- allow-users names the second user
access_conf "$T/u.conf" "allow-users = $user, 4242"
start_agent "$T/u.conf" || fail "the agent did not start with allow-users"
open_unix
a4=$(listen_addr t tcp:127.0.0.1)
au=$(listen_addr t unix)
served "$uid" "$gid" "$a4"
served "$uid" "$gid" "$au"
[ -z "$v6" ] || served "$uid" "$gid" "$(listen_addr t "tcp:[::1]")"
[ -z "$mapped" ] || { am=$(listen_addr m "tcp:[::]"); served "$uid" "$gid" "tcp:127.0.0.1:${am##*:}"; }
ok "allow-users = $user: it is served on every listener"
served "$me" "$(id -g)" "$a4"
refused "$other" "$other" "$a4" "$a4" "$client_re" "[0-9]+" "only uid $me, allow-users $uid, 4242"
stop_agent || fail "the agent did not exit cleanly"
close_unix

# ---- allow-groups names a group of its account (not its process's:
# setpriv clears the supplementary groups, the account still has it)
access_conf "$T/g.conf" "allow-groups = $group"
start_agent "$T/g.conf" || fail "the agent did not start with allow-groups"
open_unix
served "$uid" "$gid" "$(listen_addr t tcp:127.0.0.1)"
served "$uid" "$gid" "$(listen_addr t unix)"
ok "allow-groups = $group: its member is served"
gg=$(getent group "$group" | cut -d: -f3)
refused "$other" "$other" "$(listen_addr t tcp:127.0.0.1)" "tcp:127[.]0[.]0[.]1:[0-9]+" "$client_re" "[0-9]+" \
    "only uid $me, allow-groups $gg"
stop_agent || fail "the agent did not exit cleanly"
close_unix

# ---- a client that closed before the agent looked is unknown, so
# refused: the kernel reports its socket (time-wait, no inode) with uid 0,
# which must not pass for root.  max-connections = 1 and one open
# connection keep the second client in the listen queue until it closed.
access_conf "$T/q.conf" "max-connections = 1"
start_agent "$T/q.conf" || fail "the agent did not start with max-connections"
a4=$(listen_addr t tcp:127.0.0.1)
port=${a4##*:}
exec {a}<>"/dev/tcp/127.0.0.1/$port" || fail "connect to $port"
read -r -t 20 -u "$a" line || fail "no first line on the first connection"
before=$(sign_count)
log_mark
exec {b}<>"/dev/tcp/127.0.0.1/$port" || fail "connect to $port"
printf 'GET / HTTP/1.0\r\n\r\n' >&"$b"
exec {b}>&-
exec {a}>&-
wait_log "conn [0-9]+ \(t\): refused: uid unknown \(program \?, pid \?\) is not allowed on $a4 \($rule0\)$" 10 ||
    fail "a client that closed first was not refused as unknown"
log_since_has "resolving" && fail "the closed client's connection went upstream"
[ "$(sign_count)" = "$before" ] || fail "C_Sign for the closed client"
ok "a client gone before the lookup is refused: $(tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -m1 refused)"
stop_agent || fail "the agent did not exit cleanly"
close_unix

# ---- an unknown name is a configuration error naming file:line and key
access_conf "$T/bad.conf" "allow-users = no-such-user-$$"
line=$(grep -n "^allow-users" "$T/bad.conf" | head -n1 | cut -d: -f1)
rc=0
"$P11AGENT" check -c "$T/bad.conf" >"$T/check.out" 2>&1 || rc=$?
[ "$rc" != 0 ] && grep -q "bad.conf:$line: \[tunnel t\] allow-users: 'no-such-user-$$' is not a user known" "$T/check.out" ||
    fail "unknown user in allow-users ($rc): $(cat "$T/check.out")"
ok "an unknown user name: $(cat "$T/check.out")"
