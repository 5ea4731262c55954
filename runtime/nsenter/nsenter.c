// Joins namespaces before the Go runtime starts; see doc.go for the protocol.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_NS 16

static int sync_fd = -1;

static void write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return;
		}
		buf += n;
		len -= (size_t)n;
	}
}

static void bail(const char *fmt, ...)
{
	char msg[512], out[1024];
	int saved = errno;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	// The message holds paths we chose and strerror text: no quotes or backslashes to escape.
	for (char *p = msg; *p; p++)
		if (*p == '"' || *p == '\\' || *p < 0x20)
			*p = '?';
	int n = snprintf(out, sizeof(out), "{\"type\":\"error\",\"message\":\"nsenter: %s: %s\"}\n", msg, strerror(saved));
	if (sync_fd >= 0 && n > 0)
		write_all(sync_fd, out, (size_t)n);
	_exit(1);
}

static int ns_flag(const char *type)
{
	static const struct {
		const char *name;
		int flag;
	} types[] = {
		{"user", CLONE_NEWUSER}, {"ipc", CLONE_NEWIPC},	 {"uts", CLONE_NEWUTS},	   {"network", CLONE_NEWNET},
		{"pid", CLONE_NEWPID},	 {"mount", CLONE_NEWNS}, {"cgroup", CLONE_NEWCGROUP}, {"time", CLONE_NEWTIME},
	};
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		if (strcmp(type, types[i].name) == 0)
			return types[i].flag;
	return 0;
}

void migrate_nsenter(void)
{
	const char *spec = getenv("_MIGRATE_NSENTER");
	const char *fdstr = getenv("_MIGRATE_NSENTER_FD");
	if (spec == NULL || fdstr == NULL)
		return;
	sync_fd = atoi(fdstr);
	int do_fork = getenv("_MIGRATE_NSENTER_FORK") != NULL;

	char go;
	ssize_t r;
	do {
		r = read(sync_fd, &go, 1);
	} while (r < 0 && errno == EINTR);
	if (r != 1)
		bail("waiting for parent");

	// Open every path before joining anything: once in another mount namespace,
	// the paths may no longer resolve.
	char *list = strdup(spec);
	if (list == NULL)
		bail("strdup");
	int fds[MAX_NS], flags[MAX_NS], n = 0;
	char *save = NULL;
	for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		char *colon = strchr(item, ':');
		if (colon == NULL || n == MAX_NS)
			bail("bad namespace entry %s", item);
		*colon = '\0';
		int flag = ns_flag(item);
		if (flag == 0) {
			errno = EINVAL;
			bail("unknown namespace type %s", item);
		}
		int fd = open(colon + 1, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			bail("open %s namespace %s", item, colon + 1);
		fds[n] = fd;
		flags[n] = flag;
		n++;
	}
	// The user namespace first: joining it grants the capabilities the others need.
	for (int pass = 0; pass < 2; pass++) {
		for (int i = 0; i < n; i++) {
			if ((pass == 0) != (flags[i] == CLONE_NEWUSER))
				continue;
			if (setns(fds[i], flags[i]) < 0)
				bail("setns %d", flags[i]);
			close(fds[i]);
		}
	}
	free(list);

	if (!do_fork)
		return;
	int gate[2];
	if (pipe2(gate, O_CLOEXEC) < 0)
		bail("pipe");
	pid_t pid = fork();
	if (pid < 0)
		bail("fork");
	if (pid == 0) {
		char c;
		close(gate[1]);
		while (read(gate[0], &c, 1) < 0 && errno == EINTR)
			;
		close(gate[0]);
		return;
	}
	char out[64];
	int len = snprintf(out, sizeof(out), "{\"type\":\"pid\",\"pid\":%d}\n", pid);
	write_all(sync_fd, out, (size_t)len);
	close(gate[1]);
	_exit(0);
}
