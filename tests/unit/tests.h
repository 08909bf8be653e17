/* p11agent unit tests: one suite per module. */
#ifndef P11AGENT_TESTS_H
#define P11AGENT_TESTS_H

#include <CUnit/CUnit.h>

int	 suite_proto(void);
int	 suite_config(void);
int	 suite_pin(void);
int	 suite_req(void);
int	 suite_spawn(void);
int	 suite_resolve(void);
int	 suite_pinentry(void);
int	 suite_log(void);
int	 suite_policy(void);
/* The pinentry suite's child without locked memory (argv[0] pin-nolock). */
int	 pin_nolock_child(void);
/* The spawn suite's token helper (argv[0] p11agent-helper). */
int	 spawn_child(void);

/* A fresh temporary directory per suite (fixture), removed afterwards. */
extern char	 test_dir[];
int	 test_dir_make(void);
int	 test_dir_remove(void);
/* Writes s to test_dir/name with mode; returns the path (static). */
const char *test_write(const char *name, const char *s, int mode);

#endif
