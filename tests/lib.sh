# p11agent integration tests: shared helpers.  Sourced by tests/t-*.sh,
# which automake runs with top_builddir and top_srcdir set.
#
# Every test gets a fresh directory $T (removed on exit), a fresh SoftHSM
# token (make_token), real TLS servers on ephemeral ports (start_server)
# and the real agent (start_agent).  Readiness is read from the programs'
# own output with a timeout: nothing sleeps.
#
# With P11AGENT_VALGRIND=1 (make check-valgrind) the agent and its token
# helper run under valgrind's memcheck: a report fails the test.  Waits
# are multiplied by $SLOW there (P11AGENT_SLOW, 20 by default); tests
# multiply their own timeouts by it too.

set -u
: "${top_builddir:?run me through make check}" "${top_srcdir:?}"

P11AGENT=$top_builddir/p11agent
export P11AGENT_HELPER=$top_builddir/p11agent-helper
ECHO_SERVER=$top_builddir/tests/tls-echo-server
CLIENT=$top_builddir/tests/tunnel-client
FAULT=$top_builddir/tests/.libs/libp11fault.so
# module paths are matched after realpath: allow the build tree's real one
LIBS_REAL=$(cd "$top_builddir/tests" && pwd -P)/.libs
SOFTHSM=/usr/lib/softhsm/libsofthsm2.so

# no core file of a test program (the pinentry stub holds a PIN) where
# no scan looks
ulimit -c 0
T=$(mktemp -d /tmp/p11agent-test.XXXXXX)
chmod 700 "$T"
# the agent's control socket is $XDG_RUNTIME_DIR/p11agent/control unless
# the config says control = PATH: a runtime directory of the test's own
export XDG_RUNTIME_DIR=$T/run
mkdir -m 700 "$XDG_RUNTIME_DIR"
# tpm2-pkcs11, where installed, is in p11-kit's registry: told of a store
# that does not exist, its C_Initialize fails at once, instead of probing
# for a TPM and making ~/.tpm2_pkcs11 (tests/tpm.sh gives the TPM tests a
# real one)
export TPM2_PKCS11_STORE=$T/no-tpm2-store
# opensc-pkcs11, where installed, is in the registry too: never the
# machine's own pcscd (tests/card.sh starts one for the card tests)
export PCSCLITE_CSOCK_NAME=$T/no-pcscd
# in a --enable-sanitizers build, reports land in $T/san.* (checked on exit)
export ASAN_OPTIONS=log_path=$T/san.asan:detect_leaks=1
export UBSAN_OPTIONS=log_path=$T/san.ubsan:print_stacktrace=1
PIDS=()
AGENT_PID=
MADE_USER=	# make_user's, removed by cleanup
# a command (and its arguments) that start_agent runs the agent through
AGENT_WRAP=()
# options start_agent adds to p11agent run (e.g. --policies DIR)
AGENT_ARGS=()
SLOW=1
VALGRIND=()
if [ -n "${P11AGENT_VALGRIND:-}" ]; then
	SLOW=${P11AGENT_SLOW:-20}
	# the helper is exec'd by the agent: --trace-children follows it (not
	# into the test's pinentry, a perl script: perl's own start-up leaks
	# a few bytes now and then)
	# (P11AGENT_VALGRIND_EXTRA: more options, e.g. --track-origins=yes)
	VALGRIND=(valgrind -q --error-exitcode=1 --leak-check=full
	    --show-leak-kinds=definite --errors-for-leak-kinds=definite
	    ${P11AGENT_VALGRIND_EXTRA:-} --trace-children=yes --child-silent-after-fork=yes
	    --trace-children-skip='*/perl,*/pinentry-stub'
	    --suppressions="$top_srcdir/tests/valgrind.supp"
	    --log-file="$T/vg.%p")
fi

