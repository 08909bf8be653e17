#!/bin/bash
# no-secrets.sh PATH...: fails if a PIN, SO PIN or PUK of the test suite
# (below: every one the tests set, type or answer, wrong ones too) is in
# a file under PATH (files and directories, recursively, binary ones
# too): as it is, or as hex (ASCII codes, upper or lower case, with or
# without spaces, as an APDU dump would show it).  A PIN of digits only
# counts where no digit is next to it, so a port or a byte count that
# contains it is not taken for it.  Files that hold a PIN by design (PIN
# files, token stores, the card emulator's state) are skipped; see
# SKIP.  Each find is printed as FILE:LINE: NAME (never the PIN itself,
# so this script's own log stays clean); exit 1 if any, 0 if none.
#
# no-secrets.sh --files PATH...: the files it would scan, NUL-terminated
# (lib.sh keeps copies of them with P11AGENT_KEEP_LOGS).
#
# no-secrets.sh --sources DIR: fails if the test sources in DIR (tests/)
# set or type a PIN literal (a word with a digit after --pin, --so-pin,
# --puk..., PIN=, in a PIN file written, a unit test's stub or PIN file)
# that is not in the list below: a PIN added to a test must be added
# here too.
#
# lib.sh runs it over each test's directory before removing it;
# tests/t-no-secrets.sh over the test logs (and proves it finds a PIN);
# .ci/run over tests/*.log and the kept files after each make check.
set -u

# NAME=VALUE: the secrets of the test suite, and where they come from
SECRETS=(
	# tests/mktoken.sh: the SoftHSM token (pinentry-stub answers it)
	'softhsm-user-pin=uP1n-7kQ2x'
	'softhsm-so-pin=soP1n-9mW4z'
	# second tokens of t-ambiguous, t-tokens (SO PIN as above)
	'second-token-pin=2ndP1n-5hT8'
	# wrong PINs typed on purpose
	'wrong-pin=wrongpin7f3a'		# t-bad-input, t-pin-safety, t-token-status
	'wrong-pin-restart=wrP1n-8cY1'		# t-helper-restart
	'wrong-pin-lock=wrP1n-3vL6'		# t-lock
	# t-pinentry: a PIN that needs escaping (its two lines)
	'pinentry-pin-line1=p%1 2'
	$'pinentry-pin-line2=3\xc3\xbc%25'
	# tests/tpm.sh: the TPM token
	'tpm-user-pin=tpmP1n-6rK3'
	'tpm-so-pin=tpmSo-8nB1'
	# tests/card.sh, tests/vcard: the PIV card (digits only: PIV)
	'card-pin=73915846'
	'card-puk=46290513'
	'card-wrong-pin=60283719'		# t-card-basic, t-card-pin
	'card-wrong-puk=38176452'		# t-card-basic
	'card-new-pin=24682468'			# t-card-basic, changed and back
	# tests/unit: the unit tests' PINs
	'unit-pin-file=unP1n-2aS7'
	'unit-pin-env=unEnv-4kD2'
	'unit-pin-ask=unAsk-6tB9'
	'unit-pin-cancelled=unCan-1pR4'
	'unit-pinentry=unPe-7dM3'
	'unit-pinentry-inquire=unInq-3gH8'
	'unit-pinentry-wait=unWt-5jN2'
	'unit-pinentry-odd=a%b c'
	'unit-pinentry-refused=unMd-9wE6'
	'unit-pin-as-source=unSrc-8qP3'
)

# Files that hold a PIN by design (find -path patterns).
SKIP=(
	'*/tok*/pin' '*/tok*/env.sh' '*/tok*/tokens/*'	# mktoken.sh's output
	'*.pin' '*/pin2' '*/pin.good'		# PIN files the tests write
	'*/pe'				# pinentry wrappers, their answer in them
	# process environments dumped by t-identity: with pin = env: the
	# helper's holds the PIN (as designed), every one P11TEST_PIN
	'*.env'
	'*/card-*.state'			# the card emulator's state
	'*/tpm/pin' '*/tpm/store/*' '*/tpm/state/*'	# tests/tpm.sh
)

hexof() {
	local s=$1 sep=$2 i out=
	for ((i = 0; i < ${#s}; i++)); do
		out+=${out:+$sep}$(printf '%02x' "'${s:i:1}")
	done
	printf '%s' "$out"
}

# the patterns of one secret, one a line: F<TAB>text (fixed), I<TAB>text
# (fixed, any case), E<TAB>regex
patterns() {
	local v=$1
	if [[ $v =~ ^[0-9]+$ ]]; then
		printf 'E\t(^|[^0-9])%s([^0-9]|$)\n' "$v"
	else
		printf 'F\t%s\n' "$v"
	fi
	# multi-byte characters: the plain form only
	if LC_ALL=C.UTF-8 bash -c '[ ${#1} = $(printf %s "$1" | wc -c) ]' _ "$v"; then
		printf 'I\t%s\n' "$(hexof "$v" '')"
		printf 'I\t%s\n' "$(hexof "$v" ' ')"
	fi
}

# grep_one KIND TEXT FILE...: grep -n for one pattern
grep_one() {
	case $1 in
	F) grep -naF -- "$2" "${@:3}" ;;
	I) grep -naiF -- "$2" "${@:3}" ;;
	E) grep -naE -- "$2" "${@:3}" ;;
	esac
}

