/*
 * p11agent: logging to stderr.
 */
#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

#include "p11agent/error.h"
#include "p11agent/log.h"

static const char	*prog = "p11agent";
static int		 verbose;

void
log_init(const char *progname, int verbosity)
{
	prog = progname;
	verbose = verbosity;
}

static const char *
level_name(enum log_level l)
{
	switch (l) {
	case LOG_LVL_ERR:	return "error: ";
	case LOG_LVL_WARN:	return "warning: ";
	default:		return "";
	}
}

static void
vlog(enum log_level l, const char *func, const char *extra, const char *fmt,
    va_list ap)
{
	char	 msg[2048];

	if ((l == LOG_LVL_DEBUG && verbose < 1) ||
	    (l == LOG_LVL_INFO && verbose < 0))
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (l == LOG_LVL_DEBUG)
		fprintf(stderr, "%s: %s: %s%s\n", prog, func, msg, extra);
	else
		fprintf(stderr, "%s: %s%s%s\n", prog, level_name(l), msg,
		    extra);
}

void
log_msg(enum log_level l, const char *func, const char *fmt, ...)
{
	va_list	 ap;

	va_start(ap, fmt);
	vlog(l, func, "", fmt, ap);
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
	vlog(l, func, extra, fmt, ap);
	va_end(ap);
}

void
log_sys(enum log_level l, const char *func, const char *fmt, ...)
{
	char	 extra[256];
	va_list	 ap;

	snprintf(extra, sizeof(extra), ": %s", strerror(errno));
	va_start(ap, fmt);
	vlog(l, func, extra, fmt, ap);
	va_end(ap);
}

void
log_code(enum log_level l, const char *func, int code, const char *fmt, ...)
{
	char	 extra[256];
	va_list	 ap;

	snprintf(extra, sizeof(extra), ": %s", p11a_strerror(code));
	va_start(ap, fmt);
	vlog(l, func, extra, fmt, ap);
	va_end(ap);
}
