/*
 * p11fault: a PKCS#11 module that wraps a real module and injects faults.
 * Used by the test suite only.  Configured from the environment when
 * C_Initialize is called:
 *
 *   P11FAULT_MODULE		path of the real module (required)
 *   P11FAULT_LOG		append "<pid> <function> <rv> [details]" lines
 *   P11FAULT_SIGN_DELAY_MS	add this many ms to C_Sign and C_SignFinal
 *   P11FAULT_FAIL		"C_Login=0xA0,C_Sign=0x30:2": return the code
 *				without forwarding (optionally N times only;
 *				"C_Sign=0x5:1@3": once, at the third call,
 *				the two before it forwarded)
 *   P11FAULT_HIDE_MECHS	"0x0d,CKM_RSA_X_509": pretend these mechanisms
 *				do not exist
 *   P11FAULT_TOKEN_ABSENT_FILE	while this file exists the token is removed
 *   P11FAULT_TOKEN_FLAGS	OR these into C_GetTokenInfo's flags (e.g.
 *				0x20000, CKF_USER_PIN_FINAL_TRY)
 *   P11FAULT_SLOT_DESC		if set (even empty), replaces every slot's
 *				description
 *   P11FAULT_ALWAYS_AUTH	a PIN: private keys have CKA_ALWAYS_AUTHENTICATE
 *				and every C_Sign needs C_Login(CKU_CONTEXT_
 *				SPECIFIC) with it after its C_SignInit
 *   P11FAULT_ABSENT_SERIALS	a file: the tokens whose serials it lists (one
 *				per line) are out of their readers for the slot
 *				calls (slot list, infos, C_OpenSession)
 *   P11FAULT_PINPAD_PIN	a PIN pad: C_GetTokenInfo reports
 *				CKF_PROTECTED_AUTHENTICATION_PATH and a
 *				C_Login with a NULL PIN is forwarded with
 *				this value, as if typed on the reader (the
 *				log says "pin=NULL")
 *   P11FAULT_MECH_MAX_BITS	C_GetMechanismInfo reports at most this
 *				ulMaxKeySize (a token with smaller keys)
 *
 * Card removal (slot events):
 *   P11FAULT_SLOT_EVENTS	"1": C_WaitForSlotEvent is emulated from the
 *				changes of P11FAULT_TOKEN_ABSENT_FILE (each
 *				change is one event per initialised token's
 *				slot); CKF_DONT_BLOCK answers CKR_NO_EVENT
 *				when there is none, the blocking form waits
 *				(looking every 10 ms) until there is one or
 *				C_Finalize is called (then
 *				CKR_CRYPTOKI_NOT_INITIALIZED).  Unset: the
 *				call goes to the real module, as others do.
 *
 * PIN bytes and attribute values are never logged.
 */

#include <sys/stat.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define MAXRULES	32
#define MAXHIDDEN	32
#define DETAILSZ	768

#define F_SLOT		0x01	/* needs a token: CKR_TOKEN_NOT_PRESENT */
#define F_SESS		0x02	/* session call: CKR_DEVICE_REMOVED */
#define F_DELAY		0x04	/* subject to P11FAULT_SIGN_DELAY_MS */

struct rule {
	char		 name[32];
	CK_RV		 rv;
	long		 left;		/* calls left to fail, -1: forever */
	long		 skip;		/* calls to forward first */
};

struct call {
	const char	*name;
	int		 flags;
	int		 has_mech;
	int		 injected;
	CK_MECHANISM_TYPE mech;
	char		 detail[DETAILSZ];
};

static const struct {
	const char		*name;
	CK_MECHANISM_TYPE	 type;
} mechnames[] = {
	{ "CKM_RSA_PKCS",	CKM_RSA_PKCS },
	{ "CKM_RSA_X_509",	CKM_RSA_X_509 },
	{ "CKM_RSA_PKCS_PSS",	CKM_RSA_PKCS_PSS },
	{ "CKM_ECDSA",		CKM_ECDSA },
};

/* Every name P11FAULT_FAIL may refer to. */
static const char *const fnames[] = {
	"C_Initialize", "C_Finalize", "C_GetInfo", "C_GetSlotList",
	"C_GetSlotInfo", "C_GetTokenInfo", "C_GetMechanismList",
	"C_GetMechanismInfo", "C_InitToken", "C_InitPIN", "C_SetPIN",
	"C_OpenSession", "C_CloseSession", "C_CloseAllSessions",
	"C_GetSessionInfo", "C_GetOperationState", "C_SetOperationState",
	"C_Login", "C_Logout", "C_CreateObject", "C_CopyObject",
	"C_DestroyObject", "C_GetObjectSize", "C_GetAttributeValue",
	"C_SetAttributeValue", "C_FindObjectsInit", "C_FindObjects",
	"C_FindObjectsFinal", "C_EncryptInit", "C_Encrypt",
	"C_EncryptUpdate", "C_EncryptFinal", "C_DecryptInit", "C_Decrypt",
	"C_DecryptUpdate", "C_DecryptFinal", "C_DigestInit", "C_Digest",
	"C_DigestUpdate", "C_DigestKey", "C_DigestFinal", "C_SignInit",
	"C_Sign", "C_SignUpdate", "C_SignFinal", "C_SignRecoverInit",
	"C_SignRecover", "C_VerifyInit", "C_Verify", "C_VerifyUpdate",
	"C_VerifyFinal", "C_VerifyRecoverInit", "C_VerifyRecover",
	"C_DigestEncryptUpdate", "C_DecryptDigestUpdate",
	"C_SignEncryptUpdate", "C_DecryptVerifyUpdate", "C_GenerateKey",
	"C_GenerateKeyPair", "C_WrapKey", "C_UnwrapKey", "C_DeriveKey",
	"C_SeedRandom", "C_GenerateRandom", "C_GetFunctionStatus",
	"C_CancelFunction", "C_WaitForSlotEvent",
};

static pthread_mutex_t	 mtx = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST	 flist;
static CK_FUNCTION_LIST	*real;
static void		*dlh;
static int		 configured;	/* setup() done since last C_Finalize */
static int		 logfd = -1;
static struct rule	 rules[MAXRULES];
static size_t		 nrules;
static CK_MECHANISM_TYPE hidden[MAXHIDDEN];
static size_t		 nhidden;
static long		 delay_ms;
static char		 absentpath[PATH_MAX];
static int		 was_absent;
static CK_FLAGS		 extra_flags;
static const char	*slot_desc;	/* NULL: the real one */
static const char	*pinpad_pin;	/* NULL: no PIN pad */
/* P11FAULT_ABSENT_SERIALS: a file; while it lists a token's serial (one
 * per line), that token alone is out of its reader for the slot calls */
