#!/bin/bash
# The manual pages say what the program does: (a) the SYNOPSIS of
# p11agent(1) and the usage lines of `p11agent --help` list the same
# commands with the same options, every command the program dispatches is
# in the usage, and every command has its own entry in p11agent(1);
# (b) every key of agent/config.c's keyword table is documented in its
# section of p11agent.conf(5), and every key documented there is accepted;
# (c) the pages format without a warning from groff or man; (d) every
# key of agent/policy.c is documented in p11agent.policy(5), and every key
# documented there is accepted.
. "$top_srcdir/tests/lib.sh"

MAN1=$top_srcdir/man/p11agent.1
MAN5=$top_srcdir/man/p11agent.conf.5
MANP=$top_srcdir/man/p11agent.policy.5
POLICY_C=$top_srcdir/agent/policy.c
CONFIG_C=$top_srcdir/agent/config.c
MAIN_C=$top_srcdir/agent/main.c
bad=0
mismatch() {
	echo "MISMATCH: $*" >&2
	bad=1
}

# ---- (b) config keys: "SECTION KEY" lines from each side
# the source's table: { "key",	S_IDENTITY,	K_KEY },
awk '/^} keywords\[\] = \{/ { t = 1; next }
    t && /^};/ { exit }
    t && match($0, /\{[ \t]*"[a-z0-9-]+",[ \t]*S_[A-Z]+/) {
	s = substr($0, RSTART, RLENGTH)
	gsub(/[{" \t]/, "", s)
	split(s, f, ",")
	sub(/^S_/, "", f[2])
	print tolower(f[2]), f[1]
    }' "$CONFIG_C" | sort -u >"$T/keys.src"
[ -s "$T/keys.src" ] ||
    fail "no keyword table found in agent/config.c (its 'keywords[]' changed shape?)"
# the page: the first-level .It Ic KEY items (and .Ic KEY No = lines of an
# .It Xo item) of the subsections below, by section
awk 'BEGIN {
	sec["The agent section"] = "agent"
	sec["Identity sections"] = "identity"
	sec["Tunnel sections"] = "tunnel"
    }
    /^\.S[hs] / { s = $0; sub(/^\.S[hs] /, "", s); cur = sec[s]; depth = 0 }
    /^\.Bl / { depth++ }
    /^\.El/ { depth-- }
    cur == "" || depth != 1 { next }
    /^\.It Xo/ { xo = 1; next }
    /^\.Xc/ { xo = 0; next }
    /^\.It Ic / || (xo && /^\.Ic [a-z0-9-]+ No =/) {
	k = $0; sub(/^\.(It )?Ic /, "", k); sub(/ .*/, "", k)
	print cur, k
    }' "$MAN5" | sort -u >"$T/keys.man"
[ -s "$T/keys.man" ] || fail "no keys found in man/p11agent.conf.5"
while read -r s k; do
	mismatch "agent/config.c accepts '$k' in the $s section, but" \
	    "man/p11agent.conf.5 does not document it there"
done < <(comm -23 "$T/keys.src" "$T/keys.man")
while read -r s k; do
	mismatch "man/p11agent.conf.5 documents '$k' in the $s section, but" \
	    "agent/config.c's keyword table does not accept it there"
done < <(comm -13 "$T/keys.src" "$T/keys.man")
[ "$bad" = 0 ] && ok "$(wc -l <"$T/keys.src") config keys, each documented in its section"

# ---- (d) policy keys: agent/policy.c's pkey_names[] and the first-level
# .It Ic KEY items of p11agent.policy(5)'s Selectors and Permissions
awk '/^const char \*const pkey_names\[/ { t = 1; next }
    t && /^};/ { exit }
    t { while (match($0, /"[a-z0-9-]+"/)) {
	print substr($0, RSTART + 1, RLENGTH - 2); $0 = substr($0, RSTART + RLENGTH) } }' \
    "$POLICY_C" | sort -u >"$T/pkeys.src"
[ -s "$T/pkeys.src" ] || fail "no pkey_names[] found in agent/policy.c"
awk '/^\.S[hs] / { s = $0; sub(/^\.S[hs] /, "", s)
	cur = s == "Selectors" || s == "Permissions"; depth = 0 }
    /^\.Bl / { depth++ }
    /^\.El/ { depth-- }
    cur && depth == 1 && /^\.It Ic / { k = $0; sub(/^\.It Ic /, "", k); sub(/ .*/, "", k); print k }' \
    "$MANP" | sort -u >"$T/pkeys.man"
while read -r k; do
	mismatch "agent/policy.c accepts '$k', but man/p11agent.policy.5 does not document it"
done < <(comm -23 "$T/pkeys.src" "$T/pkeys.man")
while read -r k; do
	mismatch "man/p11agent.policy.5 documents '$k', but agent/policy.c does not accept it"
done < <(comm -13 "$T/pkeys.src" "$T/pkeys.man")
[ "$bad" = 0 ] && ok "$(wc -l <"$T/pkeys.src") policy keys, each documented in p11agent.policy(5)"

# ---- (a) usage and SYNOPSIS
# usage: from "usage:" to the first blank line; indented lines that do not
# start with "p11agent" continue the line above
"$P11AGENT" --help >"$T/help" || fail "p11agent --help failed"
awk 'NR == 1 { sub(/^usage: */, "") }
    /^$/ { exit }
    { sub(/^ +/, "") }
    /^p11agent / { if (l != "") print l; l = $0; next }
    { l = l " " $0 }
    END { if (l != "") print l }' "$T/help" >"$T/usage.raw"
# normalise: blanks squeezed, "NAME ..." and "NAME..." the same
norm() {
	sed -E 's/[[:space:]]+/ /g; s/ \.\.\./.../g; s/^ //; s/ $//' | sort
}
norm <"$T/usage.raw" >"$T/usage"
[ -s "$T/usage" ] || fail "no usage lines in p11agent --help: $(head -n 3 "$T/help")"
# the commands main() dispatches on are in the usage
grep -oE 'strcmp\(cmd, "[a-z-]+"\)' "$MAIN_C" | sed -E 's/.*"(.*)".*/\1/' |
    sort -u >"$T/cmds.src"
[ -s "$T/cmds.src" ] || fail "no commands found in agent/main.c (strcmp(cmd, ...))"
awk '$2 !~ /^-/ { print $2 }' "$T/usage" | sort -u >"$T/cmds.usage"
while read -r c; do
	mismatch "agent/main.c runs the command '$c', but p11agent --help" \
	    "has no usage line for it"
done < <(comm -23 "$T/cmds.src" "$T/cmds.usage")
# each command has an entry (.It Cm NAME) in p11agent(1)'s list
while read -r c; do
	grep -qE "^\.It Cm $c( |\$)" "$MAN1" ||
	    mismatch "p11agent(1) has no entry '.It Cm $c' for the command $c"
done <"$T/cmds.usage"
grep -q '^\.Sh EXIT STATUS' "$MAN1" || mismatch "p11agent(1) has no EXIT STATUS"

if ! command -v groff >/dev/null; then
	[ "$bad" = 0 ] || fail "the pages and the program disagree (above)"
	skip "groff is missing: SYNOPSIS and formatting not checked"
fi
# the SYNOPSIS as groff formats it, on lines long enough not to wrap
LC_ALL=C groff -mandoc -Tascii -P-c -P-b -P-o -P-u -rLL=400n "$MAN1" \
    2>/dev/null | awk '/^SYNOPSIS/ { s = 1; next } s && /^[A-Z]/ { exit }
    s && /[^ ]/' | norm >"$T/synopsis"
[ -s "$T/synopsis" ] || fail "no SYNOPSIS in man/p11agent.1"
# compare command by command (the first word after p11agent names it)
US=$'\x1f'	# a separator no line has
key() {
	awk -v us="$US" '{ print $2 us $0 }' "$1" | sort -t "$US" -k1,1
}
key "$T/usage" >"$T/usage.k"
key "$T/synopsis" >"$T/synopsis.k"
while IFS=$US read -r c u s; do
	if [ -z "$s" ]; then
		mismatch "p11agent --help has '$u' but the SYNOPSIS of" \
		    "man/p11agent.1 has no line for $c"
	elif [ -z "$u" ]; then
		mismatch "the SYNOPSIS of man/p11agent.1 has '$s' but" \
		    "p11agent --help has no line for $c"
	elif [ "$u" != "$s" ]; then
		mismatch "$c: p11agent --help says '$u';" \
		    "the SYNOPSIS of man/p11agent.1 says '$s'"
	fi
done < <(join -t "$US" -a 1 -a 2 -e '' -o 0,1.2,2.2 \
    "$T/usage.k" "$T/synopsis.k")
[ "$bad" = 0 ] && ok "usage and SYNOPSIS: $(wc -l <"$T/usage") lines alike"

# ---- (c) no formatting warnings
for page in "$MAN1" "$MAN5" "$MANP"; do
	w=$(LC_ALL=C.UTF-8 groff -mandoc -Tutf8 -ww -z "$page" 2>&1)
	[ -z "$w" ] || mismatch "groff -ww: ${page#"$top_srcdir"/}: $w"
	if command -v man >/dev/null; then
		w=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 \
		    man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null)
		[ -z "$w" ] || mismatch "man --warnings: ${page#"$top_srcdir"/}: $w"
	fi
done
[ "$bad" = 0 ] || fail "the pages and the program disagree (above)"
ok "the pages format without warnings"
