#!/bin/bash
# Logging to the journal and to syslog (issue 9, scope 3), with a journald
# and a syslogd of the test's own (tests/log-sinks, in a private mount
# namespace: their sockets are at the fixed paths /run/systemd/journal/
# socket and /dev/log):
# - $JOURNAL_STREAM naming stderr: entries through the journal's native
#   socket (a build with libsystemd) with PRIORITY, CODE_FUNC,
#   SYSLOG_IDENTIFIER and a connection's P11AGENT_* fields, exact (and its
#   signature's, the audit trail); nothing
#   of the agent's on stderr (a build without libsystemd: "<N>" lines on
#   stderr instead);
# - log = journal without $JOURNAL_STREAM: the same;
# - stderr /dev/null, no $JOURNAL_STREAM: syslog (facility daemon, its
#   priorities), the end line of a connection among them;
# - what the token helper writes to stderr reaches syslog as well;
# - log = syslog with stderr a file: syslog, and stderr stays empty;
#   --log stderr wins over it.
. "$top_srcdir/tests/lib.sh"
[ "$(id -u)" = 0 ] || skip "needs root for a private mount namespace"
command -v unshare >/dev/null || skip "unshare (util-linux) is missing"
[ -x /usr/bin/python3 ] || skip "/usr/bin/python3 is missing"
unshare -m --propagation private true 2>/dev/null ||
    skip "unshare -m does not work here"
make_token
me=$(id -u)
exe=$(realpath "$CLIENT")
native=
grep -q '^#define HAVE_LIBSYSTEMD 1' "$top_builddir/config.h" && native=1