static const char	*absent_serials;
/* P11FAULT_ALWAYS_AUTH: private keys say CKA_ALWAYS_AUTHENTICATE and each
 * C_Sign needs a C_Login(CKU_CONTEXT_SPECIFIC) with this PIN after its
 * C_SignInit; per session: 1 = waiting for it, 2 = given */
static const char	*always_pin;
#define MAX_AUTH_SESSIONS	64
static struct { CK_SESSION_HANDLE h; int state; } auth_sess[MAX_AUTH_SESSIONS];
static unsigned long	 mech_max_bits;	/* 0: the real ulMaxKeySize */
/* card removal: emulated slot events */
#define MAXEVENTS	16
static int		 slot_events;	/* P11FAULT_SLOT_EVENTS=1 */
static int		 ev_absent;	/* the state last turned into events */
static CK_SLOT_ID	 evq[MAXEVENTS];	/* slots with an event */
static size_t		 nevq;

/*
 * Configuration.
 */

static CK_RV
cfgerr(const char *what, const char *arg)
{
	fprintf(stderr, "p11fault: %s: %s\n", what, arg);
	return CKR_GENERAL_ERROR;
}

static int
parse_ulong(const char *s, unsigned long *out)
{
	char	*end;

	if (*s == '\0' || *s == '-')
		return -1;
	errno = 0;
	*out = strtoul(s, &end, 0);
	return (errno != 0 || *end != '\0') ? -1 : 0;
}

static int
known_fname(const char *name)
{
	size_t	 i;

	for (i = 0; i < sizeof(fnames) / sizeof(fnames[0]); i++)
		if (strcmp(fnames[i], name) == 0)
			return 1;
	return 0;
}

static CK_RV
add_rule(char *item)
{
	struct rule	*r;
	unsigned long	 v, n;
	unsigned long	 at = 1;
	char		*val, *cnt, *from;

	if ((val = strchr(item, '=')) == NULL)
		return cfgerr("P11FAULT_FAIL: missing '='", item);
	*val++ = '\0';
	if ((from = strchr(val, '@')) != NULL)
		*from++ = '\0';
	if ((cnt = strchr(val, ':')) != NULL)
		*cnt++ = '\0';
	if (!known_fname(item))
		return cfgerr("P11FAULT_FAIL: unknown function", item);
	if (parse_ulong(val, &v) == -1 ||
	    (cnt != NULL && (parse_ulong(cnt, &n) == -1 || n > LONG_MAX)) ||
	    (from != NULL && (parse_ulong(from, &at) == -1 || at < 1 ||
	    at > LONG_MAX)))
		return cfgerr("P11FAULT_FAIL: bad value for", item);
	if (nrules == MAXRULES)
		return cfgerr("P11FAULT_FAIL", "too many entries");
	r = &rules[nrules++];
	snprintf(r->name, sizeof(r->name), "%s", item);
	r->rv = v;
	r->left = cnt == NULL ? -1 : (long)n;
	r->skip = (long)at - 1;
	return CKR_OK;
}

static CK_RV
add_hidden(char *item)
{
	unsigned long	 v;
	size_t		 i;

	for (i = 0; i < sizeof(mechnames) / sizeof(mechnames[0]); i++)
		if (strcmp(mechnames[i].name, item) == 0)
			break;
	if (i < sizeof(mechnames) / sizeof(mechnames[0]))
		v = mechnames[i].type;
	else if (parse_ulong(item, &v) == -1)
		return cfgerr("P11FAULT_HIDE_MECHS: bad mechanism", item);
	if (nhidden == MAXHIDDEN)
		return cfgerr("P11FAULT_HIDE_MECHS", "too many entries");
	hidden[nhidden++] = v;
	return CKR_OK;
}

/* Apply fn to each non-empty comma-separated item of variable var. */
static CK_RV
parse_list(const char *var, CK_RV (*fn)(char *))
{
	const char	*env;
	char		*copy, *item, *save;
	CK_RV		 rv = CKR_OK;

	if ((env = getenv(var)) == NULL)
		return CKR_OK;
	if ((copy = strdup(env)) == NULL)
		return cfgerr(var, strerror(errno));
	for (item = strtok_r(copy, ",", &save); item != NULL && rv == CKR_OK;
	    item = strtok_r(NULL, ",", &save))
		rv = fn(item);
	free(copy);
	return rv;
}

static CK_RV
load_module(void)
{
	CK_C_GetFunctionList	 gfl;
	const char		*path;
	void			*sym;
	CK_RV			 rv;

	if (real != NULL)
		return CKR_OK;
	if ((path = getenv("P11FAULT_MODULE")) == NULL || *path == '\0')
		return cfgerr("P11FAULT_MODULE", "not set");
	if (dlh == NULL && (dlh = dlopen(path, RTLD_NOW | RTLD_LOCAL)) == NULL)
		return cfgerr("cannot load P11FAULT_MODULE", dlerror());
	if ((sym = dlsym(dlh, "C_GetFunctionList")) == NULL)
		return cfgerr("no C_GetFunctionList in", path);
	memcpy(&gfl, &sym, sizeof(gfl));	/* ISO C: no void * cast */
	if ((rv = gfl(&real)) != CKR_OK || real == NULL || real == &flist) {
		real = NULL;
		return cfgerr("C_GetFunctionList failed or loops in", path);
	}
	return CKR_OK;
}

