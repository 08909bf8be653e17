/*
 * unix-cat: a raw client of a Unix stream socket, for tests.  Sends all
 * of stdin, then copies what the server says to stdout until the server
 * closes.  Exits 0 when it closed (or reset) the connection, 1 when it
 * did not within SECONDS (default 10) or on an error, 2 on usage; a
 * stdin still open a second after that ends it by SIGALRM.
 *
 *	unix-cat PATH [SECONDS] <request
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static long
now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Sends stdin; a server that closed early stops it, not an error. */
static int
send_stdin(int fd)
{
	char	 buf[4096];
	ssize_t	 n, off, w;

	while ((n = read(0, buf, sizeof(buf))) > 0)
		for (off = 0; off < n; off += w)
			if ((w = send(fd, buf + off, n - off,
			    MSG_NOSIGNAL)) == -1) {
				if (errno == EPIPE || errno == ECONNRESET)
					return 0;
				perror("send");
				return -1;
			}
	return n == 0 ? 0 : -1;
}

int
main(int argc, char *argv[])
{
	struct sockaddr_un	 sun;
	struct pollfd		 pfd;
	char			 buf[4096];
	long			 end;
	ssize_t			 n;
	int			 fd, left;

	if (argc < 2 || argc > 3 || strlen(argv[1]) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "usage: unix-cat PATH [SECONDS] <request\n");
		return 2;
	}
	end = now_ms() + 1000L * (argc == 3 ? atoi(argv[2]) : 10);
	/* the bound on everything, also on reading stdin */
	alarm((unsigned)((end - now_ms()) / 1000 + 1));
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	memcpy(sun.sun_path, argv[1], strlen(argv[1]));
	if ((fd = socket(AF_UNIX, SOCK_STREAM, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		perror(argv[1]);
		return 1;
	}
	if (send_stdin(fd) != 0)
		return 1;
	pfd.fd = fd;
	pfd.events = POLLIN;
	for (;;) {
		left = (int)(end - now_ms());
		if (left <= 0 || poll(&pfd, 1, left) == 0) {
			fprintf(stderr, "unix-cat: the server did not close "
			    "within the time\n");
			return 1;
		}
		if ((n = read(fd, buf, sizeof(buf))) == 0 ||
		    (n == -1 && errno == ECONNRESET))
			return 0;
		if (n == -1) {
			perror("read");
			return 1;
		}
		if (fwrite(buf, 1, (size_t)n, stdout) != (size_t)n)
			return 1;
		fflush(stdout);
	}
}
