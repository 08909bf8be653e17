/*
 * Unit tests: the policy matchers and parser (agent/policy.c): host
 * patterns, IPv4 and IPv6 ranges, ports; files with errors name
 * file:line and what is wrong.
 */
#include "config.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "p11agent/policy.h"
#include "tests.h"

static int
setup(void)
{
	return test_dir_make();
}

static int
teardown(void)
{
	return test_dir_remove();
}

/* parses entry, matches host:port: 1, 0, or -1 if entry did not parse */
static int
match(const char *entry, const char *host, int port)
{
	struct policy_host	 h;
	char			 err[300];
	int			 r;

	if (policy_host_parse(entry, &h, err, sizeof(err)) != 0)
		return -1;
	r = policy_host_match(&h, host, port);
	policy_host_clear(&h);
	return r;
}

static int
parse_err(const char *entry, const char *want)
{
	struct policy_host	 h;
	char			 err[300] = "";

	if (policy_host_parse(entry, &h, err, sizeof(err)) == 0) {
		policy_host_clear(&h);
		return 0;
	}
	return strstr(err, want) != NULL;
}

static void
test_names(void)
{
	CU_ASSERT_EQUAL(match("api.bank.example:443", "api.bank.example", 443), 1);
	CU_ASSERT_EQUAL(match("api.bank.example:443", "API.Bank.Example.", 443), 1);
	CU_ASSERT_EQUAL(match("api.bank.example:443", "api.bank.example", 444), 0);
	CU_ASSERT_EQUAL(match("api.bank.example:443", "xapi.bank.example", 443), 0);
	CU_ASSERT_EQUAL(match("*.bank.example:443", "www.bank.example", 443), 1);
	CU_ASSERT_EQUAL(match("*.bank.example:443", "a.b.bank.example", 443), 1);
	CU_ASSERT_EQUAL(match("*.bank.example:443", "bank.example", 443), 0);
	CU_ASSERT_EQUAL(match("*.bank.example:443", "evilbank.example", 443), 0);
	CU_ASSERT_EQUAL(match("*.bank.example:443", "bank.example.evil", 443), 0);
	/* a name pattern never matches an address, nor a range a name */
	CU_ASSERT_EQUAL(match("*:443", "10.0.0.1", 443), 0);
	CU_ASSERT_EQUAL(match("*:443", "anything.example", 443), 1);
	CU_ASSERT_EQUAL(match("0.0.0.0/0:443", "localhost", 443), 0);
	CU_ASSERT(parse_err("bad_host!:443", "a host pattern has"));
	/* digits and wildcards would match names only (10.evil.example) */
	CU_ASSERT(parse_err("10.*:443", "an address pattern matches names only"));
	CU_ASSERT(parse_err("1?2.168.*.*:443", "an address pattern matches names only"));
	CU_ASSERT(parse_err("nohost", "is not HOST:PORTS"));
	CU_ASSERT(parse_err(":443", "is not HOST:PORTS"));
}

static void
test_v4(void)
{
	CU_ASSERT_EQUAL(match("10.0.0.0/8:443", "10.200.3.4", 443), 1);
	CU_ASSERT_EQUAL(match("10.0.0.0/8:443", "11.0.0.1", 443), 0);
	CU_ASSERT_EQUAL(match("192.168.1.7:443", "192.168.1.7", 443), 1);
	CU_ASSERT_EQUAL(match("192.168.1.7:443", "192.168.1.8", 443), 0);
	CU_ASSERT_EQUAL(match("192.168.1.128/25:443", "192.168.1.200", 443), 1);
	CU_ASSERT_EQUAL(match("192.168.1.128/25:443", "192.168.1.127", 443), 0);
	CU_ASSERT_EQUAL(match("0.0.0.0/0:443", "8.8.8.8", 443), 1);
	CU_ASSERT_EQUAL(match("10.0.0.0/8:443", "::ffff:10.0.0.1", 443), 0);
	CU_ASSERT(parse_err("10.0.0.1/8:443", "bits are set past the /8"));
	CU_ASSERT(parse_err("10.0.0.0/33:443", "prefix length must be 0 to 32"));
	CU_ASSERT(parse_err("10.0.0.0/:443", "prefix length"));
	CU_ASSERT(parse_err("300.0.0.0/8:443", "is not an IPv4 address"));
	CU_ASSERT(parse_err("10.0.0:443", "is not an IPv4 address"));
}

