#!/bin/bash
# mkpki.sh - the server certificates of tests/t-server-trust.sh.
#
# Usage: tests/mkpki.sh DIR
#
# Makes, with the openssl CLI only (its own config, not the system's):
#   root.pem/.key        "trust root", self-signed; inter.pem/.key "trust
#                        intermediate" and inter2.pem/.key "revoked
#                        intermediate", both issued by the root
#   other-root.pem       an unrelated root ("other root"), other.pem/.key a
#                        server certificate it issued
#   good, expired, notyet, wrongname, revoked, rsa1024, sha1 (.pem/.key):
#                        server certificates issued by the intermediate,
#                        DNS:localhost, DNS:good.test, IP:127.0.0.1,
#                        IP:::1 (but
#                        wrongname: DNS:a.example, DNS:b.example); under2
#                        issued by the revoked intermediate; self.pem a
#                        self-signed one
#   *-chain.pem          a server certificate followed by its issuer
#   root.crl, inter.crl, inter2.crl: CRLs: the root revokes inter2, the
#                        intermediate revokes "revoked", inter2 nothing;
#                        inter-before.crl: the intermediate's, revoking
#                        nothing yet
#   hashed/, plain/      ca-dir directories with the root and the
#                        intermediate: openssl rehash names, and plain ones;
#                        hashcrl/: hashed/ and the CRLs as .r0 files
#   expired.crl          the intermediate's, its nextUpdate in 2020
#   good.ocsp, revoked.ocsp, forged.ocsp: DER OCSP responses for good
#                        (by a delegated responder, responder.pem), for
#                        revoked (by the intermediate itself), and for
#                        good signed by the other root (a bad signature);
#                        noeku.ocsp, leafsigned.ocsp: for good, signed by a
#                        server certificate of the intermediate (no
#                        OCSPSigning) and by good itself
# EC P-256 keys except rsa1024.  Prints nothing on success; exits 77 when
# openssl is missing.
set -euo pipefail