static CK_RV
setup(void)
{
	const char	*s;
	unsigned long	 v;

	if (logfd != -1)
		close(logfd);
	logfd = -1;
	if ((s = getenv("P11FAULT_LOG")) != NULL && *s != '\0' &&
	    (logfd = open(s, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC,
	    0644)) == -1) {
		fprintf(stderr, "p11fault: P11FAULT_LOG: %s: %s\n", s,
		    strerror(errno));
		return CKR_GENERAL_ERROR;
	}
	delay_ms = 0;
	if ((s = getenv("P11FAULT_SIGN_DELAY_MS")) != NULL) {
		if (parse_ulong(s, &v) == -1 || v > LONG_MAX / 1000000)
			return cfgerr("P11FAULT_SIGN_DELAY_MS: bad value", s);
		delay_ms = (long)v;
	}
	extra_flags = 0;
	if ((s = getenv("P11FAULT_TOKEN_FLAGS")) != NULL) {
		if (parse_ulong(s, &v) == -1)
			return cfgerr("P11FAULT_TOKEN_FLAGS: bad value", s);
		extra_flags = (CK_FLAGS)v;
	}
	mech_max_bits = 0;
	if ((s = getenv("P11FAULT_MECH_MAX_BITS")) != NULL &&
	    parse_ulong(s, &mech_max_bits) == -1)
		return cfgerr("P11FAULT_MECH_MAX_BITS: bad value", s);
	/* card removal: slot events */
	slot_events = (s = getenv("P11FAULT_SLOT_EVENTS")) != NULL &&
	    strcmp(s, "1") == 0;
	ev_absent = 0;
	nevq = 0;
	slot_desc = getenv("P11FAULT_SLOT_DESC");
	pinpad_pin = getenv("P11FAULT_PINPAD_PIN");
	absent_serials = getenv("P11FAULT_ABSENT_SERIALS");
	always_pin = getenv("P11FAULT_ALWAYS_AUTH");
	absentpath[0] = '\0';
	was_absent = 0;
	if ((s = getenv("P11FAULT_TOKEN_ABSENT_FILE")) != NULL &&
	    snprintf(absentpath, sizeof(absentpath), "%s", s) >=
	    (int)sizeof(absentpath))
		return cfgerr("P11FAULT_TOKEN_ABSENT_FILE: too long", s);
	nrules = nhidden = 0;
	if (parse_list("P11FAULT_FAIL", add_rule) != CKR_OK ||
	    parse_list("P11FAULT_HIDE_MECHS", add_hidden) != CKR_OK)
		return CKR_GENERAL_ERROR;
	return load_module();
}

/*
 * Fault decisions.
 */

static void
sleep_ms(long ms)
{
	struct timespec	 ts, rem;

	ts.tv_sec = ms / 1000;
	ts.tv_nsec = (ms % 1000) * 1000000;
	while (nanosleep(&ts, &rem) == -1 && errno == EINTR)
		ts = rem;
}

/* Card removal ends every session, like a real token. */
static void
close_all(void)
{
	CK_SLOT_ID	*slots;
	CK_ULONG	 i, n = 0;

	if (real->C_GetSlotList(CK_FALSE, NULL, &n) != CKR_OK ||
	    (slots = calloc(n + 1, sizeof(*slots))) == NULL)
		return;
	if (real->C_GetSlotList(CK_FALSE, slots, &n) == CKR_OK)
		for (i = 0; i < n; i++)
			real->C_CloseAllSessions(slots[i]);
	free(slots);
}

static int
token_absent(void)
{
	struct stat	 sb;
	int		 absent, removed;

	if (absentpath[0] == '\0')
		return 0;
	absent = stat(absentpath, &sb) == 0;
	pthread_mutex_lock(&mtx);
	removed = absent && !was_absent;
	was_absent = absent;
	pthread_mutex_unlock(&mtx);
	if (removed)
		close_all();
	return absent;
}

static int
is_hidden(CK_MECHANISM_TYPE m)
{
	size_t	 i;

	for (i = 0; i < nhidden; i++)
		if (hidden[i] == m)
			return 1;
	return 0;
}

static int
inject(const char *name, CK_RV *rv)
{
	size_t	 i;
	int	 hit = 0;

	pthread_mutex_lock(&mtx);
	for (i = 0; i < nrules && !hit; i++) {
		if (rules[i].left == 0 || strcmp(rules[i].name, name) != 0)
			continue;
		if (rules[i].skip > 0) {
			rules[i].skip--;
			continue;
		}
		if (rules[i].left > 0)
			rules[i].left--;
		*rv = rules[i].rv;
		hit = 1;
	}
	pthread_mutex_unlock(&mtx);
	return hit;
}

/* Returns 1 if the call is to be forwarded, else 0 with *rv set. */
static int
pre(struct call *c, CK_RV *rv)
{
	if (real == NULL) {
		*rv = CKR_CRYPTOKI_NOT_INITIALIZED;
		return 0;
	}
	if ((c->flags & F_DELAY) && delay_ms > 0)
		sleep_ms(delay_ms);
	if (inject(c->name, rv)) {
		c->injected = 1;
		return 0;
	}
	if ((c->flags & (F_SLOT | F_SESS)) && token_absent()) {
		*rv = (c->flags & F_SLOT) ? CKR_TOKEN_NOT_PRESENT :
		    CKR_DEVICE_REMOVED;
		return 0;
	}
	if (c->has_mech && is_hidden(c->mech)) {
		*rv = CKR_MECHANISM_INVALID;
		return 0;
	}
	return 1;
}

/*
 * Logging.
 */

static void
det_add(struct call *c, const char *fmt, ...)
{
	va_list	 ap;
	size_t	 len;

	len = strlen(c->detail);
	if (len >= sizeof(c->detail) - 1)
		return;
	va_start(ap, fmt);
	vsnprintf(c->detail + len, sizeof(c->detail) - len, fmt, ap);
	va_end(ap);
}

static void
det_mech(struct call *c, CK_MECHANISM_PTR m)
{
	if (m == NULL) {
		det_add(c, " mech=NULL");
		return;
	}
	c->has_mech = 1;
	c->mech = m->mechanism;
	det_add(c, " mech=0x%lx", m->mechanism);
}

static void
det_mtype(struct call *c, CK_MECHANISM_TYPE m)
{
	c->has_mech = 1;
	c->mech = m;
	det_add(c, " mech=0x%lx", m);
}

/*
 * The object's class, asked of the real module without logging, so that
 * the log tells a certificate's CKA_VALUE from a key's.
 */
static void
det_class(struct call *c, CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o)
{
	CK_OBJECT_CLASS	 cls;
	CK_ATTRIBUTE	 a = { CKA_CLASS, &cls, sizeof(cls) };

	if (real != NULL && real->C_GetAttributeValue(h, o, &a, 1) == CKR_OK)
		det_add(c, " class=0x%lx", cls);
	else
		det_add(c, " class=?");
}

/* Attribute types only, never values. */
static void
det_attrs(struct call *c, const char *label, CK_ATTRIBUTE_PTR t, CK_ULONG n)
{
	CK_ULONG	 i;

	det_add(c, " %s=", label);
	if (t == NULL || n == 0) {
		det_add(c, "-");
		return;
	}
	for (i = 0; i < n; i++) {
		if (strlen(c->detail) > sizeof(c->detail) - 24) {
			det_add(c, "...");
			return;
		}
		det_add(c, "%s0x%lx", i ? "," : "", t[i].type);
	}
}

