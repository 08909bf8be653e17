# bench/report.sh: sourced by bench/run once the rounds are done.  Takes
# the median per peer and figure from $RES ("PEER METRIC VALUE" lines),
# prints the table, and with $OUT set writes $OUT/benchmarks.md and its
# plot $OUT/benchmarks-throughput.png.

# the figures: METRIC|label
FIGURES="rate_res|new connections/s, resumption allowed
share_res|  share resumed at the upstream (%)
rate_full|new connections/s, full handshakes
share_full|  share resumed at the upstream (%)
cpu_res|CPU per resumed connection (ms)
cpu_full|CPU per full handshake (ms)
cpu_crowd|CPU per resumed connection, $CROWD_FDS more descriptors in /proc (ms)
dl_mbs|bulk download MB/s
ul_mbs|bulk upload MB/s
cpu_gb|CPU per GiB moved (ms)
rtt_p50|keep-alive round trip p50 (ms)
rtt_p99|keep-alive round trip p99 (ms)
rss_idle|memory per idle tunnel (KB)
signs_res|token signatures per 1,000 short connections
signs_full|  the same, upstream without resumption
burst_all|slow token: all $N_BURST new connections have a byte (ms)
burst_signs|slow token: C_Sign, the open tunnel's and the $N_BURST's
burst_p50|slow token: open tunnel round trip p50 meanwhile (ms)
burst_p99|slow token: open tunnel round trip p99 meanwhile (ms)
base_p50|slow token: open tunnel round trip p50, nothing queued (ms)
base_p99|slow token: open tunnel round trip p99, nothing queued (ms)"

# the issue's targets: METRIC|PEER|OP|RATIO (p11agent's figure OP
# RATIO times PEER's); "slow" is the burst p99 within 2 ms of the base
TARGETS="cpu_res|nginx|<=|0.75
cpu_full|nginx|<=|0.9
dl_mbs|nginx|>=|1.2
ul_mbs|nginx|>=|1.2
dl_mbs|direct|>=|0.85
ul_mbs|direct|>=|0.85
cpu_gb|nginx|<=|0.7
rtt_p99|nginx|<=|1
rss_idle|nginx|<=|0.3"

awk '
{ v[$1 " " $2] = v[$1 " " $2] " " $3 }
END {
	for (k in v) {
		n = split(substr(v[k], 2), a, " ")
		# insertion sort: a handful of rounds
		for (i = 2; i <= n; i++) {
			x = a[i]; j = i - 1
			while (j >= 1 && a[j] + 0 > x + 0) { a[j + 1] = a[j]; j-- }
			a[j + 1] = x
		}
		m = n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
		print k, m
	}
}' "$RES" | sort >"$T/median"

# med PEER METRIC: the median, or "n/a"
med() {
	awk -v k="$1 $2" '$1 " " $2 == k { print $3; f = 1 } END { if (!f) print "n/a" }' \
	    "$T/median"
}

ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "n/a" || b == "n/a" || b + 0 == 0) print "-"
		else printf "%.2f\n", a / b }'
}

# fmt VALUE: a short number
fmt() {
	awk -v a="$1" 'BEGIN {
		if (a == "n/a") print a
		else if (a + 0 >= 100 || a + 0 == int(a + 0)) printf "%.0f\n", a
		else if (a + 0 >= 1) printf "%.2f\n", a
		else printf "%.3f\n", a }'
}

table() {
	local m label p a s n d
	echo "| figure | p11agent | stunnel | nginx | direct | p11agent/stunnel | p11agent/nginx | p11agent/direct |"
	echo "|---|---|---|---|---|---|---|---|"
	while IFS='|' read -r m label; do
		a=$(med p11agent "$m") s=$(med stunnel "$m")
		n=$(med nginx "$m") d=$(med direct "$m")
		label=$(eval "echo \"$label\"")
		echo "| $label | $(fmt "$a") | $(fmt "$s") | $(fmt "$n") | $(fmt "$d") |" \
		    "$(ratio "$a" "$s") | $(ratio "$a" "$n") | $(ratio "$a" "$d") |"
	done <<<"$FIGURES"
}

targets() {
	local m p op r a b x verdict label
	echo "| target | p11agent | the other | ratio | met? |"
	echo "|---|---|---|---|---|"
	while IFS='|' read -r m p op r; do
		a=$(med p11agent "$m") b=$(med "$p" "$m")
		x=$(ratio "$a" "$b")
		verdict=$(awk -v x="$x" -v op="$op" -v r="$r" 'BEGIN {
			if (x == "-") print "n/a"
			else if (op == "<=") print (x + 0 <= r + 0) ? "met" : "missed"
			else print (x + 0 >= r + 0) ? "met" : "missed" }')
		label=$(awk -F'|' -v m="$m" '$1 == m { print $2 }' <<<"$FIGURES")
		echo "| $label: p11agent $op ${r}x $p | $(fmt "$a") | $(fmt "$b") ($p) | $x | $verdict |"
	done <<<"$TARGETS"
	a=$(med p11agent burst_p99) b=$(med p11agent base_p99)
	x=$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%+.3f", a - b }')
	verdict=$(awk -v x="$x" 'BEGIN { print (x + 0 <= 2) ? "met" : "missed" }')
	echo "| slow token: open tunnel p99 meanwhile <= p99 nothing queued + 2 ms |" \
	    "$(fmt "$a") | $(fmt "$b") (nothing queued) | $x ms | $verdict |"
}

