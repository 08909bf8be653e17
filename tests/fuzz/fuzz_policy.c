/*
 * Fuzz target: the policy parser (agent/policy.c) on arbitrary file
 * contents, and the connect = matcher on what it accepted.  Built for
 * libFuzzer with --enable-fuzzing (clang), and as a corpus runner for
 * make check (tests/fuzz/runner.c).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "p11agent/policy.h"

int	 LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy_set	*set = NULL;
	struct policy_host	 h;
	char			 path[64], err[1024], line[256];
	int			 fd;

	/* a memfd is mode 0777: made 0600, as a policy must be to be read */
	if ((fd = memfd_create("fuzz.policy", MFD_CLOEXEC)) == -1)
		return 0;
	if (fchmod(fd, 0600) != 0) {
		close(fd);
		return 0;
	}
	if (write(fd, data, size) == (ssize_t)size) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		policy_load_file(path, &set, err, sizeof(err));
		policy_set_free(set);
	}
	close(fd);
	/* the first line as one connect = entry, matched against itself */
	snprintf(line, sizeof(line), "%.*s", (int)(size < 255 ? size : 255),
	    (const char *)data);
	line[strcspn(line, "\n")] = '\0';
	if (policy_host_parse(line, &h, err, sizeof(err)) == 0) {
		policy_host_match(&h, line, 443);
		policy_host_match(&h, "10.1.2.3", 443);
		policy_host_match(&h, "2001:db8::1", 8443);
		policy_host_clear(&h);
	}
	return 0;
}