static CK_RV
post(struct call *c, CK_RV rv)
{
	char	 line[DETAILSZ + 128];
	int	 len;

	pthread_mutex_lock(&mtx);
	if (logfd != -1) {
		len = snprintf(line, sizeof(line), "%ld %s 0x%lx%s%s\n",
		    (long)getpid(), c->name, rv, c->detail,
		    c->injected ? " injected" : "");
		if (len >= (int)sizeof(line)) {
			len = sizeof(line) - 1;
			line[len - 1] = '\n';
		}
		if (len > 0 && write(logfd, line, (size_t)len) == -1) {
			/* nothing useful to do */
		}
	}
	pthread_mutex_unlock(&mtx);
	return rv;
}

/*
 * Calls that need more than forwarding.
 */

/* Is this slot's token listed in P11FAULT_ABSENT_SERIALS now? */
static int
serial_absent(CK_SLOT_ID slot)
{
	CK_TOKEN_INFO	 ti;
	FILE		*fp;
	char		 line[64], serial[17];
	size_t		 n;
	int		 hit = 0;

	if (absent_serials == NULL || (fp = fopen(absent_serials, "r")) == NULL)
		return 0;
	if (real->C_GetTokenInfo(slot, &ti) != CKR_OK) {
		fclose(fp);
		return 0;
	}
	memcpy(serial, ti.serialNumber, 16);
	for (n = 16; n > 0 && serial[n - 1] == ' '; n--)
		;
	serial[n] = '\0';
	while (!hit && fgets(line, sizeof(line), fp) != NULL) {
		line[strcspn(line, "\r\n")] = '\0';
		hit = strcmp(line, serial) == 0;
	}
	fclose(fp);
	return hit;
}

static CK_RV
slot_list(CK_BBOOL present, CK_SLOT_ID_PTR list, CK_ULONG_PTR count)
{
	CK_SLOT_ID	 all[64];
	CK_ULONG	 n = 64, i, k = 0;
	CK_RV		 rv;

	if (!present || (!token_absent() && absent_serials == NULL))
		return real->C_GetSlotList(present, list, count);
	if (count == NULL)
		return CKR_ARGUMENTS_BAD;
	if (token_absent()) {
		*count = 0;
		return CKR_OK;
	}
	if ((rv = real->C_GetSlotList(present, all, &n)) != CKR_OK)
		return rv;
	for (i = 0; i < n; i++) {
		if (serial_absent(all[i]))
			continue;
		if (list != NULL && k < *count)
			list[k] = all[i];
		k++;
	}
	rv = list != NULL && k > *count ? CKR_BUFFER_TOO_SMALL : CKR_OK;
	*count = k;
	return rv;
}

static CK_RV
token_info(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info)
{
	CK_RV	 rv;

	if (serial_absent(slot))
		return CKR_TOKEN_NOT_PRESENT;
	rv = real->C_GetTokenInfo(slot, info);
	if (rv == CKR_OK && info != NULL) {
		info->flags |= extra_flags;
		if (pinpad_pin != NULL)
			info->flags |= CKF_PROTECTED_AUTHENTICATION_PATH;
	}
	return rv;
}

/* The always-authenticate state of session h (NULL: no room). */
static int *
auth_state(CK_SESSION_HANDLE h)
{
	int	 i, fr = -1;

	for (i = 0; i < MAX_AUTH_SESSIONS; i++) {
		if (auth_sess[i].state != 0 && auth_sess[i].h == h)
			return &auth_sess[i].state;
		if (auth_sess[i].state == 0 && fr == -1)
			fr = i;
	}
	if (fr == -1)
		return NULL;
	auth_sess[fr].h = h;
	return &auth_sess[fr].state;
}

static CK_RV
get_attrs(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_PTR t,
    CK_ULONG n)
{
	CK_OBJECT_CLASS	 cls;
	CK_ATTRIBUTE	 a = { CKA_CLASS, &cls, sizeof(cls) };
	CK_ULONG	 i;
	CK_RV		 rv;

	rv = real->C_GetAttributeValue(h, o, t, n);
	if (always_pin == NULL || (rv != CKR_OK &&
	    rv != CKR_ATTRIBUTE_TYPE_INVALID) ||
	    real->C_GetAttributeValue(h, o, &a, 1) != CKR_OK ||
	    cls != CKO_PRIVATE_KEY)
		return rv;
	for (i = 0; i < n; i++) {
		if (t[i].type != CKA_ALWAYS_AUTHENTICATE)
			continue;
		if (t[i].pValue != NULL && t[i].ulValueLen >= sizeof(CK_BBOOL))
			*(CK_BBOOL *)t[i].pValue = CK_TRUE;
		t[i].ulValueLen = sizeof(CK_BBOOL);
	}
	return rv;
}

