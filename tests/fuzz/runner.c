/*
 * Runs a fuzz target without libFuzzer, for make check: every file given
 * (or every file in a directory given), then, with -m N, N deterministic
 * mutations of each (bytes flipped, inserted, cut), so that the parsers
 * see hostile input on every test run, under the sanitizers in CI.
 */
#include "config.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RUNNER_MAX_INPUT	(64 * 1024)

int	 LLVMFuzzerTestOneInput(const uint8_t *, size_t);

static uint64_t	 rng = 0x9e3779b97f4a7c15ULL;
static long	 runs;

static uint32_t
next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng >> 16);
}

static void
mutate(const uint8_t *in, size_t len, int n)
{
	uint8_t	 buf[RUNNER_MAX_INPUT + 64];
	size_t	 blen, pos;
	int	 i, k;

	for (i = 0; i < n; i++) {
		memcpy(buf, in, len);
		blen = len;
		for (k = 1 + next() % 4; k > 0; k--) {
			pos = blen ? next() % blen : 0;
			switch (next() % 4) {
			case 0:			/* flip a byte */
				if (blen)
					buf[pos] ^= (uint8_t)(1 + next() % 255);
				break;
			case 1:			/* insert a byte */
				if (blen < sizeof(buf)) {
					memmove(buf + pos + 1, buf + pos,
					    blen - pos);
					buf[pos] = (uint8_t)next();
					blen++;
				}
				break;
			case 2:			/* cut the tail */
				blen = pos;
				break;
			default:		/* an interesting value */
				if (blen)
					buf[pos] = (uint8_t[]){ 0, 0xff, 0x7f,
					    '\n', '[', '=' }[next() % 6];
				break;
			}
		}
		LLVMFuzzerTestOneInput(buf, blen);
		runs++;
	}
}

static int
run_file(const char *path, int nmut)
{
	static uint8_t	 buf[RUNNER_MAX_INPUT];
	FILE		*fp;
	size_t		 len;

	if ((fp = fopen(path, "rb")) == NULL) {
		perror(path);
		return 1;
	}
	len = fread(buf, 1, sizeof(buf), fp);
	fclose(fp);
	LLVMFuzzerTestOneInput(buf, len);
	runs++;
	mutate(buf, len, nmut);
	return 0;
}

static int
run_path(const char *path, int nmut)
{
	struct dirent	*de;
	struct stat	 st;
	char		 sub[4096];
	DIR		*d;
	int		 bad = 0;

	if (stat(path, &st) == -1 || !S_ISDIR(st.st_mode))
		return run_file(path, nmut);
	if ((d = opendir(path)) == NULL) {
		perror(path);
		return 1;
	}
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, de->d_name);
		bad |= run_file(sub, nmut);
	}
	closedir(d);
	return bad;
}

int
main(int argc, char *argv[])
{
	int	 i = 1, nmut = 0, bad = 0;

	if (argc > 2 && strcmp(argv[1], "-m") == 0) {
		nmut = atoi(argv[2]);
		i = 3;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: %s [-m N] FILE|DIR...\n", argv[0]);
		return 2;
	}
	for (; i < argc; i++)
		bad |= run_path(argv[i], nmut);
	printf("%ld inputs\n", runs);
	return bad;
}
