/*
 * p11agent: logging to stderr, the journal or syslog (log.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#define SD_JOURNAL_SUPPRESS_LOCATION	/* CODE_FUNC is ours */
#include <systemd/sd-journal.h>
#endif

#include <openssl/err.h>

#include "p11agent/error.h"
#include "p11agent/log.h"
#include "p11agent/loop.h"

#define MSG_MAX		2048
#define JOURNAL_SOCKET	"/run/systemd/journal/socket"
#define ENTRY_MAX	(MSG_MAX + 4096)	/* a message and its fields */

static const char	*prog = "p11agent";
static int		 cmd_level = -1;	/* -q/-v; -1: neither */
static int		 cmd_target = -1;	/* --log; -1: not given */
static enum log_level	 threshold = LOG_LVL_INFO;
static enum log_target	 target = LOG_TO_STDERR;
static int		 syslog_open;

static const char *const level_names[] = {
	"error", "warning", "info", "debug"
};
static const char *const target_names[] = {
	"auto", "stderr", "journal", "syslog"
};

int
log_level_parse(const char *s, enum log_level *out)
{
	size_t	 i;

	for (i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	return -1;
}

int
log_target_parse(const char *s, enum log_target *out)
{
	size_t	 i;

	for (i = 0; i < sizeof(target_names) / sizeof(target_names[0]); i++)
		if (strcmp(s, target_names[i]) == 0) {
			*out = (enum log_target)i;
			return 0;
		}
	return -1;
}

const char *
log_target_name(enum log_target t)
{
	if ((size_t)t >= sizeof(target_names) / sizeof(target_names[0]))
		return "?";
	return target_names[t];
}

const char *
log_num(char *buf, size_t len, long v)
{
	if (v < 0)
		snprintf(buf, len, "?");
	else
		snprintf(buf, len, "%ld", v);
	return buf;
}

int
log_priority(enum log_level l)
{
	switch (l) {
	case LOG_LVL_ERR:	return LOG_ERR;
	case LOG_LVL_WARN:	return LOG_WARNING;
	case LOG_LVL_INFO:	return LOG_INFO;
	default:		return LOG_DEBUG;
	}
}

/* systemd's JOURNAL_STREAM=DEV:INODE names our stderr: the journal. */
static int
journal_stream(void)
{
	const char		*v = getenv("JOURNAL_STREAM");
	struct stat		 st;
	unsigned long long	 dev, ino;
	char			 end;

	if (v == NULL || sscanf(v, "%llu:%llu%c", &dev, &ino, &end) != 2)
		return 0;
	if (fstat(2, &st) == -1)
		return 0;
	return (unsigned long long)st.st_dev == dev &&
	    (unsigned long long)st.st_ino == ino;
}

/* stderr is open and not /dev/null. */
static int
stderr_usable(void)
{
	struct stat	 st, null;

	if (fstat(2, &st) == -1)
		return 0;
	if (S_ISCHR(st.st_mode) && stat("/dev/null", &null) == 0 &&
	    S_ISCHR(null.st_mode) && st.st_rdev == null.st_rdev)
		return 0;
	return 1;
}

enum log_target
log_target_auto(void)
{
	if (journal_stream())
		return LOG_TO_JOURNAL;
	if (stderr_usable())
		return LOG_TO_STDERR;
	return LOG_TO_SYSLOG;
}

/* syslog: the pipe that became our fd 2 (log_relay_start) */
static struct watch	 relay = { .fd = -1 };

static void
use_target(enum log_target t)
{
	if (t == LOG_TO_AUTO)
		t = log_target_auto();
	if (relay.fd != -1)	/* fd 2 is the relay's pipe: syslog stays */
		t = LOG_TO_SYSLOG;
	if (t == LOG_TO_SYSLOG && !syslog_open) {
		openlog(prog, LOG_PID | LOG_NDELAY, LOG_DAEMON);
		syslog_open = 1;
	}
	target = t;
}

void
log_init(const char *progname, int verbosity)
{
	prog = progname;
	cmd_level = verbosity < 0 ? LOG_LVL_WARN : verbosity > 0 ?
	    LOG_LVL_DEBUG : -1;
	threshold = cmd_level >= 0 ? (enum log_level)cmd_level : LOG_LVL_INFO;
	use_target(cmd_target >= 0 ? (enum log_target)cmd_target :
	    LOG_TO_AUTO);
}

void
log_set_target(enum log_target t)
{
	cmd_target = (int)t;
	use_target(t);
}

void
log_configure(enum log_target t, int level)
{
	if (cmd_level < 0 && level >= LOG_LVL_ERR && level <= LOG_LVL_DEBUG)
		threshold = (enum log_level)level;
	if (cmd_target < 0)
		use_target(t);
}

enum log_target
log_target(void)
{
	return target;
}

enum log_level
log_threshold(void)
{
	return threshold;
}

/* A journal field name: [A-Z0-9_], not starting with _ or a digit. */
static int
field_name_ok(const char *n)
{
	size_t	 len = strlen(n);

	return len > 0 && len <= 64 && n[0] != '_' &&
	    !(n[0] >= '0' && n[0] <= '9') &&
	    strspn(n, "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_") == len;
}

/* One "NAME=value" into buf at *off, and an iovec for it. */
static int
entry_add(struct iovec *iov, int *n, int maxiov, char *buf, size_t size,
    size_t *off, const char *name, const char *value)
{
	int	 w;

	if (*n >= maxiov || *off >= size)
		return -1;
	w = snprintf(buf + *off, size - *off, "%s=%s", name, value);
	if (w < 0 || (size_t)w >= size - *off)
		return -1;
	iov[*n].iov_base = buf + *off;
	iov[*n].iov_len = (size_t)w;
	(*n)++;
	*off += (size_t)w + 1;
	return 0;
}

int
log_journal_entry(struct iovec *iov, int maxiov, char *buf, size_t size,
    enum log_level l, const char *func, const char *msg,
    const struct log_field *f, size_t nf)
{
	char	 prio[4];
	size_t	 off = 0, i;
	int	 n = 0;

	snprintf(prio, sizeof(prio), "%d", log_priority(l));
	if (entry_add(iov, &n, maxiov, buf, size, &off, "MESSAGE", msg) != 0 ||
	    entry_add(iov, &n, maxiov, buf, size, &off, "PRIORITY",
	    prio) != 0 ||
	    entry_add(iov, &n, maxiov, buf, size, &off, "SYSLOG_IDENTIFIER",
	    prog) != 0 ||
	    (func != NULL && entry_add(iov, &n, maxiov, buf, size, &off,
	    "CODE_FUNC", func) != 0))
		return -1;
	for (i = 0; i < nf; i++) {
		if (f[i].value == NULL || !field_name_ok(f[i].name))
			continue;
		if (entry_add(iov, &n, maxiov, buf, size, &off, f[i].name,
		    f[i].value) != 0)
			return -1;
	}
	return n;
}

static const char *
level_word(enum log_level l)
{
	switch (l) {
	case LOG_LVL_ERR:	return "error: ";
	case LOG_LVL_WARN:	return "warning: ";
	default:		return "";
	}
}

/* The journal: native when built with libsystemd (and journald takes
 * it), else one "<N>" line on stderr for journald's stream reader. */
static void
to_journal(enum log_level l, const char *func, const char *text,
    const struct log_field *f, size_t nf)
{
#ifdef HAVE_LIBSYSTEMD
	struct iovec	 iov[LOG_FIELDS_MAX + 4];
	char		 buf[ENTRY_MAX];
	int		 n;

	/* sd_journal_sendv says 0 when no journald listens: look first */
	n = log_journal_entry(iov, LOG_FIELDS_MAX + 4, buf, sizeof(buf), l,
	    func, text, f, nf > LOG_FIELDS_MAX ? LOG_FIELDS_MAX : nf);
	if (n > 0 && access(JOURNAL_SOCKET, W_OK) == 0 &&
	    sd_journal_sendv(iov, n) >= 0)
		return;
#else
	(void)func;
	(void)f;
	(void)nf;
#endif
	fprintf(stderr, "<%d>%s\n", log_priority(l), text);
}

static void
vlog(enum log_level l, const char *func, const struct log_field *f,
    size_t nf, const char *extra, const char *fmt, va_list ap)
{
	char	 msg[MSG_MAX], text[MSG_MAX + 128], *p;
	int	 e = errno;

	if (l > threshold)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* a message has one line: a newline or escape in what it quotes
	 * (a program's path, a server's text) cannot make a line of its own */
	for (p = msg; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (l == LOG_LVL_DEBUG)
		snprintf(text, sizeof(text), "%s: %s%s", func, msg, extra);
	else
		snprintf(text, sizeof(text), "%s%s", msg, extra);
	switch (target) {
	case LOG_TO_JOURNAL:
		to_journal(l, func, text, f, nf);
		break;
	case LOG_TO_SYSLOG:
		syslog(log_priority(l), "%s%s", level_word(l), text);
		break;
	default:
		fprintf(stderr, "%s: %s%s\n", prog, level_word(l), text);
		break;
	}
	errno = e;
}

/* ---- syslog: what others write to our stderr, relayed */
static char		 relay_buf[1024];
static size_t		 relay_len;

#define RELAY_READS	4

/* Our helper's lines are info; a module's or a library's, warnings. */
static void
relay_line(char *line)
{
	if (line[0] == '\0')
		return;
	log_msg(strncmp(line, "p11agent-helper: ", 17) == 0 ? LOG_LVL_INFO :
	    LOG_LVL_WARN, "stderr", "%s", line);
}

static void
relay_read(struct watch *w, uint32_t events)
{
	char	*nl;
	ssize_t	 n;
	size_t	 i;
	int	 reads;

	(void)events;
	/* a few reads per wake-up: a module that writes without pause
	 * cannot hold the loop (the rest waits in the pipe, then it) */
	for (reads = 0; reads < RELAY_READS && (n = read(w->fd, relay_buf +
	    relay_len, sizeof(relay_buf) - relay_len - 1)) > 0; reads++) {
		for (i = relay_len; i < relay_len + (size_t)n; i++)
			if (relay_buf[i] == '\0')
				relay_buf[i] = '?';
		relay_len += (size_t)n;
		relay_buf[relay_len] = '\0';
		while ((nl = strchr(relay_buf, '\n')) != NULL) {
			*nl = '\0';
			relay_line(relay_buf);
			relay_len -= (size_t)(nl + 1 - relay_buf);
			memmove(relay_buf, nl + 1, relay_len + 1);
		}
		if (relay_len == sizeof(relay_buf) - 1) {
			relay_line(relay_buf);	/* a very long line: in parts */
			relay_len = 0;
		}
	}
}

int
log_relay_start(void)
{
	int	 p[2];

	if (target != LOG_TO_SYSLOG || relay.fd != -1)
		return 0;
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == -1) {
		log_warn_sys("the token helpers' messages stay off syslog: pipe");
		return 0;
	}
	/* the write end as our fd 2, which the helpers inherit; writers
	 * block (only the read end is non-blocking) */
	loop_watch_init(&relay, p[0], relay_read, NULL);
	if (fcntl(p[1], F_SETFL, 0) == -1 || loop_set(&relay, EPOLLIN) != 0 ||
	    dup2(p[1], 2) == -1) {
		log_warn_sys("the token helpers' messages stay off syslog");
		close(p[0]);
		close(p[1]);
		relay.fd = -1;
		return 0;
	}
	close(p[1]);
	return 0;
}

void
log_msg(enum log_level l, const char *func, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vlog(l, func, NULL, 0, "", fmt, ap);
	va_end(ap);
}

void
log_fields(enum log_level l, const char *func, const struct log_field *f,
    size_t nf, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vlog(l, func, f, nf, "", fmt, ap);
	va_end(ap);
}

void
log_ssl(enum log_level l, const char *func, const char *fmt, ...)
{
	char		 extra[512] = "", buf[256];
	unsigned long	 e;
	size_t		 n;
	va_list		 ap;

	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		n = strlen(extra);
		snprintf(extra + n, sizeof(extra) - n, "%s%s",
		    n ? "; " : ": ", buf);
	}
	va_start(ap, fmt);
	vlog(l, func, NULL, 0, extra, fmt, ap);
	va_end(ap);
}

void
log_sys(enum log_level l, const char *func, const char *fmt, ...)
{
	char	 extra[256];
	va_list	 ap;

	snprintf(extra, sizeof(extra), ": %s", strerror(errno));
	va_start(ap, fmt);
	vlog(l, func, NULL, 0, extra, fmt, ap);
	va_end(ap);
}

void
log_code(enum log_level l, const char *func, int code, const char *fmt, ...)
{
	char	 extra[256];
	va_list	 ap;

	snprintf(extra, sizeof(extra), ": %s", p11a_strerror(code));
	va_start(ap, fmt);
	vlog(l, func, NULL, 0, extra, fmt, ap);
	va_end(ap);
}