machine() {
	local v p
	echo "- nproc: $(nproc); CPU: $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
	echo "- kernel: $(uname -sr)"
	for p in openssl nginx stunnel4 softhsm2 libengine-pkcs11-openssl; do
		v=$(dpkg-query -W -f '${Version}' "$p" 2>/dev/null) || v="not a package here"
		echo "- $p: $v"
	done
	echo "- p11agent: $(git -C "$top_srcdir" describe --always --dirty 2>/dev/null || echo unknown)"
	echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared)"
	echo "- processes and descriptors the bench could see in /proc: at the start $PROC_START, at the end $(proc_count)"
	if [ -n "$PRIVATE" ]; then
		echo "- in a PID namespace of its own (the default): only the bench's processes in /proc"
	else
		echo "- the machine's /proc in view (--shared-proc, or no PID namespace possible)"
	fi
}

COUNTS="$ROUNDS round(s), peers alternated (p11agent, stunnel, nginx, direct)
in each; the median of the rounds. Per peer and round: $N_CONN short
connections with resumption allowed ($N_CROWD more while another process
holds $CROWD_FDS descriptors), $N_FULL to an upstream port without
resumption, $N_RTT keep-alive round trips of 64 bytes, $BULK download and
$BULK upload, $N_IDLE idle connections, and on a fresh process with
${SIGN_DELAY_MS} ms per C_Sign: $BASE_MS ms of round trips (one every ms)
on an open tunnel, then $N_BURST new connections at once on another."

echo
echo "bench/run: $COUNTS"
echo "Took $ELAPSED s."
echo
table
echo
echo "Targets (issue 7):"
targets
[ -n "$OUT" ] || exit 0

# ---- the plot and docs/benchmarks.md
mkdir -p "$OUT"
for p in $PEERS; do
	echo "$p $(med "$p" rate_res) $(med "$p" rate_full) $(med "$p" dl_mbs) $(med "$p" ul_mbs)"
done | sed 's/n\/a/0/g' >"$T/plot.dat"
gnuplot <<EOT || fail "gnuplot"
set terminal pngcairo size 1100,460 font "sans,11"
set output "$OUT/benchmarks-throughput.png"
set multiplot layout 1,2 title "p11agent beside its peers, one SoftHSM RSA-2048 token ($(date -u +%Y-%m-%d))"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set key outside bottom center horizontal
set title "new connections/s"
plot "$T/plot.dat" using 2:xtic(1) title "resumption allowed", \
     "" using 3 title "full handshakes"
set title "bulk MB/s (one connection)"
plot "$T/plot.dat" using 4:xtic(1) title "download", \
     "" using 5 title "upload"
unset multiplot
EOT

# bench/signrate.sh's section (between its markers) is kept as it was
KEEP=$T/keep.md
: >"$KEEP"
if [ -f "$OUT/benchmarks.md" ]; then
	sed -n '/^<!-- signrate:begin -->$/,/^<!-- signrate:end -->$/p' \
	    "$OUT/benchmarks.md" >"$KEEP"
fi
{
	cat <<EOT
# p11agent benchmarks

Written by \`bench/run\` (see \`bench/README.md\`) on $(date -u '+%Y-%m-%d %H:%M UTC'),
in $ELAPSED s. Do not edit by hand: run \`bench/run\` again (it keeps the
last section, "Sign rates per token stack", which \`bench/signrate.sh\`
writes).

$COUNTS

All peers present the same RSA-2048 key made on one SoftHSM token (the
direct ceiling: a software RSA-2048 key with a certificate from the same
CA) to the same upstream, an nginx TLS server (\`ssl_verify_client on\`,
session tickets and cache on, except on the port for full handshakes)
in front of \`bench/loadgen serve\`. The token is reached through the
fault module (tests/p11fault.c) for all three token peers: its call log
counts C_Sign, and it adds the slow token's delay. CPU is utime + stime
from /proc/<pid>/stat over the peer's process tree (p11agent: the agent
and its helper); for direct it is the client's own. Memory is the tree's
VmRSS with $N_IDLE idle connections open, minus before, divided by $N_IDLE.
MB is 10^6 bytes.

## Results

$(table)

The row with $CROWD_FDS more descriptors: another process holds that many
open (\`loadgen hold\`) while the short connections run. p11agent looks
for each TCP client's process by reading the \`/proc/<pid>/fd\` links of
every process of the client's uid (agent/peer.c, up to 16,384 of them),
so its CPU per connection grows with what else runs on the machine; the
run itself is in a PID namespace of its own unless \`--shared-proc\` is
given, so that the other rows do not depend on that.

## Targets

$(targets)

## Machine

$(machine)

## Plot

![connections/s and MB/s per peer](benchmarks-throughput.png)
EOT
	if [ -s "$KEEP" ]; then
		echo
		cat "$KEEP"
	fi
} >"$OUT/benchmarks.md.new"
mv "$OUT/benchmarks.md.new" "$OUT/benchmarks.md"
echo
echo "wrote $OUT/benchmarks.md and $OUT/benchmarks-throughput.png"
