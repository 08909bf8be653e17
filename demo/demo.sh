#!/bin/bash
# p11agent demo: a fresh SoftHSM token with keys generated on it and a
# certificate from a throwaway CA, a local upstream that requires client
# certificates, the agent, and one request through the tunnel.  The
# upstream's reply names the client certificate it verified.
#
# It runs the p11agent of the build tree, or with P11AGENT=PATH (such as
# P11AGENT=/usr/bin/p11agent) an installed one, which must find its token
# helper by itself (P11AGENT_HELPER is unset).  The token and the upstream
# come from the build tree's tests/ in both cases.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
make -C "$top" -s tests/tls-echo-server tests/tunnel-client >/dev/null
if [ -n "${P11AGENT:-}" ]; then
	unset P11AGENT_HELPER
else
	P11AGENT=$top/p11agent
	export P11AGENT_HELPER=$top/p11agent-helper
fi
echo "== $("$P11AGENT" --version): $P11AGENT"
d=$(mktemp -d /tmp/p11agent-demo.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$d"' EXIT

echo "== a SoftHSM token with an RSA key generated on it"
"$top/tests/mktoken.sh" "$d/tok"
. "$d/tok/env.sh"
"$P11AGENT" tokens -m "$P11TEST_MODULE" --pin "file:$d/tok/pin" |
    grep -A1 -E 'token:|key:' | head -n 6

echo "== an upstream on 127.0.0.1 that requires a client certificate"
mkfifo "$d/port"
"$top/tests/tls-echo-server" --cert "$d/tok/server.pem" \
    --key "$d/tok/server.key" --ca "$d/tok/ca.pem" --require-cert \
    >"$d/port" 2>"$d/server.log" &
exec 4<"$d/port"
read -r -t 20 -u 4 port
echo "upstream: localhost:$port"

cat >"$d/agent.conf" <<EOT
[agent]
control = $d/run/control

[identity demo]
key = pkcs11:token=p11agent-test;object=rsa-key;type=private
pin = file:$d/tok/pin
module = $P11TEST_MODULE

[tunnel demo]
listen = unix:$d/run/demo.sock
connect = localhost:$port
identity = demo
ca = $d/tok/ca.pem
EOT
echo "== the agent"
cat "$d/agent.conf"
mkfifo "$d/ready"
"$P11AGENT" run -c "$d/agent.conf" --ready-fd 3 3>"$d/ready" &
exec 5<"$d/ready"
while read -r -t 30 -u 5 line && [ "$line" != ready ]; do :; done

echo "== one request through the tunnel (plaintext in, mutual TLS out)"
"$top/tests/tunnel-client" "unix:$d/run/demo.sock" roundtrip --bytes 4096 \
    --expect-subject CN=p11agent-test-rsa
# the helper the agent started, from its pid in p11agent status
hpid=$("$P11AGENT" status --control "$d/run/control" |
    sed -n 's/^token helper .*, pid \([0-9][0-9]*\),.*/\1/p' | head -n 1)
echo "token helper: $(readlink "/proc/${hpid:-none}/exe")"
echo "== done: the upstream verified the certificate above; the key never left the token"
