/*
 * p11agent: a pinentry client.  Runs only in the token helper.
 *
 * pinentry speaks Assuan on its stdin and stdout: it greets with OK,
 * takes one command a line (OPTION, SETDESC, GETPIN, ...), and answers
 * each with OK or ERR, data coming before as D lines, percent-escaped.
 * Our side of the connection is a socket (sendmsg with MSG_NOSIGNAL:
 * a pinentry that died cannot raise SIGPIPE here), every read has the
 * dialog's deadline, and whatever pinentry sends is read into locked
 * memory, since its D lines carry the PIN.  Messages quote nothing
 * pinentry sent but the text of an ERR line.
 */
#include "config.h"

#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "p11agent/error.h"
#include "p11agent/token.h"
#include "pinentry.h"

#define PE_PROGRAM	"pinentry"
#define PE_LINE_MAX	1000	/* an Assuan line, without its newline */
#define PE_BUF		1024	/* what we hold of pinentry's output */
#define PE_GRACE_MS	1000	/* past the dialog's timeout, for it to say so */
#define PE_BYE_MS	1000	/* for it to exit after BYE */
/* GPG error codes (the low 16 bits; the source is in the high bits) */
#define GPG_ERR_TIMEOUT		62
#define GPG_ERR_CANCELED	99
#define GPG_ERR_FULLY_CANCELED	198

#define NO_SCREEN	"no display and no terminal for pinentry: set " \
	"DISPLAY or WAYLAND_DISPLAY, or GPG_TTY for a terminal pinentry, or " \
	"choose another PIN source (pin = file:PATH, env:NAME, fd:N, " \
	"systemd-ask-password, none)"

struct pe {
	const char	*prog;		/* for messages */
	int		 fd;
	pid_t		 pid;
	long		 deadline;
	int		 timeout;	/* seconds, for messages */
	int		 broken;	/* the dialog is off the protocol */
	int		 inquired;	/* it asked an INQUIRE (we said CAN) */
	char		*buf;		/* what it sent, in locked memory */
	size_t		 len;
	char		*data;		/* decoded D data, in locked memory */
	size_t		 dlen;
	char		*err;
	size_t		 errlen;
	int		 code;		/* the first error, 0 if none */
};

/* The first error sticks; so does its code. */
static int
pe_fail(struct pe *pe, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
pe_fail(struct pe *pe, int code, const char *fmt, ...)
{
	va_list	 ap;

	if (pe->code == 0) {
		va_start(ap, fmt);
		vsnprintf(pe->err, pe->errlen, fmt, ap);
		va_end(ap);
		pe->code = code;
	}
	return pe->code;
}

static int
pe_proto(struct pe *pe, const char *what, const char *cmd)
{
	pe->broken = 1;
	return pe_fail(pe, P11A_ERR_PIN_SOURCE, "pinentry %s: protocol "
	    "error: %s in answer to %s", pe->prog, what, cmd);
}

/* ---- sending */

static int
pe_send(struct pe *pe, const char *s, size_t n)
{
	struct pollfd	 pfd = { pe->fd, POLLOUT, 0 };
	ssize_t		 w;
	long		 left;

	while (n > 0) {
		if ((left = pe->deadline - pin_now_ms()) <= 0) {
			pe->broken = 1;
			return pe_fail(pe, P11A_ERR_TIMEOUT, "pinentry %s did "
			    "not read what p11agent sent within %d s; it was "
			    "stopped", pe->prog, pe->timeout);
		}
		if (poll(&pfd, 1, (int)left) == -1 && errno != EINTR)
			break;
		if ((w = send(pe->fd, s, n, MSG_NOSIGNAL | MSG_DONTWAIT)) ==
		    -1) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			break;
		}
		s += w;
		n -= (size_t)w;
	}
	if (n == 0)
		return 0;
	pe->broken = 1;
	return pe_fail(pe, P11A_ERR_PIN_SOURCE, "pinentry %s closed the "
	    "connection (%s)", pe->prog, strerror(errno));
}

/* The length of the UTF-8 character at s (a stray byte counts as one). */
static size_t
u8_len(const unsigned char *s)
{
	size_t	 n = 1;

	if (s[0] >= 0xc0)
		while (n < 4 && (s[n] & 0xc0) == 0x80)
			n++;
	return n;
}

static int
pe_must_escape(unsigned char c)
{
	return c == '%' || c < 0x20 || c == 0x7f;
}

/*
 * Appends s percent-escaped to out (room bytes left, plus a NUL), whole
 * UTF-8 characters only: a text too long for the line is cut between
 * two characters.  The length written.
 */
