/*
 * p11agent: internals shared by the token layer's files (engine/token*.c).
 */
#ifndef P11AGENT_TOKEN_INT_H
#define P11AGENT_TOKEN_INT_H

#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>

struct token_key {
	CK_FUNCTION_LIST	*mod;
	CK_SLOT_ID		 slot;
	CK_FLAGS		 flags;		/* token flags at open */
	CK_UTF8CHAR		 label[32];
	CK_SESSION_HANDLE	 session;
	CK_OBJECT_HANDLE	 obj;
	CK_KEY_TYPE		 keytype;
	uint8_t			 id[256];
	size_t			 idlen;
	uint32_t		 caps;
	uint8_t			*cert;
	size_t			 certlen;
	struct token_key	*next;
};

struct token_ctx {
	CK_FUNCTION_LIST	**mods;		/* NULL-terminated */
	size_t			  nmods;
	char			 *inited;
	int			  registry;
	char			 *path;		/* module loaded by path: its
						 * real path (p11-kit knows
						 * it as /proc/self/fd/N) */
	struct token_key	 *keys;
	unsigned long		  ckr;
	char			  err[1024];
};

void	 token_seterr(struct token_ctx *, unsigned long, const char *, ...)
	    __attribute__((format(printf, 3, 4)));
const char *token_ckr_name(CK_RV);
int	 token_rv_code(CK_RV);
char	*token_module_name(struct token_ctx *, size_t);
int	 token_module_init(struct token_ctx *, size_t);
int	 token_slots(struct token_ctx *, size_t, CK_SLOT_ID *);
int	 token_module_matches(struct token_ctx *, size_t, P11KitUri *);
int	 token_login(struct token_ctx *, struct token_key *, const char *);
void	 token_label(const CK_UTF8CHAR *, char *);
void	 token_unpad(const CK_UTF8CHAR *, size_t, char *);
#define TOKEN_UNPAD(field, out)	token_unpad((field), sizeof(field), (out))
int	 token_find_one(struct token_ctx *, CK_FUNCTION_LIST *,
	    CK_SESSION_HANDLE, CK_ATTRIBUTE *, CK_ULONG, CK_OBJECT_HANDLE *,
	    CK_ULONG *);
int	 token_read_cert(struct token_ctx *, CK_FUNCTION_LIST *,
	    CK_SESSION_HANDLE, CK_OBJECT_HANDLE, uint8_t **, size_t *);

#endif
