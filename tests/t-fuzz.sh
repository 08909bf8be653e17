#!/bin/bash
# The parsers of hostile or careless input (the configuration, what the
# agent reads from a token helper, the requests a helper decodes, the
# administrator's policies: the shipped ones and a few bad ones) survive
# their corpus and 2,000 deterministic mutations of each sample (under
# ASan/UBSan in CI).
. "$top_srcdir/tests/lib.sh"
for t in config wire req policy; do
	out=$("$top_builddir/tests/fuzz-$t" -m 2000 "$top_srcdir/tests/fuzz/corpus-$t") ||
	    fail "fuzz-$t: $out"
	ok "fuzz-$t: $out"
done
