/*
 * p11agent: administrator policies (agent/policy.c reads them,
 * agent/policy_check.c binds and enforces them; p11agent.policy(5)).
 *
 * Every *.policy file of the policy directory is read in name order
 * (INI, inih, like the configuration): [policy NAME] sections.  A policy
 * binds the identities its selectors all match (key URI, token label or
 * serial, certificate fingerprint, issuer, subject) and says what their
 * tunnels may do: destinations, local users, groups and programs, a TLS
 * floor, a CA file, SPKI pins, OCSP stapling, PIN cache and PIN sources,
 * on-removal.  A user configuration may narrow a policy, never widen it:
 * where it says nothing the policy's value is filled in, where it says
 * more each difference is a violation naming both file:line.  Several
 * policies binding one identity all apply; an identity no policy binds
 * runs as without policies.
 */
#ifndef P11AGENT_POLICY_H
#define P11AGENT_POLICY_H

#include <stddef.h>
#include <netinet/in.h>

#include <openssl/x509.h>

struct agent;
struct cfg_identity;
struct cfg_tunnel;
struct peer;

#define POLICY_MAX_BOUND	8	/* policies binding one identity */
#define POLICY_MAX_FILES	256
#define POLICY_MAX_LIST		32	/* entries of one list key */

/* One connect = entry: a host pattern or an address range, and ports. */
struct policy_host {
	char		*name;		/* lower case fnmatch pattern; NULL:
					 * an address range */
	int		 family;	/* AF_INET, AF_INET6 (ranges) */
	unsigned char	 addr[16];
	int		 prefix;	/* bits */
	int		 port_lo, port_hi;
};

struct policy_set;

/* The default directory: $(sysconfdir)/p11agent/policies.d. */
const char *policy_default_dir(void);
/* --policies DIR: the directory later loads read (NULL: the default). */
void	 policy_dir_set(const char *);
/*
 * Reads every *.policy in dir (NULL: the default, which may be missing);
 * an explicit dir that is missing or not a directory, a file that cannot
 * be read and any parse error fail with err naming file:line.  An empty
 * set (no file) is a set too.
 */
int	 policy_load_dir(const char *dir, struct policy_set **,
	    char *err, size_t errlen);
/* One file (the fuzz target, the unit tests); appends to *set. */
int	 policy_load_file(const char *path, struct policy_set **,
	    char *err, size_t errlen);
void	 policy_set_free(struct policy_set *);
int	 policy_count(const struct policy_set *);

/*
 * After the identities opened: binds each identity of a->cfg to the
 * policies of a->cfg->policies its selectors match (with its
 * certificate), fills in what the configuration left to the policies
 * and logs one error per violation; returns how many violations.
 */
int	 policy_apply(struct agent *);
/*
 * A card put back (or another, with on-reinsert = any) opened as hid:
 * 1 if the policies that bind the identity with it are those that bound
 * it when they were applied, else 0 with why (the policy that differs).
 */
struct identity;
struct helper_identity;
int	 policy_rebind_same(const struct agent *, const struct identity *,
	    const struct helper_identity *, char *why, size_t);

/*
 * Connection time: 1 if every policy binding t's identity lets the peer
 * in (users, groups, programs), else 0; rule gets the rule that decided
 * ("allowed by policy bank (FILE:9: allow-programs)" or why it refused).
 * -1: no policy binds the identity.  The tunnel's own rule applies as
 * well (peer_access): a policy never lets anyone in.
 */
int	 policy_peer(const struct cfg_tunnel *, const struct peer *,
	    char *rule, size_t);

/* The matchers (unit-tested): 1 or 0. */
int	 policy_host_parse(const char *, struct policy_host *, char *err,
	    size_t);
int	 policy_host_match(const struct policy_host *, const char *host,
	    int port);
void	 policy_host_clear(struct policy_host *);

#endif
