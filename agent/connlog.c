/*
 * p11agent: the log lines of one tunnel connection (connlog.h).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "p11agent/config.h"
#include "p11agent/connlog.h"
#include "p11agent/log.h"
#include "p11agent/peer.h"
#include "p11agent/tunnel.h"

void
connlog_peer(struct connlog *l, const struct peer *p, const char *rule)
{
	l->uid = p->uid;
	l->pid = p->pid;
	l->exe = p->exe[0] ? strdup(p->exe) : NULL;	/* NULL: "?" */
	snprintf(l->access, sizeof(l->access), "%s", rule);
	l->first_eof = CONNLOG_OPEN;
}

void
connlog_eof(struct connlog *l, enum connlog_side side)
{
	if (l->first_eof == CONNLOG_OPEN)
		l->first_eof = side;
}

void
connlog_clear(struct connlog *l)
{
	free(l->exe);
	l->exe = NULL;
}

static const char *
outcome(const struct connlog *l, const char *why, int up_dead, char *buf,
    size_t len)
{
	if (why != NULL)
		snprintf(buf, len, "closed: %s", why);
	else if (up_dead)
		snprintf(buf, len, "closed by the upstream (no close_notify)");
	else if (l->first_eof == CONNLOG_CLIENT)
		snprintf(buf, len, "closed by the client");
	else if (l->first_eof == CONNLOG_UPSTREAM)
		snprintf(buf, len, "closed by the upstream");
	else
		snprintf(buf, len, "closed");
	return buf;
}

void
connlog_end(const struct connlog *l, unsigned long id,
    const struct tunnel_rt *rt, SSL *ssl, unsigned long long up,
    unsigned long long down, long ms, const char *why, int up_dead)
{
	const struct cfg_tunnel	*t = rt->cfg;
	char			 sid[24], uid[24], pid[24], upstream[300];
	char			 sup[24], sdown[24], sms[24], end[300];
	const char		*tls = ssl != NULL ? SSL_get_version(ssl) : NULL;
	const char		*hs = ssl == NULL ? "none" :
				    SSL_session_reused(ssl) ? "resumed" : "full";
	const unsigned char	*ap = NULL;
	unsigned int		 an = 0;
	char			 alpn[270] = "";
	struct log_field	 f[14];

	snprintf(sid, sizeof(sid), "%lu", id);
	log_num(uid, sizeof(uid), l->uid);
	log_num(pid, sizeof(pid), l->pid);
	snprintf(upstream, sizeof(upstream), "%s:%s", t->connect_host,
	    t->connect_port);
	snprintf(sup, sizeof(sup), "%llu", up);
	snprintf(sdown, sizeof(sdown), "%llu", down);
	snprintf(sms, sizeof(sms), "%ld", ms);
	outcome(l, why, up_dead, end, sizeof(end));
	if (ssl != NULL)	/* the protocol the server chose (tls.c) */
		SSL_get0_alpn_selected(ssl, &ap, &an);
	if (ap != NULL && an > 0)
		snprintf(alpn, sizeof(alpn), ", ALPN %.*s", (int)an, ap);
	f[0] = (struct log_field){ "P11AGENT_CONN", sid };
	f[1] = (struct log_field){ "P11AGENT_TUNNEL", t->name };
	f[2] = (struct log_field){ "P11AGENT_IDENTITY", t->identity_name };
	f[3] = (struct log_field){ "P11AGENT_PEER_UID", uid };
	f[4] = (struct log_field){ "P11AGENT_PEER_PID", pid };
	f[5] = (struct log_field){ "P11AGENT_PEER_EXE", l->exe };
	f[6] = (struct log_field){ "P11AGENT_ACCESS", l->access };
	f[7] = (struct log_field){ "P11AGENT_UPSTREAM", upstream };
	f[8] = (struct log_field){ "P11AGENT_TLS", tls };
	f[9] = (struct log_field){ "P11AGENT_HANDSHAKE", hs };
	f[10] = (struct log_field){ "P11AGENT_BYTES_UP", sup };
	f[11] = (struct log_field){ "P11AGENT_BYTES_DOWN", sdown };
	f[12] = (struct log_field){ "P11AGENT_DURATION_MS", sms };
	f[13] = (struct log_field){ "P11AGENT_OUTCOME", end };
	log_fields(LOG_LVL_INFO, __func__, f, 14, "conn %s (%s): %s; uid %s "
	    "pid %s %s (%s); upstream %s, %s%s%s handshake%s; %s bytes up, %s "
	    "down, %s ms", sid, t->name, end, uid, pid, l->exe ? l->exe : "?",
	    l->access, upstream, tls ? tls : "", tls ? " " : "", ssl ? hs :
	    "no TLS", alpn, sup, sdown, sms);
}

