/*
 * p11agent: systemd integration over libsystemd (sd.h).
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "p11agent/agent.h"
#include "p11agent/config.h"
#include "p11agent/error.h"
#include "p11agent/log.h"
#include "p11agent/loop.h"
#include "p11agent/sd.h"
#include "p11agent/tunnel.h"

#define STATUS_MAX	128

int
sd_available(void)
{
#ifdef HAVE_LIBSYSTEMD
	return 1;
#else
	return 0;
#endif
}

#ifdef HAVE_LIBSYSTEMD
struct sd_fd {
	int	 fd;
	char	*name;
};

static struct sd_fd	 fds[SD_MAX_FDS];
static int		 nfds;
static int		 notify;	/* NOTIFY_SOCKET was set */
static long		 wd_half_ms;	/* 0: no watchdog */
static long		 wd_last;
static char		 status_sent[STATUS_MAX];
static int		 stopping_said;	/* STOPPING=1: nothing but that */

static void
say(const char *msg)
{
	int	 r;

	if (!notify)
		return;
	if ((r = sd_notify(0, msg)) < 0)
		log_debug("sd_notify: %s", strerror(-r));
}

/* The watchdog interval, if the service manager asked for one. */
static void
take_watchdog(void)
{
	uint64_t	 usec = 0;

	if (sd_watchdog_enabled(1, &usec) <= 0 || usec == 0)
		return;
	wd_half_ms = (long)(usec / 2000);
	if (wd_half_ms < LOOP_TICK_MS)
		log_warn("the watchdog interval (WatchdogSec=) is %llu ms; "
		    "the agent's loop ticks every %d ms and cannot keep it: "
		    "set WatchdogSec=1s or more", (unsigned long long)usec /
		    1000, LOOP_TICK_MS);
	log_debug("watchdog: WATCHDOG=1 every %ld ms", wd_half_ms);
}

int
sd_init(char *err, size_t errlen)
{
	char	**names = NULL, buf[512];
	int	 n, i, r = 0;

	notify = getenv("NOTIFY_SOCKET") != NULL;
	take_watchdog();
	if ((n = sd_listen_fds_with_names(1, &names)) < 0) {
		snprintf(err, errlen, "the sockets systemd passed (LISTEN_FDS):"
		    " %s", strerror(-n));
		return P11A_ERR_SYSTEM;
	}
	if (n > SD_MAX_FDS) {
		snprintf(err, errlen, "systemd passed %d sockets; p11agent "
		    "takes at most %d", n, SD_MAX_FDS);
		r = P11A_ERR_TOO_LARGE;
	}
	for (i = 0; i < n; i++) {
		if (r == 0 && fcntl(SD_LISTEN_FDS_START + i, F_SETFD,
		    FD_CLOEXEC) == -1) {
			snprintf(err, errlen, "inherited socket %d: %s",
			    SD_LISTEN_FDS_START + i, strerror(errno));
			r = P11A_ERR_SYSTEM;
		}
		if (r == 0) {
			fds[nfds].fd = SD_LISTEN_FDS_START + i;
			fds[nfds++].name = names[i];
		} else {
			close(SD_LISTEN_FDS_START + i);
			free(names[i]);
		}
	}
	free(names);
	if (r == 0 && nfds > 0)
		log_info("systemd passed %d socket%s: %s", nfds, nfds == 1 ?
		    "" : "s", sd_names(buf, sizeof(buf)));
	return r;
}

void
sd_reloading(void)
{
	struct timespec	 ts;
	char		 msg[64];

	clock_gettime(CLOCK_MONOTONIC, &ts);
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
	    (unsigned long long)ts.tv_sec * 1000000ULL +
	    (unsigned long long)ts.tv_nsec / 1000ULL);
	say(msg);
}

const char *
sd_names(char *buf, size_t size)
{
	size_t	 len;
	int	 i;

	buf[0] = '\0';
	for (i = 0; i < nfds; i++) {
		len = strlen(buf);
		snprintf(buf + len, size - len, "%s%s", i ? ", " : "",
		    fds[i].name);
	}
	if (nfds == 0)
		snprintf(buf, size, "none");
	return buf;
}

/* How many inherited sockets have the name; *fd is the first's. */
static int
count_named(const char *name, int *fd)
{
	int	 i, n = 0;

	for (i = 0; i < nfds; i++)
		if (strcmp(fds[i].name, name) == 0 && n++ == 0 && fd != NULL)
			*fd = fds[i].fd;
	return n;
}

static int
claimed(const struct config *cfg, const char *name)
{
	const struct cfg_tunnel	*t;
	int			 i;

	if (strcmp(name, SD_CONTROL_NAME) == 0)
		return 1;
	for (t = cfg->tunnels; t != NULL; t = t->next)
		for (i = 0; i < t->nlisten; i++)
			if (t->listen[i].kind == LISTEN_SYSTEMD &&
			    strcmp(t->listen[i].fdname, name) == 0)
				return 1;
	return 0;
}

