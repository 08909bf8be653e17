/*
 * p11agent: PIN sources.  Runs only in the token helper.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "p11agent/error.h"
#include "p11agent/token.h"

#define PIN_MAX	256

void
pin_free(struct pin *p)
{
	if (p == NULL)
		return;
	if (p->value != NULL) {
		OPENSSL_cleanse(p->value, p->len);
		free(p->value);
	}
	OPENSSL_cleanse(p, sizeof(*p));
	free(p);
}

static int
pin_new(const char *s, size_t len, struct pin **out)
{
	struct pin	*p;

	while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
		len--;
	if (len == 0)
		return P11A_ERR_PIN_SOURCE;
	if ((p = calloc(1, sizeof(*p))) == NULL ||
	    (p->value = malloc(len + 1)) == NULL) {
		free(p);
		return P11A_ERR_NOMEM;
	}
	memcpy(p->value, s, len);
	p->value[len] = '\0';
	p->len = len;
	*out = p;
	return 0;
}

static int
pin_from_file(const char *path, struct pin **out, char *err, size_t errlen)
{
	char		 buf[PIN_MAX + 2];
	struct stat	 st;
	ssize_t		 n;
	int		 fd, r = P11A_ERR_PIN_SOURCE;

	if ((fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "PIN file %s: %s", path, strerror(errno));
		return P11A_ERR_PIN_SOURCE;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "PIN file %s: not a regular file", path);
		goto out;
	}
	if (st.st_uid != getuid() || (st.st_mode & 077) != 0) {
		snprintf(err, errlen, "PIN file %s: mode %03o owner %u; it must "
		    "be owned by uid %u and not readable by others "
		    "(chmod 600 %s)", path, (unsigned)(st.st_mode & 0777),
		    (unsigned)st.st_uid, (unsigned)getuid(), path);
		r = P11A_ERR_PERM;
		goto out;
	}
	n = read(fd, buf, sizeof(buf));
	if (n < 0 || n > PIN_MAX) {
		snprintf(err, errlen, "PIN file %s: %s", path,
		    n < 0 ? strerror(errno) : "longer than 256 bytes");
		goto out;
	}
	if ((r = pin_new(buf, (size_t)n, out)) == P11A_ERR_PIN_SOURCE)
		snprintf(err, errlen, "PIN file %s is empty", path);
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return r;
}

/*
 * Reads the PIN named by source: "file:PATH" or "env:NAME".  "none"
 * gives *out = NULL and 0 (the token needs no PIN or has a PIN pad).
 */
int
pin_read(const char *source, struct pin **out, char *err, size_t errlen)
{
	const char	*v;
	int		 r;

	*out = NULL;
	if (source == NULL || strcmp(source, "none") == 0)
		return 0;
	if (strncmp(source, "file:", 5) == 0)
		return pin_from_file(source + 5, out, err, errlen);
	if (strncmp(source, "env:", 4) == 0) {
		if ((v = getenv(source + 4)) == NULL || *v == '\0') {
			snprintf(err, errlen, "PIN source %s: the environment "
			    "variable is not set", source);
			return P11A_ERR_PIN_SOURCE;
		}
		if (strlen(v) > PIN_MAX) {
			snprintf(err, errlen, "PIN source %s: longer than 256 "
			    "bytes", source);
			return P11A_ERR_PIN_SOURCE;
		}
		if ((r = pin_new(v, strlen(v), out)) != 0)
			snprintf(err, errlen, "PIN source %s: %s", source,
			    p11a_strerror(r));
		return r;
	}
	snprintf(err, errlen, "PIN source '%s' is not one of file:PATH, "
	    "env:NAME, none", source);
	return P11A_ERR_PIN_SOURCE;
}
