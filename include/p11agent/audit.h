/*
 * p11agent: the audit trail of token signatures (agent/audit.c).
 *
 * Each signature a tunnel's handshake asks of a token is logged, once it
 * is done or failed, with the connection that caused it: its tunnel and
 * upstream, and the local client (uid, pid, program) as peer.c found it,
 * so that "which program made my card sign at 10:42?" has an answer in
 * the log (journal fields P11AGENT_SIGNATURE, P11AGENT_CONN,
 * P11AGENT_TUNNEL, P11AGENT_IDENTITY, P11AGENT_PEER_UID, _PID, _EXE,
 * P11AGENT_UPSTREAM, P11AGENT_MECHANISM, P11AGENT_SIGN_MS,
 * P11AGENT_OUTCOME) and the last AUDIT_KEEP of them in `status`.
 */
#ifndef P11AGENT_AUDIT_H
#define P11AGENT_AUDIT_H

#include <time.h>

#define AUDIT_KEEP	16	/* signatures status shows */

/* The strings of a kept one are its own copies (audit.c). */
struct audit_sig {
	unsigned long	 seq;		/* 1, 2, ... since the agent started */
	time_t		 when;		/* wall clock, at the request */
	long		 ms;		/* request to answer */
	int		 ok;
	const char	*why;		/* a failure's reason */
	const char	*identity;	/* the identity's name */
	const char	*token;		/* "'LABEL' serial S", or NULL */
	const char	*tunnel;
	const char	*upstream;	/* HOST:PORT */
	unsigned long	 conn;
	long		 uid, pid;	/* -1: unknown */
	const char	*exe;		/* NULL: unknown */
	const char	*mechanism;	/* "CKM_ECDSA", ... */
	/* not a tunnel's: what asked, e.g. "p11agent check's test
	 * signature" (conn, tunnel and upstream unused) */
	const char	*purpose;
};

/* A signature done: logged, and kept (the strings are copied). */
void	 audit_signature(const struct audit_sig *);
/* A copy of a signature's who and where (the strings but why), for a
 * connection whose tunnel may be gone before its signature ends (one
 * closed while the token signs: tunnel.c); audit_free frees it. */
struct audit_sig *audit_copy(const struct audit_sig *);
void	 audit_free(struct audit_sig *);
/* An rkey_set_audit observer for a signature no tunnel asked for (not
 * inside an async job): arg is a struct audit_sig with the identity,
 * token and purpose; this process is the one that asked. */
struct rkey_signed;
void	 audit_local(void *arg, const struct rkey_signed *);
/* The i-th latest kept (0: the latest), or NULL. */
const struct audit_sig *audit_recent(int i);
/* Signatures since the agent started. */
unsigned long audit_count(void);
/* The PKCS#11 mechanism of a PROTO_SIGN algorithm. */
const char *audit_mechanism(int alg);
/* Frees what is kept (at exit). */
void	 audit_clear(void);

#endif
