/*
 * Unit tests: PIN sources (engine/pin.c).
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "p11agent/error.h"
#include "p11agent/token.h"
#include "tests.h"

static int
setup(void)
{
	return test_dir_make();
}

static int
teardown(void)
{
	return test_dir_remove();
}

static void
test_file(void)
{
	struct pin	*p = NULL;
	char		 src[600], err[512];

	snprintf(src, sizeof(src), "file:%s", test_write("pin", "1234\n",
	    0600));
	CU_ASSERT_EQUAL(pin_read(src, &p, err, sizeof(err)), 0);
	CU_ASSERT_FATAL(p != NULL);
	CU_ASSERT_EQUAL(p->len, 4);
	CU_ASSERT_STRING_EQUAL(p->value, "1234");
	pin_free(p);
}

static void
test_loose_mode(void)
{
	struct pin	*p = NULL;
	char		 src[600], err[512];

	snprintf(src, sizeof(src), "file:%s", test_write("loose", "1234\n",
	    0644));
	CU_ASSERT_EQUAL(pin_read(src, &p, err, sizeof(err)), P11A_ERR_PERM);
	CU_ASSERT_PTR_NULL(p);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "chmod 600"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "mode 644"));
}

static void
test_env_and_bad(void)
{
	struct pin	*p = NULL;
	char		 err[512], src[600];

	setenv("P11AGENT_UNIT_PIN", "9876", 1);
	CU_ASSERT_EQUAL(pin_read("env:P11AGENT_UNIT_PIN", &p, err,
	    sizeof(err)), 0);
	CU_ASSERT(p != NULL && strcmp(p->value, "9876") == 0);
	pin_free(p);
	p = NULL;
	unsetenv("P11AGENT_UNIT_PIN");
	CU_ASSERT_EQUAL(pin_read("env:P11AGENT_UNIT_PIN", &p, err,
	    sizeof(err)), P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not set"));
	CU_ASSERT_EQUAL(pin_read("prompt:", &p, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
	CU_ASSERT_EQUAL(pin_read("none", &p, err, sizeof(err)), 0);
	CU_ASSERT_PTR_NULL(p);
	CU_ASSERT_EQUAL(pin_read("file:/nonexistent/pin", &p, err,
	    sizeof(err)), P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/pin"));
	snprintf(src, sizeof(src), "file:%s", test_write("empty", "\n", 0600));
	CU_ASSERT_EQUAL(pin_read(src, &p, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
}

int
suite_pin(void)
{
	CU_pSuite	 s = CU_add_suite("pin", setup, teardown);

	if (s == NULL ||
	    CU_add_test(s, "file source", test_file) == NULL ||
	    CU_add_test(s, "file with loose mode", test_loose_mode) == NULL ||
	    CU_add_test(s, "env and bad sources", test_env_and_bad) == NULL)
		return -1;
	return 0;
}
