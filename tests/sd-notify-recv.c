/*
 * sd-notify-recv: the service manager's side of sd_notify(3), for tests.
 * Binds a Unix datagram socket at PATH (what NOTIFY_SOCKET names), says
 * "listening" on stdout, then prints each line of each datagram as
 * "PID LINE" (PID: the sender, from its credentials), flushed, until
 * SECONDS (default 300) have passed or a signal ends it.
 *
 *	sd-notify-recv PATH [SECONDS] >notify.log
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

#define MSG_MAX	4096

static long
now_ms(void)
{
	struct timespec	 ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Prints the datagram's lines with the sender's pid. */
static void
print_msg(char *msg, long pid)
{
	char	*line, *save = NULL;

	for (line = strtok_r(msg, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save))
		printf("%ld %s\n", pid, line);
	fflush(stdout);
}

static int
recv_one(int fd)
{
	char		 buf[MSG_MAX + 1];
	union {
		struct cmsghdr	 h;
		char		 b[CMSG_SPACE(sizeof(struct ucred))];
	}		 c;
	struct iovec	 iov = { buf, MSG_MAX };
	struct msghdr	 mh;
	struct cmsghdr	*cm;
	struct ucred	 uc;
	ssize_t		 n;
	long		 pid = -1;

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = c.b;
	mh.msg_controllen = sizeof(c.b);
	if ((n = recvmsg(fd, &mh, MSG_DONTWAIT)) < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	buf[n] = '\0';
	for (cm = CMSG_FIRSTHDR(&mh); cm != NULL; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET &&
		    cm->cmsg_type == SCM_CREDENTIALS) {
			memcpy(&uc, CMSG_DATA(cm), sizeof(uc));
			pid = (long)uc.pid;
		}
	print_msg(buf, pid);
	return 0;
}

int
main(int argc, char *argv[])
{
	struct sockaddr_un	 sun;
	struct pollfd		 pfd;
	long			 end;
	int			 fd, one = 1, left;

	if (argc < 2 || argc > 3 || strlen(argv[1]) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "usage: sd-notify-recv PATH [SECONDS]\n");
		return 2;
	}
	end = now_ms() + 1000L * (argc == 3 ? atoi(argv[2]) : 300);
	memset(&sun, 0, sizeof(sun));
	sun.sun_family = AF_UNIX;
	strcpy(sun.sun_path, argv[1]);
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) == -1 ||
	    bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		perror(argv[1]);
		return 1;
	}
	printf("listening\n");
	fflush(stdout);
	pfd.fd = fd;
	pfd.events = POLLIN;
	while ((left = (int)(end - now_ms())) > 0) {
		if (poll(&pfd, 1, left) < 0 && errno != EINTR)
			break;
		if ((pfd.revents & POLLIN) && recv_one(fd) != 0) {
			perror("recvmsg");
			break;
		}
	}
	unlink(argv[1]);
	return 0;
}
