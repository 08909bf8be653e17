/*
 * p11agent: the audit trail of token signatures (audit.h).
 */
#include "config.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "p11agent/audit.h"
#include "p11agent/clock.h"
#include "p11agent/helper.h"
#include "p11agent/log.h"
#include "p11agent/proto.h"

static struct audit_sig	 ring[AUDIT_KEEP];
static unsigned long	 count;

static char *
dup_or_null(const char *s)
{
	return s != NULL ? strdup(s) : NULL;	/* NULL on no memory: "?" */
}

static void
sig_clear(struct audit_sig *s)
{
	/* the copies dup_or_null made */
	free((char *)s->why);
	free((char *)s->identity);
	free((char *)s->token);
	free((char *)s->tunnel);
	free((char *)s->upstream);
	free((char *)s->exe);
	free((char *)s->purpose);
	memset(s, 0, sizeof(*s));
}

/* in's numbers, and copies of its strings but why (left NULL) */
static void
copy_into(struct audit_sig *s, const struct audit_sig *in)
{
	*s = *in;
	s->why = NULL;
	s->identity = dup_or_null(in->identity);
	s->token = dup_or_null(in->token);
	s->tunnel = dup_or_null(in->tunnel);
	s->upstream = dup_or_null(in->upstream);
	s->exe = dup_or_null(in->exe);
	s->purpose = dup_or_null(in->purpose);
}

struct audit_sig *
audit_copy(const struct audit_sig *in)
{
	struct audit_sig	*s;

	if ((s = calloc(1, sizeof(*s))) != NULL)
		copy_into(s, in);
	return s;
}

void
audit_free(struct audit_sig *s)
{
	if (s == NULL)
		return;
	sig_clear(s);
	free(s);
}

const char *
audit_mechanism(int alg)
{
	switch (alg) {
	case PROTO_ALG_RSA_PKCS1:
		return "CKM_RSA_PKCS";
	case PROTO_ALG_RSA_RAW:
		return "CKM_RSA_X_509";
	case PROTO_ALG_RSA_PSS:
		return "CKM_RSA_PKCS_PSS";
	case PROTO_ALG_ECDSA:
		return "CKM_ECDSA";
	default:
		return "?";
	}
}

void
audit_signature(const struct audit_sig *in)
{
	struct audit_sig	*s;
	char			 seq[24], conn[24], uid[24], pid[24], ms[24];
	char			 outcome[600], what[300];
	struct log_field	 f[12];

	count++;
	s = &ring[count % AUDIT_KEEP];
	sig_clear(s);
	copy_into(s, in);
	s->seq = count;
	s->why = in->ok ? NULL : dup_or_null(in->why ? in->why : "?");

	snprintf(seq, sizeof(seq), "%lu", s->seq);
	snprintf(conn, sizeof(conn), "%lu", s->conn);
	log_num(uid, sizeof(uid), s->uid);
	log_num(pid, sizeof(pid), s->pid);
	snprintf(ms, sizeof(ms), "%ld", s->ms);
	if (s->ok)
		snprintf(outcome, sizeof(outcome), "signed");
	else
		snprintf(outcome, sizeof(outcome), "failed: %s", s->why ?
		    s->why : "?");
	/* a tunnel's connection, or what else asked (p11agent check) */
	if (s->purpose != NULL)
		snprintf(what, sizeof(what), "%s", s->purpose);
	else
		snprintf(what, sizeof(what), "conn %s (%s)", conn, s->tunnel ?
		    s->tunnel : "?");
	f[0] = (struct log_field){ "P11AGENT_SIGNATURE", seq };
	f[1] = (struct log_field){ "P11AGENT_CONN", s->purpose ? NULL : conn };
	f[2] = (struct log_field){ "P11AGENT_TUNNEL", s->tunnel };
	f[3] = (struct log_field){ "P11AGENT_IDENTITY", s->identity };
	f[4] = (struct log_field){ "P11AGENT_PEER_UID", uid };
	f[5] = (struct log_field){ "P11AGENT_PEER_PID", pid };
	f[6] = (struct log_field){ "P11AGENT_PEER_EXE", s->exe };
	f[7] = (struct log_field){ "P11AGENT_UPSTREAM", s->upstream };
	f[8] = (struct log_field){ "P11AGENT_MECHANISM", s->mechanism };
	f[9] = (struct log_field){ "P11AGENT_SIGN_MS", ms };
	f[10] = (struct log_field){ "P11AGENT_OUTCOME", outcome };
	f[11] = (struct log_field){ "P11AGENT_TOKEN", s->token };
	log_fields(s->ok ? LOG_LVL_INFO : LOG_LVL_WARN, __func__, f, 12,
	    "signature %s by identity %s%s%s for %s: uid %s pid %s %s%s%s; "
	    "%s, %s ms; %s", seq, s->identity ? s->identity : "?", s->token ?
	    ", token " : "", s->token ? s->token : "", what, uid, pid, s->exe ?
	    s->exe : "?", s->upstream ? "; upstream " : "", s->upstream ?
	    s->upstream : "", s->mechanism ? s->mechanism : "?", ms, outcome);
}

void
audit_local(void *arg, const struct rkey_signed *r)
{
	struct audit_sig	 g = *(const struct audit_sig *)arg;
	char			 exe[PATH_MAX];
	ssize_t			 n;

	if ((n = readlink("/proc/self/exe", exe, sizeof(exe) - 1)) < 0)
		n = 0;
	exe[n] = '\0';
	g.when = time(NULL) - (clock_now_ms() - r->start_ms) / 1000;
	g.ms = r->ms;
	g.ok = r->err == 0;
	g.why = r->why;
	g.uid = (long)getuid();
	g.pid = (long)getpid();
	g.exe = exe[0] != '\0' ? exe : NULL;
	g.mechanism = audit_mechanism(r->alg);
	audit_signature(&g);
}

const struct audit_sig *
audit_recent(int i)
{
	if (i < 0 || i >= AUDIT_KEEP || (unsigned long)i >= count)
		return NULL;
	return &ring[(count - (unsigned long)i) % AUDIT_KEEP];
}

unsigned long
audit_count(void)
{
	return count;
}

void
audit_clear(void)
{
	int	 i;

	for (i = 0; i < AUDIT_KEEP; i++)
		sig_clear(&ring[i]);
}
