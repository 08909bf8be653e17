/*
 * Unit tests: configuration parsing (agent/config.c).  Each bad input
 * must give a message naming file:line and the key.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>

#include "p11agent/config.h"
#include "p11agent/error.h"
#include "tests.h"

#define GOOD \
	"# a comment\n" \
	"[identity corp]\n" \
	"key = pkcs11:token=corp;object=auth;type=private\n" \
	"pin = file:/home/alice/pin\n" \
	"\n" \
	"[tunnel api]\n" \
	"listen = tcp:127.0.0.1:8443\n" \
	"listen = unix:/run/user/1000/p11agent/api.sock\n" \
	"connect = api.example:443\n" \
	"identity = corp\n" \
	"ca = /etc/ssl/corp.pem\n" \
	"[tunnel second]\n" \
	"listen = tcp:[::1]:0\n" \
	"connect = 10.1.2.3:443\n" \
	"identity = corp\n"

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

static void
test_good(void)
{
	struct config	*cfg = NULL;
	char		 err[CONFIG_MAX_ERR];
	const char	*path = test_write("good.conf", GOOD, 0644);

	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_STRING_EQUAL(cfg->tunnels->name, "api");
	CU_ASSERT_STRING_EQUAL(cfg->tunnels->next->name, "second");
	CU_ASSERT_EQUAL(cfg->tunnels->nlisten, 2);
	CU_ASSERT_EQUAL(cfg->tunnels->listen[0].kind, LISTEN_TCP);
	CU_ASSERT_STRING_EQUAL(cfg->tunnels->listen[0].port, "8443");
	CU_ASSERT_EQUAL(cfg->tunnels->listen[1].kind, LISTEN_UNIX);
	CU_ASSERT_STRING_EQUAL(cfg->tunnels->connect_host, "api.example");
	CU_ASSERT_STRING_EQUAL(cfg->tunnels->connect_port, "443");
	CU_ASSERT_PTR_EQUAL(cfg->tunnels->identity, cfg->identities);
	/* defaults filled in after parsing */
	CU_ASSERT_EQUAL(cfg->tunnels->tls_min, TLS1_2_VERSION);
	CU_ASSERT_EQUAL(cfg->tunnels->connect_timeout, 10);
	CU_ASSERT_EQUAL(cfg->identities->sign_timeout, 30);
	CU_ASSERT_EQUAL(cfg->identities->max_handshakes, 4);
	config_free(cfg);
}

/* Loads text; the error must contain each of want[]. */
static void
expect_error(const char *text, const char *want1, const char *want2)
{
	struct config	*cfg = NULL;
	char		 err[CONFIG_MAX_ERR];
	const char	*path = test_write("bad.conf", text, 0644);

	CU_ASSERT_EQUAL(config_load(path, &cfg, err, sizeof(err)),
	    P11A_ERR_CONFIG);
	CU_ASSERT_PTR_NULL(cfg);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, want1));
	if (want2 != NULL)
		CU_ASSERT_PTR_NOT_NULL(strstr(err, want2));
	if (strstr(err, want1) == NULL ||
	    (want2 != NULL && strstr(err, want2) == NULL))
		fprintf(stderr, "\n  got: %s\n", err);
}

/* The error of text does not contain secret. */
static void
expect_not(const char *text, const char *secret)
{
	struct config	*cfg = NULL;
	char		 err[CONFIG_MAX_ERR];
	const char	*path = test_write("bad.conf", text, 0644);

	CU_ASSERT_EQUAL(config_load(path, &cfg, err, sizeof(err)),
	    P11A_ERR_CONFIG);
	CU_ASSERT_PTR_NULL(strstr(err, secret));
}

