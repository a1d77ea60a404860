/*
 * LD_PRELOAD shim for btvirt on kernels without AF_ALG.
 *
 * BlueZ's emulated controllers open an AF_ALG socket when they are created,
 * for the LE encryption primitives (AES, CMAC); they fail to come up when
 * the kernel refuses the socket. Our tests use unencrypted links only, so a
 * socket that accepts bind, setsockopt and accept and never carries a cipher
 * is enough: each call on such a descriptor succeeds on /dev/null.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef AF_ALG
#define AF_ALG 38
#endif

#define MAX_FDS 4096

static bool fake[MAX_FDS];

static bool
is_fake(int fd)
{
    return fd >= 0 && fd < MAX_FDS && fake[fd];
}

static int
open_fake(void)
{
    int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (fd >= 0 && fd < MAX_FDS) fake[fd] = true;
    return fd;
}

typedef int (*socket_fn)(int, int, int);
typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);
typedef int (*setsockopt_fn)(int, int, int, const void *, socklen_t);
typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);
typedef int (*close_fn)(int);

/* The libc function this shim stands in front of, looked up once. */
#define REAL(name) \
    static name##_fn real_##name; \
    if (!real_##name) real_##name = (name##_fn)dlsym(RTLD_NEXT, #name)

int
socket(int domain, int type, int protocol)
{
    REAL(socket);
    if (domain == AF_ALG) return open_fake();
    return real_socket(domain, type, protocol);
}

int
bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    REAL(bind);
    return is_fake(fd) ? 0 : real_bind(fd, addr, len);
}

int
setsockopt(int fd, int level, int name, const void *value, socklen_t len)
{
    REAL(setsockopt);
    return is_fake(fd) ? 0 : real_setsockopt(fd, level, name, value, len);
}

int
accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    REAL(accept);
    return is_fake(fd) ? open_fake() : real_accept(fd, addr, len);
}

int
accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    REAL(accept4);
    return is_fake(fd) ? open_fake() : real_accept4(fd, addr, len, flags);
}

int
close(int fd)
{
    REAL(close);
    if (fd >= 0 && fd < MAX_FDS) fake[fd] = false;
    return real_close(fd);
}
