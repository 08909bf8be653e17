#!/bin/bash
# Policies and a card put back (issue 10, scope 1): with on-reinsert =
# any, another card in the reader is taken only if the same policies bind
# the identity with it; a card that a policy binds (and the first did
# not) is not used, the log names the policy, and its tunnel serves
# nothing until p11agent is restarted.
. "$top_srcdir/tests/lib.sh"
make_token
export P11FAULT_TOKEN_ABSENT_FILE=$T/absent
"$top_srcdir/tests/mktoken.sh" "$T/tok2" >/dev/null || fail "a second token"
cat "$TOK/ca.pem" "$T/tok2/ca.pem" >"$T/both-ca.pem"
start_server s2 --cert "$TOK/server.pem" --key "$TOK/server.key" \
    --ca "$T/both-ca.pem" --require-cert
P=$T/policies.d
mkdir "$P"
fp2=$(openssl x509 -in "$T/tok2/client-ec.pem" -noout -fingerprint -sha256 | sed 's/.*=//')
cat >"$P/bank.policy" <<EOT
[policy bank]
cert-sha256 = $fp2
connect = localhost:1
EOT
{
	agent_section
	identity ec 02 | sed '/^$/d'
	printf 'on-reinsert = any\n\n'
	tunnel t "localhost:$s2_port" ec
} >"$T/swap.conf"
AGENT_ARGS=(--policies "$P")
start_agent "$T/swap.conf" || fail "the agent did not start"
"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 100 --timeout 10 >/dev/null ||
    fail "the first card (no policy binds it) was not served"
# the first card out, the bank card in
log_mark
: >"$T/absent"
wait_log "identity ec: token .* was removed" 10 || fail "no removal seen"
mv "$TOK/tokens" "$TOK/tokens.first"
mv "$T/tok2/tokens" "$TOK/tokens"
rm -f "$T/absent"
wait_log "identity ec: the card put in \(token '[^']*' serial [0-9a-f]+\) is not used: policy bank \($P/bank.policy:1\) binds it, and did not bind the card the policies were applied to; restart p11agent to apply the policies to it" 30 ||
    fail "the bank card was not refused: $(tail -n 8 "$T/agent.log")"
log_since_has "identity ec: token .* is back" && fail "the bank card was taken"
out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 100 --timeout 10 2>&1) &&
    fail "the bank card served outside its policy: $out"
ok "another card that a policy binds is not used: $(grep -m1 'is not used' "$T/agent.log" | sed 's/^ *//')"
stop_agent
# the control: with the bank card in from the start, check refuses
rc=0
out=$("$P11AGENT" check -c "$T/swap.conf" --policies "$P" 2>&1) || rc=$?
[ "$rc" = 1 ] && grep -qF "[tunnel t] connect = localhost:$s2_port is outside policy bank" <<<"$out" ||
    fail "check with the bank card: exit $rc: $out"
ok "with the bank card in at start, check refuses the configuration"
mv "$TOK/tokens" "$T/tok2/tokens"
mv "$TOK/tokens.first" "$TOK/tokens"
