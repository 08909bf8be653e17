/*
 * p11agent: systemd integration (agent/sd.c, p11agent(1) SYSTEMD).
 *
 * A thin layer over libsystemd: the service manager's notifications
 * (sd_notify: READY=1, RELOADING=1, STOPPING=1, a STATUS= line and the
 * watchdog's WATCHDOG=1) and the sockets of socket activation
 * (sd_listen_fds_with_names), matched to tunnels by their
 * FileDescriptorName= (listen = systemd:NAME) and, for the name
 * "control", to the control socket.  Built without libsystemd
 * (HAVE_LIBSYSTEMD unset), the notifications do nothing and no socket is
 * ever inherited.
 *
 * sd.c keeps the inherited descriptors for the life of the process and
 * hands out duplicates: a listener closes its own, and a reload can take
 * the same socket again.
 */
#ifndef P11AGENT_SD_H
#define P11AGENT_SD_H

#include <stddef.h>

struct agent;
struct config;

#define SD_MAX_FDS	64	/* inherited sockets taken, at most */
#define SD_NAME_MAX	255	/* a FileDescriptorName= */
/* the name of the inherited socket that serves as the control socket */
#define SD_CONTROL_NAME	"control"

/* 1 if built with libsystemd, else 0. */
int	 sd_available(void);
/*
 * At start-up of p11agent run, before any helper is spawned: takes the
 * inherited sockets (close-on-exec; LISTEN_FDS, LISTEN_PID and
 * LISTEN_FDNAMES are removed from the environment) and the watchdog
 * interval (WATCHDOG_USEC and WATCHDOG_PID removed too).  NOTIFY_SOCKET
 * stays for sd_notify; the helper's environment leaves it out
 * (engine/client.c).  0, or < 0 with the reason in err.
 */
int	 sd_init(char *err, size_t errlen);
/*
 * The configuration against the inherited sockets: each listen =
 * systemd:NAME finds exactly one socket named NAME, and every socket but
 * "control" is taken by a tunnel.  Meant for start-up and for a reload's
 * validation.  0, or P11A_ERR_CONFIG with a message naming the tunnel,
 * config line and the names that were passed.
 */
int	 sd_check_config(const struct config *, char *err, size_t errlen);
/*
 * A new descriptor (close-on-exec) for the inherited socket named name,
 * which the caller owns; P11A_ERR_NOT_FOUND (none, or several of that
 * name) or P11A_ERR_SYSTEM.
 */
int	 sd_listen_fd(const char *name, int *fd);
/* How many inherited sockets are named name. */
int	 sd_has(const char *name);
/* The names systemd passed, "a, b, control", or "none", into buf. */
const char *sd_names(char *buf, size_t size);

/* READY=1 with the STATUS= line: the tunnels are listening. */
void	 sd_ready(const struct agent *);
/* RELOADING=1 (with MONOTONIC_USEC=): a reload starts; sd_ready() when
 * it is done, whether or not the new configuration was taken. */
void	 sd_reloading(void);
/* STOPPING=1: the agent stops accepting and closes down. */
void	 sd_stopping(void);
/*
 * From the agent's tick (loop.h, every LOOP_TICK_MS): WATCHDOG=1 at half
 * the watchdog interval, and STATUS= when what it says changed.
 */
void	 sd_tick(const struct agent *, long now_ms);
/* Closes the inherited sockets (at exit). */
void	 sd_cleanup(void);

#endif
