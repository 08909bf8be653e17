/*
 * Unit tests: PIN sources (engine/pin.c).
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

	snprintf(src, sizeof(src), "file:%s", test_write("pin", "unP1n-2aS7\n",
	    0600));
	CU_ASSERT_EQUAL(pin_read(src, &p, err, sizeof(err)), 0);
	CU_ASSERT_FATAL(p != NULL);
	CU_ASSERT_EQUAL(p->len, 10);
	CU_ASSERT_STRING_EQUAL(p->value, "unP1n-2aS7");
	pin_free(p);
}

static void
test_loose_mode(void)
{
	struct pin	*p = NULL;
	char		 src[600], err[512];

	snprintf(src, sizeof(src), "file:%s", test_write("loose", "unP1n-2aS7\n",
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

	setenv("P11AGENT_UNIT_PIN", "unEnv-4kD2", 1);
	CU_ASSERT_EQUAL(pin_read("env:P11AGENT_UNIT_PIN", &p, err,
	    sizeof(err)), 0);
	CU_ASSERT(p != NULL && strcmp(p->value, "unEnv-4kD2") == 0);
	pin_free(p);
	p = NULL;
	unsetenv("P11AGENT_UNIT_PIN");
	CU_ASSERT_EQUAL(pin_read("env:P11AGENT_UNIT_PIN", &p, err,
	    sizeof(err)), P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not set"));
	CU_ASSERT_EQUAL(pin_read("prompt:", &p, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
	/* a PIN given as the source is not echoed */
	CU_ASSERT_EQUAL(pin_read("unSrc-8qP3", &p, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NULL(strstr(err, "unSrc-8qP3"));
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "not one of file:PATH"));
	CU_ASSERT_EQUAL(pin_read("none", &p, err, sizeof(err)), 0);
	CU_ASSERT_PTR_NULL(p);
	CU_ASSERT_EQUAL(pin_read("file:/nonexistent/pin", &p, err,
	    sizeof(err)), P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent/pin"));
	snprintf(src, sizeof(src), "file:%s", test_write("empty", "\n", 0600));
	CU_ASSERT_EQUAL(pin_read(src, &p, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
}

/* pin_ask with a stand-in systemd-ask-password running script */
static int
ask(const char *script, int timeout, struct pin **p, char *err, size_t len)
{
	struct pin_ask	 a = { .label = "tok", .serial = "0123",
	    .timeout = timeout };
	char		*old, path[1200];
	int		 r;

	test_write("systemd-ask-password", script, 0755);
	old = strdup(getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
	snprintf(path, sizeof(path), "%s:/usr/bin:/bin", test_dir);
	setenv("PATH", path, 1);
	r = pin_ask("systemd-ask-password", &a, p, err, len);
	setenv("PATH", old, 1);
	free(old);
	return r;
}

static void
test_ask(void)
{
	struct pin	*p = NULL;
	char		 err[512];
	time_t		 t0;

	CU_ASSERT_EQUAL(ask("#!/bin/sh\n"
	    "[ \"$2\" = \"--timeout=7\" ] || exit 2\n"
	    "[ \"$3\" = \"PIN for token 'tok' (serial 0123):\" ] || exit 3\n"
	    "echo unAsk-6tB9\n", 7, &p, err, sizeof(err)), 0);
	CU_ASSERT(p != NULL && strcmp(p->value, "unAsk-6tB9") == 0 && p->len == 10);
	pin_free(p);
	p = NULL;
	/* cancelled, empty, too long */
	CU_ASSERT_EQUAL(ask("#!/bin/sh\necho unCan-1pR4; exit 1\n", 5, &p, err,
	    sizeof(err)), P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NULL(p);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "gave no PIN (cancelled"));
	CU_ASSERT_EQUAL(ask("#!/bin/sh\necho\n", 5, &p, err, sizeof(err)),
	    P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NULL(p);
	CU_ASSERT_EQUAL(ask("#!/bin/sh\nhead -c 300 /dev/zero | tr '\\0' x\n",
	    5, &p, err, sizeof(err)), P11A_ERR_PIN_SOURCE);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "longer than 256"));
	CU_ASSERT_PTR_NULL(p);
	/* a program that never answers is killed after its timeout (+2 s) */
	t0 = time(NULL);
	CU_ASSERT_EQUAL(ask("#!/bin/sh\nexec tail -f /dev/null\n", 1, &p, err,
	    sizeof(err)), P11A_ERR_PIN_SOURCE);
	CU_ASSERT(time(NULL) - t0 <= 5);
	CU_ASSERT_PTR_NOT_NULL(strstr(err, "gave no PIN"));
	CU_ASSERT_PTR_NULL(p);
	/* other sources go to pin_read */
	CU_ASSERT_EQUAL(pin_ask("none", NULL, &p, err, sizeof(err)), 0);
	CU_ASSERT_PTR_NULL(p);
}

int
suite_pin(void)
{
	CU_pSuite	 s = CU_add_suite("pin", setup, teardown);

	if (s == NULL ||
	    CU_add_test(s, "file source", test_file) == NULL ||
	    CU_add_test(s, "file with loose mode", test_loose_mode) == NULL ||
	    CU_add_test(s, "env and bad sources", test_env_and_bad) == NULL ||
	    CU_add_test(s, "systemd-ask-password", test_ask) == NULL)
		return -1;
	return 0;
}