static void
test_errors(void)
{
	struct config	*cfg = NULL;
	char		 err[CONFIG_MAX_ERR];
	const char	*path;

	expect_error(GOOD "colour = blue\n", "bad.conf:16:",
	    "[tunnel second] colour: unknown key");
	expect_error("[identity a]\nkey = pkcs11:token=x\n", "bad.conf:",
	    "no [tunnel NAME] section");
	expect_error("[identity a]\nkey = file:/etc/key.pem\n"
	    "[tunnel t]\nlisten = tcp:127.0.0.1:1\n", "bad.conf:2:",
	    "key: 'file:/etc/key.pem' is not a pkcs11: URI");
	expect_error("[tunnel t]\nlisten = tcp:127.0.0.1:1\n"
	    "connect = h:1\nidentity = nope\n", "bad.conf:4:",
	    "no [identity nope] section");
	expect_error("[tunnel t]\nconnect = h:1\n", "bad.conf:1:",
	    "missing listen");
	expect_error("[identity a]\nkey = pkcs11:token=x\n[tunnel t]\n"
	    "listen = tcp:127.0.0.1:1\nidentity = a\n", "bad.conf:3:",
	    "missing connect");
	expect_error("[tunnel t]\nlisten = ftp:x\n", "bad.conf:2:",
	    "listen: 'ftp:x' is neither");
	expect_error("[tunnel t]\nlisten = tcp:localhost:80\n", "bad.conf:2:",
	    "with an IP address");
	expect_error("[tunnel t]\nconnect = nohost\n", "bad.conf:2:",
	    "connect: 'nohost' is not HOST:PORT");
	expect_error("[tunnel t]\ntls-min = 1.0\n", "bad.conf:2:",
	    "tls-min: '1.0' must be 1.2 or 1.3");
	expect_error("[tunnel t]\nidle-timeout = soon\n", "bad.conf:2:",
	    "idle-timeout");
	/* a PIN written as the value is not echoed */
	expect_error("[identity a]\npin = hunter2\n", "bad.conf:2:",
	    "pin: not a PIN source (the value is not shown: it may be the "
	    "PIN); it must be pinentry, file:/ABSOLUTE/PATH");
	expect_not("[identity a]\npin = hunter2\n", "hunter2");
	expect_error("[vpn x]\nkey = 1\n", "bad.conf:1:", "unknown section");
	expect_error("key = 1\n", "bad.conf:1:", "outside of any section");
	expect_error("[tunnel t]\nthis line has no equals sign\n",
	    "bad.conf:2:", "syntax error");
	expect_error("[identity a]\nkey = pkcs11:token=x\nkey = pkcs11:y\n",
	    "bad.conf:3:", "key: given twice");
	/* a number given twice, also 0 then another: refused */
	expect_error("[identity a]\nkey = pkcs11:token=x\npin-cache = 0\n"
	    "pin-cache = 30\n", "bad.conf:4:", "[identity a] pin-cache: given "
	    "twice");
	expect_error("[identity a]\nkey = pkcs11:token=x\nmax-handshakes = 0\n",
	    "bad.conf:3:", "[identity a] max-handshakes: '0' is not a number "
	    "between 1 and 64");
	expect_error("[identity a]\nkey = pkcs11:token=x\nmax-handshakes = 2\n"
	    "max-handshakes = 3\n", "bad.conf:4:", "max-handshakes: given "
	    "twice");
	expect_error("[agent]\ntoken-poll = 100\ntoken-poll = 200\n",
	    "bad.conf:3:", "[agent] token-poll: given twice");
	expect_error("[identity a]\nkey = pkcs11:token=x\npin-cache = "
	    "forever\n", "bad.conf:3:", "pin-cache: 'forever' is not a number "
	    "of seconds");
	expect_error("[identity a]\nkey = pkcs11:token=x\npinentry-program = "
	    "bin/pinentry\n", "bad.conf:3:", "pinentry-program: 'bin/pinentry' "
	    "must be an absolute path or a program name");
	expect_error("[identity a]\npin = none\n[tunnel t]\n"
	    "listen = tcp:127.0.0.1:1\nconnect = h:1\nidentity = a\n",
	    "bad.conf:1:", "[identity a]: missing key");
	expect_error("[tunnel t]\nkey = pkcs11:x\n", "bad.conf:2:",
	    "belongs in a [identity NAME] section");
	/* inih merges [x] ... [x] in a row into one section */
	expect_error("[identity a]\nkey = pkcs11:token=x\n[identity a]\n"
	    "pin = none\n", "bad.conf:3:", "[identity a]: defined twice "
	    "(also line 1)");
	expect_error(GOOD "[agent]\nmax-connections = 10\n[agent]\n"
	    "max-connections = 20\n", "bad.conf:18:", "[agent]: defined twice");
	expect_error(GOOD "[agent]\nmax-connections = 0\n", "bad.conf:17:",
	    "max-connections: '0' is not a number between 1 and 65536");
	expect_error(GOOD "[agent]\nmodule-allow = lib/*.so\n", "bad.conf:17:",
	    "module-allow: 'lib/*.so' must be an absolute path pattern");
	expect_error(GOOD "[agent]\nconnect = h:1\n", "bad.conf:17:",
	    "[agent] connect: this key belongs in a [tunnel NAME] section");
	/* names: at most 40 (inih would cut a longer section name) */
	expect_error("[identity a23456789012345678901234567890123456789012345]\n"
	    "key = pkcs11:x\n", "bad.conf:1:", "the section name is longer "
	    "than 49 characters (names: at most 40)");
	expect_error("[tunnel a2345678901234567890123456789012345678901]\n"
	    "connect = h:1\n", "bad.conf:1:", "the name must be 1-40");
	/* one address, one listen line (tcp:HOST:0 excepted) */
	expect_error(GOOD "[tunnel third]\nlisten = tcp:127.0.0.1:8443\n"
	    "connect = h:1\nidentity = corp\n", "bad.conf:17:",
	    "[tunnel third] listen: the same address as [tunnel api] on line 7");
	expect_error(GOOD "[tunnel third]\nlisten = tcp:[::1]:9\n"
	    "listen = unix:/run/user/1000/p11agent/api.sock\n"
	    "connect = h:1\nidentity = corp\n", "bad.conf:18:",
	    "[tunnel third] listen: the same address as [tunnel api] on line 8");
	path = test_write("ok.conf", GOOD "[tunnel third]\nlisten = "
	    "tcp:[::1]:0\nconnect = h:1\nidentity = corp\n", 0644);
	CU_ASSERT_EQUAL(config_load(path, &cfg, err, sizeof(err)), 0);
	config_free(cfg);
}