static void
test_v6(void)
{
	CU_ASSERT_EQUAL(match("[2001:db8::/32]:443", "2001:db8:1::5", 443), 1);
	CU_ASSERT_EQUAL(match("[2001:db8::/32]:443", "2001:db9::5", 443), 0);
	CU_ASSERT_EQUAL(match("[::1]:443", "::1", 443), 1);
	CU_ASSERT_EQUAL(match("[::1]:443", "127.0.0.1", 443), 0);
	CU_ASSERT_EQUAL(match("[2001:db8::/33]:*", "2001:db8:7fff::1", 1), 1);
	CU_ASSERT_EQUAL(match("[2001:db8::/33]:*", "2001:db8:8000::1", 1), 0);
	CU_ASSERT_EQUAL(match("[::/0]:443", "fe80::1", 443), 1);
	CU_ASSERT_EQUAL(match("[::/0]:443", "10.0.0.1", 443), 0);
	CU_ASSERT(parse_err("2001:db8::1:443", "written in brackets"));
	CU_ASSERT(parse_err("[2001:db8::1/64]:443", "bits are set past"));
	CU_ASSERT(parse_err("[2001:db8::/129]:443", "0 to 128"));
	CU_ASSERT(parse_err("[2001:db8::]443", "is not HOST:PORTS"));
	CU_ASSERT(parse_err("[10.0.0.0/8]:443", "is not an IPv6 address"));
}

static void
test_ports(void)
{
	CU_ASSERT_EQUAL(match("a.example:*", "a.example", 1), 1);
	CU_ASSERT_EQUAL(match("a.example:*", "a.example", 65535), 1);
	CU_ASSERT_EQUAL(match("a.example:8000-8100", "a.example", 8000), 1);
	CU_ASSERT_EQUAL(match("a.example:8000-8100", "a.example", 8100), 1);
	CU_ASSERT_EQUAL(match("a.example:8000-8100", "a.example", 7999), 0);
	CU_ASSERT_EQUAL(match("a.example:8000-8100", "a.example", 8101), 0);
	CU_ASSERT(parse_err("a.example:0", "the port must be"));
	CU_ASSERT(parse_err("a.example:65536", "the port must be"));
	CU_ASSERT(parse_err("a.example:9-1", "the port must be"));
	CU_ASSERT(parse_err("a.example:80-", "the port must be"));
	CU_ASSERT(parse_err("a.example:http", "the port must be"));
	CU_ASSERT(parse_err("a.example:-5", "the port must be"));
}

/* A file's error: 1 if loading it fails with want in the message. */
static int
file_err(const char *text, const char *want)
{
	struct policy_set	*set = NULL;
	char			 err[1024] = "";
	const char		*path = test_write("t.policy", text, 0644);
	int			 r;

	r = policy_load_file(path, &set, err, sizeof(err));
	policy_set_free(set);
	if (r == 0 || strstr(err, want) == NULL) {
		fprintf(stderr, "\n  want '%s', got '%s'\n", want, err);
		return 0;
	}
	return 1;
}

