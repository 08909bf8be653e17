#!/bin/bash
# mktoken.sh - build a throwaway PKCS#11 test world for the p11agent test suite.
#
# Usage: tests/mktoken.sh DIR
#
# Creates (or refreshes) DIR with:
#   softhsm2.conf, tokens/   SoftHSM token "p11agent-test" (SO PIN soP1n-9mW4z, user PIN uP1n-7kQ2x)
#                            holding on-token, non-extractable keys id 01 "rsa-key"
#                            (RSA-2048), id 02 "ec-key" (EC P-256) and id 03
#                            "ec384-key" (EC P-384) plus their certs
#   pin                      the user PIN (mode 0600)
#   ca.pem/.key              test CA; client-rsa.pem, client-ec.pem are issued by it
#   server*.pem/.key         upstream-server certs: good, wrong name, expired,
#                            and one issued by other-ca.pem/.key
#   env.sh                   sourceable: SOFTHSM2_CONF and P11TEST_* variables
# Any previous DIR/tokens is wiped. Prints nothing on success; exits 77 (skip)
# when a required tool is missing, non-zero with a message on any other failure.
set -euo pipefail

MODULE=/usr/lib/softhsm/libsofthsm2.so
TOKEN=p11agent-test
SO_PIN=soP1n-9mW4z
PIN=uP1n-7kQ2x

die() { echo "mktoken.sh: $*" >&2; exit 1; }
skip() { echo "mktoken.sh: skipping: $*" >&2; exit 77; }

if [ $# -ne 1 ] || [ -z "$1" ]; then die "usage: $0 DIR"; fi
for tool in softhsm2-util pkcs11-tool openssl; do
    command -v "$tool" >/dev/null 2>&1 || skip "$tool not found"
done
[ -e "$MODULE" ] || skip "$MODULE not found"

mkdir -p -- "$1" || die "cannot create $1"
DIR=$(cd -- "$1" && pwd) || die "cannot enter $1"
TMP="$DIR/.mktoken-tmp"
rm -rf -- "$TMP" "$DIR/tokens"
mkdir -p -- "$TMP" "$DIR/tokens"
trap 'rm -rf -- "$TMP"' EXIT
trap 'echo "mktoken.sh: failed at line $LINENO" >&2' ERR

# run CMD...: run quietly; on failure show its output and stop.
run() {
    if ! "$@" >"$TMP/log" 2>&1; then
        cat "$TMP/log" >&2
        die "command failed: $*"
    fi
}
p11() { run pkcs11-tool --module "$MODULE" --token-label "$TOKEN" --login --pin "$PIN" "$@"; }
# shq STR: single-quote STR for a POSIX shell.
shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
serial() { printf '0x%s' "$(openssl rand -hex 8)"; }
# ext NAME LINES...: write an extension file $TMP/NAME.ext
ext() { local f="$TMP/$1.ext"; shift; printf '%s\n' "$@" >"$f"; }
# newkey NAME: EC P-256 key in DIR/NAME.key (mode 0600)
newkey() {
    run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$DIR/$1.key"
    chmod 600 "$DIR/$1.key"
}
# issue OUT PUBKEY SUBJ CA EXTNAME: CA-signed cert for PUBKEY, valid 30 days
issue() {
    run openssl x509 -new -force_pubkey "$2" -subj "$3" -CA "$DIR/$4.pem" \
        -CAkey "$DIR/$4.key" -set_serial "$(serial)" -days 30 -sha256 \
        -extfile "$TMP/$5.ext" -out "$1"
}
# selfca NAME CN: self-signed CA in DIR/NAME.pem/.key
selfca() {
    newkey "$1"
    run openssl x509 -new -key "$DIR/$1.key" -subj "/CN=$2" -set_serial "$(serial)" \
        -days 3650 -sha256 -extfile "$TMP/ca.ext" -out "$DIR/$1.pem"
}

# --- 1/2: SoftHSM config, token, PIN file -----------------------------------
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$DIR/tokens" >"$DIR/softhsm2.conf"
export SOFTHSM2_CONF="$DIR/softhsm2.conf"
run softhsm2-util --init-token --free --label "$TOKEN" --so-pin "$SO_PIN" --pin "$PIN"
rm -f -- "$DIR/pin"
(umask 077 && printf '%s\n' "$PIN" >"$DIR/pin")

# --- 3: on-token key pairs (private keys sensitive, never extractable) -------
p11 --keypairgen --key-type rsa:2048 --id 01 --label rsa-key --usage-sign --sensitive
p11 --keypairgen --key-type EC:prime256v1 --id 02 --label ec-key --usage-sign --sensitive
p11 --keypairgen --key-type EC:secp384r1 --id 03 --label ec384-key --usage-sign --sensitive

# --- 4: test CA and client certs for the token public keys ------------------
ext ca "basicConstraints = critical, CA:TRUE" "keyUsage = critical, keyCertSign, cRLSign" \
    "subjectKeyIdentifier = hash"
ext client "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
    "extendedKeyUsage = clientAuth" "subjectKeyIdentifier = hash" \
    "authorityKeyIdentifier = keyid"
selfca ca "p11agent test CA"

# p384_spki ID: pkcs11-tool 0.23 cannot export a P-384 public key, so
# build its SubjectPublicKeyInfo from the CKA_EC_POINT it prints
p384_spki() {
    local point
    point=$(pkcs11-tool --module "$MODULE" --token-label "$TOKEN" -O \
        --type pubkey --id "$1" | sed -n 's/^ *EC_POINT: *0461//p')
    [ "${#point}" = 194 ] || { echo "mktoken.sh: no P-384 EC_POINT" >&2; exit 1; }
    # hex to bytes with printf's \xHH escapes
    printf "$(printf '%s' "3076301006072a8648ce3d020106052b81040022036200$point" |
        sed 's/../\\x&/g')"
}