/* The [agent] section and the limits. */
static void
test_agent_section(void)
{
	struct config	*cfg = NULL;
	char		 err[CONFIG_MAX_ERR];
	const char	*path;

	path = test_write("agent.conf", GOOD "max-connections = 7\n"
	    "[agent]\nmax-connections = 100\n"
	    "module-allow = /opt/a/*.so, /opt/b/lib*.so\n"
	    "module-allow = /srv/c.so\n", 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg->agent.max_connections, 100);
	CU_ASSERT_EQUAL(cfg->tunnels->next->max_connections, 7);
	CU_ASSERT_EQUAL(cfg->tunnels->max_connections, CONFIG_DEFAULT_CONNS);
	CU_ASSERT_EQUAL_FATAL(cfg->agent.nmodule_allow, 3);
	CU_ASSERT_STRING_EQUAL(cfg->agent.module_allow[1], "/opt/b/lib*.so");
	CU_ASSERT_STRING_EQUAL(cfg->agent.module_allow[2], "/srv/c.so");
	config_free(cfg);
	/* without the section: the defaults */
	path = test_write("plain.conf", GOOD, 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg->agent.max_connections, CONFIG_DEFAULT_CONNS);
	CU_ASSERT_EQUAL(cfg->agent.nmodule_allow, 0);
	config_free(cfg);
}