keep_logs() {
	local f
	rm -rf "$1" && mkdir -p "$1" || return 0
	while IFS= read -r -d '' f; do
		mkdir -p "$1/$(dirname "${f#"$T"/}")" &&
		    cp -p "$f" "$1/${f#"$T"/}"
	done < <("$top_srcdir/tests/no-secrets.sh" --files "$T")
}

cleanup() {
	local p found rc=$?
	stop_agent || rc=1
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null
	done
	wait 2>/dev/null
	[ -z "$MADE_USER" ] || userdel "$MADE_USER" 2>/dev/null
	# with -q, valgrind writes only its reports ("==pid==" lines) and
	# its own warnings ("--pid--", e.g. a system call it does not know)
	if grep -q '^==[0-9]*== ' "$T"/vg.* 2>/dev/null; then
		grep -H '^==[0-9]*== ' "$T"/vg.* | head -n 200
		echo "FAIL: valgrind report (above)"
		rc=1
	fi
	# a sanitizer error from any of our programs fails the test (ASan
	# also warns, harmlessly, when OpenSSL's async jobs switch stacks)
	if grep -El 'ERROR: |runtime error' "$T"/san.* 2>/dev/null ||
	    grep -Eq 'ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:' \
	    "$T/agent.log" 2>/dev/null; then
		grep -E -A40 'ERROR: |runtime error' "$T"/san.* "$T/agent.log" \
		    2>/dev/null | head -n 80
		echo "FAIL: sanitizer report (above)"
		rc=1
	fi
	# no test PIN in any file the test leaves (tests/no-secrets.sh);
	# P11AGENT_KEEP_LOGS=DIR: copies of those files in DIR/TEST/ (CI
	# scans them again with the test logs)
	if ! found=$("$top_srcdir/tests/no-secrets.sh" "$T"); then
		echo "$found"
		echo "FAIL: a test PIN in a file the test left (above)"
		rc=1
	fi
	if [ -n "${P11AGENT_KEEP_LOGS:-}" ]; then
		keep_logs "$P11AGENT_KEEP_LOGS/$(basename "$0" .sh)"
	fi
	[ -n "${KEEP:-}" ] || rm -rf "$T"
	exit "$rc"
}
trap cleanup EXIT

fail() {
	echo "FAIL: $*" >&2
	if [ -f "$T/agent.log" ]; then
		echo "--- agent log:" >&2
		sed 's/^/  /' "$T/agent.log" >&2
	fi
	exit 1
}

skip() {
	echo "SKIP: $*"
	exit 77
}

ok() {
	echo "ok: $*"
}

[ -z "${P11AGENT_VALGRIND:-}" ] || command -v valgrind >/dev/null ||
    skip "valgrind is missing"

# make_token: a throwaway SoftHSM token with RSA and EC keys made on it.
make_token() {
	local rc=0
	"$top_srcdir/tests/mktoken.sh" "$T/tok" || rc=$?
	[ "$rc" = 77 ] && skip "a token tool is missing"
	[ "$rc" = 0 ] || fail "mktoken.sh failed"
	. "$T/tok/env.sh"
	TOK=$T/tok
	# the agent's helper loads the real module through the fault module,
	# which logs every PKCS#11 call
	export P11FAULT_MODULE=$SOFTHSM
	export P11FAULT_LOG=$T/calls.log
}

# start_server NAME ARGS...: an echo server; sets NAME_port.
start_server() {
	local name=$1 port fd
	shift
	mkfifo "$T/$name.fifo"
	"$ECHO_SERVER" "$@" >"$T/$name.fifo" 2>"$T/$name.log" &
	PIDS+=($!)
	exec {fd}<"$T/$name.fifo"
	read -t $((20 * SLOW)) -u "$fd" port || fail "server $name did not start: $(cat "$T/$name.log")"
	exec {fd}<&-
	printf -v "${name}_port" '%s' "$port"
}

# start_agent CONFIG: runs the agent until it reports "ready"; sets
# LISTEN_<tunnel>_<n> for each listener (n from 0), in config order, and
# METRICS_ADDR for the [agent] metrics listener.
start_agent() {
	local conf=$1 fd line name addr
	declare -gA LISTEN=()
	rm -f "$T/ready"
	mkfifo "$T/ready"
	"${AGENT_WRAP[@]}" "${VALGRIND[@]}" "$P11AGENT" run -v -c "$conf" \
	    "${AGENT_ARGS[@]}" --ready-fd 3 3>"$T/ready" 2>>"$T/agent.log" &
	AGENT_PID=$!
	PIDS+=($AGENT_PID)
	exec {fd}<"$T/ready"
	while read -t $((30 * SLOW)) -u "$fd" line; do
		case $line in
		ready)
			exec {fd}<&-
			return 0
			;;
		listen\ *)
			read -r _ name addr <<<"$line"
			LISTEN[$name]="${LISTEN[$name]:-}${LISTEN[$name]:+ }$addr"
			;;
		metrics\ *)
			METRICS_ADDR=${line#metrics }
			;;
		esac
	done
	exec {fd}<&-
	wait "$AGENT_PID" 2>/dev/null
	AGENT_PID=
	return 1
}

