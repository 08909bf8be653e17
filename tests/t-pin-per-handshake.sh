#!/bin/bash
# A PIN for every handshake (issue 10, scope 1: the PIN-cache limits;
# online banking's "PIN for each session"): with pin-per-handshake = yes
# the token is logged out after each signature, so 3 connections make 3
# full handshakes and 3 logins (against 1 without it), and the tunnel
# resumes no session.  A policy with pin-per-handshake = yes refuses a
# configuration that lacks it, keeps a PIN or asks for session-cache = yes,
# naming both lines.
. "$top_srcdir/tests/lib.sh"
make_token
start_upstream s --resume
count() { grep -c " $1 " "$P11FAULT_LOG" || true; }

# three connections through tunnel t of CONF: the calls they made
three() {
	local i
	: >"$P11FAULT_LOG"
	start_agent "$1" || fail "$1: the agent did not start"
	log_mark
	for i in 1 2 3; do
		"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 100 >/dev/null ||
		    fail "$1: connection $i"
	done
	stop_agent || fail "$1: the agent did not stop cleanly"
}
{
	agent_section
	identity ec 02 | sed '/^$/d'
	printf 'pin-per-handshake = yes\n\n'
	tunnel t "localhost:$s_port" ec
} >"$T/each.conf"
three "$T/each.conf"
logins=$(count C_Login) signs=$(count C_Sign) logouts=$(count C_Logout)
[ "$signs" = 3 ] || fail "pin-per-handshake: $signs C_Sign for 3 connections (a session resumed?)"
# the open logs in with the file PIN, then each signature logs in anew
[ "$logins" = 4 ] || fail "pin-per-handshake: $logins C_Login for 3 handshakes (and the open)"
[ "$logouts" -ge 3 ] || fail "pin-per-handshake: $logouts C_Logout"
log_since_has "resumed \(no signature\)" && fail "pin-per-handshake: a session was resumed"
ok "pin-per-handshake = yes: 3 connections, 3 C_Sign, 1 + 3 C_Login, $logouts C_Logout"

# another key on the same token logged in (identity rsa, no
# pin-per-handshake): the bank identity's signature still logs in anew
{
	agent_section
	identity ec 02 | sed '/^$/d'
	printf 'pin-per-handshake = yes\n\n'
	identity rsa 01
	tunnel t "localhost:$s_port" ec
	tunnel r "localhost:$s_port" rsa "session-cache = no"
} >"$T/two.conf"
: >"$P11FAULT_LOG"
start_agent "$T/two.conf" || fail "two.conf: the agent did not start"
for tun in r t r t; do
	"$CLIENT" "$(listen_addr $tun tcp)" roundtrip --bytes 100 >/dev/null ||
	    fail "two.conf: a connection through $tun"
done
stop_agent || fail "two.conf: the agent did not stop cleanly"
# the 2nd and 4th C_Sign (tunnel t's) each have a C_Login since the
# C_Sign before them
awk '$0 ~ / C_Sign / { n++; if ((n == 2 || n == 4) && !login) bad = bad " " n; login = 0 }
    $0 ~ / C_Login / { login = 1 }
    END { if (n != 4) { print "C_Sign " n; exit 1 } if (bad != "") { print "no login before C_Sign" bad; exit 1 } }' \
    "$P11FAULT_LOG" >"$T/order.out" || fail "two keys on one token: $(cat "$T/order.out")"
ok "with another key of the token logged in, each pin-per-handshake signature logs in anew"
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec "session-cache = no"
} >"$T/once.conf"
three "$T/once.conf"
[ "$(count C_Sign)" = 3 ] && [ "$(count C_Login)" = 1 ] ||
    fail "without it: $(count C_Sign) C_Sign, $(count C_Login) C_Login"
ok "without it: 3 C_Sign, 1 C_Login (the control)"

# the configuration's own errors
sed 's/^pin-per-handshake = yes$/pin-per-handshake = yes\npin-cache = 60/' "$T/each.conf" >"$T/cache.conf"
rc=0
out=$("$P11AGENT" check -c "$T/cache.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -qF "[identity ec] pin-per-handshake = yes keeps no PIN: leave pin-cache out (or 0)" <<<"$out" ||
    fail "pin-cache with pin-per-handshake: exit $rc: $out"
printf 'session-cache = yes\n' >>"$T/each.conf"
rc=0
out=$("$P11AGENT" check -c "$T/each.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -qF "[tunnel t]: session-cache = yes, but identity ec has pin-per-handshake = yes" <<<"$out" ||
    fail "session-cache = yes with pin-per-handshake: exit $rc: $out"
ok "pin-cache or session-cache = yes with pin-per-handshake: refused"

# a policy that requires it
P=$T/policies.d
mkdir "$P"
printf '[policy bank]\ntoken-label = %s\npin-per-handshake = yes\n' "$P11TEST_TOKEN" >"$P/bank.policy"
rc=0
out=$("$P11AGENT" check -c "$T/once.conf" --policies "$P" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -qF "$T/once.conf:4: [identity ec] no pin-per-handshake = yes is not what is required by policy bank ($P/bank.policy:3: pin-per-handshake = yes)" <<<"$out" ||
    fail "a policy requiring pin-per-handshake: exit $rc: $out"
{
	agent_section
	identity ec 02 | sed '/^$/d'
	printf 'pin-per-handshake = yes\n\n'
	tunnel t "localhost:$s_port" ec
} >"$T/ok.conf"
out=$("$P11AGENT" check -c "$T/ok.conf" --policies "$P" 2>&1) ||
    fail "a configuration with pin-per-handshake under the policy: $out"
ok "a policy requiring pin-per-handshake: refuses a configuration without it, takes one with it"
