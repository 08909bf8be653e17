/*
 * p11agent: logging.  Lines go to stderr (journald adds time and unit);
 * debug lines carry the function name.  Never log a PIN.
 */
#ifndef P11AGENT_LOG_H
#define P11AGENT_LOG_H

enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void	 log_init(const char *progname, int verbosity);
void	 log_msg(enum log_level, const char *func, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* Appends OpenSSL's queued errors to the message, then clears them. */
void	 log_ssl(enum log_level, const char *func, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* Appends ": " and strerror(errno) (errno as it was on entry). */
void	 log_sys(enum log_level, const char *func, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* Appends ": " and p11a_strerror(code), a project error code. */
void	 log_code(enum log_level, const char *func, int code,
	    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

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
