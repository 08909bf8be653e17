#!/bin/bash
# Never a PIN in a log (issue 9, scope 3): tests/no-secrets.sh
# - finds every test PIN planted in a file: as it is and as hex (with and
#   without spaces, either case), a PIN of digits only also next to
#   punctuation, but not inside a longer number; names the file, line
#   and which PIN, never the PIN; skips the PIN files;
# - --sources: every PIN literal in the test sources is in its list, and
#   a new one is found;
# - the test logs of this make check (tests/*.log, the kept files of
#   P11AGENT_KEEP_LOGS) hold none (lib.sh also scans each test's own
#   directory before removing it; .ci/run scans all the logs once every
#   test has run).
. "$top_srcdir/tests/lib.sh"
NS=$top_srcdir/tests/no-secrets.sh
mapfile -t secrets < <(sed -n "s/^	'\([a-z0-9-]*\)=\(.*\)'.*/\1/p; s/^	\$'\([a-z0-9-]*\)=.*/\1/p" "$NS")
[ "${#secrets[@]}" -ge 20 ] || fail "only ${#secrets[@]} secrets read from $NS"
# value NAME: the secret's value, from the script's own list
value() {
	bash -c '. <(sed -n "/^SECRETS=(/,/^)/p" "$1"); for s in "${SECRETS[@]}"; do
		[ "${s%%=*}" = "$2" ] && printf %s "${s#*=}"; done' _ "$NS" "$1"
}
hex() { printf %s "$1" | od -An -tx1 | tr -d ' \n'; }

# ---- each planted PIN is found, with its file, line and name
P=$T/plant
mkdir "$P"
for n in "${secrets[@]}"; do
	printf 'a clean line\nbefore: %s :after\n' "$(value "$n")" >"$P/$n.log"
done
rc=0
out=$("$NS" "$P") || rc=$?
[ "$rc" = 1 ] || fail "planted PINs: exit $rc"
for n in "${secrets[@]}"; do
	grep -qx "no-secrets: $P/$n.log:2: $n" <<<"$out" ||
	    fail "the planted $n was not found: $(grep -F "$n" <<<"$out")"
done
for n in "${secrets[@]}"; do
	grep -qF -- "$(value "$n")" <<<"$out" && fail "the report shows the $n itself"
done
ok "${#secrets[@]} planted PINs found, each named with file and line, none shown"
rm -rf "$P" && mkdir "$P"

# hex, spaced hex, either case; digits: punctuation is a boundary, more
# digits are not
pin=$(value softhsm-user-pin) card=$(value card-pin)
hex "$pin" >"$P/hex.log"
hex "$card" | tr a-f A-F >"$P/HEX.log"
printf %s "$pin" | od -An -tx1 >"$P/spaced.log"
printf 'VERIFY 00 20 00 80 08 %s\n' "$(printf %s "$card" | od -An -tx1 | sed 's/^ //')" >"$P/apdu.log"
printf 'pin=%s.\n' "$card" >"$P/punct.log"
printf 'port 1%s0, %s7 bytes, id 9%s\n' "$card" "$card" "$card" >"$P/inside.log"
rc=0
out=$("$NS" "$P") || rc=$?
[ "$rc" = 1 ] || fail "hex/context: exit $rc: $out"
for f in hex.log:1:softhsm-user-pin HEX.log:1:card-pin spaced.log:1:softhsm-user-pin \
    apdu.log:1:card-pin punct.log:1:card-pin; do
	n=${f#*:}
	grep -qx "no-secrets: $P/${f%%:*}:${n%%:*}: ${n#*:}" <<<"$out" ||
	    fail "not found: $f: $out"
done
grep -q inside.log <<<"$out" && fail "a PIN inside a longer number was taken for one"
ok "hex (plain, spaced, upper case), an APDU dump, next to punctuation; not inside a longer number"
rm -rf "$P" && mkdir "$P"

# the files that hold a PIN by design are skipped; a clean tree passes
mkdir -p "$P/tok"
value softhsm-user-pin >"$P/tok/pin"
value softhsm-user-pin >"$P/wrong.pin"
echo "a log without secrets" >"$P/agent.log"
out=$("$NS" "$P") || fail "PIN files are not skipped: $out"
[ -z "$out" ] || fail "a clean tree: $out"
ok "PIN files skipped, a clean tree passes"
rm -rf "$P"

# ---- the sources: all their PIN literals are listed; a new one is not
out=$("$NS" --sources "$top_srcdir/tests") || fail "--sources: $out"
mkdir -p "$T/src/unit" "$T/src/vcard"
cp "$top_srcdir/tests/t-roundtrip.sh" "$T/src/"
# (the literal is made here, or --sources would find it in this file)
printf 'softhsm2-util --init-token --so-pin %s --pin "$X"\n' "55aa$((70 + 7))" \
    >>"$T/src/t-roundtrip.sh"
rc=0
out=$("$NS" --sources "$T/src") || rc=$?
[ "$rc" = 1 ] && grep -q "^no-secrets: t-roundtrip.sh:[0-9]*: a PIN literal not in tests/no-secrets.sh's list: add it there$" <<<"$out" ||
    fail "--sources: a new PIN literal not found ($rc): $out"
rm -rf "$T/src"
ok "--sources: every PIN literal of the tests is listed; a new one is found"

# ---- the logs of this make check so far
logs=()
for f in "$top_builddir"/tests/*.log; do
	[ "$f" = "$top_builddir/tests/t-no-secrets.log" ] || logs+=("$f")
done
[ -n "${P11AGENT_KEEP_LOGS:-}" ] && [ -d "$P11AGENT_KEEP_LOGS" ] &&
    logs+=("$P11AGENT_KEEP_LOGS")
if [ "${#logs[@]}" -gt 0 ]; then
	out=$("$NS" "${logs[@]}") || fail "a test PIN in the logs: $out"
	ok "no test PIN in ${#logs[@]} logs"
else
	echo "note: no other test logs yet"
fi
