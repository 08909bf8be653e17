/*
 * Fuzz target: the configuration parser (agent/config.c) on arbitrary
 * file contents.  Built for libFuzzer with --enable-fuzzing (clang), and
 * as a corpus runner for make check (tests/fuzz/runner.c).
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "p11agent/config.h"

int	 LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct config	*cfg = NULL;
	char		 path[64], err[CONFIG_MAX_ERR];
	int		 fd;

	if ((fd = memfd_create("fuzz.conf", MFD_CLOEXEC)) == -1)
		return 0;
	if (write(fd, data, size) == (ssize_t)size) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		if (config_load(path, &cfg, err, sizeof(err)) == 0)
			config_free(cfg);
	}
	close(fd);
	return 0;
}
