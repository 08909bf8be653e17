/*
 * Unit tests: agent/log.c (the journal entry, names, the automatic
 * target, levels) and the log keys of [agent].
 */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <CUnit/CUnit.h>

#include "p11agent/config.h"
#include "p11agent/error.h"
#include "p11agent/log.h"
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

static int
iov_is(const struct iovec *v, const char *s)
{
	return v->iov_len == strlen(s) && memcmp(v->iov_base, s,
	    v->iov_len) == 0;
}

static void
test_entry(void)
{
	struct log_field	 f[] = {
		{ "P11AGENT_TUNNEL", "api" },
		{ "P11AGENT_PEER_EXE", NULL },		/* dropped */
		{ "lower", "x" },			/* dropped */
		{ "_TRUSTED", "x" },			/* dropped */
		{ "9LIVES", "x" },			/* dropped */
		{ "P11AGENT_UPSTREAM", "a.example:443" },
		{ "P11AGENT_OUTCOME", "two\nlines" },	/* kept as is */
	};
	struct iovec		 iov[12];
	char			 buf[512];
	int			 n;

	n = log_journal_entry(iov, 12, buf, sizeof(buf), LOG_LVL_WARN,
	    "conn_close", "conn 1 (api): closed", f, 7);
	CU_ASSERT_EQUAL_FATAL(n, 7);
	CU_ASSERT(iov_is(&iov[0], "MESSAGE=conn 1 (api): closed"));
	CU_ASSERT(iov_is(&iov[1], "PRIORITY=4"));
	CU_ASSERT(iov_is(&iov[2], "SYSLOG_IDENTIFIER=p11agent"));
	CU_ASSERT(iov_is(&iov[3], "CODE_FUNC=conn_close"));
	CU_ASSERT(iov_is(&iov[4], "P11AGENT_TUNNEL=api"));
	CU_ASSERT(iov_is(&iov[5], "P11AGENT_UPSTREAM=a.example:443"));
	CU_ASSERT(iov_is(&iov[6], "P11AGENT_OUTCOME=two\nlines"));
	/* priorities of each level */
	n = log_journal_entry(iov, 12, buf, sizeof(buf), LOG_LVL_ERR, NULL,
	    "m", NULL, 0);
	CU_ASSERT(n == 3 && iov_is(&iov[1], "PRIORITY=3"));
	log_journal_entry(iov, 12, buf, sizeof(buf), LOG_LVL_INFO, NULL, "m",
	    NULL, 0);
	CU_ASSERT(iov_is(&iov[1], "PRIORITY=6"));
	log_journal_entry(iov, 12, buf, sizeof(buf), LOG_LVL_DEBUG, NULL, "m",
	    NULL, 0);
	CU_ASSERT(iov_is(&iov[1], "PRIORITY=7"));
	/* too small a buffer or too few iovecs: -1, never a cut entry */
	CU_ASSERT_EQUAL(log_journal_entry(iov, 12, buf, 40, LOG_LVL_WARN,
	    "conn_close", "conn 1 (api): closed", f, 7), -1);
	CU_ASSERT_EQUAL(log_journal_entry(iov, 5, buf, sizeof(buf),
	    LOG_LVL_WARN, "conn_close", "conn 1 (api): closed", f, 7), -1);
}

static void
test_names(void)
{
	enum log_level	 l;
	enum log_target	 t;

	CU_ASSERT(log_level_parse("error", &l) == 0 && l == LOG_LVL_ERR);
	CU_ASSERT(log_level_parse("warning", &l) == 0 && l == LOG_LVL_WARN);
	CU_ASSERT(log_level_parse("info", &l) == 0 && l == LOG_LVL_INFO);
	CU_ASSERT(log_level_parse("debug", &l) == 0 && l == LOG_LVL_DEBUG);
	CU_ASSERT_EQUAL(log_level_parse("warn", &l), -1);
	CU_ASSERT_EQUAL(log_level_parse("", &l), -1);
	CU_ASSERT(log_target_parse("auto", &t) == 0 && t == LOG_TO_AUTO);
	CU_ASSERT(log_target_parse("stderr", &t) == 0 && t == LOG_TO_STDERR);
	CU_ASSERT(log_target_parse("journal", &t) == 0 &&
	    t == LOG_TO_JOURNAL);
	CU_ASSERT(log_target_parse("syslog", &t) == 0 && t == LOG_TO_SYSLOG);
	CU_ASSERT_EQUAL(log_target_parse("Syslog", &t), -1);
	CU_ASSERT_STRING_EQUAL(log_target_name(LOG_TO_JOURNAL), "journal");
}

/* With fd 2 on path (NULL: closed) and JOURNAL_STREAM as given. */
static enum log_target
auto_with(const char *path, const char *stream)
{
	enum log_target	 t;
	int		 saved = dup(2), fd = -1;

	if (path != NULL) {
		fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);
		dup2(fd, 2);
		close(fd);
	} else
		close(2);
	if (stream != NULL)
		setenv("JOURNAL_STREAM", stream, 1);
	else
		unsetenv("JOURNAL_STREAM");
	t = log_target_auto();
	dup2(saved, 2);
	close(saved);
	unsetenv("JOURNAL_STREAM");
	return t;
}