static CK_RV
sign_init(CK_SESSION_HANDLE h, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
{
	CK_RV	 rv = real->C_SignInit(h, m, k);
	int	*st;

	if (rv == CKR_OK && always_pin != NULL && (st = auth_state(h)) != NULL)
		*st = 1;
	return rv;
}

/* C_Sign without the context login fails, as on a real card. */
static CK_RV
sign(CK_SESSION_HANDLE h, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,
    CK_ULONG_PTR sl)
{
	int	*st = always_pin != NULL ? auth_state(h) : NULL;
	CK_RV	 rv;

	if (st != NULL && *st == 1)
		return CKR_USER_NOT_LOGGED_IN;
	rv = real->C_Sign(h, d, dl, s, sl);
	if (st != NULL && !(rv == CKR_OK && s == NULL) &&
	    rv != CKR_BUFFER_TOO_SMALL)
		*st = 0;	/* the operation is over */
	return rv;
}

static CK_RV
login(CK_SESSION_HANDLE h, CK_USER_TYPE u, CK_BYTE_PTR p, CK_ULONG pl)
{
	int	*st;

	if (u == CKU_CONTEXT_SPECIFIC && always_pin != NULL) {
		if ((st = auth_state(h)) == NULL || *st != 1) {
			if (st != NULL)
				*st = 0;
			return CKR_OPERATION_NOT_INITIALIZED;
		}
		if (p == NULL || pl != strlen(always_pin) ||
		    memcmp(p, always_pin, pl) != 0)
			return CKR_PIN_INCORRECT;
		*st = 2;
		return CKR_OK;
	}
	if (p == NULL && pinpad_pin != NULL)
		return real->C_Login(h, u, (CK_BYTE_PTR)pinpad_pin,
		    strlen(pinpad_pin));
	return real->C_Login(h, u, p, pl);
}

static CK_RV
mech_info(CK_SLOT_ID slot, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO_PTR info)
{
	CK_RV	 rv;

	rv = real->C_GetMechanismInfo(slot, t, info);
	if (rv == CKR_OK && info != NULL && mech_max_bits != 0 &&
	    info->ulMaxKeySize > mech_max_bits)
		info->ulMaxKeySize = mech_max_bits;
	return rv;
}

static CK_RV
slot_info(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info)
{
	CK_RV	 rv;

	rv = real->C_GetSlotInfo(slot, info);
	if (rv == CKR_OK && info != NULL && (token_absent() ||
	    serial_absent(slot)))
		info->flags &= ~CKF_TOKEN_PRESENT;
	if (rv == CKR_OK && info != NULL && slot_desc != NULL) {
		memset(info->slotDescription, ' ',
		    sizeof(info->slotDescription));
		memcpy(info->slotDescription, slot_desc, strnlen(slot_desc,
		    sizeof(info->slotDescription)));
	}
	return rv;
}

/*
 * Emulated slot events: a change of the absent file since the last one
 * queues an event for each slot with an initialised token.
 */
static void
queue_events(void)
{
	CK_SLOT_ID	 slots[MAXEVENTS];
	CK_TOKEN_INFO	 ti;
	CK_ULONG	 i, n = MAXEVENTS;
	int		 absent = token_absent();

	pthread_mutex_lock(&mtx);
	if (absent == ev_absent) {
		pthread_mutex_unlock(&mtx);
		return;
	}
	ev_absent = absent;
	pthread_mutex_unlock(&mtx);
	if (real->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return;
	pthread_mutex_lock(&mtx);
	for (i = 0; i < n && nevq < MAXEVENTS; i++)
		if (real->C_GetTokenInfo(slots[i], &ti) != CKR_OK ||
		    (ti.flags & CKF_TOKEN_INITIALIZED))
			evq[nevq++] = slots[i];
	pthread_mutex_unlock(&mtx);
}

/* Takes the oldest event; 1 if there was one. */
static int
take_event(CK_SLOT_ID_PTR slot)
{
	int	 got = 0;

	pthread_mutex_lock(&mtx);
	if (nevq > 0) {
		*slot = evq[0];
		memmove(evq, evq + 1, (nevq - 1) * sizeof(evq[0]));
		nevq--;
		got = 1;
	}
	pthread_mutex_unlock(&mtx);
	return got;
}

static CK_RV
wait_event(CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR reserved)
{
	int	 live;

	if (!slot_events)
		return real->C_WaitForSlotEvent(flags, slot, reserved);
	if (slot == NULL)
		return CKR_ARGUMENTS_BAD;
	for (;;) {
		queue_events();
		if (take_event(slot))
			return CKR_OK;
		if (flags & CKF_DONT_BLOCK)
			return CKR_NO_EVENT;
		sleep_ms(10);
		pthread_mutex_lock(&mtx);
		live = configured;
		pthread_mutex_unlock(&mtx);
		if (!live)
			return CKR_CRYPTOKI_NOT_INITIALIZED;
	}
}

/* Fetch the real mechanism list into a new buffer, without hidden ones. */
static CK_RV
visible_mechs(CK_SLOT_ID slot, CK_MECHANISM_TYPE **out, CK_ULONG *n)
{
	CK_MECHANISM_TYPE	*buf = NULL, *nb;
	CK_ULONG		 i, j;
	CK_RV			 rv;

	do {
		if ((rv = real->C_GetMechanismList(slot, NULL, n)) != CKR_OK)
			break;
		if ((nb = realloc(buf, (*n + 1) * sizeof(*buf))) == NULL) {
			rv = CKR_HOST_MEMORY;
			break;
		}
		buf = nb;
		rv = real->C_GetMechanismList(slot, buf, n);
	} while (rv == CKR_BUFFER_TOO_SMALL);
	if (rv != CKR_OK) {
		free(buf);
		return rv;
	}
	for (i = j = 0; i < *n; i++)
		if (!is_hidden(buf[i]))
			buf[j++] = buf[i];
	*n = j;
	*out = buf;
	return CKR_OK;
}

static CK_RV
mech_list(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count)
{
	CK_MECHANISM_TYPE	*buf;
	CK_ULONG		 n;
	CK_RV			 rv;

	if (nhidden == 0)
		return real->C_GetMechanismList(slot, list, count);
	if (count == NULL)
		return CKR_ARGUMENTS_BAD;
	if ((rv = visible_mechs(slot, &buf, &n)) != CKR_OK)
		return rv;
	if (list != NULL && *count < n)
		rv = CKR_BUFFER_TOO_SMALL;
	else if (list != NULL)
		memcpy(list, buf, n * sizeof(*buf));
	*count = n;
	free(buf);
	return rv;
}

/*
 * An injected error must end the active operation in the real module too,
 * as a real error would; otherwise the next *Init fails with
 * CKR_OPERATION_ACTIVE.  PKCS#11 2.40 has no way to cancel, so run the
 * operation to its end into a scratch buffer and discard the result.
 */
static void
end_single(CK_C_Sign fn, CK_SESSION_HANDLE h, CK_BYTE_PTR in, CK_ULONG inlen)
{
	CK_BYTE_PTR	 buf;
	CK_ULONG	 len = 0;

	if (fn(h, in, inlen, NULL, &len) != CKR_OK)
		return;		/* that error ended it */
	if ((buf = malloc(len + 1)) != NULL)
		(void)fn(h, in, inlen, buf, &len);
	free(buf);
}

static void
end_final(CK_C_SignFinal fn, CK_SESSION_HANDLE h)
{
	CK_BYTE_PTR	 buf;
	CK_ULONG	 len = 0;

	if (fn(h, NULL, &len) != CKR_OK)
		return;
	if ((buf = malloc(len + 1)) != NULL)
		(void)fn(h, buf, &len);
	free(buf);
}

static void
end_verify(CK_SESSION_HANDLE h)
{
	CK_BYTE	 sig = 0;

	(void)real->C_VerifyFinal(h, &sig, 1);
}

/*
 * The wrappers.  WRAPT defines w_<fn> with the given parameter list: det
 * (an expression that may use the local struct call c) records details,
 * pre() decides about faults, then expr is evaluated, or term if an error
 * was injected, and post() logs.
 */

#define WRAPT(fn, fl, params, det, expr, term)				\
static CK_RV								\
w_##fn params								\
{									\
	struct call	 c = { #fn, fl, 0, 0, 0, "" };			\
	CK_RV		 rv;						\
									\
	det;								\
	if (pre(&c, &rv))						\
		rv = expr;						\
	else if (c.injected && rv != CKR_OK &&				\
	    rv != CKR_BUFFER_TOO_SMALL)					\
		term;							\
	return post(&c, rv);						\
}
#define WRAP(fn, fl, params, det, expr)					\
	WRAPT(fn, fl, params, det, expr, (void)0)
#define FWD(fn, fl, params, det, args)					\
	WRAPT(fn, fl, params, det, real->fn args, (void)0)
#define FWDT(fn, fl, params, det, args, term)				\
	WRAPT(fn, fl, params, det, real->fn args, term)
#define END1(fn, h, d, l)	end_single(real->fn, h, d, l)
#define ENDF(fn, h)		end_final(real->fn, h)

#define NODET		(void)0
#define MECH(m)		det_mech(&c, m)
#define OBJ(o)		det_add(&c, " obj=0x%lx", (CK_ULONG)(o))
#define KEY(m, k)	(MECH(m), det_add(&c, " key=0x%lx", (CK_ULONG)(k)))
#define ATTRS(t, n)	det_attrs(&c, "attrs", t, n)
#define LEN(n)		det_add(&c, " len=%lu", (CK_ULONG)(n))

/* Short type names keep the table below readable. */
typedef CK_SESSION_HANDLE	SH;
typedef CK_OBJECT_HANDLE	OH;
typedef CK_BYTE_PTR		BP;
typedef CK_ULONG_PTR		UP;

FWD(C_GetInfo, 0, (CK_INFO_PTR i), NODET, (i))
WRAP(C_GetSlotList, 0, (CK_BBOOL p, CK_SLOT_ID_PTR l, UP n),
    det_add(&c, " present=%d", p), slot_list(p, l, n))
WRAP(C_GetSlotInfo, 0, (CK_SLOT_ID s, CK_SLOT_INFO_PTR i),
    det_add(&c, " slot=%lu", s), slot_info(s, i))
WRAP(C_GetTokenInfo, F_SLOT, (CK_SLOT_ID s, CK_TOKEN_INFO_PTR i),
    det_add(&c, " slot=%lu", s), token_info(s, i))
WRAP(C_GetMechanismList, F_SLOT, (CK_SLOT_ID s, CK_MECHANISM_TYPE_PTR l, UP n),
    det_add(&c, " slot=%lu", s), mech_list(s, l, n))
WRAP(C_GetMechanismInfo, F_SLOT,
    (CK_SLOT_ID s, CK_MECHANISM_TYPE t, CK_MECHANISM_INFO_PTR i),
    det_mtype(&c, t), mech_info(s, t, i))
FWD(C_InitToken, F_SLOT, (CK_SLOT_ID s, BP p, CK_ULONG pl, BP l),
    det_add(&c, " pinlen=%lu", pl), (s, p, pl, l))
FWD(C_InitPIN, F_SESS, (SH h, BP p, CK_ULONG pl),
    det_add(&c, " pinlen=%lu", pl), (h, p, pl))
FWD(C_SetPIN, F_SESS, (SH h, BP o, CK_ULONG ol, BP n, CK_ULONG nl),
    det_add(&c, " oldlen=%lu newlen=%lu", ol, nl), (h, o, ol, n, nl))
WRAP(C_OpenSession, F_SLOT,
    (CK_SLOT_ID s, CK_FLAGS f, CK_VOID_PTR a, CK_NOTIFY n,
    CK_SESSION_HANDLE_PTR h),
    det_add(&c, " slot=%lu flags=0x%lx", s, f), serial_absent(s) ?
    CKR_TOKEN_NOT_PRESENT : real->C_OpenSession(s, f, a, n, h))
FWD(C_CloseSession, 0, (SH h), NODET, (h))
FWD(C_CloseAllSessions, 0, (CK_SLOT_ID s), NODET, (s))
FWD(C_GetSessionInfo, F_SESS, (SH h, CK_SESSION_INFO_PTR i), NODET, (h, i))
FWD(C_GetOperationState, F_SESS, (SH h, BP s, UP l), NODET, (h, s, l))
FWD(C_SetOperationState, F_SESS, (SH h, BP s, CK_ULONG l, OH e, OH a),
    NODET, (h, s, l, e, a))
WRAP(C_Login, F_SESS, (SH h, CK_USER_TYPE u, BP p, CK_ULONG pl),
    p == NULL ? det_add(&c, " user=%lu pin=NULL", u) :
    det_add(&c, " user=%lu pinlen=%lu", u, pl), login(h, u, p, pl))
FWD(C_Logout, F_SESS, (SH h), NODET, (h))
FWD(C_CreateObject, F_SESS, (SH h, CK_ATTRIBUTE_PTR t, CK_ULONG n, OH *o),
    ATTRS(t, n), (h, t, n, o))
FWD(C_CopyObject, F_SESS, (SH h, OH o, CK_ATTRIBUTE_PTR t, CK_ULONG n, OH *no),
    (OBJ(o), ATTRS(t, n)), (h, o, t, n, no))
FWD(C_DestroyObject, F_SESS, (SH h, OH o), OBJ(o), (h, o))
FWD(C_GetObjectSize, F_SESS, (SH h, OH o, UP s), OBJ(o), (h, o, s))
WRAP(C_GetAttributeValue, F_SESS, (SH h, OH o, CK_ATTRIBUTE_PTR t, CK_ULONG n),
    (OBJ(o), det_class(&c, h, o), ATTRS(t, n)), get_attrs(h, o, t, n))
FWD(C_SetAttributeValue, F_SESS, (SH h, OH o, CK_ATTRIBUTE_PTR t, CK_ULONG n),
    (OBJ(o), ATTRS(t, n)), (h, o, t, n))
FWD(C_FindObjectsInit, F_SESS, (SH h, CK_ATTRIBUTE_PTR t, CK_ULONG n),
    ATTRS(t, n), (h, t, n))
FWD(C_FindObjects, F_SESS, (SH h, OH *o, CK_ULONG m, UP n), NODET,
    (h, o, m, n))
FWD(C_FindObjectsFinal, F_SESS, (SH h), NODET, (h))
FWD(C_EncryptInit, F_SESS, (SH h, CK_MECHANISM_PTR m, OH k), KEY(m, k),
    (h, m, k))
FWDT(C_Encrypt, F_SESS, (SH h, BP d, CK_ULONG dl, BP e, UP el), LEN(dl),
    (h, d, dl, e, el), END1(C_Encrypt, h, d, dl))
FWDT(C_EncryptUpdate, F_SESS, (SH h, BP d, CK_ULONG dl, BP e, UP el), LEN(dl),
    (h, d, dl, e, el), ENDF(C_EncryptFinal, h))
FWDT(C_EncryptFinal, F_SESS, (SH h, BP e, UP el), NODET, (h, e, el),
    ENDF(C_EncryptFinal, h))
FWD(C_DecryptInit, F_SESS, (SH h, CK_MECHANISM_PTR m, OH k), KEY(m, k),
    (h, m, k))
FWDT(C_Decrypt, F_SESS, (SH h, BP e, CK_ULONG el, BP d, UP dl), LEN(el),
    (h, e, el, d, dl), END1(C_Decrypt, h, e, el))
FWDT(C_DecryptUpdate, F_SESS, (SH h, BP e, CK_ULONG el, BP d, UP dl), LEN(el),
    (h, e, el, d, dl), ENDF(C_DecryptFinal, h))
FWDT(C_DecryptFinal, F_SESS, (SH h, BP d, UP dl), NODET, (h, d, dl),
    ENDF(C_DecryptFinal, h))
FWD(C_DigestInit, F_SESS, (SH h, CK_MECHANISM_PTR m), MECH(m), (h, m))
FWDT(C_Digest, F_SESS, (SH h, BP d, CK_ULONG dl, BP o, UP ol), LEN(dl),
    (h, d, dl, o, ol), END1(C_Digest, h, d, dl))
FWDT(C_DigestUpdate, F_SESS, (SH h, BP d, CK_ULONG dl), LEN(dl), (h, d, dl),
    ENDF(C_DigestFinal, h))
FWDT(C_DigestKey, F_SESS, (SH h, OH k), OBJ(k), (h, k),
    ENDF(C_DigestFinal, h))
FWDT(C_DigestFinal, F_SESS, (SH h, BP o, UP ol), NODET, (h, o, ol),
    ENDF(C_DigestFinal, h))
WRAP(C_SignInit, F_SESS, (SH h, CK_MECHANISM_PTR m, OH k), KEY(m, k),
    sign_init(h, m, k))
WRAPT(C_Sign, F_SESS | F_DELAY, (SH h, BP d, CK_ULONG dl, BP s, UP sl),
    LEN(dl), sign(h, d, dl, s, sl), END1(C_Sign, h, d, dl))
FWDT(C_SignUpdate, F_SESS, (SH h, BP d, CK_ULONG dl), LEN(dl), (h, d, dl),
    ENDF(C_SignFinal, h))
FWDT(C_SignFinal, F_SESS | F_DELAY, (SH h, BP s, UP sl), NODET, (h, s, sl),
    ENDF(C_SignFinal, h))
FWD(C_SignRecoverInit, F_SESS, (SH h, CK_MECHANISM_PTR m, OH k), KEY(m, k),
    (h, m, k))
FWDT(C_SignRecover, F_SESS, (SH h, BP d, CK_ULONG dl, BP s, UP sl), LEN(dl),
    (h, d, dl, s, sl), END1(C_SignRecover, h, d, dl))
FWD(C_VerifyInit, F_SESS, (SH h, CK_MECHANISM_PTR m, OH k), KEY(m, k),
    (h, m, k))
FWDT(C_Verify, F_SESS, (SH h, BP d, CK_ULONG dl, BP s, CK_ULONG sl), LEN(dl),
    (h, d, dl, s, sl), (void)real->C_Verify(h, d, dl, s, sl))
FWDT(C_VerifyUpdate, F_SESS, (SH h, BP d, CK_ULONG dl), LEN(dl), (h, d, dl),
    end_verify(h))
FWDT(C_VerifyFinal, F_SESS, (SH h, BP s, CK_ULONG sl), NODET, (h, s, sl),
    end_verify(h))
FWD(C_VerifyRecoverInit, F_SESS, (SH h, CK_MECHANISM_PTR m, OH k), KEY(m, k),
    (h, m, k))
FWDT(C_VerifyRecover, F_SESS, (SH h, BP s, CK_ULONG sl, BP d, UP dl), LEN(sl),
    (h, s, sl, d, dl), END1(C_VerifyRecover, h, s, sl))
FWDT(C_DigestEncryptUpdate, F_SESS, (SH h, BP p, CK_ULONG pl, BP e, UP el),
    LEN(pl), (h, p, pl, e, el),
    (ENDF(C_DigestFinal, h), ENDF(C_EncryptFinal, h)))
FWDT(C_DecryptDigestUpdate, F_SESS, (SH h, BP e, CK_ULONG el, BP p, UP pl),
    LEN(el), (h, e, el, p, pl),
    (ENDF(C_DecryptFinal, h), ENDF(C_DigestFinal, h)))
FWDT(C_SignEncryptUpdate, F_SESS, (SH h, BP p, CK_ULONG pl, BP e, UP el),
    LEN(pl), (h, p, pl, e, el),
    (ENDF(C_SignFinal, h), ENDF(C_EncryptFinal, h)))
FWDT(C_DecryptVerifyUpdate, F_SESS, (SH h, BP e, CK_ULONG el, BP p, UP pl),
    LEN(el), (h, e, el, p, pl),
    (ENDF(C_DecryptFinal, h), end_verify(h)))
FWD(C_GenerateKey, F_SESS,
    (SH h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR t, CK_ULONG n, OH *k),
    (MECH(m), ATTRS(t, n)), (h, m, t, n, k))
FWD(C_GenerateKeyPair, F_SESS,
    (SH h, CK_MECHANISM_PTR m, CK_ATTRIBUTE_PTR pt, CK_ULONG pn,
    CK_ATTRIBUTE_PTR st, CK_ULONG sn, OH *pk, OH *sk),
    (MECH(m), det_attrs(&c, "pub", pt, pn), det_attrs(&c, "priv", st, sn)),
    (h, m, pt, pn, st, sn, pk, sk))
FWD(C_WrapKey, F_SESS, (SH h, CK_MECHANISM_PTR m, OH w, OH k, BP o, UP ol),
    (MECH(m), det_add(&c, " wrapping=0x%lx key=0x%lx", w, k)),
    (h, m, w, k, o, ol))
FWD(C_UnwrapKey, F_SESS,
    (SH h, CK_MECHANISM_PTR m, OH u, BP w, CK_ULONG wl, CK_ATTRIBUTE_PTR t,
    CK_ULONG n, OH *k),
    (KEY(m, u), ATTRS(t, n)), (h, m, u, w, wl, t, n, k))
FWD(C_DeriveKey, F_SESS,
    (SH h, CK_MECHANISM_PTR m, OH b, CK_ATTRIBUTE_PTR t, CK_ULONG n, OH *k),
    (KEY(m, b), ATTRS(t, n)), (h, m, b, t, n, k))
FWD(C_SeedRandom, F_SESS, (SH h, BP s, CK_ULONG sl), LEN(sl), (h, s, sl))
FWD(C_GenerateRandom, F_SESS, (SH h, BP r, CK_ULONG rl), LEN(rl), (h, r, rl))
FWD(C_GetFunctionStatus, 0, (SH h), NODET, (h))
FWD(C_CancelFunction, 0, (SH h), NODET, (h))
WRAP(C_WaitForSlotEvent, 0, (CK_FLAGS f, CK_SLOT_ID_PTR s, CK_VOID_PTR r),
    det_add(&c, " flags=0x%lx", f), wait_event(f, s, r))

static CK_RV
w_C_Initialize(CK_VOID_PTR args)
{
	struct call	 c = { "C_Initialize", 0, 0, 0, 0, "" };
	CK_RV		 rv;

	pthread_mutex_lock(&mtx);
	if (!configured && (rv = setup()) == CKR_OK)
		configured = 1;
	rv = configured ? CKR_OK : CKR_GENERAL_ERROR;
	pthread_mutex_unlock(&mtx);
	if (rv != CKR_OK)
		return rv;
	if (args != NULL)
		det_add(&c, " flags=0x%lx",
		    ((CK_C_INITIALIZE_ARGS *)args)->flags);
	if (pre(&c, &rv))
		rv = real->C_Initialize(args);
	return post(&c, rv);
}

static CK_RV
w_C_Finalize(CK_VOID_PTR reserved)
{
	struct call	 c = { "C_Finalize", 0, 0, 0, 0, "" };
	CK_RV		 rv;

	if (pre(&c, &rv))
		rv = real->C_Finalize(reserved);
	if (rv == CKR_OK && !c.injected) {
		/* Re-read the environment at the next C_Initialize. */
		pthread_mutex_lock(&mtx);
		configured = 0;
		pthread_mutex_unlock(&mtx);
	}
	return post(&c, rv);
}

static CK_FUNCTION_LIST flist = {
	.version = { 2, 40 },
	.C_Initialize = w_C_Initialize,
	.C_Finalize = w_C_Finalize,
	.C_GetInfo = w_C_GetInfo,
	.C_GetFunctionList = C_GetFunctionList,
	.C_GetSlotList = w_C_GetSlotList,
	.C_GetSlotInfo = w_C_GetSlotInfo,
	.C_GetTokenInfo = w_C_GetTokenInfo,
	.C_GetMechanismList = w_C_GetMechanismList,
	.C_GetMechanismInfo = w_C_GetMechanismInfo,
	.C_InitToken = w_C_InitToken,
	.C_InitPIN = w_C_InitPIN,
	.C_SetPIN = w_C_SetPIN,
	.C_OpenSession = w_C_OpenSession,
	.C_CloseSession = w_C_CloseSession,
	.C_CloseAllSessions = w_C_CloseAllSessions,
	.C_GetSessionInfo = w_C_GetSessionInfo,
	.C_GetOperationState = w_C_GetOperationState,
	.C_SetOperationState = w_C_SetOperationState,
	.C_Login = w_C_Login,
	.C_Logout = w_C_Logout,
	.C_CreateObject = w_C_CreateObject,
	.C_CopyObject = w_C_CopyObject,
	.C_DestroyObject = w_C_DestroyObject,
	.C_GetObjectSize = w_C_GetObjectSize,
	.C_GetAttributeValue = w_C_GetAttributeValue,
	.C_SetAttributeValue = w_C_SetAttributeValue,
	.C_FindObjectsInit = w_C_FindObjectsInit,
	.C_FindObjects = w_C_FindObjects,
	.C_FindObjectsFinal = w_C_FindObjectsFinal,
	.C_EncryptInit = w_C_EncryptInit,
	.C_Encrypt = w_C_Encrypt,
	.C_EncryptUpdate = w_C_EncryptUpdate,
	.C_EncryptFinal = w_C_EncryptFinal,
	.C_DecryptInit = w_C_DecryptInit,
	.C_Decrypt = w_C_Decrypt,
	.C_DecryptUpdate = w_C_DecryptUpdate,
	.C_DecryptFinal = w_C_DecryptFinal,
	.C_DigestInit = w_C_DigestInit,
	.C_Digest = w_C_Digest,
	.C_DigestUpdate = w_C_DigestUpdate,
	.C_DigestKey = w_C_DigestKey,
	.C_DigestFinal = w_C_DigestFinal,
	.C_SignInit = w_C_SignInit,
	.C_Sign = w_C_Sign,
	.C_SignUpdate = w_C_SignUpdate,
	.C_SignFinal = w_C_SignFinal,
	.C_SignRecoverInit = w_C_SignRecoverInit,
	.C_SignRecover = w_C_SignRecover,
	.C_VerifyInit = w_C_VerifyInit,
	.C_Verify = w_C_Verify,
	.C_VerifyUpdate = w_C_VerifyUpdate,
	.C_VerifyFinal = w_C_VerifyFinal,
	.C_VerifyRecoverInit = w_C_VerifyRecoverInit,
	.C_VerifyRecover = w_C_VerifyRecover,
	.C_DigestEncryptUpdate = w_C_DigestEncryptUpdate,
	.C_DecryptDigestUpdate = w_C_DecryptDigestUpdate,
	.C_SignEncryptUpdate = w_C_SignEncryptUpdate,
	.C_DecryptVerifyUpdate = w_C_DecryptVerifyUpdate,
	.C_GenerateKey = w_C_GenerateKey,
	.C_GenerateKeyPair = w_C_GenerateKeyPair,
	.C_WrapKey = w_C_WrapKey,
	.C_UnwrapKey = w_C_UnwrapKey,
	.C_DeriveKey = w_C_DeriveKey,
	.C_SeedRandom = w_C_SeedRandom,
	.C_GenerateRandom = w_C_GenerateRandom,
	.C_GetFunctionStatus = w_C_GetFunctionStatus,
	.C_CancelFunction = w_C_CancelFunction,
	.C_WaitForSlotEvent = w_C_WaitForSlotEvent,
};

CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	if (list == NULL)
		return CKR_ARGUMENTS_BAD;
	*list = &flist;
	return CKR_OK;
}
