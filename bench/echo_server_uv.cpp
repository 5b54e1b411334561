// Plain libuv TCP echo server: the physical floor for bench/bench_echo.py.
//
//   echo_server_uv            # listens on 127.0.0.1, port chosen by the kernel
//
// Prints {"port": P} on stdout once listening, then echoes every byte it reads until killed.
// Each read goes into a per-connection buffer and is sent back with uv_try_write; only what
// the socket doesn't take at once is copied into a uv_write request.  That is about the
// least work a libuv program can do per echo, which is what the Python servers are held to.
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

constexpr size_t kReadSize = 64 * 1024;
constexpr int kBacklog = 1024;  // 100 clients connect at once; don't make them retry SYNs

struct Conn {
    uv_tcp_t handle;  // first member: a uv_handle_t* to it is a Conn*
    char buf[kReadSize];
};

struct WriteReq {
    uv_write_t req;
    char data[1];  // the rest of the allocation holds the bytes to send
};

void fail(const char* what, int err) {
    std::fprintf(stderr, "echo_server_uv: %s: %s\n", what, uv_strerror(err));
    std::exit(1);
}

void on_close(uv_handle_t* handle) { delete reinterpret_cast<Conn*>(handle); }

void on_alloc(uv_handle_t* handle, size_t, uv_buf_t* buf) {
    Conn* conn = reinterpret_cast<Conn*>(handle);
    *buf = uv_buf_init(conn->buf, kReadSize);
}

void on_write(uv_write_t* req, int status) {
    if (status < 0 && status != UV_ECANCELED && status != UV_EPIPE && status != UV_ECONNRESET)
        std::fprintf(stderr, "echo_server_uv: write: %s\n", uv_strerror(status));
    std::free(req);  // the WriteReq and its bytes are one allocation
}

void on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    if (nread < 0) {  // EOF or reset: the client is gone
        if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(stream)))
            uv_close(reinterpret_cast<uv_handle_t*>(stream), on_close);
        return;
    }
    if (nread == 0)
        return;
    uv_buf_t out = uv_buf_init(buf->base, static_cast<unsigned>(nread));
    int sent = uv_try_write(stream, &out, 1);
    if (sent == UV_EAGAIN)
        sent = 0;
    if (sent < 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(stream), on_close);
        return;
    }
    if (sent == nread)
        return;
    // The socket is full: queue a copy of the rest, so the connection buffer can be reused.
    size_t rest = static_cast<size_t>(nread - sent);
    auto* wr = static_cast<WriteReq*>(std::malloc(sizeof(WriteReq) + rest));
    std::memcpy(wr->data, buf->base + sent, rest);
    uv_buf_t tail = uv_buf_init(wr->data, static_cast<unsigned>(rest));
    int err = uv_write(&wr->req, stream, &tail, 1, on_write);
    if (err < 0) {
        std::free(wr);
        uv_close(reinterpret_cast<uv_handle_t*>(stream), on_close);
    }
}

void on_connection(uv_stream_t* server, int status) {
    if (status < 0)
        fail("listen", status);
    auto* conn = new Conn();
    uv_tcp_init(server->loop, &conn->handle);
    if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&conn->handle)) != 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(&conn->handle), on_close);
        return;
    }
    uv_tcp_nodelay(&conn->handle, 1);  // as asyncio and uvloop do for TCP transports
    uv_read_start(reinterpret_cast<uv_stream_t*>(&conn->handle), on_alloc, on_read);
}

}  // namespace

int main() {
    uv_loop_t* loop = uv_default_loop();
    uv_tcp_t server;
    uv_tcp_init(loop, &server);
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", 0, &addr);
    int err = uv_tcp_bind(&server, reinterpret_cast<const sockaddr*>(&addr), 0);
    if (err < 0)
        fail("bind", err);
    err = uv_listen(reinterpret_cast<uv_stream_t*>(&server), kBacklog, on_connection);
    if (err < 0)
        fail("listen", err);
    sockaddr_in bound{};
    int len = sizeof bound;
    uv_tcp_getsockname(&server, reinterpret_cast<sockaddr*>(&bound), &len);
    std::printf("{\"port\": %d}\n", ntohs(bound.sin_port));
    std::fflush(stdout);
    return uv_run(loop, UV_RUN_DEFAULT);
}
