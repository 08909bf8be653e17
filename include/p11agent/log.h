/*
 * p11agent: logging (agent/log.c).  Never log a PIN.
 *
 * Targets: stderr ("p11agent: error: ..."); the journal, with a priority
 * and structured fields through sd_journal_sendv (a build with
 * libsystemd), else as "<N>" priority prefixes on stderr (sd-daemon(3));
 * or syslog(3), facility daemon.  LOG_TO_AUTO picks the journal when
 * $JOURNAL_STREAM names stderr's device and inode (systemd set it), stderr
 * when it is open and not /dev/null, else syslog.
 *
 * Levels: error, warning, info (the default), debug; a message shows
 * when its level is at most the threshold.  -q (warning) and -v (debug)
 * on the command line win over log-level in the file.  Until
 * log_configure, messages go to the automatic target at the command
 * line's level.  Debug messages carry the function name.
 */
#ifndef P11AGENT_LOG_H
#define P11AGENT_LOG_H

#include <stddef.h>
#include <sys/uio.h>

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

enum log_target {
	LOG_TO_AUTO,
	LOG_TO_STDERR,
	LOG_TO_JOURNAL,
	LOG_TO_SYSLOG,
};

/*
 * A structured field of one message: the journal stores it as NAME=value
 * (NAME: A-Z, 0-9 and _, not starting with _ or a digit, at most 64
 * bytes; others are dropped); stderr and syslog show only the message.
 * A NULL value drops the field.
 */
struct log_field {
	const char	*name;
	const char	*value;
};
#define LOG_FIELDS_MAX	16

/* verbosity: -1 for -q, 1 (or more) for -v, 0 for neither. */
void	 log_init(const char *progname, int verbosity);
/* After the configuration is read: its log and log-level (level -1:
 * not set); -q/-v and --log (log_set_target) win over them. */
void	 log_configure(enum log_target, int level);
/* --log TARGET on the command line. */
void	 log_set_target(enum log_target);
/* The target in use (never LOG_TO_AUTO), and the threshold. */
enum log_target log_target(void);
enum log_level	log_threshold(void);
/* What LOG_TO_AUTO means in this process now. */
enum log_target log_target_auto(void);

/*
 * After loop_init, when the target is syslog: fd 2 becomes a pipe that the
 * loop reads, so what the token helpers and their PKCS#11 modules write
 * to stderr reaches syslog too, a line at a time (the helper's own lines
 * as info, others as warnings).  Otherwise nothing.  Returns 0 (a
 * failure is logged, and stderr stays as it was).
 */
int	 log_relay_start(void);

/* "error", "warning", "info", "debug" -> level; 0 or -1. */
int	 log_level_parse(const char *, enum log_level *);
/* "auto", "stderr", "journal", "syslog" -> target; 0 or -1. */
int	 log_target_parse(const char *, enum log_target *);
const char *log_target_name(enum log_target);
/* A uid, pid or count for a log line or field: "?" when negative
 * (unknown); returns buf. */
const char *log_num(char *buf, size_t len, long v);
/* The syslog(3) priority of a level (also the "<N>" and PRIORITY=). */
int	 log_priority(enum log_level);

void	 log_msg(enum log_level, const char *func, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* A message with structured fields (the journal's P11AGENT_*). */
void	 log_fields(enum log_level, const char *func,
	    const struct log_field *, size_t nfields, const char *fmt, ...)
	    __attribute__((format(printf, 5, 6)));
/* Appends OpenSSL's queued errors to the message, then clears them. */
void	 log_ssl(enum log_level, const char *func, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* Appends ": " and strerror(errno) (errno as it was on entry). */
void	 log_sys(enum log_level, const char *func, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* Appends ": " and p11a_strerror(code), a project error code. */
void	 log_code(enum log_level, const char *func, int code,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/*
 * The journal entry of a message, as sd_journal_sendv takes it: MESSAGE,
 * PRIORITY, CODE_FUNC, SYSLOG_IDENTIFIER, then the valid fields, each
 * "NAME=value" in buf (one iovec each).  Returns the number of iovecs,
 * or -1 if buf or iov is too small.  (For agent/log.c and its tests.)
 */
int	 log_journal_entry(struct iovec *iov, int maxiov, char *buf,
	    size_t size, enum log_level, const char *func, const char *msg,
	    const struct log_field *, size_t nfields);

#define log_err(...)	log_msg(LOG_LVL_ERR, __func__, __VA_ARGS__)
#define log_warn(...)	log_msg(LOG_LVL_WARN, __func__, __VA_ARGS__)
#define log_info(...)	log_msg(LOG_LVL_INFO, __func__, __VA_ARGS__)
#define log_debug(...)	log_msg(LOG_LVL_DEBUG, __func__, __VA_ARGS__)
#define log_err_sys(...)	log_sys(LOG_LVL_ERR, __func__, __VA_ARGS__)
#define log_warn_sys(...)	log_sys(LOG_LVL_WARN, __func__, __VA_ARGS__)
#define log_err_code(code, ...)	\
	log_code(LOG_LVL_ERR, __func__, (code), __VA_ARGS__)
#define log_warn_code(code, ...)	\
	log_code(LOG_LVL_WARN, __func__, (code), __VA_ARGS__)

#endif
