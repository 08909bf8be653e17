/*
 * p11agent: buffers for bytes in flight (bufpool.h).
 */
#include "config.h"

#include <stdlib.h>

#include "p11agent/bufpool.h"

#define SPARES	32

static void	*spare[SPARES];
static int	 nspare;

void *
bufpool_get(void)
{
	return nspare > 0 ? spare[--nspare] : malloc(BUFPOOL_SIZE);
}

void
bufpool_put(void *b)
{
	if (b == NULL)
		return;
	if (nspare < SPARES)
		spare[nspare++] = b;
	else
		free(b);
}

void
bufpool_cleanup(void)
{
	while (nspare > 0)
		free(spare[--nspare]);
}