/* Card removal: on-removal, on-reinsert, [agent] token-poll. */
static void
test_removal(void)
{
	struct config	*cfg = NULL;
	char		 err[CONFIG_MAX_ERR];
	const char	*path;

	path = test_write("plain.conf", GOOD, 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg->identities->on_removal, CFG_REMOVAL_KEEP);
	CU_ASSERT_EQUAL(cfg->identities->on_reinsert, CFG_REINSERT_SAME);
	CU_ASSERT_EQUAL(cfg->agent.token_poll_ms, CONFIG_DEFAULT_TOKEN_POLL);
	config_free(cfg);
	path = test_write("removal.conf", "[agent]\ntoken-poll = 50\n"
	    "[identity corp]\nkey = pkcs11:token=corp\non-removal = close\n"
	    "on-reinsert = any\n[tunnel t]\nlisten = tcp:127.0.0.1:1\n"
	    "connect = h:1\nidentity = corp\n", 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg->identities->on_removal, CFG_REMOVAL_CLOSE);
	CU_ASSERT_EQUAL(cfg->identities->on_reinsert, CFG_REINSERT_ANY);
	CU_ASSERT_EQUAL(cfg->agent.token_poll_ms, 50);
	config_free(cfg);
	expect_error("[identity a]\nkey = pkcs11:token=x\non-removal = drop\n",
	    "bad.conf:3:", "[identity a] on-removal: 'drop' must be keep or "
	    "close");
	expect_error("[identity a]\nkey = pkcs11:token=x\non-reinsert = any\n"
	    "on-reinsert = any\n", "bad.conf:4:", "[identity a] on-reinsert: "
	    "given twice");
	expect_error("[identity a]\nkey = pkcs11:token=x\non-reinsert = "
	    "serial\n", "bad.conf:3:", "must be same-card or any");
	expect_error(GOOD "[agent]\ntoken-poll = 10\n", "bad.conf:17:",
	    "[agent] token-poll: '10' is not a number of milliseconds between "
	    "50 and 60000");
	expect_error(GOOD "token-poll = 100\n", "bad.conf:16:",
	    "[tunnel second] token-poll: this key belongs in a [agent] "
	    "section");
}

/* allow-users / allow-groups: names (resolved at load) and numbers. */
static void
test_allow(void)
{
	struct config	*cfg = NULL;
	char		 err[CONFIG_MAX_ERR], text[4096];
	const char	*path;
	int		 i, n;

	path = test_write("allow.conf", GOOD "allow-users = root, 1001\t1002\n"
	    "allow-users = 4294967294\n"
	    "allow-groups = root,27\n", 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	/* the first tunnel has none: only the agent's uid */
	CU_ASSERT_EQUAL(cfg->tunnels->nallow_users, 0);
	CU_ASSERT_EQUAL(cfg->tunnels->nallow_groups, 0);
	CU_ASSERT_EQUAL_FATAL(cfg->tunnels->next->nallow_users, 4);
	CU_ASSERT_EQUAL(cfg->tunnels->next->allow_users[0], 0);
	CU_ASSERT_EQUAL(cfg->tunnels->next->allow_users[1], 1001);
	CU_ASSERT_EQUAL(cfg->tunnels->next->allow_users[2], 1002);
	CU_ASSERT_EQUAL(cfg->tunnels->next->allow_users[3], 4294967294U);
	CU_ASSERT_EQUAL_FATAL(cfg->tunnels->next->nallow_groups, 2);
	CU_ASSERT_EQUAL(cfg->tunnels->next->allow_groups[0], 0);
	CU_ASSERT_EQUAL(cfg->tunnels->next->allow_groups[1], 27);
	config_free(cfg);

	expect_error(GOOD "allow-users = root, no-such-user-p11a\n",
	    "bad.conf:16:", "[tunnel second] allow-users: "
	    "'no-such-user-p11a' is not a user known on this system");
	expect_error(GOOD "allow-groups = no-such-group-p11a\n",
	    "bad.conf:16:", "[tunnel second] allow-groups: "
	    "'no-such-group-p11a' is not a group known on this system");
	/* (uid_t)-1 is no user; nor is a number past 32 bits */
	expect_error(GOOD "allow-users = 4294967295\n", "bad.conf:16:",
	    "allow-users: '4294967295' is not a user");
	expect_error(GOOD "allow-users = 99999999999999999999\n",
	    "bad.conf:16:", "allow-users: '99999999999999999999'");
	expect_error(GOOD "allow-users = -1\n", "bad.conf:16:",
	    "allow-users: '-1' is not a user");
	expect_error(GOOD "allow-groups = , \n", "bad.conf:16:",
	    "allow-groups: empty value");
	expect_error("[identity a]\nallow-users = root\n", "bad.conf:2:",
	    "belongs in a [tunnel NAME] section");
	n = snprintf(text, sizeof(text), "%sallow-users =", GOOD);
	for (i = 0; i <= CONFIG_MAX_ALLOW; i++)
		n += snprintf(text + n, sizeof(text) - n, " %d", 2000 + i);
	snprintf(text + n, sizeof(text) - n, "\n");
	expect_error(text, "bad.conf:16:", "allow-users: at most 16");
}

static void
test_long_line(void)
{
	char	 text[600];

	snprintf(text, sizeof(text), "[identity a]\nkey = pkcs11:token=%0300d"
	    "\n", 0);
	expect_error(text, "bad.conf:2:", "line longer than");
}

static void
test_missing_file(void)
{
	struct config	*cfg = NULL;
	char		 err[CONFIG_MAX_ERR];

	CU_ASSERT_EQUAL(config_load("/nonexistent/agent.conf", &cfg, err,
	    sizeof(err)), P11A_ERR_CONFIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/agent.conf: No such"));
}

/* pin = SOURCE in an otherwise good file: 0 or the error */
static int
load_pin(const char *pin, char *err, size_t errlen)
{
	struct config	*cfg = NULL;
	char		 text[1024];
	int		 r;

	snprintf(text, sizeof(text), "[identity a]\nkey = pkcs11:token=x\n"
	    "pin = %s\n[tunnel t]\nlisten = tcp:127.0.0.1:1\nconnect = h:1\n"
	    "identity = a\n", pin);
	if ((r = config_load(test_write("pin.conf", text, 0644), &cfg, err,
	    errlen)) == 0) {
		CU_ASSERT_STRING_EQUAL(cfg->identities->pin, pin);
		CU_ASSERT_PTR_NULL(cfg->identities->pin_src);
	}
	config_free(cfg);
	return r;
}

static void
test_pin_sources(void)
{
	static const char	*good[] = { "fd:3", "fd:9", "fd:65535",
	    "systemd-ask-password", "env:PIN", "file:/p", "none" };
	static const char	*bad[] = { "fd:", "fd:2", "fd:0", "fd:-4",
	    "fd:3x", "fd:65536", "fd: 3", "fd:99999999999999999999",
	    "systemd-ask-password:x", "systemd", "FD:3" };
	char			 err[CONFIG_MAX_ERR];
	size_t			 i;

	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		CU_ASSERT_EQUAL(load_pin(good[i], err, sizeof(err)), 0);
	}
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		CU_ASSERT_EQUAL(load_pin(bad[i], err, sizeof(err)),
		    P11A_ERR_CONFIG);
		CU_ASSERT_PTR_NOT_NULL(strstr(err, "pin.conf:3:"));
		CU_ASSERT_PTR_NOT_NULL(strstr(err, "fd:N (N >= 3), "
		    "systemd-ask-password or none"));
	}
}