for spec in "01 rsa" "02 ec" "03 ec384"; do
    read -r id kind <<<"$spec"
    if [ "$kind" = ec384 ]; then
        p384_spki "$id" >"$TMP/$kind-pub.der"
    else
        p11 --read-object --type pubkey --id "$id" -o "$TMP/$kind-pub.der"
    fi
    run openssl pkey -pubin -inform DER -in "$TMP/$kind-pub.der" -out "$TMP/$kind-pub.pem"
    issue "$DIR/client-$kind.pem" "$TMP/$kind-pub.pem" \
        "/CN=p11agent-test-$kind/O=p11agent tests" ca client
    run openssl x509 -in "$DIR/client-$kind.pem" -outform DER -out "$TMP/client-$kind.der"
    p11 --write-object "$TMP/client-$kind.der" --type cert --id "$id" --label "$kind-key"
done

# --- 5: server-side material (software EC keys) -----------------------------
ext server "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
    "extendedKeyUsage = serverAuth" "subjectKeyIdentifier = hash" \
    "authorityKeyIdentifier = keyid" "subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1"
ext wrongname "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
    "extendedKeyUsage = serverAuth" "subjectAltName = DNS:wrong.example"
ext localhost "basicConstraints = critical, CA:FALSE" "keyUsage = critical, digitalSignature" \
    "extendedKeyUsage = serverAuth" "subjectAltName = DNS:localhost, IP:127.0.0.1"
selfca other-ca "some other CA"

# server NAME CN CA EXTNAME
server() {
    newkey "$1"
    run openssl pkey -in "$DIR/$1.key" -pubout -out "$TMP/$1-pub.pem"
    issue "$DIR/$1.pem" "$TMP/$1-pub.pem" "/CN=$2" "$3" "$4"
}
server server localhost ca server
server server-wrongname wrong.example ca wrongname
server server-otherca localhost other-ca localhost

# Expired cert: 'openssl x509' in 3.0 cannot set explicit dates, so use a
# minimal 'openssl ca' setup (own config, no system config involved).
newkey server-expired
cat >"$TMP/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = localhost
[ca]
default_ca = testca
[testca]
database = index.txt
new_certs_dir = .
serial = serial
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
EOF
: >"$TMP/index.txt"
printf '%s\n' "$(openssl rand -hex 8)" >"$TMP/serial"
run openssl req -config "$TMP/ca.cnf" -new -key "$DIR/server-expired.key" -out "$TMP/expired.csr"
( cd "$TMP" && run openssl ca -config ca.cnf -batch -notext -in expired.csr \
    -cert "$DIR/ca.pem" -keyfile "$DIR/ca.key" -extfile localhost.ext \
    -startdate 20200101000000Z -enddate 20210101000000Z -out "$DIR/server-expired.pem" )

# --- 6: environment for the tests --------------------------------------------
{
    echo "# generated by tests/mktoken.sh"
    echo "export SOFTHSM2_CONF=$(shq "$DIR/softhsm2.conf")"
    echo "export P11TEST_DIR=$(shq "$DIR")"
    echo "export P11TEST_PIN=$(shq "$PIN")"
    echo "export P11TEST_TOKEN=$(shq "$TOKEN")"
    echo "export P11TEST_MODULE=$(shq "$MODULE")"
} >"$DIR/env.sh"
