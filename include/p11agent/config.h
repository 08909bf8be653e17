/*
 * p11agent: the user configuration (p11agent.conf(5)).
 *
 * INI syntax read with inih: [identity NAME] and [tunnel NAME] sections.
 * Options start unset and defaults are filled in after parsing; every
 * error names file, line and key.
 */
#ifndef P11AGENT_CONFIG_H
#define P11AGENT_CONFIG_H

#include <stddef.h>
#include <sys/types.h>

#define CONFIG_MAX_LISTEN	8
#define CONFIG_MAX_ALLOW	16
#define CONFIG_MAX_PINS		8	/* pin-sha256 per tunnel */
#define CONFIG_MAX_CRLS		8	/* crl = FILE lines per tunnel */
#define CONFIG_MAX_ALPN		256	/* alpn = list, in the wire format */
#define CONFIG_MAX_ERR		1024
#define CONFIG_MAX_CONNS	65536	/* the largest max-connections */
#define CONFIG_DEFAULT_CONNS	1024	/* per tunnel and in all */
/* card removal: how often the helper looks at its tokens (ms) */
#define CONFIG_DEFAULT_TOKEN_POLL	500
#define CONFIG_MIN_TOKEN_POLL		50
#define CONFIG_MAX_TOKEN_POLL		60000

/* on-removal: what the open tunnels of a removed card's identity do */
enum cfg_removal {
	CFG_REMOVAL_KEEP = 1,	/* keep flowing (they need no signature) */
	CFG_REMOVAL_CLOSE = 2,	/* closed at once */
};
/* session-cache */
enum cfg_session {
	CFG_SESSION_YES = 1,
	CFG_SESSION_NO = 2,
};
/* ocsp: the server's stapled OCSP response */
enum cfg_ocsp {
	CFG_OCSP_NO = 1,	/* not asked for */
	CFG_OCSP_REQUEST = 2,	/* asked for, checked when sent (default) */
	CFG_OCSP_REQUIRE = 3,	/* a good staple is required */
};
/* on-reinsert: which card brings the identity back */
enum cfg_reinsert {
	CFG_REINSERT_SAME = 1,	/* the card removed (its serial) */
	CFG_REINSERT_ANY = 2,	/* any card matching the key URI */
};
#define CONFIG_MAX_LOCK_AFTER	86400	/* lock-after, seconds */
/* drain-timeout: after SIGTERM, how long open connections may finish */
#define CONFIG_DEFAULT_DRAIN	10
#define CONFIG_MAX_DRAIN	3600

#define CFG_DEFAULT_HANDSHAKES	4
#define CFG_MAX_HANDSHAKES	64

struct policy;

struct cfg_identity {
	char			*name;
	int			 line;
	char			*key;		/* pkcs11: URI of the private key */
	int			 key_line;
	char			*cert;		/* URI or file; NULL: same CKA_ID */
	char			*pin;		/* PIN source, as written */
	char			*pin_src;	/* the agent's: fd:N as env: */
	char			*module;	/* module path; NULL: p11-kit */
	int			 sign_timeout;	/* seconds */
	char			*pinentry;	/* pinentry-program, or NULL */
	int			 pin_cache;	/* seconds; 0: not kept */
	/* full handshakes waiting on the token at once; more queue in the
	 * agent (agent/tunnel.c) */
	int			 max_handshakes;
	/* card removal */
	int			 on_removal;	/* CFG_REMOVAL_* */
	/* 1: the token is logged out after each signature, so each full
	 * handshake asks the PIN (and the tunnels resume no session) */
	int			 pin_per_handshake;
	int			 pin_per_handshake_line;
	int			 on_reinsert;	/* CFG_REINSERT_* */
	/* the lines of the keys a policy checks (0: not given) */
	int			 pin_line, pin_cache_line, on_removal_line;
	/* the policies binding it (agent/policy.c; of config->policies) */
	const struct policy	*policies[8];
	int			 npolicies;
	struct cfg_identity	*next;
};

enum listen_kind {
	LISTEN_TCP = 1,
	LISTEN_UNIX = 2,
	LISTEN_SYSTEMD = 3,	/* a socket systemd passed (agent/sd.c) */
};

struct cfg_listen {
	int		 kind;
	char		*host;		/* TCP: address literal */
	char		*port;		/* TCP: port ("0" = ephemeral) */
	char		*path;		/* Unix socket path */
	char		*fdname;	/* systemd: its FileDescriptorName= */
	int		 line;
};

