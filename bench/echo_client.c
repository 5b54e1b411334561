/*
 * Closed-loop TCP echo client for bench/bench_echo.py.
 *
 *   echo_client --port P --conns C --size S --duration D [--warmup W] [--pid PID] [--host H]
 *
 * Opens C connections.  Each one sends S bytes, waits until the S bytes have come back
 * (checking them against what it sent), records the round-trip latency, and sends again.
 * After W seconds of warm-up it measures D seconds, then lets the requests in flight finish
 * (so the server sees clean FINs, not resets) and prints one JSON line on stdout:
 * requests/s, latency percentiles from a log-linear histogram, and the CPU time the server
 * process (--pid) and this client spent inside the measured window.
 *
 * Single thread, non-blocking sockets, level-triggered epoll: the client should take as
 * little CPU as possible, since on a 2-core machine it competes with the server.
 *
 * Built with -DECHO_TLS (and -lssl -lcrypto), it takes --tls 1 and then speaks TLS through
 * OpenSSL: a blocking handshake per connection before the warm-up (no certificate check; the
 * handshake is not measured), then SSL_write/SSL_read on the same non-blocking sockets, and a
 * close_notify before closing.
 * Exit status 0 on success; on any error a message goes to stderr and the status is 1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE  /* MSG_NOSIGNAL, clock_gettime with -std=c11 */
#endif
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef ECHO_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#endif

#define PATTERN_SLACK 257        /* requests start at varying offsets of one pattern */
#define SCRATCH_SIZE (256 * 1024)
#define STALL_NS (10LL * 1000000000LL)  /* no completed request for this long = stalled */

/* Log-linear latency histogram in nanoseconds: 64 sub-buckets per power of two,
 * i.e. about 1.5 % resolution over the whole range, with constant-time recording. */
#define SUB_BITS 6
#define SUB_COUNT (1 << SUB_BITS)
#define HIST_BUCKETS (SUB_COUNT + (64 - SUB_BITS) * SUB_COUNT)

typedef struct {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total;
    uint64_t sum_ns;
    uint64_t max_ns;
} histogram_t;

typedef struct {
    int fd;
    int index;
    uint64_t request_no;   /* varies the payload between consecutive requests */
    const unsigned char *payload;
    size_t sent;
    size_t received;
    int in_flight;
    int want_out;          /* EPOLLOUT registered: avoid re-issuing epoll_ctl */
    int64_t started_ns;
    uint64_t window_requests;
#ifdef ECHO_TLS
    SSL *ssl;              /* NULL without --tls */
#endif
} conn_t;

static histogram_t hist;
static unsigned char *pattern;
static unsigned char scratch[SCRATCH_SIZE];
static size_t msg_size;

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#ifdef ECHO_TLS
static SSL_CTX *tls_ctx;  /* NULL without --tls */

static const char *tls_error(void) {
    static char buf[256];
    unsigned long e = ERR_get_error();
    if (!e)
        return strerror(errno);
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}
#endif

/* One send or recv on a connection, plain or TLS, with the socket calls' conventions: the
 * byte count, 0 for EOF (recv only), or -1 with errno set (EAGAIN: try again when the socket
 * is readable (*want_out == 0) or writable (*want_out == 1)). */
static ssize_t conn_io(conn_t *c, int writing, void *buf, size_t len, int *want_out) {
    *want_out = writing;
#ifdef ECHO_TLS
    if (c->ssl) {
        int n = writing ? SSL_write(c->ssl, buf, (int)len) : SSL_read(c->ssl, buf, (int)len);
        if (n > 0)
            return n;
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            *want_out = err == SSL_ERROR_WANT_WRITE;
            errno = EAGAIN;
            return -1;
        }
        if (err == SSL_ERROR_ZERO_RETURN && !writing)
            return 0;
        die("TLS %s on connection %d: %s", writing ? "write" : "read", c->index, tls_error());
    }