static void
test_hostport(void)
{
	char	*h = NULL, *p = NULL;

	CU_ASSERT_EQUAL(config_split_hostport("[::1]:443", &h, &p), 0);
	CU_ASSERT(h && p && strcmp(h, "::1") == 0 && strcmp(p, "443") == 0);
	free(h);
	free(p);
	CU_ASSERT_EQUAL(config_split_hostport("host:99999", &h, &p), -1);
	CU_ASSERT_EQUAL(config_split_hostport(":443", &h, &p), -1);
	CU_ASSERT_EQUAL(config_split_hostport("[::1]443", &h, &p), -1);
}

/* listen = systemd:NAME (socket activation, agent/sd.c) */
#define SD_HEAD	"[identity a]\nkey = pkcs11:token=x\n[tunnel t]\n" \
	"connect = h:1\nidentity = a\n"
static void
test_systemd_listen(void)
{
#ifdef HAVE_LIBSYSTEMD
	struct config	*cfg = NULL;
	char		 err[CONFIG_MAX_ERR];
	const char	*path = test_write("sd.conf", SD_HEAD
	    "listen = systemd:web.1\nlisten = tcp:127.0.0.1:0\n", 0644);

	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg->tunnels->listen[0].kind, LISTEN_SYSTEMD);
	CU_ASSERT_STRING_EQUAL(cfg->tunnels->listen[0].fdname, "web.1");
	CU_ASSERT_EQUAL(cfg->tunnels->listen[1].kind, LISTEN_TCP);
	config_free(cfg);
	expect_error(SD_HEAD "listen = systemd:\n", "bad.conf:6:",
	    "1 to 255 printable characters, no blank and no ':'");
	expect_error(SD_HEAD "listen = systemd:a:b\n", "bad.conf:6:",
	    "'systemd:a:b': the name must be a FileDescriptorName=");
	expect_error(SD_HEAD "listen = systemd:control\n", "bad.conf:6:",
	    "systemd:control is the control socket's name");
	expect_error(SD_HEAD "listen = systemd:w\n[tunnel u]\n"
	    "connect = h:1\nidentity = a\nlisten = tcp:127.0.0.1:0\n"
	    "listen = systemd:w\n", "bad.conf:11:", "[tunnel u] listen: "
	    "systemd:w is taken already by [tunnel t] (line 6)");