static void
test_auto(void)
{
	struct stat	 st;
	char		 file[300], stream[64], other[64];

	snprintf(file, sizeof(file), "%s/stderr", test_dir);
	CU_ASSERT_EQUAL(auto_with(file, NULL), LOG_TO_STDERR);
	CU_ASSERT_FATAL(stat(file, &st) == 0);
	snprintf(stream, sizeof(stream), "%llu:%llu",
	    (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
	snprintf(other, sizeof(other), "%llu:%llu",
	    (unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1);
	CU_ASSERT_EQUAL(auto_with(file, stream), LOG_TO_JOURNAL);
	CU_ASSERT_EQUAL(auto_with(file, other), LOG_TO_STDERR);
	CU_ASSERT_EQUAL(auto_with(file, "garbage"), LOG_TO_STDERR);
	CU_ASSERT_EQUAL(auto_with("/dev/null", NULL), LOG_TO_SYSLOG);
	CU_ASSERT_EQUAL(auto_with(NULL, NULL), LOG_TO_SYSLOG);
}

/* -q/-v and --log win over the file; neither: the file's. */
static void
test_levels(void)
{
	log_init("p11agent", 0);
	CU_ASSERT_EQUAL(log_threshold(), LOG_LVL_INFO);
	log_configure(LOG_TO_STDERR, LOG_LVL_DEBUG);
	CU_ASSERT_EQUAL(log_threshold(), LOG_LVL_DEBUG);
	log_configure(LOG_TO_STDERR, -1);	/* not set: unchanged */
	CU_ASSERT_EQUAL(log_threshold(), LOG_LVL_DEBUG);
	log_init("p11agent", -1);
	CU_ASSERT_EQUAL(log_threshold(), LOG_LVL_WARN);
	log_configure(LOG_TO_STDERR, LOG_LVL_DEBUG);
	CU_ASSERT_EQUAL(log_threshold(), LOG_LVL_WARN);
	log_init("p11agent", 2);
	CU_ASSERT_EQUAL(log_threshold(), LOG_LVL_DEBUG);
	log_configure(LOG_TO_STDERR, LOG_LVL_ERR);
	CU_ASSERT_EQUAL(log_threshold(), LOG_LVL_DEBUG);
	CU_ASSERT_EQUAL(log_target(), LOG_TO_STDERR);
	log_init("p11agent", 0);
	CU_ASSERT_EQUAL(log_threshold(), LOG_LVL_INFO);
}

/* Something to do, after the [agent] section. */
#define TUNNEL "[identity a]\nkey = pkcs11:token=t;object=k;type=private\n" \
	"[tunnel t]\nlisten = tcp:127.0.0.1:0\nconnect = h.example:443\n" \
	"identity = a\n"

static void
test_config_keys(void)
{
	struct config	*cfg = NULL;
	char		 err[CONFIG_MAX_ERR];
	const char	*path;

	path = test_write("log.conf", "[agent]\nlog = syslog\n"
	    "log-level = warning\n" TUNNEL, 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg->agent.log_target, LOG_TO_SYSLOG);
	CU_ASSERT_EQUAL(cfg->agent.log_level, LOG_LVL_WARN + 1);
	config_free(cfg);
	cfg = NULL;
	path = test_write("nolog.conf", "[agent]\nmax-connections = 9\n"
	    TUNNEL, 0644);
	CU_ASSERT_EQUAL_FATAL(config_load(path, &cfg, err, sizeof(err)), 0);
	CU_ASSERT_EQUAL(cfg->agent.log_target, LOG_TO_AUTO);
	CU_ASSERT_EQUAL(cfg->agent.log_level, 0);	/* not set */
	config_free(cfg);
	cfg = NULL;
	path = test_write("twice.conf", "[agent]\nlog-level = info\n"
	    "log-level = debug\n", 0644);
	CU_ASSERT_EQUAL(config_load(path, &cfg, err, sizeof(err)),
	    P11A_ERR_CONFIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "twice.conf:3: [agent] log-level: "
	    "given twice"));
	path = test_write("where.conf", "[tunnel t]\nlog = syslog\n", 0644);
	CU_ASSERT_EQUAL(config_load(path, &cfg, err, sizeof(err)),
	    P11A_ERR_CONFIG);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "where.conf:2:"));
}

int
suite_log(void)
{
	CU_pSuite	 s = CU_add_suite("log", setup, teardown);

	if (s == NULL ||
	    CU_add_test(s, "journal entry", test_entry) == NULL ||
	    CU_add_test(s, "level and target names", test_names) == NULL ||
	    CU_add_test(s, "log = auto: journal, stderr, syslog",
	    test_auto) == NULL ||
	    CU_add_test(s, "the command line wins", test_levels) == NULL ||
	    CU_add_test(s, "log, log-level in [agent]", test_config_keys) ==
	    NULL)
		return -1;
	return 0;
}
