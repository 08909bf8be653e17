#!/bin/bash
# The data path's system calls (issue 7, item 3): a 64 MiB download
# through a tunnel, with the agent's read/write/epoll calls counted by
# strace.  The upstream's 4096 records of 16 KiB come in with read-ahead
# (several records a read(2), not a 5-byte header and then a body each),
# the client socket is read only when epoll said it is readable, and epoll
# interest is changed only when it changes.  Before: 4.1 reads and 1 write
# per record; now (under strace) about 0.4 and 0.25.
. "$top_srcdir/tests/lib.sh"
command -v strace >/dev/null || skip "strace is missing"
make_token
B=$((64 * 1024 * 1024))
records=$((B / 16384))
start_upstream s --send "$B" --close notify
{ agent_section; identity ec 02; tunnel t "localhost:$s_port" ec; } >"$T/a.conf"
start_agent "$T/a.conf" || fail "the agent did not start"
# one connection first: its handshake is not counted
"$CLIENT" "$(listen_addr t tcp)" drain --bytes "$B" >/dev/null ||
    fail "the first download"
strace -c -e trace=read,write,epoll_ctl -o "$T/strace.out" -p "$AGENT_PID" \
    2>"$T/strace.err" &
st=$!
# strace says "attached" on stderr once it is
timeout $((10 * SLOW)) tail -n +1 -f "$T/strace.err" | grep -q -m 1 attached ||
    fail "strace did not attach: $(cat "$T/strace.err")"
"$CLIENT" "$(listen_addr t tcp)" drain --bytes "$B" >"$T/d.out" ||
    fail "the download: $(cat "$T/d.out")"
kill -INT "$st"
wait "$st" 2>/dev/null
count() {
	awk -v c="$1" '$NF == c { print ($4 ~ /^[0-9]+$/ ? $4 : $5) }' "$T/strace.out"
}
reads=$(count read) writes=$(count write) ctls=$(count epoll_ctl)
: "${reads:=0}" "${writes:=0}" "${ctls:=0}"
[ "$reads" -gt 0 ] && [ "$writes" -gt 0 ] || fail "strace counted nothing: $(cat "$T/strace.out")"
[ "$reads" -le $((records * 2)) ] ||
    fail "$reads read(2) calls for $records records (at most 2 a record)"
[ "$writes" -le $((records * 11 / 10)) ] ||
    fail "$writes write(2) calls for $records records"
[ "$ctls" -le $((records / 4)) ] ||
    fail "$ctls epoll_ctl calls for $records records"
ok "64 MiB down, $records records: $reads reads, $writes writes, $ctls epoll_ctl"
stop_agent || fail "the agent did not exit cleanly"