die() { echo "mkpki.sh: $*" >&2; exit 1; }
[ $# -eq 1 ] && [ -n "$1" ] || die "usage: $0 DIR"
command -v openssl >/dev/null 2>&1 || { echo "mkpki.sh: no openssl" >&2; exit 77; }
mkdir -p -- "$1"
D=$(cd -- "$1" && pwd)
cd "$D"
export OPENSSL_CONF=/dev/null
trap 'echo "mkpki.sh: failed at line $LINENO" >&2' ERR

run() {
	if ! "$@" >"$D/run.log" 2>&1; then
		cat "$D/run.log" >&2
		die "command failed: $*"
	fi
}
ec() { run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key"; }

# capki NAME: the openssl ca database and config of the CA NAME
capki() {
	mkdir -p "db-$1"
	: >"db-$1/index.txt"
	openssl rand -hex 8 >"db-$1/serial"
	echo 01 >"db-$1/crlnumber"
	cat >"db-$1/ca.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
default_ca = this
[this]
dir = $D/db-$1
database = \$dir/index.txt
new_certs_dir = \$dir
serial = \$dir/serial
crlnumber = \$dir/crlnumber
certificate = $D/$1.pem
private_key = $D/$1.key
default_md = sha256
default_crl_days = 30
policy = anything
unique_subject = no
copy_extensions = none
[anything]
commonName = supplied
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost, DNS:good.test, IP:127.0.0.1, IP:::1
[wrongname]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:a.example, DNS:b.example
[responder]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = critical, OCSPSigning
EOF
}

# root NAME CN
root() {
	ec "$1"
	run openssl req -new -x509 -key "$1.key" -subj "/CN=$2" -days 3650 \
	    -sha256 -addext "basicConstraints = critical, CA:TRUE" \
	    -addext "keyUsage = critical, keyCertSign, cRLSign" -out "$1.pem"
	capki "$1"
}

# sign CA NAME CN EXT [openssl ca options...]: NAME.pem from NAME.key
sign() {
	local ca=$1 name=$2 cn=$3 ext=$4
	shift 4
	run openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
	run openssl ca -config "db-$ca/ca.cnf" -batch -notext -in "$name.csr" \
	    -extensions "$ext" -out "$name.pem" "$@"
	rm -f "$name.csr"
}

root root "trust root"
root other-root "other root"
ec inter
sign root inter "trust intermediate" v3_ca -days 3650
capki inter
ec inter2
sign root inter2 "revoked intermediate" v3_ca -days 3650
capki inter2

for n in good revoked notyet expired sha1 wrongname under2 other responder; do
	ec "$n"
done
run openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out rsa1024.key
sign inter good localhost server -days 30
sign inter revoked localhost server -days 30
sign inter expired localhost server -startdate 20200101000000Z \
    -enddate 20210101000000Z
sign inter notyet localhost server -startdate 20990101000000Z \
    -enddate 20991231000000Z
sign inter wrongname a.example wrongname -days 30
sign inter rsa1024 localhost server -days 30
sign inter sha1 localhost server -days 30 -md sha1
sign inter responder "trust OCSP responder" responder -days 30
sign inter2 under2 localhost server -days 30
sign other-root other localhost server -days 30
ec self
run openssl req -new -x509 -key self.key -subj "/CN=self-signed localhost" \
    -days 30 -sha256 -addext "subjectAltName = DNS:localhost, IP:127.0.0.1" \
    -out self.pem

for n in good revoked expired notyet wrongname rsa1024 sha1; do
	cat "$n.pem" inter.pem >"$n-chain.pem"
done
cat under2.pem inter2.pem >under2-chain.pem

# a CRL of the intermediate from before the revocation, then the
# revocations and the CRLs
run openssl ca -config db-inter/ca.cnf -gencrl -out inter-before.crl
run openssl ca -config db-inter/ca.cnf -revoke revoked.pem \
    -crl_reason keyCompromise
run openssl ca -config db-root/ca.cnf -revoke inter2.pem -crl_reason cACompromise
run openssl ca -config db-inter/ca.cnf -gencrl -out inter.crl
run openssl ca -config db-root/ca.cnf -gencrl -out root.crl
run openssl ca -config db-inter2/ca.cnf -gencrl -out inter2.crl

# ca-dir: the same CAs, with and without hash names
mkdir -p hashed plain
cp root.pem plain/trust-root.pem
cp inter.pem plain/trust-intermediate.pem
for n in root inter; do
	cp "$n.pem" "hashed/$(openssl x509 -hash -noout -in "$n.pem").0"
done

# ocsp NAME SIGNER SIGNERKEY DB ISSUER OUT: a response for NAME.pem
ocsp() {
	run openssl ocsp -issuer "$5.pem" -cert "$1.pem" -no_nonce \
	    -reqout "$1.req"
	run openssl ocsp -index "db-$4/index.txt" -rsigner "$2.pem" \
	    -rkey "$3.key" -CA "$5.pem" -reqin "$1.req" -ndays 2 \
	    -respout "$6"
	rm -f "$1.req"
}
ocsp good responder responder inter inter good.ocsp
ocsp revoked inter inter inter inter revoked.ocsp
ocsp good other-root other-root inter inter forged.ocsp
# signed by a server certificate of the intermediate (no OCSPSigning),
# and by the server's own key
ocsp good wrongname wrongname inter inter noeku.ocsp
ocsp good good good inter inter leafsigned.ocsp

# a ca-dir holding the CRLs too (hashed .r0 names)
mkdir -p hashcrl
cp hashed/* hashcrl/
for n in inter root; do
	cp "$n.crl" "hashcrl/$(openssl crl -hash -noout -in "$n.crl").r0"
done
# a CRL of the intermediate whose nextUpdate passed
run openssl ca -config db-inter/ca.cnf -gencrl \
    -crl_lastupdate 20200101000000Z -crl_nextupdate 20200201000000Z \
    -out expired.crl
rm -f run.log