# listen_addr TUNNEL KIND: the tunnel's tcp: or unix: address.
listen_addr() {
	local a
	for a in ${LISTEN[$1]}; do
		case $a in
		"$2":*) echo "$a"; return 0 ;;
		esac
	done
	return 1
}

# stop_agent: SIGTERM; the agent must exit 0 (no leak report either).
stop_agent() {
	local rc=0
	[ -n "$AGENT_PID" ] || return 0
	kill "$AGENT_PID" 2>/dev/null
	wait "$AGENT_PID" 2>/dev/null || rc=$?
	AGENT_PID=
	if [ "$rc" != 0 ]; then
		echo "FAIL: the agent exited with status $rc" >&2
		return 1
	fi
}

# term_within PID MS WHAT: SIGTERM to PID, which must exit 0 within MS ms;
# sets STOP_MS.
term_within() {
	local start rc=0
	start=$(date +%s%N)
	kill -TERM "$1"
	wait "$1" || rc=$?
	STOP_MS=$(( ($(date +%s%N) - start) / 1000000 ))
	[ "$rc" = 0 ] || fail "$3: exit status $rc after SIGTERM"
	[ "$STOP_MS" -lt "$2" ] || fail "$3: SIGTERM took $STOP_MS ms"
}

# start_xfer ADDR BYTES PAUSE: a round trip through ADDR that stops
# sending after PAUSE bytes until a line is written to $GO (made on first
# use); returns once it paused.  Sets XFER (its pid) and XOUT (a descriptor
# with the rest of its output: "ok bytes=N ..." when done).
XFER_N=0
start_xfer() {
	local line=
	if [ -z "${GO:-}" ]; then
		mkfifo "$T/go"
		exec {GO}<>"$T/go"
	fi
	XFER_N=$((XFER_N + 1))
	mkfifo "$T/xfer$XFER_N.out"
	"$CLIENT" "$1" roundtrip --bytes "$2" --pause-after "$3" \
	    --timeout $((120 * SLOW)) <"$T/go" >"$T/xfer$XFER_N.out" 2>&1 &
	XFER=$!
	PIDS+=($XFER)
	exec {XOUT}<"$T/xfer$XFER_N.out"
	while read -r -t $((30 * SLOW)) -u "$XOUT" line; do
		case $line in paused*) return 0 ;; esac
	done
	fail "the transfer through $1 did not get to $3: $line"
}

