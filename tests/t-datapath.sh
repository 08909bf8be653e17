#!/bin/bash
# The data path's system calls (issue 7, item 3): 64 MiB through a
# tunnel, down and then both ways, with the agent's calls counted by
# strace.  The upstream's records of 16 KiB come in with read-ahead
# (several records a read, not a 5-byte header and then a body each), the
# client socket is read only when epoll said it is readable, records go
# upstream four to a send(2), and epoll interest is changed only when it
# changes.  Before: 4.1 reads and 1 write a record down, 1.6 reads and
# 1 write a record both ways; now (under strace) about 0.4 and 0.25 down,
# 0.34 and 0.26 both ways.
. "$top_srcdir/tests/lib.sh"
command -v strace >/dev/null || skip "strace is missing"
make_token
B=$((64 * 1024 * 1024))
records=$((B / 16384))
start_upstream s --send "$B" --close notify
start_upstream e	# echoes
{
	agent_section
	identity ec 02
	tunnel t "localhost:$s_port" ec
	tunnel e "localhost:$e_port" ec
} >"$T/a.conf"
start_agent "$T/a.conf" || fail "the agent did not start"
# one connection first: its handshake is not counted
"$CLIENT" "$(listen_addr t tcp)" drain --bytes "$B" >/dev/null ||
    fail "the first download"
"$CLIENT" "$(listen_addr e tcp)" roundtrip --bytes 10 >/dev/null ||
    fail "the first echo"
# traced NAME TUNNEL MODE ARGS...: runs the client MODE through TUNNEL
# while strace counts the agent's calls into $T/NAME.out
traced() {
	local name=$1 tun=$2 st
	shift 2
	# the file exists before tail opens it (the redirection is made by
	# the background job, maybe after tail started)
	: >"$T/$name.err"
	strace -c -e trace=read,write,recvfrom,sendto,epoll_ctl \
	    -o "$T/$name.out" -p "$AGENT_PID" 2>>"$T/$name.err" &
	st=$!
	# strace says "attached" on stderr once it is
	timeout $((10 * SLOW)) tail -n +1 -f "$T/$name.err" |
	    grep -q -m 1 attached ||
	    fail "strace did not attach: $(cat "$T/$name.err")"
	"$CLIENT" "$(listen_addr "$tun" tcp)" "$@" >"$T/$name.client" ||
	    fail "$name: $(cat "$T/$name.client")"
	kill -INT "$st"
	wait "$st" 2>/dev/null
}
# count FILE CALL...: the calls strace counted, summed
count() {
	local f=$1
	shift
	awk -v calls=" $* " '
	index(calls, " " $NF " ") { n += $4 }
	END { print n + 0 }' "$f"
}

# ---- download: the upstream's records come in several a read, and
# one write(2) gives the client what several records held
traced down t drain --bytes "$B"
reads=$(count "$T/down.out" read recvfrom)
writes=$(count "$T/down.out" write sendto)
ctls=$(count "$T/down.out" epoll_ctl)
[ "$reads" -gt 0 ] && [ "$writes" -gt 0 ] ||
    fail "strace counted nothing: $(cat "$T/down.out")"
[ "$reads" -le $((records * 2)) ] ||
    fail "download: $reads reads for $records records (at most 2 a record)"
[ "$writes" -le $((records * 11 / 10)) ] ||
    fail "download: $writes writes for $records records"
[ "$ctls" -le $((records / 4)) ] ||
    fail "download: $ctls epoll_ctl calls for $records records"
ok "64 MiB down, $records records: $reads reads, $writes writes, $ctls epoll_ctl"

# ---- both ways (the upstream echoes): the client is read 64 KB at a
# time and its four records go upstream with one send(2); the client is
# not read while they wait (no spinning on a readable client)
traced both e roundtrip --bytes "$B"
reads=$(count "$T/both.out" read recvfrom)
writes=$(count "$T/both.out" write sendto)

# strace -c: "% seconds usecs/call calls [errors] syscall"
errs=$(awk '$NF == "sendto" && NF == 6 { print $5 }' "$T/both.out")
[ "$writes" -le $((records * 2 * 6 / 10)) ] ||
    fail "both ways: $writes writes for $((records * 2)) records (at most 0.6 a record)"
[ "$reads" -le $((records * 2 * 8 / 10)) ] ||
    fail "both ways: $reads reads for $((records * 2)) records (at most 0.8 a record)"
[ "${errs:-0}" -le $((records / 8)) ] ||
    fail "both ways: $errs sends found the socket full (the client was read meanwhile)"
ok "64 MiB each way, $((records * 2)) records: $reads reads, $writes writes (${errs:-0} EAGAIN)"
stop_agent || fail "the agent did not exit cleanly"
