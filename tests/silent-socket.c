/*
 * silent-socket: a Unix socket server that accepts connections and never
 * answers (a stuck pcscd, for tests).  Prints "ready" on stdout once it
 * listens, then serves until killed.
 *
 *	silent-socket PATH
 */
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_HELD	64

int
main(int argc, char *argv[])
{
	struct sockaddr_un	 sun;
	int			 fd, c, held = 0;

	if (argc != 2 || strlen(argv[1]) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "usage: silent-socket PATH\n");
		return 2;
	}
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, argv[1]);
	unlink(argv[1]);
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1 ||
	    bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 ||
	    listen(fd, 16) == -1) {
		perror(argv[1]);
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	/* accept and hold: the client waits for an answer forever */
	while ((c = accept(fd, NULL, NULL)) != -1)
		if (++held > MAX_HELD)
			close(c);
	perror("accept");
	return 1;
}