#endif
    return writing ? send(c->fd, buf, len, MSG_NOSIGNAL) : recv(c->fd, buf, len, 0);
}

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("echo_client: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int bucket_of(uint64_t v) {
    if (v < SUB_COUNT)
        return (int)v;
    int e = 63 - __builtin_clzll(v);               /* e >= SUB_BITS */
    int sub = (int)(v >> (e - SUB_BITS)) - SUB_COUNT;
    return SUB_COUNT + (e - SUB_BITS) * SUB_COUNT + sub;
}

static double bucket_mid(int b) {
    if (b < SUB_COUNT)
        return b;
    int e = (b - SUB_COUNT) / SUB_COUNT + SUB_BITS;
    int sub = (b - SUB_COUNT) % SUB_COUNT;
    double low = (double)((uint64_t)(sub + SUB_COUNT) << (e - SUB_BITS));
    return low + (double)(1ULL << (e - SUB_BITS)) / 2.0;
}

static void hist_record(uint64_t ns) {
    hist.counts[bucket_of(ns)]++;
    hist.total++;
    hist.sum_ns += ns;
    if (ns > hist.max_ns)
        hist.max_ns = ns;
}

static double hist_percentile_us(double p) {
    if (hist.total == 0)
        return 0.0;
    uint64_t rank = (uint64_t)(p / 100.0 * (double)hist.total + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) {
        seen += hist.counts[b];
        if (seen >= rank)
            return bucket_mid(b) / 1000.0;
    }
    return (double)hist.max_ns / 1000.0;
}

/* utime + stime of a process in seconds, from /proc/<pid>/stat (all its threads). */
static double proc_cpu_seconds(int pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        die("cannot open %s: %s", path, strerror(errno));
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces or parentheses: fields start after the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p)
        die("cannot parse %s", path);
    unsigned long utime = 0, stime = 0;
    /* fields 3..13 skipped, then 14 utime and 15 stime (clock ticks) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu",
               &utime, &stime) != 2)
        die("cannot parse %s", path);
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static void set_out_interest(int ep, conn_t *c, int want) {
    if (c->want_out == want)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0), .data.ptr = c};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
    c->want_out = want;
}

static void try_send(int ep, conn_t *c) {
    int want_out = 0;
    while (c->sent < msg_size) {
        ssize_t n = conn_io(c, 1, (void *)(c->payload + c->sent), msg_size - c->sent, &want_out);
        if (n > 0) {
            c->sent += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            die("send on connection %d: %s", c->index, strerror(errno));
        }
    }
    set_out_interest(ep, c, c->sent < msg_size && want_out);
}

static void start_request(int ep, conn_t *c) {
    c->payload = pattern + (c->request_no * 31 + (uint64_t)c->index * 7) % PATTERN_SLACK;
    c->request_no++;
    c->sent = 0;
    c->received = 0;
    c->in_flight = 1;
    c->started_ns = now_ns();
    try_send(ep, c);
}

/* Reads what has arrived; returns 1 when the current request's S bytes are all back. */
static int try_recv(conn_t *c) {
    int want_out;
    if (!c->in_flight) {  /* idle while draining: the server must stay silent */
        ssize_t n = conn_io(c, 0, scratch, 1, &want_out);
        if (n > 0)
            die("connection %d: server sent bytes nobody asked for", c->index);
        if (n == 0)
            die("connection %d: server closed the connection", c->index);
        return 0;
    }
    while (c->received < msg_size) {
        size_t want = msg_size - c->received;  /* never read into the next request */
        if (want > SCRATCH_SIZE)
            want = SCRATCH_SIZE;
        ssize_t n = conn_io(c, 0, scratch, want, &want_out);
        if (n > 0) {
            if (memcmp(scratch, c->payload + c->received, (size_t)n) != 0)
                die("connection %d: echoed bytes differ from the bytes sent "
                    "(request %llu, offset %zu)", c->index,
                    (unsigned long long)c->request_no, c->received);
            c->received += (size_t)n;
        } else if (n == 0) {
            die("connection %d: server closed the connection", c->index);
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        } else {
            die("recv on connection %d: %s", c->index, strerror(errno));
        }
    }
    return 1;
}