struct cfg_tunnel {
	char			*name;
	int			 line;
	struct cfg_listen	 listen[CONFIG_MAX_LISTEN];
	int			 nlisten;
	char			*connect_host;
	char			*connect_port;
	char			*identity_name;
	int			 identity_line;
	struct cfg_identity	*identity;
	char			*ca;		/* CA file; NULL: system store */
	char			*ca_dir;	/* CA directory (ca-dir) */
	char			*crl[CONFIG_MAX_CRLS];	/* CRL files */
	int			 ncrl;
	int			 ocsp;		/* CFG_OCSP_* */
	/* alpn: the protocols offered, in the wire format (at most
	 * CONFIG_MAX_ALPN bytes); NULL, 0: none */
	unsigned char		*alpn;
	int			 alpn_len;
	char			*server_name;	/* name checked; default host */
	/* pin-sha256: SHA-256 of an SPKI in the server's verified chain */
	unsigned char		 pins[CONFIG_MAX_PINS][32];
	int			 npins;
	int			 tls_min;	/* TLS1_2_VERSION, TLS1_3_VERSION */
	int			 tls_max;
	int			 allow_remote;	/* listen beyond loopback */
	int			 connect_timeout;	/* seconds */
	int			 handshake_timeout;
	int			 idle_timeout;
	int			 max_connections;
	/* who may connect besides the agent's own uid (allow-users,
	 * allow-groups; names resolved when the file is read) */
	uid_t			 allow_users[CONFIG_MAX_ALLOW];
	int			 nallow_users;
	gid_t			 allow_groups[CONFIG_MAX_ALLOW];
	int			 nallow_groups;
	/* TLS session resumption (agent/session.c) */
	int			 session_cache;	/* CFG_SESSION_*; 0: yes */
	int			 session_cache_size;	/* 0: the default */
	int			 session_lifetime;	/* seconds; 0: default */
	char			*text;		/* "key=value\n"..., as read */
	/* the lines of the keys a policy checks (0: not given) */
	int			 connect_line, server_name_line, ca_line;
	int			 ca_dir_line, pins_line, ocsp_line;
	int			 tls_min_line, tls_max_line;
	int			 allow_users_line, allow_groups_line;
	struct cfg_tunnel	*next;
};

/* The [agent] section: settings for the whole agent. */
struct cfg_agent {
	int			 line;		/* 0: no [agent] section */
	/* fnmatch(3) patterns of module paths (after realpath) allowed
	 * besides the system's library directories (module-allow) */
	char			*module_allow[CONFIG_MAX_ALLOW];
	int			 nmodule_allow;
	int			 max_connections;	/* all tunnels */
	int			 token_poll_ms;	/* token-poll: card presence */
	/* the control socket (NULL: $XDG_RUNTIME_DIR/p11agent/control)
	 * and lock-after = SECONDS (0, the default: off); agent/control.c */
	char			*control;
	int			 lock_after;
	int			 lock_after_line;
	int			 drain_timeout;	/* seconds, after SIGTERM */
	int			 drain_set;
	/* metrics = ADDRESS (kind 0: none), beyond loopback only with
	 * allow-remote-listen = yes (agent/metrics.c) */
	struct cfg_listen	 metrics;
	int			 allow_remote;
	/* log = TARGET (enum log_target; 0: auto) and log-level = LEVEL
	 * (1 + enum log_level; 0: not set, info); agent/log.c */
	int			 log_target;
	int			 log_level;
};

struct config {
	char			*path;
	struct cfg_agent	 agent;
	struct cfg_identity	*identities;
	struct cfg_tunnel	*tunnels;
	/* the administrator's policies (agent/policy.c), freed with it */
	struct policy_set	*policies;
};

/* Parses path; on error returns < 0 and a message in err. */
int	 config_load(const char *path, struct config **, char *err, size_t);
void	 config_free(struct config *);
/* Two settings alike: strings (either may be NULL), listen addresses as
 * written (kind, host, port, path, systemd name). */
int	 config_str_same(const char *, const char *);
int	 config_listen_same(const struct cfg_listen *,
	    const struct cfg_listen *);
/* A user (group 0) or group: a number, or a name this system knows
 * (NSS); 0 or -1 (also used by the policies, agent/policy.c). */
int	 config_lookup_id(int group, const char *tok, long *out);
/* Splits HOST:PORT or [V6]:PORT into new strings; 0 or -1. */
int	 config_split_hostport(const char *, char **, char **);

#endif
