#!/bin/bash
# PIN sources: pin = fd:N (read once by the agent, handed to the helper
# like env:), pin = systemd-ask-password (run by the helper), and a PIN
# pad (pin = none on a token with CKF_PROTECTED_AUTHENTICATION_PATH: a
# C_Login with a NULL PIN).
. "$top_srcdir/tests/lib.sh"
make_token

# conf SOURCE: $T/agent.conf with identity ec whose pin = SOURCE
conf() {
	{
		agent_section
		identity ec 02 | sed "s|^pin = .*|pin = $1|"
		tunnel t "localhost:$s_port" ec
	} >"$T/agent.conf"
}
logins() {
	grep -c ' C_Login ' "$T/calls.log"
}
start_upstream s

# ---- PIN pad
conf none
: >"$T/calls.log"
out=$(P11FAULT_PINPAD_PIN=$P11TEST_PIN "$P11AGENT" check -c "$T/agent.conf" \
    2>&1) || fail "check with a PIN pad: $out"
[ "$(logins)" = 1 ] || fail "C_Login calls: $(logins), wanted 1"
grep ' C_Login 0x0 ' "$T/calls.log" | grep -q 'pin=NULL' ||
    fail "the C_Login was not with a NULL PIN: $(grep C_Login "$T/calls.log")"
grep -q -- "$P11TEST_PIN" "$T/calls.log" && fail "the PIN is in the call log"
ok "PIN pad: pin = none logs in once with a NULL PIN, the reader gives the PIN"

# ---- pin = fd:N
conf fd:3
: >"$T/calls.log"
out=$("$P11AGENT" check -c "$T/agent.conf" 3<"$TOK/pin" 2>&1) ||
    fail "check with pin = fd:3: $out"
grep -q "identity ec: ok" <<<"$out" || fail "check did not sign: $out"
[ "$(logins)" = 1 ] || fail "C_Login calls: $(logins), wanted 1"
ok "pin = fd:3: check reads the PIN from the inherited descriptor"