static size_t
pe_escape(const char *s, char *out, size_t room)
{
	static const char	 hex[] = "0123456789ABCDEF";
	const unsigned char	*u = (const unsigned char *)s;
	size_t			 o = 0, n, need, i;

	for (; *u != '\0'; u += n) {
		n = u8_len(u);
		for (need = i = 0; i < n; i++)
			need += pe_must_escape(u[i]) ? 3 : 1;
		if (o + need > room)
			break;
		for (i = 0; i < n; i++) {
			if (!pe_must_escape(u[i])) {
				out[o++] = (char)u[i];
				continue;
			}
			out[o++] = '%';
			out[o++] = hex[u[i] >> 4];
			out[o++] = hex[u[i] & 0xf];
		}
	}
	out[o] = '\0';
	return o;
}

/* Sends "KEYWORD ARG\n" with arg escaped (or "KEYWORD\n" for NULL). */
static int
pe_command(struct pe *pe, const char *kw, const char *arg)
{
	char	 line[PE_LINE_MAX + 2];
	size_t	 n;

	n = (size_t)snprintf(line, sizeof(line), "%s%s", kw, arg ? " " : "");
	if (arg != NULL)
		n += pe_escape(arg, line + n, PE_LINE_MAX - n);
	line[n++] = '\n';
	return pe_send(pe, line, n);
}

/* ---- receiving */

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The data of a D line (s, n bytes), decoded onto pe->data. */
static int
pe_data(struct pe *pe, const char *s, size_t n, const char *cmd)
{
	size_t	 i;
	int	 h, l;

	for (i = 0; i < n; i++) {
		if (pe->dlen == PIN_MAX) {
			pe->broken = 1;
			return pe_fail(pe, P11A_ERR_PIN_SOURCE, "pinentry %s "
			    "gave a PIN longer than %d bytes", pe->prog,
			    PIN_MAX);
		}
		if (s[i] != '%') {
			pe->data[pe->dlen++] = s[i];
			continue;
		}
		if (i + 2 >= n)
			return pe_proto(pe, "a D line with a cut %-escape", cmd);
		if ((h = hexval((unsigned char)s[i + 1])) < 0 ||
		    (l = hexval((unsigned char)s[i + 2])) < 0)
			return pe_proto(pe, "a D line with a bad %-escape", cmd);
		pe->data[pe->dlen++] = (char)(h << 4 | l);
		i += 2;
	}
	return 0;
}

/* Does the line (n bytes) start with the word kw, then a space or end? */
static int
pe_is(const char *line, size_t n, const char *kw)
{
	size_t	 k = strlen(kw);

	return n >= k && memcmp(line, kw, k) == 0 && (n == k || line[k] == ' ');
}

/*
 * The next line, without its newline (and a CR before it), in pe->buf;
 * *used is what to drop from the buffer once the line is handled.
 */
static int
pe_line(struct pe *pe, const char *cmd, size_t *np, size_t *used)
{
	char	*nl;
	int	 r, st;

	if ((r = pin_child_read(pe->fd, pe->buf, PE_BUF, &pe->len,
	    pe->deadline)) == P11A_ERR_TIMEOUT) {
		pe->broken = 1;
		return pe_fail(pe, P11A_ERR_TIMEOUT, "pinentry %s did not "
		    "answer %s within %d s; it was stopped", pe->prog, cmd,
		    pe->timeout);
	}
	if (r != 0) {
		pe->broken = 1;
		return pe_fail(pe, r, "pinentry %s: read: %s", pe->prog,
		    strerror(errno));
	}
	if ((nl = memchr(pe->buf, '\n', pe->len)) == NULL) {
		if (pe->len == PE_BUF)
			return pe_proto(pe, "a line longer than 1000 bytes",
			    cmd);
		/* end of file: it exited, or is about to */
		pe->broken = 1;
		st = pin_child_wait(pe->pid, pin_now_ms() + PE_BYE_MS, 0);
		pe->pid = -1;
		if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 127)
			return pe_fail(pe, P11A_ERR_PIN_SOURCE, "pinentry %s "
			    "could not be run", pe->prog);
		if (st != -1 && WIFEXITED(st))
			return pe_fail(pe, P11A_ERR_PIN_SOURCE, "pinentry %s "
			    "exited with status %d before it answered %s",
			    pe->prog, WEXITSTATUS(st), cmd);
		if (st != -1 && WIFSIGNALED(st))
			return pe_fail(pe, P11A_ERR_PIN_SOURCE, "pinentry %s "
			    "was killed by signal %d before it answered %s",
			    pe->prog, WTERMSIG(st), cmd);
		return pe_fail(pe, P11A_ERR_PIN_SOURCE, "pinentry %s closed "
		    "the connection before it answered %s; it was stopped",
		    pe->prog, cmd);
	}
	*used = (size_t)(nl - pe->buf) + 1;
	*np = *used - 1;
	if (*np > PE_LINE_MAX)
		return pe_proto(pe, "a line longer than 1000 bytes", cmd);
	if (*np > 0 && pe->buf[*np - 1] == '\r')
		(*np)--;
	return 0;
}