#else
	expect_error(SD_HEAD "listen = systemd:web\n", "bad.conf:6:",
	    "p11agent was built without libsystemd");
#endif
}

/* [agent] metrics and allow-remote-listen (agent/metrics.c). */
static void
test_metrics(void)
{
	struct config	*cfg = NULL;
	char		 err[CONFIG_MAX_ERR];
	const char	*path;

	path = test_write("m.conf", "[agent]\nmetrics = tcp:127.0.0.1:9100\n"
	    "allow-remote-listen = yes\n\n" GOOD, 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg->agent.metrics.kind, LISTEN_TCP);
	CU_ASSERT_STRING_EQUAL(cfg->agent.metrics.host, "127.0.0.1");
	CU_ASSERT_STRING_EQUAL(cfg->agent.metrics.port, "9100");
	CU_ASSERT_EQUAL(cfg->agent.metrics.line, 2);
	CU_ASSERT_EQUAL(cfg->agent.allow_remote, 1);
	CU_ASSERT_EQUAL(cfg->tunnels->allow_remote, 0);
	config_free(cfg);
	cfg = NULL;
	path = test_write("m.conf", "[agent]\nmetrics = unix:/run/m.sock\n\n"
	    GOOD, 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg->agent.metrics.kind, LISTEN_UNIX);
	CU_ASSERT_STRING_EQUAL(cfg->agent.metrics.path, "/run/m.sock");
	CU_ASSERT_EQUAL(cfg->agent.allow_remote, 0);
	config_free(cfg);
	cfg = NULL;
	path = test_write("m.conf", GOOD, 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg->agent.metrics.kind, 0);
	config_free(cfg);
	expect_error("[agent]\nmetrics = http://127.0.0.1:9100\n",
	    "bad.conf:2:", "[agent] metrics: 'http://127.0.0.1:9100' is neither "
	    "tcp:ADDRESS:PORT nor unix:/ABSOLUTE/PATH");
	expect_error("[agent]\nmetrics = tcp:localhost:9100\n", "bad.conf:2:",
	    "[agent] metrics: 'tcp:localhost:9100' is not tcp:ADDRESS:PORT");
	expect_error("[agent]\nmetrics = tcp:127.0.0.1:1\nmetrics = "
	    "unix:/x\n", "bad.conf:3:", "[agent] metrics: given twice (also "
	    "line 2)");
	expect_error("[agent]\nallow-remote-listen = maybe\n", "bad.conf:2:",
	    "allow-remote-listen");
	expect_error("[agent]\nallow-remote-listen = yes\n"
	    "allow-remote-listen = no\n", "bad.conf:3:", "[agent] "
	    "allow-remote-listen: given twice");
	expect_error("[tunnel t]\nmetrics = tcp:127.0.0.1:1\n", "bad.conf:2:",
	    "[tunnel t] metrics: this key belongs in a [agent] section");
}