# refused tcp:HOST:PORT: nothing listens there
refused() {
	local hp=${1#tcp:}
	! (exec 3<>"/dev/tcp/${hp%:*}/${hp##*:}") 2>/dev/null
}

# log_mark; ...; wait_log REGEX [SECONDS]: waits (event-driven, bounded,
# SECONDS times $SLOW) for the agent to log a matching line after the mark.
log_mark() {
	LOG_MARK=$(wc -l <"$T/agent.log")
}
wait_log() {
	timeout $((${2:-20} * SLOW)) tail -n "+$((LOG_MARK + 1))" -f "$T/agent.log" |
	    grep -E -q -m 1 -- "$1"
}

# wait_log_count REGEX N [SECONDS]: waits for N matching lines after the mark.
# (grep -m stops reading at the Nth; mawk would buffer its input and see
# the lines only when tail is killed at the timeout)
wait_log_count() {
	local n
	n=$(timeout $((${3:-30} * SLOW)) tail -n "+$((LOG_MARK + 1))" -f \
	    "$T/agent.log" | grep -E -c -m "$2" -- "$1")
	[ "$n" -ge "$2" ]
}

# log_since_has REGEX: the agent logged a matching line after the mark.
log_since_has() {
	tail -n "+$((LOG_MARK + 1))" "$T/agent.log" | grep -Eq -- "$1"
}

# agent_log_has REGEX: the agent logged a matching line.
agent_log_has() {
	grep -Eq -- "$1" "$T/agent.log"
}

# make_user NAME: a system user without a home (removed when the test
# ends); sets TEST_UID and TEST_GID.  Fails when it cannot be made.
make_user() {
	useradd -M -N -r -s /usr/sbin/nologin "$1" || return 1
	MADE_USER=$1
	TEST_UID=$(id -u "$1") && TEST_GID=$(id -g "$1") ||
	    fail "no uid for $1"
}

# start_upstream NAME [ARGS...]: an echo server for the test token's
# world (its CA signs the server; client certificates required); sets
# NAME_port.
start_upstream() {
	local name=$1
	shift
	start_server "$name" --cert "$TOK/server.pem" --key "$TOK/server.key" \
	    --ca "$TOK/ca.pem" --require-cert "$@"
}

# tunnel NAME CONNECT IDENTITY [LINE...]: a [tunnel] section listening on
# an ephemeral loopback port, trusting the test CA, plus extra lines.
tunnel() {
	printf '[tunnel %s]\nlisten = tcp:127.0.0.1:0\nconnect = %s\n' "$1" "$2"
	printf 'identity = %s\nca = %s\n' "$3" "$TOK/ca.pem"
	shift 3
	[ $# = 0 ] || printf '%s\n' "$@"
	echo
}

# agent_section [PATTERN...]: the [agent] section every config that loads
# the fault module from the build tree needs (modules outside /usr/lib*
# must be allowed), allowing PATTERNs too.
agent_section() {
	local p allow="$LIBS_REAL/*"
	for p in "$@"; do
		allow="$allow, $p"
	done
	printf '[agent]\nmodule-allow = %s\n\n' "$allow"
}

# one_tunnel_conf: an upstream s (sets s_port) and $T/agent.conf with the
# test token's EC key as identity ec and tunnel t to that upstream.
one_tunnel_conf() {
	start_upstream s
	{
		agent_section
		identity ec 02
		tunnel t "localhost:$s_port" ec
	} >"$T/agent.conf"
}

# identity NAME ID: an [identity] section for the test token's key ID.
identity() {
	cat <<EOT
[identity $1]
key = pkcs11:token=$P11TEST_TOKEN;id=%$2;type=private
pin = file:$TOK/pin
module = $FAULT

EOT
}

# What signing with a key on a token needs, and nothing more: the calls
# (C_GetSessionInfo and C_WaitForSlotEvent: the presence watch), and the
# public attributes of a private key object that may be read.
SIGN_ONLY_CALLS='C_Initialize C_Finalize C_GetInfo C_GetSlotList C_GetSlotInfo
C_GetTokenInfo C_GetMechanismList C_GetMechanismInfo C_OpenSession
C_CloseSession C_Login C_Logout C_FindObjectsInit C_FindObjects
C_FindObjectsFinal C_GetAttributeValue C_SignInit C_Sign
C_GetSessionInfo C_WaitForSlotEvent'
KEY_PUBLIC_ATTRS='0x0 0x1 0x2 0x3 0x100 0x102 0x103 0x120 0x121 0x122 0x162 0x164 0x165 0x170 0x180 0x202'

# calls_allowed ALLOWED KEY_ATTRS FILE...: every PKCS#11 call in the fault
# module's call logs is one of ALLOWED (names, blank-separated), a private
# key (class 0x3) is asked only for the attribute types in KEY_ATTRS, and
# no object's class is unknown; prints each offence, fails if any.
calls_allowed() {
	local allowed=$1 key_attrs=$2
	shift 2
	awk -v allowed="$allowed" -v key_attrs="$key_attrs" '
BEGIN {
	n = split(allowed, a); for (i = 1; i <= n; i++) ok[a[i]] = 1
	n = split(key_attrs, a); for (i = 1; i <= n; i++) kattr[a[i]] = 1
}
!($2 in ok) { print "forbidden call: " $0; bad = 1 }
$2 == "C_GetAttributeValue" && / class=0x3 / {
	for (i = 1; i <= NF; i++) if ($i ~ /^attrs=/) {
		n = split(substr($i, 7), t, ",")
		for (j = 1; j <= n; j++) if (!(t[j] in kattr)) {
			print "private key attribute " t[j] " read: " $0; bad = 1
		}
	}
}
$2 == "C_GetAttributeValue" && / class=\? / { print "unknown class: " $0; bad = 1 }
END { exit bad }' "$@"
}
