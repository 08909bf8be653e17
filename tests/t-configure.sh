#!/bin/bash
# ./configure names the Debian package to install when a dependency is
# missing (each one found hides the next: OpenSSL, p11-kit, inih, CUnit).
. "$top_srcdir/tests/lib.sh"

# a copy of the generated configure and what it reads, away from the
# configured tree
mkdir -p "$T/src/agent"
cp -r "$top_srcdir/configure" "$top_srcdir/config.h.in" \
    "$top_srcdir/Makefile.in" "$top_srcdir/build-aux" "$T/src/" ||
    skip "no generated configure (run autoreconf first)"
: >"$T/src/agent/main.c"
mkdir "$T/pc"
pcdir=$(pkg-config --variable pcfiledir openssl) || skip "no pkg-config"

# expect_missing PACKAGE MODULE: configure fails naming the package
expect_missing() {
	local out rc=0
	out=$(cd "$T/src" && PKG_CONFIG_LIBDIR=$T/pc ./configure 2>&1) || rc=$?
	[ "$rc" != 0 ] || fail "configure succeeded without $2"
	grep -q "$2.* not found: install the Debian package $1 (apt-get install $1)" <<<"$out" ||
	    fail "configure without $2 said: $(tail -n 3 <<<"$out")"
	ok "$(tail -n 1 <<<"$out")"
}
expect_missing libssl-dev openssl
cp "$pcdir"/openssl.pc "$pcdir"/libssl.pc "$pcdir"/libcrypto.pc "$T/pc/"
expect_missing libp11-kit-dev p11-kit-1
cp "$(pkg-config --variable pcfiledir p11-kit-1)/p11-kit-1.pc" "$T/pc/"
expect_missing libinih-dev inih
cp "$(pkg-config --variable pcfiledir inih)/inih.pc" "$T/pc/"
expect_missing libcunit1-dev cunit
