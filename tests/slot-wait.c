/*
 * slot-wait: calls C_WaitForSlotEvent of a PKCS#11 module once and says
 * what it returned; for the tests of the fault module's slot events.
 *
 *	slot-wait MODULE dont-block|block
 *
 * Prints "ready" once the module is initialised (a test may then change
 * the token), then "event SLOT" or "rv 0xN" and exits 0; exits 1 on a
 * usage or loading error.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include <p11-kit/pkcs11.h>

int
main(int argc, char *argv[])
{
	CK_C_GetFunctionList	 gfl;
	CK_FUNCTION_LIST	*f;
	CK_SLOT_ID		 slot = 0;
	CK_FLAGS		 flags;
	CK_RV			 rv;
	void			*h, *sym;

	if (argc != 3 || (strcmp(argv[2], "block") != 0 &&
	    strcmp(argv[2], "dont-block") != 0)) {
		fprintf(stderr, "usage: slot-wait MODULE dont-block|block\n");
		return 1;
	}
	flags = strcmp(argv[2], "block") == 0 ? 0 : CKF_DONT_BLOCK;
	if ((h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL)) == NULL ||
	    (sym = dlsym(h, "C_GetFunctionList")) == NULL) {
		fprintf(stderr, "slot-wait: %s: %s\n", argv[1], dlerror());
		return 1;
	}
	memcpy(&gfl, &sym, sizeof(gfl));
	if (gfl(&f) != CKR_OK || (rv = f->C_Initialize(NULL)) != CKR_OK) {
		fprintf(stderr, "slot-wait: %s: cannot initialise\n", argv[1]);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	if ((rv = f->C_WaitForSlotEvent(flags, &slot, NULL)) == CKR_OK)
		printf("event %lu\n", (unsigned long)slot);
	else
		printf("rv 0x%lx\n", (unsigned long)rv);
	f->C_Finalize(NULL);
	return 0;
}