static void
pe_drop(struct pe *pe, size_t used)
{
	memmove(pe->buf, pe->buf + used, pe->len - used);
	pe->len -= used;
	OPENSSL_cleanse(pe->buf + pe->len, used);
}

/* Printable text of an ERR line, for a message (never after GETPIN's D). */
static void
pe_errtext(const char *s, size_t n, char *out, size_t outsz)
{
	size_t	 i, o = 0;

	for (i = 0; i < n && o + 1 < outsz && o < 120; i++)
		out[o++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' :
		    s[i];
	out[o] = '\0';
}

/* An ERR line of n bytes: its code (never 0) and text. */
static int
pe_err(struct pe *pe, const char *cmd, size_t n, size_t used,
    unsigned long *code, char *text, size_t textsz)
{
	char	*l = pe->buf, *end;

	l[n] = '\0';
	if (n < 5 || l[4] < '0' || l[4] > '9')
		return pe_proto(pe, "an ERR line without a code", cmd);
	errno = 0;
	*code = strtoul(l + 4, &end, 10);
	if (errno != 0 || (*end != ' ' && *end != '\0'))
		return pe_proto(pe, "an ERR line without a code", cmd);
	while (*end == ' ')
		end++;
	pe_errtext(end, strlen(end), text, textsz);
	if (*code == 0)
		*code = 1;
	pe_drop(pe, used);
	return 0;
}

/*
 * Reads the answer to cmd: 0 with *code 0 for OK, or the ERR code with
 * its text in text; D lines go to pe->data if want_data, S and # lines
 * are skipped, INQUIRE gets CAN.  Anything else is an error.
 */
static int
pe_reply(struct pe *pe, const char *cmd, int want_data, unsigned long *code,
    char *text, size_t textsz)
{
	const char	*l;
	size_t		 n = 0, used = 0;
	int		 r;

	*code = 0;
	for (;;) {
		if ((r = pe_line(pe, cmd, &n, &used)) != 0)
			return r;
		l = pe->buf;
		if (pe_is(l, n, "OK")) {
			pe_drop(pe, used);
			return 0;
		}
		if (pe_is(l, n, "ERR"))
			return pe_err(pe, cmd, n, used, code, text, textsz);
		if (pe_is(l, n, "D")) {
			if (!want_data)
				return pe_proto(pe, "data", cmd);
			if (n > 2 && (r = pe_data(pe, l + 2, n - 2, cmd)) != 0)
				return r;
		} else if (pe_is(l, n, "INQUIRE")) {
			pe->inquired = 1;
			if ((r = pe_send(pe, "CAN\n", 4)) != 0)
				return r;
		} else if (!pe_is(l, n, "S") && !(n > 0 && l[0] == '#'))
			return pe_proto(pe, "a line that is not Assuan (OK, "
			    "ERR, D, S, #, INQUIRE)", cmd);
		pe_drop(pe, used);
	}
}

/* A setting: an older pinentry may not know it (ERR), which is fine. */
static int
pe_set(struct pe *pe, const char *kw, const char *arg)
{
	unsigned long	 code;
	char		 text[128];
	int		 r;

	if ((r = pe_command(pe, kw, arg)) != 0)
		return r;
	return pe_reply(pe, kw, 0, &code, text, sizeof(text));
}

static const char *
env_set(const char *name)
{
	const char	*v = getenv(name);

	return v != NULL && *v != '\0' ? v : NULL;
}

/* OPTION name=value for each variable that is set. */
static int
pe_options(struct pe *pe)
{
	static const struct {
		const char	*opt;
		const char	*var[3];
	} opts[] = {
		{ "ttyname", { "GPG_TTY" } },
		{ "ttytype", { "TERM" } },
		{ "display", { "DISPLAY" } },
		{ "lc-ctype", { "LC_ALL", "LC_CTYPE", "LANG" } },
		{ "lc-messages", { "LC_ALL", "LC_MESSAGES", "LANG" } },
	};
	const char	*v;
	char		 kv[PE_LINE_MAX];
	size_t		 i, j;
	int		 r;

	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		for (v = NULL, j = 0; v == NULL && j < 3 &&
		    opts[i].var[j] != NULL; j++)
			v = env_set(opts[i].var[j]);
		if (v == NULL)
			continue;
		snprintf(kv, sizeof(kv), "%s=%s", opts[i].opt, v);
		if ((r = pe_set(pe, "OPTION", kv)) != 0)
			return r;
	}
	return 0;
}

