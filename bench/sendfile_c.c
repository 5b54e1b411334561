/* The native half of bench_sendfile.py: the receiver every sender is measured against, and the
 * plain C sendfile(2) sender that is the floor.
 *
 *   sendfile_c recv [--checksum]          listen on 127.0.0.1:0, print {"port": P}, accept one
 *                                         connection, read until EOF, print one JSON line;
 *                                         without --checksum the kernel discards the bytes
 *                                         (recv with MSG_TRUNC: counted, never copied)
 *   sendfile_c send --port P --file F [--epoll 1]
 *                                         connect, sendfile(2) the whole file on a blocking
 *                                         socket (or, with --epoll 1, on a non-blocking one,
 *                                         waiting in epoll_wait for EPOLLOUT after each
 *                                         EAGAIN, as an event loop does), print one JSON line
 *   sendfile_c sum --file F               print the checksum --checksum would compute for F
 *
 * The receiver's clock starts at the first byte and stops at EOF, so connection set-up and
 * interpreter start-up are outside the window whoever sends.  The checksum is Fletcher's over
 * little-endian 64-bit words (the tail zero-padded; sums mod 2**64): a lost, duplicated or
 * reordered chunk changes it.  Copying and summing cost the receiver about as much CPU as
 * sendfile costs the sender, so timed runs discard instead, and a checksummed run checks the
 * bytes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (1 << 20)

static double now(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what) {
    fprintf(stderr, "sendfile_c: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* Checksum state: words are keyed by their index in the stream. */
typedef struct {
    uint64_t s1, s2;
    unsigned char tail[8];
    size_t tail_len;
} Checksum;

static void checksum_word(Checksum *c, const unsigned char *p) {
    uint64_t w;
    memcpy(&w, p, 8);
    c->s1 += w;
    c->s2 += c->s1;
}

static void checksum_update(Checksum *c, const unsigned char *p, size_t n) {
    while (c->tail_len && n) {
        c->tail[c->tail_len++] = *p++;
        n--;
        if (c->tail_len == 8) {
            checksum_word(c, c->tail);
            c->tail_len = 0;
        }
    }
    for (; n >= 8; p += 8, n -= 8)
        checksum_word(c, p);
    while (n--)
        c->tail[c->tail_len++] = *p++;
}

static uint64_t checksum_final(Checksum *c) {
    if (c->tail_len) {
        memset(c->tail + c->tail_len, 0, 8 - c->tail_len);
        checksum_word(c, c->tail);
        c->tail_len = 0;
    }
    return c->s2 * 0x9E3779B97F4A7C15ULL + c->s1;
}

static const char *arg(int argc, char **argv, const char *name) {
    for (int i = 2; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return NULL;
}

static int has_flag(int argc, char **argv, const char *name) {
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return 1;
    return 0;
}

static int do_recv(int checksum) {
    int lsock = socket(AF_INET, SOCK_STREAM, 0);
    if (lsock < 0)
        die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = 0};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lsock, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (listen(lsock, 1) < 0)
        die("listen");
    socklen_t len = sizeof addr;
    if (getsockname(lsock, (struct sockaddr *)&addr, &len) < 0)
        die("getsockname");
    printf("{\"port\": %d}\n", ntohs(addr.sin_port));
    fflush(stdout);
    int conn = accept(lsock, NULL, NULL);
    if (conn < 0)
        die("accept");
    close(lsock);
    unsigned char *buf = malloc(BUF_SIZE);
    if (!buf)
        die("malloc");
    Checksum c = {0};
    uint64_t total = 0;
    double t0 = 0, t1 = 0, cpu0 = 0;
    for (;;) {
        ssize_t n = recv(conn, buf, BUF_SIZE, checksum ? 0 : MSG_TRUNC);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("recv");
        }
        if (n == 0)
            break;
        t1 = now(CLOCK_MONOTONIC);
        if (total == 0) {
            t0 = t1;
            cpu0 = now(CLOCK_PROCESS_CPUTIME_ID);
        }
        total += (uint64_t)n;
        if (checksum)
            checksum_update(&c, buf, (size_t)n);
    }
    /* The window ends at EOF: the sender has handed everything to the kernel by then. */
    t1 = now(CLOCK_MONOTONIC);
    double cpu = now(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    close(conn);
    printf("{\"bytes\": %llu, \"seconds\": %.9f, \"recv_cpu_s\": %.6f", (unsigned long long)total,
           total ? t1 - t0 : 0.0, cpu);
    if (checksum)
        printf(", \"checksum\": \"%016llx\"", (unsigned long long)checksum_final(&c));
    printf("}\n");
    return 0;
}

static int do_send(int port, const char *path, int use_epoll) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die("open");
    struct stat st;
    if (fstat(fd, &st) < 0)
        die("fstat");
    int sock = socket(AF_INET, SOCK_STREAM, 0);
    if (sock < 0)
        die("socket");
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as asyncio transports do */
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("connect");
    int ep = -1;
    if (use_epoll) {
        fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) | O_NONBLOCK);
        ep = epoll_create1(0);
        struct epoll_event ev = {.events = EPOLLOUT, .data.fd = sock};
        if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, sock, &ev) < 0)
            die("epoll");
    }
    double t0 = now(CLOCK_MONOTONIC), cpu0 = now(CLOCK_PROCESS_CPUTIME_ID);
    off_t offset = 0;
    while (offset < st.st_size) {
        ssize_t n = sendfile(sock, fd, &offset, (size_t)(st.st_size - offset));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN && use_epoll) {
                struct epoll_event ev;
                if (epoll_wait(ep, &ev, 1, -1) < 0 && errno != EINTR)
                    die("epoll_wait");
                continue;
            }
            die("sendfile");
        }
        if (n == 0)
            break; /* the file shrank */
    }
    double t1 = now(CLOCK_MONOTONIC), cpu1 = now(CLOCK_PROCESS_CPUTIME_ID);
    close(sock);
    close(fd);
    printf("{\"sent\": %lld, \"seconds\": %.9f, \"cpu_s\": %.6f}\n", (long long)offset, t1 - t0,
           cpu1 - cpu0);
    return 0;
}

static int do_sum(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        die("open");
    unsigned char *buf = malloc(BUF_SIZE);
    if (!buf)
        die("malloc");
    Checksum c = {0};
    uint64_t total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, BUF_SIZE);
        if (n < 0)
            die("read");
        if (n == 0)
            break;
        total += (uint64_t)n;
        checksum_update(&c, buf, (size_t)n);
    }
    printf("{\"bytes\": %llu, \"checksum\": \"%016llx\"}\n", (unsigned long long)total,
           (unsigned long long)checksum_final(&c));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s recv [--checksum] | send --port P --file F | sum --file F\n",
                argv[0]);
        return 2;
    }
    if (strcmp(argv[1], "recv") == 0)
        return do_recv(has_flag(argc, argv, "--checksum"));
    const char *file = arg(argc, argv, "--file");
    if (!file) {
        fprintf(stderr, "sendfile_c: --file is required\n");
        return 2;
    }
    if (strcmp(argv[1], "send") == 0) {
        const char *port = arg(argc, argv, "--port");
        if (!port) {
            fprintf(stderr, "sendfile_c: --port is required\n");
            return 2;
        }
        const char *mode = arg(argc, argv, "--epoll");
        return do_send(atoi(port), file, mode && atoi(mode));
    }
    if (strcmp(argv[1], "sum") == 0)
        return do_sum(file);
    fprintf(stderr, "sendfile_c: unknown mode %s\n", argv[1]);
    return 2;
}