static int connect_one(const char *host, int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        die("bad IPv4 address %s", host);
    /* A blocking connect keeps setup simple; only the echo phase must not block. */
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("connect to %s:%d: %s", host, port, strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  /* small requests: no Nagle */
    return fd;
}

static double arg_double(const char *name, const char *value) {
    char *end;
    double v = strtod(value, &end);
    if (*end || v < 0)
        die("bad value for %s: %s", name, value);
    return v;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 0, conns = 10, server_pid = 0;
    double duration = 3.0, warmup = 0.5;
    msg_size = 1024;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--host")) host = v;
        else if (!strcmp(k, "--port")) port = (int)arg_double(k, v);
        else if (!strcmp(k, "--conns")) conns = (int)arg_double(k, v);
        else if (!strcmp(k, "--size")) msg_size = (size_t)arg_double(k, v);
        else if (!strcmp(k, "--duration")) duration = arg_double(k, v);
        else if (!strcmp(k, "--warmup")) warmup = arg_double(k, v);
        else if (!strcmp(k, "--pid")) server_pid = (int)arg_double(k, v);
#ifdef ECHO_TLS
        else if (!strcmp(k, "--tls")) {
            if (arg_double(k, v) != 0 && !tls_ctx) {
                tls_ctx = SSL_CTX_new(TLS_client_method());
                if (!tls_ctx)
                    die("SSL_CTX_new: %s", tls_error());
                SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
                SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
                /* Read whole segments, not a record header then its body: fewer recv calls.
                 * Safe here: the server never sends more than the request being read. */
                SSL_CTX_set_read_ahead(tls_ctx, 1);
            }
        }
#endif
        else die("unknown option %s", k);
    }
    if (argc % 2 == 0)
        die("options come in pairs: --name value");
    if (port <= 0 || conns <= 0 || msg_size == 0 || duration <= 0)
        die("need --port, and positive --conns, --size and --duration");

    /* Pseudo-random payload, so a shifted or stale echo cannot match by accident. */
    pattern = malloc(msg_size + PATTERN_SLACK);
    if (!pattern)
        die("out of memory");
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < msg_size + PATTERN_SLACK; i++) {
        x ^= x << 13; x ^= x >> 17; x ^= x << 5;
        pattern[i] = (unsigned char)x;
    }

    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    conn_t *cs = calloc((size_t)conns, sizeof *cs);
    if (!cs)
        die("out of memory");
    for (int i = 0; i < conns; i++) {
        cs[i].fd = connect_one(host, port);
        cs[i].index = i;
#ifdef ECHO_TLS
        if (tls_ctx) {
            /* Handshake on the still-blocking socket: set-up, not part of the measurement. */
            cs[i].ssl = SSL_new(tls_ctx);
            if (!cs[i].ssl || !SSL_set_fd(cs[i].ssl, cs[i].fd))
                die("SSL_new: %s", tls_error());
            if (SSL_connect(cs[i].ssl) != 1)
                die("TLS handshake on connection %d: %s", i, tls_error());
        }
#endif
        fcntl(cs[i].fd, F_SETFL, fcntl(cs[i].fd, F_GETFL) | O_NONBLOCK);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, cs[i].fd, &ev) < 0)
            die("epoll_ctl: %s", strerror(errno));
    }

    enum { WARMUP, MEASURE, DRAIN } phase = WARMUP;
    int64_t t_start = now_ns();
    int64_t deadline = t_start + (int64_t)(warmup * 1e9);
    int64_t t0 = 0, t1 = 0, last_progress = t_start;
    double server_cpu0 = 0, server_cpu1 = 0, client_cpu0 = 0, client_cpu1 = 0;
    uint64_t window_requests = 0;
    int in_flight = 0;

    for (int i = 0; i < conns; i++) {
        start_request(ep, &cs[i]);
        in_flight++;
    }

    struct epoll_event events[256];
    for (;;) {
        int64_t now = now_ns();
        if (now >= deadline) {
            if (phase == WARMUP) {
                /* Start of the measured window: reset counters, sample CPU clocks. */
                phase = MEASURE;
                t0 = now;
                deadline = t0 + (int64_t)(duration * 1e9);
                memset(&hist, 0, sizeof hist);
                for (int i = 0; i < conns; i++)
                    cs[i].window_requests = 0;
                server_cpu0 = server_pid ? proc_cpu_seconds(server_pid) : 0.0;
                client_cpu0 = self_cpu_seconds();
            } else if (phase == MEASURE) {
                phase = DRAIN;
                t1 = now;
                server_cpu1 = server_pid ? proc_cpu_seconds(server_pid) : 0.0;
                client_cpu1 = self_cpu_seconds();
                window_requests = hist.total;
                deadline = now + STALL_NS;
            } else {
                die("%d request(s) still unanswered %.0f s after the window", in_flight,
                    STALL_NS / 1e9);
            }
            continue;
        }
        if (phase == DRAIN && in_flight == 0)
            break;
        if (now - last_progress > STALL_NS)
            die("no echo completed for %.0f s (server stalled?)", STALL_NS / 1e9);

        int timeout_ms = (int)((deadline - now + 999999) / 1000000);
        int n = epoll_wait(ep, events, 256, timeout_ms);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait: %s", strerror(errno));
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            if (events[i].events & (EPOLLERR | EPOLLHUP) && !(events[i].events & EPOLLIN))
                die("connection %d: socket error or hang-up", c->index);
            if (c->in_flight && (events[i].events & EPOLLOUT))
                try_send(ep, c);
#ifdef ECHO_TLS
            else if (c->ssl && c->in_flight && c->sent < msg_size)
                try_send(ep, c);  /* an SSL_write may wait for the socket to be readable */
#endif
            if (events[i].events & EPOLLIN) {
                if (!try_recv(c))
                    continue;
                int64_t done = now_ns();
                last_progress = done;
                if (phase == MEASURE) {
                    hist_record((uint64_t)(done - c->started_ns));
                    c->window_requests++;
                }
                c->in_flight = 0;
                in_flight--;
                if (phase != DRAIN) {  /* closed loop: the next request right away */
                    start_request(ep, c);
                    in_flight++;
                }
            }
        }
    }

    uint64_t min_conn = UINT64_MAX, max_conn = 0;
    for (int i = 0; i < conns; i++) {
        if (cs[i].window_requests < min_conn) min_conn = cs[i].window_requests;
        if (cs[i].window_requests > max_conn) max_conn = cs[i].window_requests;
#ifdef ECHO_TLS
        if (cs[i].ssl) {
            SSL_shutdown(cs[i].ssl);  /* send close_notify; don't wait for the server's */
            SSL_free(cs[i].ssl);
        }
#endif
        close(cs[i].fd);
    }
    double seconds = (double)(t1 - t0) / 1e9;
    if (window_requests == 0)
        die("no request completed inside the %.2f s window", seconds);
    printf("{\"conns\": %d, \"size\": %zu, \"seconds\": %.6f, \"requests\": %llu, "
           "\"rps\": %.1f, \"mean_us\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f, "
           "\"max_us\": %.1f, \"min_conn_requests\": %llu, \"max_conn_requests\": %llu, "
           "\"server_cpu_s\": %.4f, \"client_cpu_s\": %.4f}\n",
           conns, msg_size, seconds, (unsigned long long)window_requests,
           (double)window_requests / seconds,
           (double)hist.sum_ns / (double)hist.total / 1000.0,
           hist_percentile_us(50.0), hist_percentile_us(99.0), (double)hist.max_ns / 1000.0,
           (unsigned long long)min_conn, (unsigned long long)max_conn,
           server_pid ? server_cpu1 - server_cpu0 : -1.0, client_cpu1 - client_cpu0);
    return 0;
}
