/*
 * p11agent: what agent/policy.c (the files) and agent/policy_check.c
 * (binding and enforcement) share; the contract is policy.h.
 */
#ifndef P11AGENT_POLICY_INT_H
#define P11AGENT_POLICY_INT_H

#include "p11agent/config.h"
#include "p11agent/policy.h"

enum pkey {
	/* selectors */
	P_KEY, P_TOKEN_LABEL, P_TOKEN_SERIAL, P_CERT_SHA256, P_CERT_ISSUER,
	P_CERT_SUBJECT,
	/* permissions */
	P_CONNECT, P_ALLOW_USERS, P_ALLOW_GROUPS, P_ALLOW_PROGRAMS, P_TLS_MIN,
	P_CA, P_PIN_SHA256, P_OCSP, P_PIN_CACHE_MAX, P_ON_REMOVAL,
	P_PIN_SOURCES, P_PIN_PER_HANDSHAKE,
	P_COUNT
};
#define P_SELECTORS	(P_CERT_SUBJECT + 1)

/* the keys' names, in enum pkey order (t-manpages reads them) */
extern const char *const pkey_names[P_COUNT];

/* pin-sources: the kinds of pin = */
enum { SRC_PINENTRY = 1, SRC_FILE = 2, SRC_ENV = 4, SRC_FD = 8,
	SRC_ASK = 16, SRC_NONE = 32 };
/* "file" for SRC_FILE */
const char	*policy_src_name(unsigned);

struct policy {
	char			*name;
	char			*file;
	int			 line;
	int			 lines[P_COUNT];	/* first line of each key */
	char			*vals[P_COUNT];		/* as written, joined */
	char			*text;			/* all, for a reload */
	/* selectors */
	char			*key, *label, *serial, *issuer, *subject;
	unsigned char		 sha[32];
	int			 has_sha;
	/* permissions */
	struct policy_host	 hosts[POLICY_MAX_LIST];
	int			 nhosts;
	long			 users[POLICY_MAX_LIST];
	int			 nusers;
	long			 groups[POLICY_MAX_LIST];
	int			 ngroups;
	char			*programs[POLICY_MAX_LIST];
	int			 nprograms;
	int			 tls_min;
	char			*ca;
	unsigned char		 pins[CONFIG_MAX_PINS][32];
	int			 npins;
	int			 ocsp;
	int			 pin_cache_max;		/* -1: no limit */
	int			 on_removal;
	int			 pin_per_handshake;	/* 1: required */
	unsigned		 sources;		/* 0: any */
	struct policy		*next;
};

struct policy_set {
	struct policy		*first;
	struct policy		**tail;
	int			 n;
};

#endif
