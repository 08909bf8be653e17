#!/bin/bash
# Registry mode (no module = ): every module p11-kit registers is looked
# up in a helper of its own, in parallel, each with its own deadline.  A
# module that hangs (OpenSC waiting on a pcscd that accepts and never
# answers) hides no other token: a SoftHSM identity still opens within
# 10 s, the log names the module that hung, and SIGTERM is honoured.
. "$top_srcdir/tests/lib.sh"
make_token
[ -f /usr/share/p11-kit/modules/softhsm2.module ] ||
    skip "softhsm2 is not registered with p11-kit"
[ -f /usr/share/p11-kit/modules/opensc-pkcs11.module ] ||
    skip "opensc-pkcs11 is not registered with p11-kit"

# a pcscd that accepts and never answers, for OpenSC
mkfifo "$T/silent.fifo"
"$top_builddir/tests/silent-socket" "$T/pcscd.comm" >"$T/silent.fifo" &
PIDS+=($!)
read -r -t 10 line <"$T/silent.fifo" || fail "silent-socket did not start"
export PCSCLITE_CSOCK_NAME=$T/pcscd.comm

start_upstream s
{
	cat <<EOT
[identity reg]
key = pkcs11:token=$P11TEST_TOKEN;id=%02;type=private
pin = file:$TOK/pin

EOT
	tunnel t "localhost:$s_port" reg
} >"$T/agent.conf"

begin=$(date +%s%N)
log_mark
start_agent "$T/agent.conf" || fail "the agent did not start"
ms=$(( ($(date +%s%N) - begin) / 1000000 ))
[ "$ms" -lt 10000 ] || fail "the identity took $ms ms to open"
agent_log_has "token helper for opensc-pkcs11: no answer to the lookup of identity reg within [0-9]+ ms" ||
    fail "the log does not name the module that hung"
agent_log_has "identity reg: token '$P11TEST_TOKEN' .* in softhsm2" ||
    fail "the identity was not found in softhsm2"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000 \
    --expect-subject CN=p11agent-test-ec) || fail "through the tunnel: $out"
ok "opened in $ms ms with opensc-pkcs11 hung; $(grep 'no answer to' "$T/agent.log" | head -n 1)"
# only the helper of the module that holds the token is left, once the
# others (killed when the lookup ended) are reaped
pid=$(sed -n 's/.*token helper for opensc-pkcs11 (pid \([0-9]*\)): no identity needs it; stopping it/\1/p' "$T/agent.log" | head -n 1)
[ -n "$pid" ] || fail "opensc-pkcs11's helper was not stopped"
wait_log "token helper \(pid $pid\), not needed, is gone" ||
    fail "opensc-pkcs11's helper (pid $pid) was not reaped"
# (other modules of the registry, p11-kit-trust where p11-kit-modules is
# installed, may be stopped after it: each of them reaped too)
for pid in $(sed -n 's/.*token helper for .* (pid \([0-9]*\)): no identity needs it; stopping it/\1/p' "$T/agent.log"); do
	wait_log "token helper \(pid $pid\), not needed, is gone" ||
	    fail "the helper $pid, not needed, was not reaped"
done
n=$(pgrep -P "$AGENT_PID" | wc -l)
[ "$n" = 1 ] || fail "$n helpers are left, wanted 1"
grep -q -- "-r softhsm2" "/proc/$(pgrep -P "$AGENT_PID")/cmdline" 2>/dev/null ||
    tr '\0' ' ' <"/proc/$(pgrep -P "$AGENT_PID")/cmdline" | grep -q -- "-r softhsm2" ||
    fail "the helper left is not softhsm2's"
ok "one helper left, for softhsm2"
stop_agent || fail "the agent did not exit cleanly"

# without token= or serial=, a module that did not answer might hold a
# second token the URI means: no PIN anywhere, the error says what to add
sed "s|^key = .*|key = pkcs11:id=%02;type=private|" "$T/agent.conf" >"$T/noname.conf"
rc=0
out=$("$P11AGENT" check -c "$T/noname.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -q "key: pkcs11:id=%02;type=private: token '$P11TEST_TOKEN' .* in softhsm2 matches, but 1 module did not say whether it holds a token this URI means too, and a PIN goes to one card only; add token= or serial= to the URI" <<<"$out" ||
    fail "a URI without token= while a module hangs ($rc): $out"
ok "no token= and a module hung: refused, $(grep -o 'but 1 module.*only' <<<"$out")"

# a key that no registered module holds: the error names the modules
sed -i "s|^key = .*|key = pkcs11:token=no-such-card;type=private|" "$T/agent.conf"
rc=0
out=$("$P11AGENT" check -c "$T/agent.conf" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "check of a missing token exited $rc"
for want in "key: pkcs11:token=no-such-card;type=private: no token in the p11-kit registry matches; module " \
    "; module opensc-pkcs11: no answer in time, it may hang" \
    "; module softhsm2: no token matches; searched softhsm2 (2 tokens: 1 not initialised)" \
    "; run 'p11agent tokens' to see them"; do
	grep -Fq "$want" <<<"$out" || fail "check said: $out
wanted: $want"
done
ok "no token anywhere: $(grep 'no token' <<<"$out")"

# SIGTERM while the hung module is being waited for
log_mark
"$P11AGENT" run -v -c "$T/agent.conf" 2>>"$T/agent.log" &
pid=$!
PIDS+=($pid)
wait_log "registry: .* modules" 10 || fail "the registry lookup did not start"
term_within "$pid" 4000 "SIGTERM during the registry lookup"
ok "SIGTERM during the registry lookup: stopped in $STOP_MS ms"

# SIGTERM after softhsm2 answered but while opensc-pkcs11 is still waited
# for: the agent stops without opening the identity (no login at exit)
sed -i "s|^key = .*|key = pkcs11:token=$P11TEST_TOKEN;id=%02;type=private|" "$T/agent.conf"
log_mark
"$P11AGENT" run -v -c "$T/agent.conf" 2>>"$T/agent.log" &
pid=$!
PIDS+=($pid)
wait_log "token helper for softhsm2: 1 candidates for identity reg" 10 ||
    fail "softhsm2 did not answer the lookup"
term_within "$pid" 4000 "SIGTERM between the modules' answers"
tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | sed -n '/signal 15: stopping/,$p' |
    grep -E "identity reg: token .* in softhsm2|\[tunnel t\]" &&
    fail "after SIGTERM the identity was still opened"
if log_since_has "identity reg: token .* in softhsm2"; then
	ok "opensc-pkcs11's lookup timed out before the signal (a slow machine): nothing to show"
else
	ok "SIGTERM between the modules' answers: stopped in $STOP_MS ms, nothing opened"
fi
