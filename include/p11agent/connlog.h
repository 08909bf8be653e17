/*
 * p11agent: the log lines of one tunnel connection (agent/connlog.c).
 *
 * When a connection ends, one info line says who it was (peer uid, pid,
 * executable), why it was let in (own uid, allow-users, allow-groups,
 * or the administrator's policies: agent/policy.c),
 * where it went (upstream, TLS version, full or resumed handshake), how
 * much moved (bytes up and down, duration) and how it ended (closed by
 * the client or the upstream, or why it failed), with the same as
 * journal fields: P11AGENT_CONN, P11AGENT_TUNNEL, P11AGENT_IDENTITY,
 * P11AGENT_PEER_UID, P11AGENT_PEER_PID, P11AGENT_PEER_EXE,
 * P11AGENT_ACCESS, P11AGENT_UPSTREAM, P11AGENT_TLS, P11AGENT_HANDSHAKE,
 * P11AGENT_BYTES_UP, P11AGENT_BYTES_DOWN, P11AGENT_DURATION_MS,
 * P11AGENT_OUTCOME.
 */
#ifndef P11AGENT_CONNLOG_H
#define P11AGENT_CONNLOG_H

#include <openssl/ssl.h>

struct peer;
struct tunnel_rt;

/* Which side ended the byte stream first. */
enum connlog_side {
	CONNLOG_OPEN,
	CONNLOG_CLIENT,
	CONNLOG_UPSTREAM,
};

/* What a connection keeps for its end line (its struct conn holds it). */
struct connlog {
	long		 uid, pid;	/* -1: unknown */
	char		*exe;		/* NULL: unknown */
	char		 access[256];	/* the rule that let it in */
	enum connlog_side first_eof;
};

/* Keeps the peer and the rule (peer_access) that let it in. */
void	 connlog_peer(struct connlog *, const struct peer *,
	    const char *rule);
/* The first side to end its stream (later calls change nothing). */
void	 connlog_eof(struct connlog *, enum connlog_side);
/* Frees what connlog_peer kept (accepts a zeroed one). */
void	 connlog_clear(struct connlog *);

/*
 * The end line.  ssl: the connection's, NULL if its handshake never
 * completed; why: NULL for an orderly end, else why it was closed;
 * up_dead: the upstream closed without close_notify.
 */
void	 connlog_end(const struct connlog *, unsigned long id,
	    const struct tunnel_rt *, SSL *ssl, unsigned long long up,
	    unsigned long long down, long ms, const char *why, int up_dead);

/* A refused peer: the warning naming it and the rule (peer_access's),
 * with fields. */
void	 connlog_refused(unsigned long id, const struct tunnel_rt *,
	    const char *listener, const struct peer *, const char *rule);
/*
 * The access decision, when it is made (info): uid, pid, program,
 * identity, destination, allowed or refused, and the rule; fields
 * P11AGENT_DECISION and P11AGENT_RULE besides those of the end line.
 */
void	 connlog_decision(unsigned long id, const struct tunnel_rt *,
	    const struct peer *, int allowed, const char *rule);

#endif