static void
test_files(void)
{
	struct policy_set	*set = NULL;
	char			 err[1024] = "";
	const char		*path;

	path = test_write("ok.policy", "# two\n[policy a]\nkey = pkcs11:*\n"
	    "connect = *.a.example:443, 10.0.0.0/8:*\nconnect = [::1]:1-9\n"
	    "allow-users = 0, root\nallow-programs = /usr/bin/*\n"
	    "[policy b]\ncert-sha256 = 00:11:22:33:44:55:66:77:88:99:aa:bb:"
	    "cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\n"
	    "pin-sources = pinentry, env\npin-cache-max = 0\n"
	    "on-removal = close\nocsp = require\ntls-min = 1.3\n", 0644);
	CU_ASSERT_EQUAL_FATAL(policy_load_file(path, &set, err, sizeof(err)),
	    0);
	CU_ASSERT_EQUAL(policy_count(set), 2);
	policy_set_free(set);
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:*\nconnect = 10.0.0.1/8:443\n",
	    "t.policy:3: [policy a] connect: '10.0.0.1/8': bits are set"));
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:*\nfrob = 1\n",
	    "t.policy:3: [policy a] frob: unknown key"));
	CU_ASSERT(file_err("[policy a\nkey = pkcs11:*\n",
	    "t.policy:1: syntax error"));
	CU_ASSERT(file_err("[policy a]\nconnect = a.example:443\n",
	    "t.policy:1: [policy a]: no selector"));
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:*\n",
	    "t.policy:1: [policy a]: it allows everything"));
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:[x\ntls-min = 1.3\n",
	    "t.policy:2: [policy a] key: 'pkcs11:[x': '[' opens"));
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:*\ntls-min = 1.1\n",
	    "t.policy:3: [policy a] tls-min: '1.1' must be 1.2 or 1.3"));
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:*\ntls-min = 1.3\n"
	    "tls-min = 1.2\n", "t.policy:4: [policy a] tls-min: given twice"));
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:*\nallow-users = "
	    "no-such-user-p11a\n", "'no-such-user-p11a' is not a user"));
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:*\npin-sources = typed\n",
	    "'typed' is not one of pinentry"));
	CU_ASSERT(file_err("[policy a]\ncert-sha256 = abcd\ntls-min = 1.3\n",
	    "'abcd' is not a SHA-256 in hex"));
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:*\nallow-programs = wget\n",
	    "'wget' must be an absolute path"));
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:*\ntls-min = 1.3\n"
	    "[policy a]\nkey = pkcs11:*\n", "[policy a]: defined twice"));
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:*\nconnect = ,\n",
	    "t.policy:3: [policy a] connect: an empty list"));
	CU_ASSERT(file_err("[policy a]\nkey = pkcs11:*\nallow-programs = , ,\n",
	    "t.policy:3: [policy a] allow-programs: an empty list"));
	CU_ASSERT(file_err("key = pkcs11:*\n", "outside of any section"));
	/* a file others may write is no policy */
	path = test_write("w.policy", "[policy a]\nkey = pkcs11:*\n"
	    "tls-min = 1.3\n", 0666);
	CU_ASSERT_EQUAL(chmod(path, 0666), 0);
	set = NULL;
	CU_ASSERT_NOT_EQUAL(policy_load_file(path, &set, err, sizeof(err)), 0);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "w.policy: writable by every user "
	    "(mode 0666): not read (chmod go-w)"));
	policy_set_free(set);
	set = NULL;
	CU_ASSERT(file_err("[tunnel a]\nkey = pkcs11:*\n", "unknown section"));
}

int
suite_policy(void)
{
	CU_pSuite	 s = CU_add_suite("policy", setup, teardown);

	if (s == NULL ||
	    CU_add_test(s, "connect: host patterns", test_names) == NULL ||
	    CU_add_test(s, "connect: IPv4 addresses and CIDR", test_v4) ==
	    NULL ||
	    CU_add_test(s, "connect: IPv6 addresses and CIDR", test_v6) ==
	    NULL ||
	    CU_add_test(s, "connect: ports", test_ports) == NULL ||
	    CU_add_test(s, "files and their errors", test_files) == NULL)
		return -1;
	return 0;
}
