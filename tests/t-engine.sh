#!/bin/bash
# The token layer on its own against a fresh SoftHSM token: RSA PKCS#1
# v1.5, native RSA-PSS, raw RSA, ECDSA P-256 and P-384 signatures (each
# verified with the certificate from the token), errors and listing.
# Also: the helper process runs without core dumps.
. "$top_srcdir/tests/lib.sh"
make_token
"${VALGRIND[@]}" "$top_builddir/tests/engine-tests" || fail "engine tests"

# the helper disables core dumps
{
	agent_section
	identity ec 02
	cat <<EOT
[tunnel t]
listen = tcp:127.0.0.1:0
connect = localhost:1
identity = ec
EOT
} >"$T/agent.conf"
start_agent "$T/agent.conf" || fail "the agent did not start"
helper=$(pgrep -P "$AGENT_PID") || fail "no helper"
grep -Eq '^Max core file size +0 +0 ' "/proc/$helper/limits" ||
    fail "the helper may dump core: $(grep core "/proc/$helper/limits")"
ok "the token helper runs with core dumps disabled"
stop_agent || fail "the agent did not exit cleanly"