# files PATH...: the files to scan, NUL-terminated
files() {
	local s args=()
	for s in "${SKIP[@]}"; do
		args+=(! -path "$s")
	done
	find "$@" -type f "${args[@]}" -print0 2>/dev/null
}

scan() {
	local files=() f s name kind text hit bad=0
	while IFS= read -r -d '' f; do
		files+=("$f")
	done < <(files "$@")
	[ ${#files[@]} -gt 0 ] || return 0
	for s in "${SECRETS[@]}"; do
		name=${s%%=*}
		while IFS=$'\t' read -r kind text; do
			# FILE:LINE of each find (/dev/null: names even one file)
			while IFS= read -r hit; do
				echo "no-secrets: $hit: $name"
				bad=1
			done < <(grep_one "$kind" "$text" /dev/null "${files[@]}" |
			    cut -d: -f1,2 | sort -u)
		done < <(patterns "${s#*=}")
	done
	return $bad
}

# The PIN literals of the test sources in DIR: FILE:LINE<TAB>PIN lines.
literals() {
	local f files=()
	for f in "$1"/*.sh "$1"/pinentry-stub "$1"/vcard/*.py "$1"/unit/*.c; do
		[ -f "$f" ] && files+=("${f#"$1"/}")
	done
	[ ${#files[@]} -gt 0 ] || return 0
	(cd "$1" && perl -ne '
	my @re = (
	    # an option that takes a PIN, an assignment of one
	    qr/--(?:pin|so-pin|new-pin|puk|sopin|userpin)[= ]["\x27]?([^\s"\x27\$\\;)\]]+)/,
	    qr/\b(?:PIN|SO_PIN|CARD_PIN|CARD_PUK|sopin|pin)=["\x27]?([^\s"\x27\$;)]+)/,
	    # a PIN file written
	    qr/printf \x27([^\x27%\$]+)\\n\x27 *>"?\$[\w{}]*\/\S*pin/,
	    qr/echo ([^\s\$]+) *>"?\$[\w{}]*\/\S*pin/,
	    # pivprov unblock PUK PIN, change-pin OLD NEW
	    qr/(?:unblock|change-pin) ([0-9]+)/,
	    qr/(?:unblock|change-pin) \S+ ([0-9]+)/,
	    # the unit tests: a stub PIN, a PIN file or variable, a script
	    qr/stub_env\([^,]*, "([^"]+)"\)/,
	    qr/test_write\("[^"]*", "([^"\\]+)/,
	    qr/setenv\("\w*PIN", "([^"]+)"/,
	    # defaults: the pinentry stub, the card emulator
	    qr/PIN\} \/\/ \x27([^\x27]+)\x27/,
	    qr/"--(?:pin|puk)", default="([^"]+)"/,
	);
	# in C, scripts written by the unit tests
	push @re, qr/echo ([\w%-]+)(?:;|\\n)/ if $ARGV =~ /\.c$/;
	for my $re (@re) {
		# a PIN literal has a digit: "--pin SOURCE" in prose has none
		while (/$re/g) {
			my $v = $1;
			print "$ARGV:$.\t$v\n" if $v =~ /[0-9]/;
		}
	}
	close ARGV if eof;' "${files[@]}")
}

sources() {
	local s found lit bad=0 known=" "
	for s in "${SECRETS[@]}"; do
		known+="${s#*=} "
	done
	while IFS=$'\t' read -r found lit; do
		case $lit in
		file:*|fd:*|env:*|pinentry*|NULL) continue ;;
		esac
		case $known in
		*" $lit "*) ;;
		*)
			echo "no-secrets: $found: a PIN literal not in" \
			    "tests/no-secrets.sh's list: add it there"
			bad=1
			;;
		esac
	done < <(literals "$1")
	return $bad
}

if [ "${1:-}" = --files ]; then
	shift
	files "$@"
	exit 0
fi
if [ "${1:-}" = --sources ]; then
	[ $# = 2 ] || { echo "usage: no-secrets.sh --sources DIR" >&2; exit 2; }
	sources "$2"
	exit
fi
[ $# -gt 0 ] || { echo "usage: no-secrets.sh PATH... | --sources DIR" >&2; exit 2; }
scan "$@"
