/*
 * p11agent: what the configuration and the policy parsers share when
 * they read an INI file with inih (agent/inifile.c): line and header
 * counting, the limits of inih as Debian builds it, and the first error
 * as "PATH:LINE: ...".
 */
#ifndef P11AGENT_INIFILE_H
#define P11AGENT_INIFILE_H

#include <stddef.h>
#include <stdio.h>

#define INI_LINE_MAX	200	/* inih as built by Debian */
/* inih's longest section name (MAX_SECTION - 1), and so the longest
 * NAME of a section: "identity " and 40 fit */
#define INI_SECTION_MAX	49
#define INI_NAME_MAX	40

struct ini_in {
	FILE		*fp;
	const char	*path;
	int		 line;		/* the line read last */
	int		 section_line;	/* of the last [header] */
	int		 headers;	/* [header] lines read */
	int		 failed;	/* errors so far (the first is kept) */
	char		*err;
	size_t		 errlen;
	/* checks of a header line: NULL, or the form a header without its
	 * ']' is told to have ("[policy NAME]"); 1 to refuse a section
	 * name longer than inih keeps */
	const char	*header_form;
	int		 section_max;
};

/* The first error, "PATH:LINE: ..." into err (later ones are dropped);
 * returns 0, so that "return ini_err(...)" fails a handler. */
int	 ini_err(struct ini_in *, int line, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
/* inih's reader (ini_parse_stream), its stream a struct ini_in. */
char	*ini_read_line(char *str, int num, void *in);
/* A section's NAME: 1 to INI_NAME_MAX letters, digits, '-', '_', '.'. */
int	 ini_name_ok(const char *);

#endif
