#!/bin/bash
# bench/signrate.sh: signatures/s and latency p50/p99 through the token
# helper for each token stack the tests use, RSA and EC: SoftHSM, the
# virtual PIV card (tests/vcard/ on pcscd + OpenSC) and the TPM
# (tpm2-pkcs11 on swtpm).  A benchmark, not a test.
#
#   bench/signrate.sh [--out DIR]      (from a built tree, as root for the
#                                       card's private pcscd)
#
# Each key gets bench/signrate (warm-up signatures, then N timed ones, one
# at a time, as handshakes ask the helper; every signature verified with
# the certificate, not timed).  Prints the table; with --out DIR (docs/ to
# publish) it replaces the "Sign rates per token stack" section of
# DIR/benchmarks.md (between its markers, kept by bench/run), creating
# the file if missing.
set -u
here=$(cd "$(dirname "$0")" && pwd)
export top_srcdir=${top_srcdir:-$(cd "$here/.." && pwd)}
export top_builddir=${top_builddir:-$top_srcdir}
OUT=
while [ $# -gt 0 ]; do
	case $1 in
	--out) OUT=$2; shift 2 ;;
	*) echo "usage: bench/signrate.sh [--out DIR]" >&2; exit 2 ;;
	esac
done
SIGNRATE=$top_builddir/bench/signrate
[ -x "$SIGNRATE" ] || { echo "bench/signrate.sh: build first (make)" >&2; exit 1; }
. "$top_srcdir/tests/lib.sh"
. "$top_srcdir/tests/card.sh"
. "$top_srcdir/tests/tpm.sh"
START=$(date +%s)
ROWS=()

# bench STACK KEYTYPE N MODULE URI PINFILE [CARDLOG]: one row
bench() {
	local stack=$1 kt=$2 n=$3 mod=$4 uri=$5 pin=$6 log=${7:-} before=0 line apdus=-
	[ -z "$log" ] || before=$(grep -c . "$log")
	line=$("$SIGNRATE" -n "$n" -w 5 --module "$mod" --key "$uri" \
	    --pin "file:$pin" --label "$stack") || fail "$stack $kt: $line"
	# APDUs per signature: the card's log over the run (warm-up included,
	# and the helper's start: an upper bound)
	[ -z "$log" ] || apdus=$(awk -v a="$before" -v b="$(grep -c . "$log")" \
	    -v n="$((n + 5))" 'BEGIN { printf "%.1f", (b - a) / n }')
	echo "$line apdus/sig=$apdus"
	ROWS+=("$stack $kt $line apdus/sig=$apdus")
}

# ---- SoftHSM
make_token
bench softhsm RSA-2048 1000 "$SOFTHSM" "pkcs11:token=$P11TEST_TOKEN;id=%01;type=private" "$TOK/pin"
bench softhsm P-256 2000 "$SOFTHSM" "pkcs11:token=$P11TEST_TOKEN;id=%02;type=private" "$TOK/pin"

# ---- the virtual PIV card: RSA-2048 in 9a of card r, P-256 in 9a of card e
make_card r 9a=rsa2048
bench vcard RSA-2048 200 "$OPENSC_PKCS11" \
    "pkcs11:serial=$CARD_SERIAL;id=%01;type=private" "$CARD_PIN_FILE" "$T/card-r.log"
make_card e 9a=p256
bench vcard P-256 400 "$OPENSC_PKCS11" \
    "pkcs11:serial=$CARD_SERIAL;id=%01;type=private" "$CARD_PIN_FILE" "$T/card-e.log"

# ---- the TPM
tpm_start
make_tpm_token
bench tpm RSA-2048 200 "$TPM_MODULE" \
    "pkcs11:token=$TPM_TOKEN_LABEL;id=$TPM_RSA_ID;type=private" "$TPM_PIN"
bench tpm P-256 400 "$TPM_MODULE" \
    "pkcs11:token=$TPM_TOKEN_LABEL;id=$TPM_EC_ID;type=private" "$TPM_PIN"
ELAPSED=$(( $(date +%s) - START ))

# field ROW NAME: the value of NAME=... in a row
field() {
	sed -n "s|.* $2=\([^ ]*\).*|\1|p" <<<"$1"
}
table() {
	local r
	echo "| stack | key | signature | n | sig/s | p50 ms | p99 ms | max ms | APDUs/sig |"
	echo "|---|---|---|---|---|---|---|---|---|"
	for r in "${ROWS[@]}"; do
		set -- $r
		echo "| $1 | $2 | $4 | $(field "$r" n) | $(field "$r" sig/s) | $(field "$r" p50_ms) | $(field "$r" p99_ms) | $(field "$r" max_ms) | $(field "$r" apdus/sig) |"
	done
}
echo
table
[ -n "$OUT" ] || exit 0

# ---- the section of $OUT/benchmarks.md
mkdir -p "$OUT"
f=$OUT/benchmarks.md
{
	echo '<!-- signrate:begin -->'
	cat <<EOT
## Sign rates per token stack

Written by \`bench/signrate.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), in
$ELAPSED s (\`bench/run\` keeps this section; run \`bench/signrate.sh --out
docs\` again to renew it). Signatures one at a time through the token
helper, as TLS handshakes ask for them (\`bench/signrate\`: the helper the
agent starts, the identity opened with its PIN, 5 warm-up signatures,
then n timed; each verified with the token's certificate, not timed).
RSA keys sign RSA-PSS with SHA-256 (TLS 1.3's choice; on the card that is
a raw RSA operation, padded by OpenSC), EC keys ECDSA with SHA-256.

- softhsm: SoftHSM 2 in the helper's process.
- vcard: the virtual PIV card of \`tests/vcard/\` (Python, a stand-in for
  the chip: its speed is not a real card's) behind pcscd, vpcd and
  OpenSC's PIV driver; APDUs/sig counts what the card was sent per
  signature, the helper's start included (an upper bound).
- tpm: tpm2-pkcs11 through tpm2-abrmd to swtpm (a software TPM).

$(table)

Machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1),
$(. /etc/os-release && echo "$PRETTY_NAME"), OpenSC $(dpkg-query -W -f '${Version}' opensc 2>/dev/null || echo '?'),
tpm2-pkcs11 $(dpkg-query -W -f '${Version}' libtpm2-pkcs11-1 2>/dev/null || echo '?'),
SoftHSM $(dpkg-query -W -f '${Version}' softhsm2 2>/dev/null || echo '?').
EOT
	echo '<!-- signrate:end -->'
} >"$T/section.md"
if [ -f "$f" ] && grep -q '^<!-- signrate:begin -->$' "$f"; then
	awk -v sec="$T/section.md" '
	/^<!-- signrate:begin -->$/ { while ((getline l < sec) > 0) print l; skip = 1; next }
	/^<!-- signrate:end -->$/ { skip = 0; next }
	!skip' "$f" >"$f.new"
elif [ -f "$f" ]; then
	{ cat "$f"; echo; cat "$T/section.md"; } >"$f.new"
else
	{ echo '# p11agent benchmarks'; echo; cat "$T/section.md"; } >"$f.new"
fi
mv "$f.new" "$f"
echo "wrote the sign-rate section of $f"
