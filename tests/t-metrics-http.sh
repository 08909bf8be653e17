#!/bin/bash
# The metrics listener (issue 9, scope 2): [agent] metrics = tcp:... or
# unix:... serves GET /metrics with the text of status --prometheus.
# - a scrape (curl) is 200 with Content-Type text/plain; version=0.0.4,
#   passes promtool check metrics, equals status --prometheus, and its
#   counters move with traffic between two scrapes;
# - HTTP/1.0 and HEAD work; another path is 404, another method 405 (with
#   Allow), garbage 400, HTTP/2.0 505, a request over 8 KiB 431;
# - a client that sends nothing gets 408 and is closed after 3 s, while
#   another client is served meanwhile; 20 clients at once are all served;
#   a 33rd at once gets 503;
# - the address is reported on --ready-fd (port 0 works);
# - unix:/PATH: a socket of mode 0600 in a directory of mode 0700;
# - tcp:0.0.0.0 without allow-remote-listen is refused at start-up, naming
#   the configuration line; with allow-remote-listen = yes it starts.
. "$top_srcdir/tests/lib.sh"
command -v curl >/dev/null || skip "curl is missing"
PROMTOOL=$(command -v promtool || true)
[ -n "$PROMTOOL" ] || skip "promtool is missing (package prometheus; .ci/run installs it)"
make_token
start_upstream s
# conf METRICS-LINE...: the [agent] section with them, identity ec, tunnel t
conf() {
	{
		agent_section
		printf '%s\n' "$@"
		echo
		identity ec 02
		tunnel t "localhost:$s_port" ec
	} >"$T/agent.conf"
}
conf "metrics = tcp:127.0.0.1:0"
start_agent "$T/agent.conf" || fail "the agent did not start"
case $METRICS_ADDR in
tcp:127.0.0.1:[1-9]*) ;;
*) fail "no metrics address on --ready-fd: '${METRICS_ADDR:-}'" ;;
esac
hp=${METRICS_ADDR#tcp:}
URL=http://$hp/metrics
agent_log_has "metrics: serving GET /metrics on $METRICS_ADDR \(every local user may read it\)" ||
    fail "no log line for the metrics listener"

metric() {
	awk -v m="$2" '$1 == m { print $2 }' "$1"
}
scrape() {
	curl -sS -D "$T/$1.hdr" -o "$T/$1.prom" "$URL" || fail "curl $URL"
	head -n 1 "$T/$1.hdr" | grep -q "^HTTP/1.1 200 OK" || fail "scrape: $(cat "$T/$1.hdr")"
	grep -qi "^Content-Type: text/plain; version=0.0.4" "$T/$1.hdr" ||
	    fail "scrape content type: $(cat "$T/$1.hdr")"
	"$PROMTOOL" check metrics <"$T/$1.prom" >"$T/$1.lint" 2>&1 ||
	    fail "promtool check metrics: $(cat "$T/$1.lint")"
}
scrape before
"$P11AGENT" status --prometheus -c "$T/agent.conf" >"$T/status.prom" || fail "status --prometheus"
diff "$T/before.prom" "$T/status.prom" >"$T/diff" || fail "the scrape is not status --prometheus: $(cat "$T/diff")"
for i in 1 2; do
	"$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 4000 >/dev/null ||
	    fail "connection $i"
done
scrape after
mod="module=\"$FAULT\""
for want in "p11agent_connections_total{tunnel=\"t\"} 2" \
    "p11agent_bytes_total{tunnel=\"t\",direction=\"up\"} 8000" \
    "p11agent_token_signatures_total{$mod,result=\"ok\"} 2"; do
	name=${want% *}
	a=$(metric "$T/before.prom" "$name") b=$(metric "$T/after.prom" "$name")
	[ -n "$a" ] && [ -n "$b" ] || fail "no sample $name"
	[ $((b - a)) = "${want##* }" ] || fail "$name moved by $((b - a)), wanted ${want##* }"
done
grep -q '^p11agent_token_logged_in{.*} 1$' "$T/after.prom" || fail "no token logged in sample"
ok "GET /metrics: 200, text/plain; version=0.0.4, promtool clean, = status --prometheus; counters moved by 2 connections, 8000 bytes, 2 signatures"

# code ARGS...: the HTTP status curl got
code() {
	curl -sS -o "$T/body" -D "$T/hdr" -w '%{http_code}' "$@"
}
[ "$(code -0 "$URL")" = 200 ] || fail "HTTP/1.0: $(cat "$T/hdr")"
grep -q '^# TYPE p11agent_connections_total counter' "$T/body" || fail "HTTP/1.0: no body"
[ "$(code "http://$hp/")" = 404 ] || fail "/: $(cat "$T/hdr")"
[ "$(code "http://$hp/metricsx")" = 404 ] || fail "/metricsx: $(cat "$T/hdr")"
[ "$(code -X POST -d x=1 "$URL")" = 405 ] || fail "POST: $(cat "$T/hdr")"
grep -qi '^Allow: GET, HEAD' "$T/hdr" || fail "405 without Allow: $(cat "$T/hdr")"
[ "$(code "$URL?name[]=x")" = 200 ] || fail "a query: $(cat "$T/hdr")"

# raw REQUEST: the status line a raw request gets, and its body's length
# (python: bytes exact; the client's side shut after the request)
raw() {
	/usr/bin/python3 - "$hp" "$1" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
s.shutdown(socket.SHUT_WR)
data = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    data += b
head, _, body = data.partition(b"\r\n\r\n")
print("%s|%d" % (head.split(b"\r\n")[0].decode(), len(body)))
PY
}
got=$(raw 'HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
[ "${got%|*}" = "HTTP/1.1 200 OK" ] && [ "${got#*|}" = 0 ] || fail "HEAD: $got"
for c in '400|hello\r\n\r\n' '400|GET /metrics\r\n\r\n' '400|GET  /metrics HTTP/1.1\r\n\r\n' \
    '400|GET /metrics HTTP/1.1 x\r\n\r\n' '400|GET metrics HTTP/1.1\r\n\r\n' \
    '400|GET /metrics FTP/1.1\r\n\r\n' '400|GET /met\x01rics HTTP/1.1\r\n\r\n' \
    '400|GET /metrics HTTP/1.1\r\nHost: x\x00\r\n\r\n' '400|GET /metrics HTTP/1.1\r\n' \
    '505|GET /metrics HTTP/2.0\r\n\r\n' '405|DELETE /metrics HTTP/1.1\r\n\r\n' \
    '200|GET /metrics HTTP/1.1\nHost: localhost:9\n\n' \
    '400|GET /metrics HTTP/1.1\r\nHost: rebound.example\r\n\r\n' \
    '400|GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n' \
    '200|GET /metrics HTTP/1.1\r\nhost: [::1]:9100\r\n\r\n' \
    '200|GET /metrics HTTP/1.0\r\n\r\n' "431|GET /metrics HTTP/1.1\\r\\nX: $(printf 'a%.0s' $(seq 1 9000))\\r\\n\\r\\n"; do
	want=${c%%|*}
	got=$(raw "${c#*|}") || fail "raw request ${c:0:60}: no answer"
	[ "${got:9:3}" = "$want" ] || fail "raw request '${c:4:60}': '$got', wanted $want"
	[ "${got#*|}" -gt 0 ] || fail "raw request '${c:4:60}': no body"
done
ok "HTTP/1.0 and HEAD 200; / 404; POST and DELETE 405 (Allow: GET, HEAD); garbage 400 (9 kinds); a Host not loopback and HTTP/1.1 without one 400 (DNS rebinding); HTTP/2.0 505; 9000 bytes 431"

# a client that sends nothing is closed after the 3 s deadline; another
# is served meanwhile; 20 at once are all served, sharing the helper's
# STATE requests (C_GetTokenInfo: one per STATE; the presence watch calls
# it only after a failure)
gti() {
	grep -c ' C_GetTokenInfo ' "$T/calls.log"
}
gti0=$(gti)
/usr/bin/python3 - "$hp" "$URL" "$AGENT_PID" >"$T/slow.out" 2>&1 <<'PY' || fail "slow client: $(cat "$T/slow.out")"
import os, signal, socket, subprocess, sys, time
host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
start = time.monotonic()
silent = socket.create_connection((host, port), timeout=20)
r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", sys.argv[2]],
                   capture_output=True, text=True, timeout=10)
served = time.monotonic() - start
if r.stdout != "200":
    sys.exit("another client got %r %r while one waited" % (r.stdout, r.stderr))
many = [socket.create_connection((host, port), timeout=20) for i in range(20)]
# the 20 requests arrive while the agent is stopped, so it finds them all
# at once however busy the machine is (else each may be served alone)
agent = int(sys.argv[3])
os.kill(agent, signal.SIGSTOP)
try:
    for s in many:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
finally:
    os.kill(agent, signal.SIGCONT)
for i, s in enumerate(many):
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    if not data.startswith(b"HTTP/1.1 200 OK\r\n") or b"p11agent_connections_total" not in data:
        sys.exit("client %d of 20: %r" % (i, data[:200]))
data = b""
while True:
    b = silent.recv(4096)
    if not b:
        break
    data += b
closed = time.monotonic() - start
if not data.startswith(b"HTTP/1.1 408 Request Timeout"):
    sys.exit("the silent client got %r" % data[:200])
if not 2.5 < closed < 6:
    sys.exit("the silent client was closed after %.1f s" % closed)
print("served %.2f s; silent closed after %.1f s with 408" % (served, closed))
PY
n=$(( $(gti) - gti0 ))
[ "$n" -ge 1 ] && [ "$n" -le 8 ] || fail "21 scrapes made $n STATE requests (C_GetTokenInfo)"
ok "$(cat "$T/slow.out"); 20 clients at once: 200 each; $n STATE requests for 21 scrapes"
# past 32 clients at once: 503 at once, the others still served
/usr/bin/python3 - "$hp" >"$T/busy.out" 2>&1 <<'PY' || fail "33 clients: $(cat "$T/busy.out")"
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
port = int(port)
held = [socket.create_connection((host, port), timeout=20) for i in range(32)]
start = time.monotonic()
extra = socket.create_connection((host, port), timeout=20)
data = extra.recv(4096)
if not data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") or time.monotonic() - start > 2:
    sys.exit("the 33rd client got %r after %.1f s" % (data[:100], time.monotonic() - start))
held[0].sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
data = b""
while True:
    b = held[0].recv(65536)
    if not b:
        break
    data += b
if not data.startswith(b"HTTP/1.1 200 OK\r\n"):
    sys.exit("a held client got %r" % data[:100])
print("the 33rd: 503 at once; a held one then served")
PY
agent_log_has "metrics: more than 32 clients at once; refused 1 client since the last such line" ||
    fail "no warning for the refused client"
ok "$(cat "$T/busy.out")"
stop_agent || fail "the agent did not exit cleanly"

# a Unix socket: 0600 in a 0700 directory
conf "metrics = unix:$T/mdir/metrics.sock"
start_agent "$T/agent.conf" || fail "the agent did not start (unix)"
[ "$METRICS_ADDR" = "unix:$T/mdir/metrics.sock" ] || fail "unix address: $METRICS_ADDR"
[ "$(stat -c %a "$T/mdir")" = 700 ] || fail "directory mode $(stat -c %a "$T/mdir")"
[ "$(stat -c %a "$T/mdir/metrics.sock")" = 600 ] || fail "socket mode $(stat -c %a "$T/mdir/metrics.sock")"
[ "$(curl -sS -o "$T/u.prom" -w '%{http_code}' --unix-socket "$T/mdir/metrics.sock" http://localhost/metrics)" = 200 ] ||
    fail "scrape over the Unix socket"
"$PROMTOOL" check metrics <"$T/u.prom" >/dev/null 2>&1 || fail "promtool (unix)"
stop_agent || fail "the agent did not exit cleanly (unix)"
[ ! -e "$T/mdir/metrics.sock" ] || fail "the socket is left after exit"
ok "unix:$T/mdir/metrics.sock: 0600 in 0700, scraped, removed at exit"

# beyond loopback: refused at start-up, naming the line
conf "metrics = tcp:0.0.0.0:0"
line=$(grep -n '^metrics = ' "$T/agent.conf" | cut -d: -f1)
log_mark
start_agent "$T/agent.conf" && fail "tcp:0.0.0.0 without allow-remote-listen started"
log_since_has "$T/agent.conf:$line: \[agent\] metrics: 0.0.0.0 is not a loopback address.*allow-remote-listen = yes" ||
    fail "no error naming the line: $(tail -n 3 "$T/agent.log")"
conf "metrics = tcp:0.0.0.0:0" "allow-remote-listen = yes"
start_agent "$T/agent.conf" || fail "allow-remote-listen = yes: did not start"
[ "$(code "http://127.0.0.1:${METRICS_ADDR##*:}/metrics")" = 200 ] || fail "scrape on 0.0.0.0"
stop_agent || fail "the agent did not exit cleanly (remote)"
ok "tcp:0.0.0.0 refused at start-up ($T/agent.conf:$line named); with allow-remote-listen = yes served"
