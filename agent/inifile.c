/*
 * p11agent: reading an INI file with inih, the shared part (inifile.h).
 */
#include "config.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "p11agent/inifile.h"

int
ini_err(struct ini_in *in, int line, const char *fmt, ...)
{
	va_list	 ap;
	int	 n;

	if (in->failed++)
		return 0;	/* the first error sticks */
	n = snprintf(in->err, in->errlen, "%s:%d: ", in->path, line);
	if (n < 0 || (size_t)n >= in->errlen)
		return 0;
	va_start(ap, fmt);
	vsnprintf(in->err + n, in->errlen - n, fmt, ap);
	va_end(ap);
	return 0;
}

char *
ini_read_line(char *str, int num, void *arg)
{
	struct ini_in	*in = arg;
	size_t		 len;
	char		*h, *end;

	if (fgets(str, num, in->fp) == NULL)
		return NULL;
	in->line++;
	if (*(h = str + strspn(str, " \t")) == '[') {
		in->section_line = in->line;
		in->headers++;
		end = strchr(h, ']');
		if (end == NULL && in->header_form != NULL)
			ini_err(in, in->line, "syntax error: a %s header "
			    "without its ']'", in->header_form);
		/* inih cuts a section name at 49 bytes: a longer name would
		 * be read as another one */
		if (end != NULL && in->section_max &&
		    end - h - 1 > INI_SECTION_MAX)
			ini_err(in, in->line, "[%.*s...]: the section name is "
			    "longer than %d characters (names: at most %d)", 20,
			    h + 1, INI_SECTION_MAX, INI_NAME_MAX);
	}
	len = strlen(str);
	if (len == (size_t)num - 1 && str[len - 1] != '\n' && !feof(in->fp)) {
		ini_err(in, in->line, "line longer than %d characters",
		    INI_LINE_MAX - 2);
		while (fgets(str, num, in->fp) != NULL &&
		    str[strlen(str) - 1] != '\n')
			;
		str[0] = '\0';
	}
	return str;
}

int
ini_name_ok(const char *s)
{
	return *s != '\0' && strlen(s) <= INI_NAME_MAX &&
	    strspn(s, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == strlen(s);
}