start_upstream s
start_server plain --plain
conf() {
	{
		printf '[agent]\nmodule-allow = %s/*\n' "$LIBS_REAL"
		printf '%s\n' "$@"
		echo
		identity ec 02
		tunnel t "localhost:$s_port" ec
		tunnel p "localhost:$plain_port" ec
	} >"$T/agent.conf"
}
AGENT_WRAP=(unshare -m --propagation private "$top_srcdir/tests/log-sinks" "$T")
# run NAME: the agent in the sinks' namespace, one connection through t
# (1000 bytes each way) and one failing through p; stopped; what
# reached the sinks is in $T/NAME.*
run() {
	local name=$1
	rm -f "$T/journal.jsonl" "$T/syslog.txt"
	: >"$T/agent.log"	# in place: JOURNAL_STREAM names its inode
	start_agent "$T/agent.conf" || fail "$name: the agent did not start"
	PIDS+=("$(cat "$T/sinks.pid")")
	out=$("$CLIENT" "$(listen_addr t tcp)" roundtrip --bytes 1000) ||
	    fail "$name: t: $out"
	first=$(head -n 1 <<<"$out")
	"$CLIENT" "$(listen_addr p tcp)" expect-close --timeout 10 >/dev/null ||
	    fail "$name: p"
	stop_agent || fail "$name: stop"
	kill "$(cat "$T/sinks.pid")"
	touch "$T/journal.jsonl" "$T/syslog.txt"
	mv "$T/journal.jsonl" "$T/$name.jsonl"
	mv "$T/syslog.txt" "$T/$name.txt"
	cp "$T/agent.log" "$T/$name.log"
}
# journal_ok NAME: the end line of t's connection came with its fields
journal_ok() {
	/usr/bin/python3 - "$T/$1.jsonl" "$me" "$exe" "$s_port" \
	    $((1000 + ${#first} + 1)) <<'EOF' || fail "$1: the journal (above): $(cat "$T/$1.jsonl")"
import json, sys
f, uid, exe, port, down = sys.argv[1:]
es = [json.loads(l) for l in open(f)]
end = [e for e in es if e.get("P11AGENT_TUNNEL") == "t" and
       e["MESSAGE"].startswith("conn ") and e.get("CODE_FUNC") != "connlog_decision"]
if len(end) != 1:
    sys.exit("%d end entries for t" % len(end))
e = end[0]
# the access decision, logged when it was made, with its fields
dec = [x for x in es if x.get("CODE_FUNC") == "connlog_decision" and
       x.get("P11AGENT_TUNNEL") == "t"]
if len(dec) != 1 or dec[0].get("P11AGENT_DECISION") != "allowed" or \
        dec[0].get("P11AGENT_RULE") != "own uid" or \
        dec[0].get("P11AGENT_CONN") != e.get("P11AGENT_CONN") or \
        dec[0].get("P11AGENT_PEER_EXE") != exe or dec[0].get("PRIORITY") != "6":
    sys.exit("the decision entry for t: %r" % dec)
want = {
    "PRIORITY": "6", "CODE_FUNC": "connlog_end",
    "SYSLOG_IDENTIFIER": "p11agent", "P11AGENT_TUNNEL": "t",
    "P11AGENT_IDENTITY": "ec", "P11AGENT_PEER_UID": uid,
    "P11AGENT_PEER_EXE": exe, "P11AGENT_ACCESS": "own uid",
    "P11AGENT_UPSTREAM": "localhost:" + port, "P11AGENT_TLS": "TLSv1.3",
    "P11AGENT_HANDSHAKE": "full", "P11AGENT_BYTES_UP": "1000",
    "P11AGENT_BYTES_DOWN": down, "P11AGENT_OUTCOME": "closed by the client",
}
for k, v in want.items():
    if e.get(k) != v:
        sys.exit("%s: %r, wanted %r in %r" % (k, e.get(k), v, e))
for k in ("P11AGENT_CONN", "P11AGENT_PEER_PID", "P11AGENT_DURATION_MS"):
    if not e.get(k, "").isdigit():
        sys.exit("%s: %r" % (k, e.get(k)))
if not e["MESSAGE"].startswith("conn %s (t): closed by the client; uid %s "
                                "pid %s %s (own uid); " % (
        e["P11AGENT_CONN"], uid, e["P11AGENT_PEER_PID"], exe)):
    sys.exit("MESSAGE: %r" % e["MESSAGE"])
# the signature of t's handshake: the audit trail's fields
sig = [x for x in es if x.get("CODE_FUNC") == "audit_signature"]
if len(sig) != 1:
    sys.exit("%d signature entries" % len(sig))
want = {
    "PRIORITY": "6", "P11AGENT_SIGNATURE": "1",
    "P11AGENT_CONN": e["P11AGENT_CONN"], "P11AGENT_TUNNEL": "t",
    "P11AGENT_IDENTITY": "ec", "P11AGENT_PEER_UID": uid,
    "P11AGENT_PEER_PID": e["P11AGENT_PEER_PID"], "P11AGENT_PEER_EXE": exe,
    "P11AGENT_UPSTREAM": "localhost:" + port,
    "P11AGENT_MECHANISM": "CKM_ECDSA", "P11AGENT_OUTCOME": "signed",
}
for k, v in want.items():
    if sig[0].get(k) != v:
        sys.exit("signature: %s: %r, wanted %r in %r" % (k, sig[0].get(k), v,
                 sig[0]))
if not sig[0].get("P11AGENT_SIGN_MS", "").isdigit():
    sys.exit("signature: P11AGENT_SIGN_MS: %r" % sig[0])
if not any(x["PRIORITY"] == "4" and "TLS handshake failed" in x["MESSAGE"]
           for x in es):
    sys.exit("no warning (PRIORITY=4) for p")
if not any(x["PRIORITY"] == "7" and x["MESSAGE"].startswith(x["CODE_FUNC"] + ": ")
           for x in es):
    sys.exit("no debug entry (PRIORITY=7) with its function")
if any(k.startswith("_") for x in es for k in x):
    sys.exit("a trusted field (_*) sent")
print("ok: %d entries, e.g. %r" % (len(es), e))
EOF
	grep -E '^(p11agent: |<[0-7]>)' "$T/$1.log" &&
	    fail "$1: the agent wrote to stderr too"
	[ -s "$T/$1.txt" ] && fail "$1: syslog got lines: $(cat "$T/$1.txt")"
	return 0
}
# stderr_journal_ok NAME: a build without libsystemd: "<N>" on stderr
stderr_journal_ok() {
	grep -Eq '^<6>conn [0-9]+ \(t\): closed by the client; ' "$T/$1.log" ||
	    fail "$1: no <6> end line: $(cat "$T/$1.log")"
	[ -s "$T/$1.jsonl" ] && fail "$1: native entries without libsystemd"
	return 0
}
# syslog_ok NAME: the end line and a warning, facility daemon
syslog_ok() {
	grep -Eq "^<30>[A-Z][a-z]{2} [ 0-9]{2} [0-9:]{8} p11agent\[[0-9]+\]: conn [0-9]+ \(t\): closed by the client; uid $me pid [0-9]+ $(sed 's/[.]/[.]/g' <<<"$exe") \(own uid\); upstream localhost:$s_port, TLSv1[.]3 full handshake; 1000 bytes up, $((1000 + ${#first} + 1)) down, [0-9]+ ms$" "$T/$1.txt" ||
	    fail "$1: no end line in syslog: $(cat "$T/$1.txt")"
	grep -Eq "^<28>.* p11agent\[[0-9]+\]: warning: conn [0-9]+: upstream .*TLS handshake failed" "$T/$1.txt" ||
	    fail "$1: no warning in syslog"
	grep -Eq "^<31>.* p11agent\[[0-9]+\]: [a-z_]+: " "$T/$1.txt" ||
	    fail "$1: no debug line (-v) in syslog"
	[ -s "$T/$1.jsonl" ] && fail "$1: journal entries too"
	return 0
}

# ---- the journal's stream
conf
: >"$T/agent.log"
export JOURNAL_STREAM
JOURNAL_STREAM=$(stat -c %d:%i "$T/agent.log")
run stream
if [ -n "$native" ]; then
	journal_ok stream
	ok "JOURNAL_STREAM: native journal entries with fields"
else
	stderr_journal_ok stream
	ok "JOURNAL_STREAM, no libsystemd: <N> lines on stderr"
fi
unset JOURNAL_STREAM

conf "log = journal"
run forced
if [ -n "$native" ]; then
	journal_ok forced
	ok "log = journal: native journal entries with fields"
else
	stderr_journal_ok forced
	ok "log = journal, no libsystemd: <N> lines on stderr"
fi

# ---- syslog: chosen when stderr is /dev/null, or by log = syslog; what
# the token helper (and its module) write to stderr goes there too
cat >"$T/say-helper" <<EOT
#!/bin/sh
echo "a module says: hello on stderr" >&2
exec '$P11AGENT_HELPER' "\$@"
EOT
chmod 755 "$T/say-helper"
export P11AGENT_HELPER=$T/say-helper
helper_ok() {
	grep -Eq "^<28>.* p11agent\[[0-9]+\]: warning: a module says: hello on stderr$" "$T/$1.txt" ||
	    fail "$1: the helper's stderr did not reach syslog: $(cat "$T/$1.txt")"
}
conf
export SINKS_STDERR=null
run auto
unset SINKS_STDERR
syslog_ok auto
helper_ok auto
ok "stderr /dev/null: syslog ($(grep -m 1 '^<30>' "$T/auto.txt"))"
conf "log = syslog"
run forced-syslog
syslog_ok forced-syslog
helper_ok forced-syslog
[ -s "$T/forced-syslog.log" ] &&
    fail "log = syslog: lines on stderr too: $(cat "$T/forced-syslog.log")"
ok "log = syslog: syslog only (the helper's stderr too), stderr empty"
# --log stderr wins over log = syslog (start_agent has no --log: a
# wrapper adds it)
printf '#!/bin/sh\nexec "$@" --log stderr\n' >"$T/add-log"
chmod +x "$T/add-log"
AGENT_WRAP+=("$T/add-log")
run cmdline
grep -Eq '^p11agent: conn [0-9]+ \(t\): closed by the client; ' "$T/cmdline.log" ||
    fail "--log stderr: not on stderr: $(cat "$T/cmdline.log")"
[ -s "$T/cmdline.txt" ] && fail "--log stderr: syslog got lines"
ok "--log stderr wins over log = syslog"
