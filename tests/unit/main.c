/*
 * p11agent unit tests (CUnit).  Exit status for automake: 0 pass, 1 fail.
 */
#include "config.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "tests.h"

char	 test_dir[256];

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

int
test_dir_make(void)
{
	snprintf(test_dir, sizeof(test_dir), "/tmp/p11agent-unit.XXXXXX");
	return mkdtemp(test_dir) == NULL ? -1 : 0;
}

int
test_dir_remove(void)
{
	return nftw(test_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *
test_write(const char *name, const char *s, int mode)
{
	static char	 path[512];
	int		 fd;

	snprintf(path, sizeof(path), "%s/%s", test_dir, name);
	unlink(path);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)) == -1)
		return NULL;
	if (write(fd, s, strlen(s)) != (ssize_t)strlen(s) ||
	    fchmod(fd, mode) == -1) {
		close(fd);
		return NULL;
	}
	close(fd);
	return path;
}

int
main(int argc, char *argv[])
{
	unsigned int	 failed;

	/* started by the spawn suite as a token helper */
	if (argc > 0 && strcmp(argv[0], "p11agent-helper") == 0)
		return spawn_child();
	if (argc > 0 && strcmp(argv[0], "pin-nolock") == 0)
		return pin_nolock_child();
	if (CU_initialize_registry() != CUE_SUCCESS)
		return 99;
	if (suite_proto() != 0 || suite_config() != 0 || suite_pin() != 0 ||
	    suite_req() != 0 || suite_spawn() != 0 ||
	    suite_resolve() != 0 || suite_pinentry() != 0 ||
	    suite_log() != 0 || suite_policy() != 0) {
		CU_cleanup_registry();
		return 99;
	}
	CU_basic_set_mode(CU_BRM_VERBOSE);
	CU_basic_run_tests();
	failed = CU_get_number_of_failures() +
	    CU_get_number_of_tests_failed();
	if (CU_get_number_of_suites_failed() != 0)
		failed++;
	CU_cleanup_registry();
	return failed ? 1 : 0;
}