# two identities on one descriptor share the value; the agent closes it
# and its helper never has it
{
	agent_section
	identity ec 02 | sed 's|^pin = .*|pin = fd:5|'
	identity rsa 01 | sed 's|^pin = .*|pin = fd:5|'
	tunnel t "localhost:$s_port" ec
	tunnel r "localhost:$s_port" rsa
} >"$T/fd.conf"
: >"$T/calls.log"
start_agent "$T/fd.conf" 5<"$TOK/pin" || fail "the agent did not start with pin = fd:5"
helper=$(pgrep -P "$AGENT_PID") || fail "no helper"
# (the agent reuses number 5 for its own sockets: look at what is open)
for f in /proc/"$AGENT_PID"/fd/* /proc/"$helper"/fd/*; do
	[ "$(readlink "$f")" = "$TOK/pin" ] && fail "the PIN file is still open: $f"
done
tr '\0' '\n' <"/proc/$AGENT_PID/environ" | grep -q P11AGENT_PIN_FD &&
    fail "the PIN variable is in the agent's environment"
tr '\0' '\n' <"/proc/$helper/environ" | grep -qx "P11AGENT_PIN_FD_5=$P11TEST_PIN" ||
    fail "the helper did not get the PIN from descriptor 5"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-ec) || fail "through tunnel t: $out"
out=$("$CLIENT" "$(listen_addr r tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-rsa) || fail "through tunnel r: $out"
stop_agent || fail "the agent did not exit cleanly"
# both keys are on one token: it is logged in once for both
[ "$(logins)" = 1 ] || fail "C_Login calls: $(logins), wanted 1"
ok "pin = fd:5: run reads it once for two identities, closes it, the helper signs"

# a descriptor that is not open: a clear error, exit 1, no C_Login
conf fd:7
: >"$T/calls.log"
rc=0
out=$("$P11AGENT" check -c "$T/agent.conf" 7<&- 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "check with fd 7 closed: exit $rc: $out"
grep -q "identity ec: pin = fd:7: cannot read file descriptor 7" <<<"$out" ||
    fail "no clear error: $out"
[ "$(logins)" = 0 ] || fail "C_Login with no PIN"
# an empty one
out=$("$P11AGENT" check -c "$T/agent.conf" 7</dev/null 2>&1) &&
    fail "check with an empty fd 7 passed"
grep -q "file descriptor 7 gave no PIN" <<<"$out" || fail "no clear error: $out"
ok "pin = fd:N: a closed or empty descriptor is a clear error, no C_Login"

# tokens --pin fd:N
: >"$T/calls.log"
out=$("$P11AGENT" tokens -m "$FAULT" --pin fd:4 4<"$TOK/pin" 2>&1) ||
    fail "tokens --pin fd:4: $out"
grep -q "key:" <<<"$out" || fail "tokens --pin fd:4 listed no keys: $out"
[ "$(logins)" = 1 ] || fail "C_Login calls: $(logins), wanted 1"
ok "tokens --pin fd:4 logs in with the PIN from the descriptor"

# ---- pin = systemd-ask-password (a stand-in on PATH)
mkdir -p "$T/bin" "$T/bin-no"
cat >"$T/bin/systemd-ask-password" <<EOT
#!/bin/sh
printf '%s\n' "\$@" >"$T/ask.args"
ls -l /proc/\$\$/fd/ >"$T/ask.fds" 2>&1
[ -e /proc/\$\$/fd/3 ] && echo "fd 3 open" >>"$T/ask.fds"
env >"$T/ask.env"
cat "$TOK/pin"
EOT
cat >"$T/bin-no/systemd-ask-password" <<'EOT'
#!/bin/sh
exit 1
EOT
chmod +x "$T/bin/systemd-ask-password" "$T/bin-no/systemd-ask-password"
conf systemd-ask-password
: >"$T/calls.log"
out=$(PATH=$T/bin:$PATH "$P11AGENT" check -c "$T/agent.conf" 2>&1) ||
    fail "check with systemd-ask-password: $out"
grep -q "identity ec: ok" <<<"$out" || fail "check did not sign: $out"
[ "$(logins)" = 1 ] || fail "C_Login calls: $(logins), wanted 1"
grep -qx "PIN for token '$P11TEST_TOKEN' (serial .*):" "$T/ask.args" ||
    fail "the prompt does not name the token: $(cat "$T/ask.args")"
grep -qx -- "--timeout=[1-9][0-9]*" "$T/ask.args" ||
    fail "no --timeout: $(cat "$T/ask.args")"
grep -q "fd 3 open" "$T/ask.fds" && fail "the program got descriptor 3: $(cat "$T/ask.fds")"
grep -q ' 0 -> /dev/null' "$T/ask.fds" || fail "stdin is not /dev/null: $(cat "$T/ask.fds")"
grep -q '^P11FAULT' "$T/ask.env" && fail "the program got the helper's environment"
ok "pin = systemd-ask-password: the helper asks with the token's label, reads the PIN, logs in once"

: >"$T/calls.log"
out=$(PATH=$T/bin-no:$PATH "$P11AGENT" check -c "$T/agent.conf" 2>&1) &&
    fail "check passed with a cancelled systemd-ask-password"
grep -q "systemd-ask-password gave no PIN (cancelled or timed out)" <<<"$out" ||
    fail "no clear error: $out"
[ "$(logins)" = 0 ] || fail "C_Login without a PIN"
out=$(PATH=$T/empty "$P11AGENT" check -c "$T/agent.conf" 2>&1) &&
    fail "check passed without systemd-ask-password"
grep -q "not on PATH; install systemd or choose another pin source" <<<"$out" ||
    fail "no clear error for a missing program: $out"
[ "$(logins)" = 0 ] || fail "C_Login without a PIN"
ok "systemd-ask-password cancelled or missing: a clear error, no C_Login"