static int
pe_texts(struct pe *pe, const struct pin_ask *ask)
{
	char	 desc[PE_LINE_MAX], tmo[16];
	int	 r;

	if (ask->description == NULL)
		snprintf(desc, sizeof(desc), "Please enter the PIN for the "
		    "token '%s' (serial %s).", ask->label ? ask->label : "",
		    ask->serial ? ask->serial : "");
	snprintf(tmo, sizeof(tmo), "%d", pe->timeout);
	if ((r = pe_set(pe, "SETTIMEOUT", tmo)) != 0 ||
	    (r = pe_set(pe, "SETTITLE", ask->title ? ask->title :
	    "p11agent")) != 0 ||
	    (r = pe_set(pe, "SETDESC", ask->description ? ask->description :
	    desc)) != 0 ||
	    (r = pe_set(pe, "SETPROMPT", ask->prompt ? ask->prompt :
	    "PIN:")) != 0)
		return r;
	if (ask->error != NULL && (r = pe_set(pe, "SETERROR", ask->error)) != 0)
		return r;
	return 0;
}

/* GETPIN, and what its answer means. */
static int
pe_getpin(struct pe *pe, struct pin **out)
{
	unsigned long	 code;
	char		 text[128];
	int		 r;

	if ((r = pe_command(pe, "GETPIN", NULL)) != 0 ||
	    (r = pe_reply(pe, "GETPIN", 1, &code, text, sizeof(text))) != 0)
		return r;
	if (code != 0) {
		switch (code & 0xffff) {
		case GPG_ERR_CANCELED:
		case GPG_ERR_FULLY_CANCELED:
			if (!pe->inquired)
				return pe_fail(pe, P11A_ERR_PIN_CANCELLED,
				    "the PIN dialog was cancelled");
			break;
		case GPG_ERR_TIMEOUT:
			return pe_fail(pe, P11A_ERR_TIMEOUT, "the PIN dialog "
			    "timed out (no answer within %d s)", pe->timeout);
		}
		return pe_fail(pe, P11A_ERR_PIN_SOURCE, "pinentry %s: GETPIN "
		    "failed: ERR %lu %s%s", pe->prog, code, text, pe->inquired ?
		    " (after an INQUIRE, which p11agent does not answer)" : "");
	}
	if (pe->dlen == 0)
		return pe_fail(pe, P11A_ERR_PIN_SOURCE, "pinentry %s: no PIN "
		    "entered", pe->prog);
	return pin_new(pe->data, pe->dlen, out, pe->err, pe->errlen);
}