/* Server trust: ca-dir, crl (repeatable), ocsp, alpn (wire format). */
static void
test_trust(void)
{
	struct config		*cfg = NULL;
	struct cfg_tunnel	*t;
	char			 err[CONFIG_MAX_ERR], text[4096];
	const char		*path;
	int			 i, n;

	path = test_write("trust.conf", GOOD "ca-dir = /etc/ssl/certs\n"
	    "crl = /etc/corp/root.crl\ncrl = /etc/corp/inter.crl\n"
	    "ocsp = require\nalpn = h2, http/1.1\n", 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	t = cfg->tunnels;
	/* defaults: no directory, no CRL, staples asked for, no ALPN */
	CU_ASSERT_PTR_NULL(t->ca_dir);
	CU_ASSERT_EQUAL(t->ncrl, 0);
	CU_ASSERT_EQUAL(t->ocsp, CFG_OCSP_REQUEST);
	CU_ASSERT_EQUAL(t->alpn_len, 0);
	t = t->next;
	CU_ASSERT_STRING_EQUAL(t->ca_dir, "/etc/ssl/certs");
	CU_ASSERT_EQUAL_FATAL(t->ncrl, 2);
	CU_ASSERT_STRING_EQUAL(t->crl[0], "/etc/corp/root.crl");
	CU_ASSERT_STRING_EQUAL(t->crl[1], "/etc/corp/inter.crl");
	CU_ASSERT_EQUAL(t->ocsp, CFG_OCSP_REQUIRE);
	CU_ASSERT_EQUAL_FATAL(t->alpn_len, 12);
	CU_ASSERT_EQUAL(memcmp(t->alpn, "\002h2\010http/1.1", 12), 0);
	config_free(cfg);
	path = test_write("ocspno.conf", GOOD "ocsp = no\n", 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg->tunnels->next->ocsp, CFG_OCSP_NO);
	config_free(cfg);

	expect_error(GOOD "ocsp = maybe\n", "bad.conf:16:",
	    "[tunnel second] ocsp: 'maybe' must be no, request or require");
	expect_error(GOOD "ocsp = no\nocsp = require\n", "bad.conf:17:",
	    "[tunnel second] ocsp: given twice");
	expect_error(GOOD "crl =\n", "bad.conf:16:",
	    "[tunnel second] crl: empty value");
	expect_error(GOOD "ca-dir = /a\nca-dir = /b\n", "bad.conf:17:",
	    "[tunnel second] ca-dir: given twice");
	expect_error(GOOD "alpn = h2\nalpn = http/1.1\n", "bad.conf:17:",
	    "[tunnel second] alpn: given twice");
	expect_error(GOOD "alpn = , ,\n", "bad.conf:16:",
	    "[tunnel second] alpn: empty value");
	expect_error(GOOD "alpn = h2,caf\xc3\xa9\n", "bad.conf:16:",
	    "alpn: protocol names are printable ASCII");
	/* (a list past the 256 bytes of t->alpn cannot be written: a
	 * line is shorter) */
	n = snprintf(text, sizeof(text), "%s", GOOD);
	for (i = 0; i <= CONFIG_MAX_CRLS; i++)
		n += snprintf(text + n, sizeof(text) - n, "crl = /c/%d.crl\n",
		    i);
	expect_error(text, "bad.conf:24:", "[tunnel second] crl: at most 8 "
	    "files");
	expect_error("[identity a]\ncrl = /x.crl\n", "bad.conf:2:",
	    "belongs in a [tunnel NAME] section");
}

int
suite_config(void)
{
	CU_pSuite	 s = CU_add_suite("config", setup, teardown);

	if (s == NULL ||
	    CU_add_test(s, "a good file", test_good) == NULL ||
	    CU_add_test(s, "errors name file:line:key", test_errors) == NULL ||
	    CU_add_test(s, "the [agent] section", test_agent_section) == NULL ||
	    CU_add_test(s, "[agent] metrics", test_metrics) == NULL ||
	    CU_add_test(s, "allow-users, allow-groups", test_allow) == NULL ||
	    CU_add_test(s, "on-removal, on-reinsert, token-poll",
	    test_removal) == NULL ||
	    CU_add_test(s, "over-long line", test_long_line) == NULL ||
	    CU_add_test(s, "missing file", test_missing_file) == NULL ||
	    CU_add_test(s, "HOST:PORT", test_hostport) == NULL ||
	    CU_add_test(s, "ca-dir, crl, ocsp, alpn", test_trust) == NULL ||
	    CU_add_test(s, "pin = fd:N, systemd-ask-password",
	    test_pin_sources) == NULL ||
	    CU_add_test(s, "listen = systemd:NAME", test_systemd_listen) ==
	    NULL)
		return -1;
	return 0;
}