void
connlog_refused(unsigned long id, const struct tunnel_rt *rt,
    const char *listener, const struct peer *p, const char *rule)
{
	char			 sid[24], uid[24], pid[24];
	struct log_field	 f[6];

	snprintf(sid, sizeof(sid), "%lu", id);
	if (p->uid < 0)
		snprintf(uid, sizeof(uid), "unknown");
	else
		snprintf(uid, sizeof(uid), "%ld", p->uid);
	log_num(pid, sizeof(pid), p->pid);
	f[0] = (struct log_field){ "P11AGENT_CONN", sid };
	f[1] = (struct log_field){ "P11AGENT_TUNNEL", rt->cfg->name };
	f[2] = (struct log_field){ "P11AGENT_PEER_UID", uid };
	f[3] = (struct log_field){ "P11AGENT_PEER_PID", pid };
	f[4] = (struct log_field){ "P11AGENT_PEER_EXE", p->exe[0] ? p->exe :
	    NULL };
	f[5] = (struct log_field){ "P11AGENT_ACCESS", "denied" };
	log_fields(LOG_LVL_WARN, __func__, f, 6, "conn %s (%s): refused: uid "
	    "%s (program %s, pid %s) is not allowed on %s (%s)", sid,
	    rt->cfg->name, uid, p->exe[0] ? p->exe : "?", pid, listener, rule);
}

void
connlog_decision(unsigned long id, const struct tunnel_rt *rt,
    const struct peer *p, int allowed, const char *rule)
{
	const struct cfg_tunnel	*t = rt->cfg;
	char			 sid[24], uid[24], pid[24], upstream[300];
	const char		*dec = allowed ? "allowed" : "refused";
	struct log_field	 f[9];

	snprintf(sid, sizeof(sid), "%lu", id);
	log_num(uid, sizeof(uid), p->uid);
	log_num(pid, sizeof(pid), p->pid);
	snprintf(upstream, sizeof(upstream), "%s:%s", t->connect_host,
	    t->connect_port);
	f[0] = (struct log_field){ "P11AGENT_CONN", sid };
	f[1] = (struct log_field){ "P11AGENT_TUNNEL", t->name };
	f[2] = (struct log_field){ "P11AGENT_IDENTITY", t->identity_name };
	f[3] = (struct log_field){ "P11AGENT_PEER_UID", uid };
	f[4] = (struct log_field){ "P11AGENT_PEER_PID", pid };
	f[5] = (struct log_field){ "P11AGENT_PEER_EXE", p->exe[0] ? p->exe :
	    NULL };
	f[6] = (struct log_field){ "P11AGENT_UPSTREAM", upstream };
	f[7] = (struct log_field){ "P11AGENT_DECISION", dec };
	f[8] = (struct log_field){ "P11AGENT_RULE", rule };
	log_fields(LOG_LVL_INFO, __func__, f, 9, "conn %s (%s): decision: %s: "
	    "uid %s pid %s program %s, identity %s, destination %s; rule: %s",
	    sid, t->name, dec, uid, pid, p->exe[0] ? p->exe : "?",
	    t->identity_name, upstream, rule);
}