int
sd_check_config(const struct config *cfg, char *err, size_t errlen)
{
	const struct cfg_tunnel	*t;
	const struct cfg_listen	*l;
	char			 names[512];
	int			 i, n;

	sd_names(names, sizeof(names));
	for (t = cfg->tunnels; t != NULL; t = t->next) {
		for (i = 0; i < t->nlisten; i++) {
			l = &t->listen[i];
			if (l->kind != LISTEN_SYSTEMD ||
			    (n = count_named(l->fdname, NULL)) == 1)
				continue;
			if (n == 0)
				snprintf(err, errlen, "%s:%d: [tunnel %s] listen ="
				    " systemd:%s: systemd passed no socket of "
				    "that name (it passed: %s); name one "
				    "FileDescriptorName=%s in the .socket unit, "
				    "or start p11agent from that socket unit",
				    cfg->path, l->line, t->name, l->fdname,
				    names, l->fdname);
			else
				snprintf(err, errlen, "%s:%d: [tunnel %s] listen ="
				    " systemd:%s: systemd passed %d sockets of "
				    "that name; a listen line takes one: give "
				    "each ListenStream= a .socket unit or a "
				    "FileDescriptorName= of its own", cfg->path,
				    l->line, t->name, l->fdname, n);
			return P11A_ERR_CONFIG;
		}
	}
	for (i = 0; i < nfds; i++) {
		if (claimed(cfg, fds[i].name))
			continue;
		snprintf(err, errlen, "systemd passed a socket named %s (fd %d)"
		    " that no tunnel of %s takes: add listen = systemd:%s to "
		    "a [tunnel] section, or remove it from the .socket unit",
		    fds[i].name, fds[i].fd, cfg->path, fds[i].name);
		return P11A_ERR_CONFIG;
	}
	if (count_named(SD_CONTROL_NAME, NULL) > 1) {
		snprintf(err, errlen, "systemd passed %d sockets named %s; the "
		    "control socket is one", count_named(SD_CONTROL_NAME,
		    NULL), SD_CONTROL_NAME);
		return P11A_ERR_CONFIG;
	}
	return 0;
}

int
sd_has(const char *name)
{
	return count_named(name, NULL);
}

int
sd_listen_fd(const char *name, int *fd)
{
	int	 orig = -1, dup;

	if (count_named(name, &orig) != 1)
		return P11A_ERR_NOT_FOUND;
	if ((dup = fcntl(orig, F_DUPFD_CLOEXEC, 3)) == -1)
		return P11A_ERR_SYSTEM;
	*fd = dup;
	return 0;
}

/* "serving 3 tunnels, 5 connections" */
static void
status_line(const struct agent *a, char *buf, size_t size)
{
	const struct tunnel_rt	*rt;
	int			 n = 0;

	for (rt = a->tunnels; rt != NULL && !rt->retired; rt = rt->next)
		n++;	/* (what a reload retired is at the end) */
	snprintf(buf, size, "serving %d tunnel%s, %d connection%s", n,
	    n == 1 ? "" : "s", a->nconns, a->nconns == 1 ? "" : "s");
}

void
sd_ready(const struct agent *a)
{
	char	 line[STATUS_MAX], msg[STATUS_MAX + 32];

	if (!notify || stopping_said)
		return;
	status_line(a, line, sizeof(line));
	if (strcmp(line, status_sent) == 0) {	/* after a reload */
		say("READY=1");
		return;
	}
	memcpy(status_sent, line, sizeof(status_sent));
	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status_sent);
	say(msg);
}

void
sd_stopping(void)
{
	if (stopping_said++)	/* at the drain's start, and after the loop */
		return;
	snprintf(status_sent, sizeof(status_sent), "stopping");
	say("STOPPING=1\nSTATUS=stopping");
}

void
sd_tick(const struct agent *a, long now)
{
	char	 line[STATUS_MAX], msg[STATUS_MAX + 8];

	if (!notify)
		return;
	if (wd_half_ms > 0 && now - wd_last >= wd_half_ms) {
		wd_last = now;
		say("WATCHDOG=1");
	}
	/* only once READY=1 said what the agent serves */
	if (status_sent[0] == '\0' || strcmp(status_sent, "stopping") == 0)
		return;
	status_line(a, line, sizeof(line));
	if (strcmp(line, status_sent) == 0)
		return;
	snprintf(status_sent, sizeof(status_sent), "%s", line);
	snprintf(msg, sizeof(msg), "STATUS=%s", line);
	say(msg);
}

void
sd_cleanup(void)
{
	int	 i;

	for (i = 0; i < nfds; i++) {
		close(fds[i].fd);
		free(fds[i].name);
	}
	nfds = 0;
}

#else /* !HAVE_LIBSYSTEMD: nothing is inherited, nobody is told */

int
sd_init(char *err, size_t errlen)
{
	if (getenv("LISTEN_FDS") != NULL)
		log_warn("systemd passed sockets (LISTEN_FDS), but p11agent "
		    "was built without libsystemd and does not use them");
	return 0;
}

int
sd_check_config(const struct config *cfg, char *err, size_t errlen)
{
	return 0;	/* the parser refused systemd:NAME already */
}

int
sd_has(const char *name)
{
	return 0;
}

int
sd_listen_fd(const char *name, int *fd)
{
	return P11A_ERR_NOT_FOUND;
}

const char *
sd_names(char *buf, size_t size)
{
	snprintf(buf, size, "none (built without libsystemd)");
	return buf;
}

void
sd_ready(const struct agent *a)
{
}

void
sd_reloading(void)
{
}

void
sd_stopping(void)
{
}

void
sd_tick(const struct agent *a, long now)
{
}

void
sd_cleanup(void)
{
}

#endif /* HAVE_LIBSYSTEMD */