/* Finds and starts the program, pe->fd our end of its stdin/stdout. */
static int
pe_start(struct pe *pe, const char *program)
{
	char	 path[4096];
	char	*argv[] = { path, NULL };
	int	 sv[2], e;

	if ((e = pin_child_find(program ? program : PE_PROGRAM, path,
	    sizeof(path))) != 0) {
		if (program == NULL)
			return pe_fail(pe, P11A_ERR_PIN_SOURCE, "pin = pinentry: "
			    "no program 'pinentry' on PATH: install one "
			    "(pinentry-gnome3, pinentry-qt, pinentry-curses), "
			    "set pinentry-program = PATH, or choose another "
			    "PIN source (pin = file:PATH, env:NAME, fd:N, "
			    "systemd-ask-password, none)");
		return pe_fail(pe, P11A_ERR_PIN_SOURCE, "pinentry-program %s: "
		    "%s; set pinentry-program to an installed pinentry",
		    program, strerror(e));
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
		return pe_fail(pe, P11A_ERR_SYSTEM, "socketpair: %s",
		    strerror(errno));
	e = pin_child_spawn(path, argv, sv[1], sv[1], &pe->pid);
	close(sv[1]);
	if (e != 0) {
		close(sv[0]);
		return pe_fail(pe, P11A_ERR_PIN_SOURCE, "cannot run pinentry "
		    "%s: %s", path, strerror(e));
	}
	pe->fd = sv[0];
	return 0;
}

/* Ends the dialog: BYE to a pinentry that still follows it, else kill. */
static void
pe_end(struct pe *pe)
{
	if (pe->fd != -1 && !pe->broken) {
		pe->deadline = pin_now_ms() + PE_BYE_MS;
		(void)pe_send(pe, "BYE\n", 4);
	}
	if (pe->fd != -1)
		close(pe->fd);
	if (pe->pid != -1)
		pin_child_wait(pe->pid, pin_now_ms() + PE_BYE_MS, pe->broken);
	pin_buf_free(pe->buf, PE_BUF);
	pin_buf_free(pe->data, PIN_MAX);
}

int
pin_from_pinentry(const struct pin_ask *ask, struct pin **out, char *err,
    size_t errlen)
{
	static const struct pin_ask	 none;
	struct pe			 pe;
	unsigned long			 code;
	char				 text[128];
	int				 r;

	if (ask == NULL)
		ask = &none;
	memset(&pe, 0, sizeof(pe));
	pe.fd = pe.pid = -1;
	pe.err = err;
	pe.errlen = errlen;
	pe.prog = ask->program ? ask->program : PE_PROGRAM;
	pe.timeout = ask->timeout > 0 ? ask->timeout : PIN_ASK_TIMEOUT;
	if (!env_set("DISPLAY") && !env_set("WAYLAND_DISPLAY") &&
	    !env_set("GPG_TTY"))
		return pe_fail(&pe, P11A_ERR_PIN_SOURCE, NO_SCREEN);
	if ((r = pin_buf_new(PE_BUF, &pe.buf, err, errlen)) != 0 ||
	    (r = pin_buf_new(PIN_MAX, &pe.data, err, errlen)) != 0 ||
	    (r = pe_start(&pe, ask->program)) != 0)
		goto out;
	pe.deadline = pin_now_ms() + (long)pe.timeout * 1000 + PE_GRACE_MS;
	if ((r = pe_reply(&pe, "the greeting", 0, &code, text,
	    sizeof(text))) != 0)
		goto out;
	if (code != 0) {
		r = pe_fail(&pe, P11A_ERR_PIN_SOURCE, "pinentry %s did not "
		    "start: ERR %lu %s", pe.prog, code, text);
		goto out;
	}
	if ((r = pe_options(&pe)) != 0 || (r = pe_texts(&pe, ask)) != 0)
		goto out;
	r = pe_getpin(&pe, out);
out:
	pe_end(&pe);
	return r;
}

/* ---- a notice while the PIN pad is used */

struct pin_notice {
	struct pe	 pe;
};

int
pin_notice_start(const struct pin_ask *ask, struct pin_notice **out,
    char *err, size_t errlen)
{
	struct pin_notice	*n;
	unsigned long		 code;
	char			 text[128];
	int			 r;

	*out = NULL;
	if (!env_set("DISPLAY") && !env_set("WAYLAND_DISPLAY") &&
	    !env_set("GPG_TTY")) {
		snprintf(err, errlen, NO_SCREEN);
		return P11A_ERR_PIN_SOURCE;
	}
	if ((n = calloc(1, sizeof(*n))) == NULL)
		return P11A_ERR_NOMEM;
	n->pe.fd = n->pe.pid = -1;
	n->pe.err = err;
	n->pe.errlen = errlen;
	n->pe.prog = ask->program ? ask->program : PE_PROGRAM;
	n->pe.timeout = ask->timeout > 0 ? ask->timeout : PIN_ASK_TIMEOUT;
	if ((r = pin_buf_new(PE_BUF, &n->pe.buf, err, errlen)) != 0 ||
	    (r = pin_buf_new(PIN_MAX, &n->pe.data, err, errlen)) != 0 ||
	    (r = pe_start(&n->pe, ask->program)) != 0)
		goto fail;
	n->pe.deadline = pin_now_ms() + PE_BYE_MS * 5;
	if ((r = pe_reply(&n->pe, "the greeting", 0, &code, text,
	    sizeof(text))) != 0)
		goto fail;
	if (code != 0) {
		r = pe_fail(&n->pe, P11A_ERR_PIN_SOURCE, "pinentry %s did not "
		    "start: ERR %lu %s", n->pe.prog, code, text);
		goto fail;
	}
	if ((r = pe_options(&n->pe)) != 0 || (r = pe_texts(&n->pe, ask)) != 0 ||
	    (r = pe_command(&n->pe, "MESSAGE", NULL)) != 0)
		goto fail;
	*out = n;
	return 0;
fail:
	n->pe.broken = 1;
	pe_end(&n->pe);
	free(n);
	return r;
}

void
pin_notice_end(struct pin_notice *n)
{
	if (n == NULL)
		return;
	n->pe.broken = 1;	/* it is showing MESSAGE: no BYE, a kill */
	pe_end(&n->pe);
	free(n);
}
