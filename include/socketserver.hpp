/**
 * @file socketserver.hpp
 * @brief libsocketserver for C++17: RAII objects, callbacks as any
 * callable, errors as exceptions. Header-only, over socketserver.h.
 *
 * Written by hand (socketserver.h is generated). Everything is in
 * namespace `ss`:
 *
 * - `ss::config` and `ss::server` own an ss_config / ss_server: move-only;
 *   their destructors free it (ss_config_free, ss_server_free, which
 *   closes the server first).
 * - Callbacks (handle, setup, finish, verify_request, handle_error,
 *   handle_timeout, service_actions, on_open, on_data, on_eof, on_close,
 *   on_drain, on_datagram, the hand-off continuation) are any callable:
 *   lambdas with captures, function objects, functions. A config holds
 *   them; `ss::server`'s constructor copies them (so they must be
 *   copyable: share state through references or std::shared_ptr) into an
 *   object that becomes the server's user data, whose finalizer (see
 *   ss_server_new()) destroys it once no request uses the server any
 *   more. So a callable and its captures live as long as any call to it
 *   can run, even on a thread that outlives the `ss::server` (daemon
 *   threads, block_on_close off). The server's C user data is the
 *   wrapper's: keep your state in the captures. An SS_EVENT config always
 *   has the wrapper's on_close set (it also ends the connection's watch
 *   callables).
 * - conn::watch_fd() takes a callable too: the wrapper keeps it in the
 *   server's state (the C API never frees a watch's data pointer) and
 *   destroys it exactly once, when the library ends the watch (unwatch,
 *   replacement, the hang-up or error call, the connection's close),
 *   never during its own call. So does conn::set_timer() (the C API takes
 *   no free function for a timer's data): its callable (move-only ones
 *   too) is destroyed exactly once, after its call, at cancel_timer(), or
 *   at the connection's close if still pending. A loop timer's callable
 *   (config::add_loop_timer()) is kept with the other callables: the
 *   config's, and each server's copy.
 * - Failures are thrown as `ss::error` (a std::runtime_error) carrying
 *   the ss_status, the library's detail message (ss_last_error_message())
 *   and the OS error (ss_last_os_error()).
 * - No exception ever crosses into the library: every callback is called
 *   through a trampoline that catches everything (`catch (...)`). An
 *   exception from a callback that can fail (setup, handle, finish,
 *   on_open, on_data, on_datagram, a watch_fd callable, the hand-off
 *   continuation) makes it fail: handle_error then gets SS_ERR_HANDLER
 *   and "handle callback returned -1 (last error: handle threw: WHAT)"
 *   with the exception's what() (an `ss::error` keeps its own status and
 *   message, as a failed call in a C handler does); for on_data and a
 *   watch callable the connection closes as failed, the server goes on.
 *   An exception from a callback with no failure return (verify_request,
 *   handle_timeout, service_actions, on_eof, on_close, on_drain, a posted
 *   job, a connection or loop timer) is reported to handle_error the
 *   same way (ss_server_report_error(); for a connection's callback the
 *   message starts "connection <id> from <peer>: " as the library's do);
 *   verify_request then refuses the request, on_eof, on_drain and a
 *   connection timer close the connection. Inside handle_error,
 *   ss::error_conn() is the connection whose failure is reported (the
 *   library's or one of these), else empty. An exception from
 *   handle_error itself is written to stderr (there is nowhere else to
 *   report it); one from the log callback is dropped.
 * - Threads: the C API's rules apply unchanged (the `Thread:` lines of
 *   socketserver.h). Callables may run on several threads at once
 *   (SS_THREADING, SS_THREAD_POOL, SS_EVENT with several loops): make
 *   them thread-safe. An `ss::config` is used by one thread at a time.
 *   `ss::request` and `ss::conn` are borrowed views, valid only inside the
 *   callback that received them.
 * - Destroying a server: never from inside its own callbacks on its
 *   serving thread or an event loop (the library refuses the free there,
 *   reports it and leaks the server rather than free memory in use): call
 *   `shutdown()` there and let the owner destroy the server after
 *   `serve_forever()` returns. From a handler thread of SS_THREADING or
 *   SS_THREAD_POOL the destructor works (the memory and the callables stay
 *   until that request ends). As for ss_server_free(), destroy it once
 *   every other call on it has returned (shutdown() and post() excepted:
 *   they may race the destructor and then fail with SS_ERR_CLOSED); clear
 *   any pointer a signal handler uses first.
 *
 * Compiles with g++ and clang++ under -std=c++17 -Wall -Wextra -Wpedantic
 * -Werror; link with -lsocketserver as for C.
 */
#ifndef SOCKETSERVER_HPP
#define SOCKETSERVER_HPP

#include "socketserver.h"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

namespace ss {

/** The library's failure: what() is "SS_ERR_IO: system call failed: bind ...". */
class error : public std::runtime_error {
public:
    /** `detail` is the library's message (may be empty); `os_error` an errno or 0. */
    error(ss_status status, const std::string &detail, int os_error = 0)
        : std::runtime_error(compose(status, detail)), status_(status), detail_(detail),
          os_error_(os_error)
    {
    }

    /** The calling thread's last failure, which returned `status`. */
    static error last(ss_status status)
    {
        return error(status, ss_last_error_message(), ss_last_os_error());
    }

    ss_status status() const noexcept { return status_; }
    /** The detail message alone ("" if there was none). */
    const std::string &detail() const noexcept { return detail_; }
    /** The errno behind the failure, 0 if it was not an OS error. */
    int os_error() const noexcept { return os_error_; }

private:
    static std::string compose(ss_status status, const std::string &detail)
    {
        std::string text = ss_status_str(status);
        if (!detail.empty()) {
            text += ": ";
            text += detail;
        }
        return text;
    }

    ss_status status_;
    std::string detail_;
    int os_error_;
};

namespace detail {

/** Throws ss::error for a failed call. */
inline void check(ss_status status)
{
    if (status != SS_OK)
        throw error::last(status);
}

/** A string the library copies out with the (buf, cap, out_len) rules. */
template <class Copy> std::string copy_string(Copy copy)
{
    std::size_t len = 0;
    ss_status status = copy(nullptr, 0, &len);
    if (status != SS_OK && status != SS_ERR_BUFFER_TOO_SMALL)
        throw error::last(status);
    std::string text(len + 1, '\0');
    check(copy(&text[0], text.size(), &len));
    text.resize(len);
    return text;
}

} // namespace detail

/** ss_transport as a scoped enum. */
enum class transport : int {
    tcp = SS_TCP,
    udp = SS_UDP,
    unix_stream = SS_UNIX_STREAM,
    unix_datagram = SS_UNIX_DATAGRAM,
};

/** ss_concurrency as a scoped enum. */
enum class concurrency : int {
    sync = SS_SYNC,
    threading = SS_THREADING,
    forking = SS_FORKING,
    thread_pool = SS_THREAD_POOL,
    event = SS_EVENT,
};

/** ss_hand_off as a scoped enum: where request::hand_off() continues. */
enum class hand_off_target : int {
    thread = SS_HAND_OFF_THREAD,
    fork = SS_HAND_OFF_FORK,
};

class server_ref;

/** A raw socket address (conn::peer_sockaddr(), local_sockaddr(),
 * request::client_sockaddr()): the bytes getpeername() / getsockname()
 * would give, and their length. */
struct socket_address {
    struct sockaddr_storage storage {};
    socklen_t length = sizeof(struct sockaddr_storage);

    const struct sockaddr *get() const noexcept
    {
        return reinterpret_cast<const struct sockaddr *>(&storage);
    }
    struct sockaddr *get() noexcept { return reinterpret_cast<struct sockaddr *>(&storage); }
    sa_family_t family() const noexcept { return storage.ss_family; }
};

/** One descriptor passed by socket activation (listen_fds()). */
struct listen_fd {
    int fd;
    /** Its LISTEN_FDNAMES name, "unknown" when none was given. */
    std::string name;
};

/** A borrowed ss_request: valid only inside the callback that received it.
 * Thread: that callback's (or its hand-off continuation's), as every
 * ss_request_* function. Methods throw ss::error. */
class request {
public:
    request() noexcept = default;
    explicit request(ss_request *handle) noexcept : r_(handle) {}

    /** False for handle_error's NULL request (a server-level error). */
    explicit operator bool() const noexcept { return r_ != nullptr; }
    ss_request *native_handle() const noexcept { return r_; }

    /** Up to `len` bytes into `buf`; 0 when the client closed. */
    std::size_t read(void *buf, std::size_t len)
    {
        std::size_t n = 0;
        detail::check(ss_request_read(r_, buf, len, &n));
        return n;
    }

    /** Up to `max` bytes; "" when the client closed. */
    std::string read(std::size_t max)
    {
        std::string data(max, '\0');
        data.resize(read(&data[0], max));
        return data;
    }

    void read_exact(void *buf, std::size_t len) { detail::check(ss_request_read_exact(r_, buf, len)); }

    /** fgets-like (ss_request_readline()); returns the byte count. */
    std::size_t readline(char *buf, std::size_t cap)
    {
        std::size_t n = 0;
        detail::check(ss_request_readline(r_, buf, cap, &n));
        return n;
    }

    /** One line with its '\n' (at most `max` bytes; longer lines come in
     * pieces), "" at the end of the data. */
    std::string readline(std::size_t max = 65536)
    {
        std::string line(max + 1, '\0');
        line.resize(readline(&line[0], line.size()));
        return line;
    }

    void write(const void *buf, std::size_t len) { detail::check(ss_request_write(r_, buf, len)); }
    void write(std::string_view data) { write(data.data(), data.size()); }
    void flush() { detail::check(ss_request_flush(r_)); }
    void reply(const void *buf, std::size_t len) { detail::check(ss_request_reply(r_, buf, len)); }
    void reply(std::string_view data) { reply(data.data(), data.size()); }
    /** Read/write timeout of this request in ms (negative: none). */
    void set_timeout(std::int64_t timeout_ms) { detail::check(ss_request_set_timeout(r_, timeout_ms)); }

    std::string client_address() const
    {
        return detail::copy_string([this](char *buf, std::size_t cap, std::size_t *len) {
            return ss_request_client_address(r_, buf, cap, len);
        });
    }

    /** The client's raw address (ss_request_client_sockaddr()). */
    socket_address client_sockaddr() const
    {
        socket_address a;
        detail::check(ss_request_client_sockaddr(r_, a.get(), &a.length));
        return a;
    }

    /** The whole received datagram (borrowed, like the request). */
    std::string_view datagram() const
    {
        const std::uint8_t *data = nullptr;
        std::size_t len = 0;
        detail::check(ss_request_datagram(r_, &data, &len));
        return std::string_view(reinterpret_cast<const char *>(data), len);
    }

    int fileno() const noexcept { return ss_request_fileno(r_); }

    /** From inside handle: once handle returns successfully, the rest of the
     * request runs as the config's hand_off_continuation on a new thread or
     * in a forked child (ss_request_hand_off()). Only for requests of a
     * server made by ss::server. */
    void hand_off(hand_off_target target);

    void set_data(void *data) { detail::check(ss_request_set_data(r_, data)); }
    void *data() const noexcept { return ss_request_data(r_); }
    /** The server this request came to. */
    server_ref server() const noexcept;

private:
    ss_request *r_ = nullptr;
};

/** A borrowed SS_EVENT connection: valid only inside the callback or posted
 * job that received it. Thread: the connection's loop thread, in that
 * callback or job (as every ss_conn_* function). */
class conn {
public:
    conn() noexcept = default;
    explicit conn(ss_conn *handle) noexcept : c_(handle) {}

    /** False in a posted job whose connection closed first. */
    explicit operator bool() const noexcept { return c_ != nullptr; }
    ss_conn *native_handle() const noexcept { return c_; }

    /** Queues the bytes; throws ss::error, also for SS_ERR_WOULD_BLOCK. */
    void write(const void *buf, std::size_t len) { detail::check(ss_conn_write(c_, buf, len)); }
    void write(std::string_view data) { write(data.data(), data.size()); }
    /** As write(), returning the status instead of throwing (SS_OK,
     * SS_ERR_WOULD_BLOCK at the high-water mark, ...). */
    ss_status try_write(std::string_view data) noexcept
    {
        return ss_conn_write(c_, data.data(), data.size());
    }
    void close() { detail::check(ss_conn_close(c_)); }
    std::size_t pending_output() const noexcept { return ss_conn_pending_output(c_); }
    bool output_full() const noexcept { return ss_conn_output_full(c_); }
    /** For server_ref::post() from any thread. */
    std::uint64_t id() const noexcept { return ss_conn_id(c_); }
    void set_data(void *data) { detail::check(ss_conn_set_data(c_, data)); }
    void *data() const noexcept { return ss_conn_data(c_); }
    int fileno() const noexcept { return ss_conn_fileno(c_); }

    std::string peer_address() const
    {
        return detail::copy_string([this](char *buf, std::size_t cap, std::size_t *len) {
            return ss_conn_peer_address(c_, buf, cap, len);
        });
    }

    /** ss_conn_writev(): the `count` buffers of `iov` in order, as one
     * write (one sendmsg() when nothing is queued); the buffers may be
     * reused as soon as it returns. Throws ss::error as write() does
     * (SS_ERR_INVALID_ARGUMENT for more than 1024 buffers). */
    void writev(const struct iovec *iov, std::size_t count) { detail::check(try_writev(iov, count)); }
    /** writev() of string views: `c.writev({header, body})`. */
    void writev(std::initializer_list<std::string_view> parts)
    {
        detail::check(try_writev(parts.begin(), parts.size()));
    }
    void writev(const std::string_view *parts, std::size_t count)
    {
        detail::check(try_writev(parts, count));
    }
    /** As writev(), returning the status instead of throwing (SS_OK,
     * SS_ERR_WOULD_BLOCK at the high-water mark: nothing queued, ...). */
    ss_status try_writev(const struct iovec *iov, std::size_t count) noexcept
    {
        if (count > static_cast<std::size_t>(max_iov))
            return too_many(count);
        return ss_conn_writev(c_, iov, static_cast<int>(count));
    }
    ss_status try_writev(std::initializer_list<std::string_view> parts) noexcept
    {
        return try_writev(parts.begin(), parts.size());
    }
    ss_status try_writev(const std::string_view *parts, std::size_t count) noexcept
    {
        if (count > static_cast<std::size_t>(max_iov))
            return too_many(count);
        struct iovec small[32] = {}; // initialised: g++ -O2 warns for count 0 otherwise
        std::unique_ptr<struct iovec[]> large;
        struct iovec *iov = small;
        if (count > sizeof small / sizeof small[0]) {
            large.reset(new (std::nothrow) struct iovec[count]);
            if (!large) {
                ss_set_last_error(SS_ERR_IO, "conn::writev: out of memory");
                return SS_ERR_IO;
            }
            iov = large.get();
        }
        for (std::size_t i = 0; i < count; i++) {
            // iovec has no const; ss_conn_writev() only reads the bytes.
            iov[i].iov_base = const_cast<char *>(parts[i].data());
            iov[i].iov_len = parts[i].size();
        }
        return ss_conn_writev(c_, iov, static_cast<int>(count));
    }

    /** ss_conn_pause_reading(): no more on_data until resume_reading()
     * (input already received is held). */
    void pause_reading() { detail::check(ss_conn_pause_reading(c_)); }
    /** ss_conn_resume_reading(): held input is presented first, by the
     * loop, after the calling callback returns. */
    void resume_reading() { detail::check(ss_conn_resume_reading(c_)); }
    bool reading_paused() const noexcept { return ss_conn_reading_paused(c_); }
    /** ss_conn_shutdown_write(): half-close once the queued output is sent;
     * reading goes on, later writes throw SS_ERR_CLOSED. */
    void shutdown_write() { detail::check(ss_conn_shutdown_write(c_)); }
    /** ss_conn_abort(): reset (SO_LINGER 0) once the callback returns;
     * queued output dropped; on_close runs once. */
    void abort() { detail::check(ss_conn_abort(c_)); }

    /** The server of this connection (empty off its loop thread). */
    server_ref server() const noexcept;

    /** The peer's raw address (ss_conn_peer_sockaddr()). */
    socket_address peer_sockaddr() const
    {
        socket_address a;
        detail::check(ss_conn_peer_sockaddr(c_, a.get(), &a.length));
        return a;
    }
    /** The connection's own address (ss_conn_local_sockaddr(), getsockname). */
    socket_address local_sockaddr() const
    {
        socket_address a;
        detail::check(ss_conn_local_sockaddr(c_, a.get(), &a.length));
        return a;
    }

    /** ss_conn_watch_fd(): `callback(ss::conn&, int fd, int events)` ->
     * void or int (non-zero, or an exception, closes this connection as
     * failed, reported to handle_error) runs on this connection's loop
     * whenever `fd` is ready for `events` (SS_WATCH_READ and/or
     * SS_WATCH_WRITE; `events` given to it may also carry SS_WATCH_HANGUP
     * or SS_WATCH_ERROR, its last call). The callable is moved into the
     * wrapper's per-server state and destroyed exactly once, when the watch
     * ends: unwatch_fd(), a replacing watch_fd() on the same descriptor, the
     * end of a call reporting a hang-up or an error, or when the
     * connection closes (right after on_close); never while it runs (a
     * callable that unwatches or replaces itself finishes its call first).
     * If this throws, the callable is destroyed and any previous watch of
     * `fd` stays as it was. `fd` stays yours (see ss_conn_watch_fd()).
     * Only for connections of a server made by ss::server; do not mix it
     * with ss_conn_watch_fd() / ss_conn_unwatch_fd() on the same
     * descriptor. */
    template <class F> void watch_fd(int fd, int events, F &&callback);
    /** ss_conn_unwatch_fd(): the callable is destroyed (after its current
     * call, if this is called from inside it). Throws ss::error
     * (SS_ERR_INVALID_ARGUMENT if `fd` is not watched). */
    void unwatch_fd(int fd);
    /** How many descriptors this connection watches. */
    std::size_t watched_fds() const noexcept { return ss_conn_watched_fds(c_); }

    /** ss_conn_set_timer(): `callback(ss::conn&, std::uint64_t timer_id)`
     * (or `callback(ss::conn&)`) -> void runs once on this connection's
     * loop `delay_ms` milliseconds from now (0: on the loop's next turn,
     * never from inside this call), unless cancelled first; returns the
     * timer's id (never 0) for reset_timer() / cancel_timer(). Any
     * callable, move-only ones too. The C API takes no free function for a
     * timer's data, so the wrapper keeps the callable in the server's
     * state and destroys it exactly once: right after its call returns
     * (never during it), at cancel_timer(), or when the connection closes
     * with it still pending (right after on_close; the library cancels
     * pending timers before on_close). An exception from it is reported to
     * handle_error ("connection <id> from <peer>: timer threw: WHAT";
     * error_conn() is the connection) and closes that connection. If this
     * throws ss::error (SS_ERR_CLOSED after close() or in on_close,
     * SS_ERR_NULL_POINTER for an empty callable, ...), the callable is
     * destroyed and no timer set. Only for connections of a server made by
     * ss::server; do not mix with ss_conn_set_timer() /
     * ss_conn_cancel_timer() on the same timer, nor replace the wrapper's
     * on_close through native_handle(). */
    template <class F> std::uint64_t set_timer(std::uint64_t delay_ms, F &&callback);
    /** ss_conn_reset_timer(): pending timer `timer_id` runs `delay_ms` from
     * now instead (same callable, same id; nothing is destroyed). Throws
     * ss::error: SS_ERR_INVALID_ARGUMENT if it is not pending (it has run
     * or is running, was cancelled, is another connection's),
     * SS_ERR_CLOSED after close(). */
    void reset_timer(std::uint64_t timer_id, std::uint64_t delay_ms)
    {
        detail::check(ss_conn_reset_timer(c_, timer_id, delay_ms));
    }
    /** ss_conn_cancel_timer(): true if timer `timer_id` was pending (its
     * callable is never called and is destroyed before this returns);
     * false if it was not (it has run or is running, was cancelled
     * already, is 0 or another connection's: SS_ERR_INVALID_ARGUMENT,
     * which the C API says is safe to ignore). Allowed after close().
     * Throws ss::error for other failures (SS_ERR_WRONG_STATE off the
     * loop thread). */
    bool cancel_timer(std::uint64_t timer_id);

    /** ss_conn_set_busy(): while true, a drain (server_ref::drain()) does
     * not close this connection as idle: for an answer on its way from
     * another thread (post() it, then set_busy(false)). */
    void set_busy(bool busy) { detail::check(ss_conn_set_busy(c_, busy)); }

private:
    /** IOV_MAX on Linux: what ss_conn_writev() takes at most. */
    static constexpr int max_iov = 1024;

    static ss_status too_many(std::size_t count) noexcept
    {
        std::string text;
        try {
            text = "conn::writev: " + std::to_string(count) + " buffers (at most " +
                   std::to_string(max_iov) + ")";
        } catch (...) {
        }
        ss_set_last_error(SS_ERR_INVALID_ARGUMENT,
                          text.empty() ? "conn::writev: too many buffers" : text.c_str());
        return SS_ERR_INVALID_ARGUMENT;
    }

    ss_conn *c_ = nullptr;
};

/** Inside handle_error: the SS_EVENT connection whose failure is being
 * reported (ss_error_conn(); also for the exceptions the wrapper reports
 * from on_drain, on_eof, on_close and posted jobs, whose handle_error
 * gets no request either), or an empty conn. Borrowed until handle_error
 * returns; use it to tell which connection failed (id(), data()). */
conn error_conn() noexcept;

namespace detail {

/** A failure to hand back to the library: status and message. */
struct failure {
    ss_status status;
    std::string message;
};

/** What the exception being handled says; `stage` names the callback. */
inline failure current_failure(const char *stage) noexcept
{
    try {
        try {
            throw;
        } catch (const error &e) {
            // An ss::error made with SS_OK is still a failure.
            return failure{e.status() == SS_OK ? SS_ERR_HANDLER : e.status(),
                           e.detail().empty() ? std::string(e.what()) : e.detail()};
        } catch (const std::exception &e) {
            return failure{SS_ERR_HANDLER, std::string(stage) + " threw: " + e.what()};
        } catch (...) {
            return failure{SS_ERR_HANDLER, std::string(stage) +
                                               " threw an exception not derived from "
                                               "std::exception"};
        }
    } catch (...) {
        // Out of memory for the text.
        return failure{SS_ERR_HANDLER, std::string()};
    }
}

/** Hands `f` to `give` (a library call taking the message), with a
 * replacement text when the message is empty or not UTF-8. */
template <class Give> void give_failure(const failure &f, Give give) noexcept
{
    const char *text = f.message.empty() ? "a callback threw (no memory for the message)"
                                         : f.message.c_str();
    if (give(f.status, text) == SS_OK)
        return;
    // Not UTF-8 (or holding a NUL): the ASCII part, '?' for the rest.
    char ascii[512];
    std::size_t i = 0;
    for (; text[i] != '\0' && i + 1 < sizeof ascii; i++)
        ascii[i] = static_cast<unsigned char>(text[i]) < 0x80 ? text[i] : '?';
    ascii[i] = '\0';
    give(f.status, ascii);
}

/** The callback's failure return (-1), with the exception as the cause
 * handle_error reports. Call inside a catch block. */
inline int fail_return(const char *stage) noexcept
{
    give_failure(current_failure(stage), [](ss_status status, const char *text) {
        return ss_set_last_error(status, text);
    });
    return -1;
}

/** Reports the exception being handled to the server's handle_error. Call
 * inside a catch block. */
inline void report_current(ss_server *server, ss_request *request, const char *stage) noexcept
{
    if (server == nullptr)
        return;
    give_failure(current_failure(stage), [&](ss_status status, const char *text) {
        return ss_server_report_error(server, request, status, text);
    });
}

/** The connection the wrapper is reporting an exception of, for
 * ss::error_conn() inside handle_error (the library's ss_error_conn() is
 * NULL for ss_server_report_error()). */
inline ss_conn *&reporting_conn() noexcept
{
    static thread_local ss_conn *current = nullptr;
    return current;
}

/** Reports the exception being handled in a callback of connection `c` to
 * its server's handle_error, naming the connection as the library does
 * ("connection <id> from <peer>: <stage> threw: ..."); error_conn() gives
 * `c` there. Call inside a catch block, on the connection's loop. */
inline void report_conn_current(ss_server *server, ss_conn *c, const char *stage) noexcept
{
    if (server == nullptr)
        return;
    failure f = current_failure(stage);
    if (c != nullptr) {
        try {
            std::string peer;
            try {
                peer = conn(c).peer_address();
            } catch (const error &) {
                // Named as an unnamed peer.
            }
            f.message = "connection " + std::to_string(ss_conn_id(c)) + " from " +
                        (peer.empty() ? std::string("an unnamed Unix socket") : peer) + ": " +
                        f.message;
        } catch (...) {
            // Out of memory: the message without the name.
        }
    }
    ss_conn *saved = std::exchange(reporting_conn(), c);
    give_failure(f, [&](ss_status status, const char *text) {
        return ss_server_report_error(server, nullptr, status, text);
    });
    reporting_conn() = saved;
}

/** One line of `parts` on descriptor 2 with write(2) alone (also fine in
 * a forked child). */
inline void stderr_line(std::initializer_list<const char *> parts) noexcept
{
    std::string line;
    try {
        line = "socketserver.hpp: ";
        for (const char *part : parts)
            line += part;
        line += "\n";
    } catch (...) {
        return;
    }
    const char *p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(2, p, left);
        if (n <= 0)
            return;
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

template <class F> bool is_empty(const F &f) noexcept
{
    if constexpr (std::is_same_v<F, std::nullptr_t>)
        return true;
    else if constexpr (std::is_function_v<F>)
        return false; // a function, never NULL
    else if constexpr (std::is_constructible_v<bool, const F &>)
        return !static_cast<bool>(f);
    else
        return false;
}

/** Normalises a callable returning void (success unless it throws) or int
 * (0 = success) to one returning int. */
template <class... Args, class F> std::function<int(Args...)> int_returning(F &&f)
{
    using Fn = std::decay_t<F>;
    if (is_empty(f))
        return {};
    if constexpr (std::is_same_v<Fn, std::nullptr_t>) {
        return {};
    } else {
        using R = std::invoke_result_t<Fn &, Args...>;
        static_assert(std::is_void_v<R> || (std::is_convertible_v<R, int> && !std::is_same_v<R, bool>),
                      "return void (throw to fail) or int (0 = success), not bool");
        if constexpr (std::is_void_v<R>)
            return [fn = Fn(std::forward<F>(f))](Args... args) mutable {
                fn(args...);
                return 0;
            };
        else
            return [fn = Fn(std::forward<F>(f))](Args... args) mutable {
                return static_cast<int>(fn(args...));
            };
    }
}

/** A callable as std::function<Sig>, empty for nullptr or an empty one. */
template <class Sig, class F> std::function<Sig> as_function(F &&f)
{
    if (is_empty(f))
        return {};
    if constexpr (std::is_same_v<std::decay_t<F>, std::nullptr_t>)
        return {};
    else
        return std::function<Sig>(std::forward<F>(f));
}

/** What the watch and timer registries share: the entries of each of a
 * server's connections, by connection id, under one lock, with a count
 * that lets every on_close skip the lock while no connection has any.
 * Entries of one connection are only touched on its loop thread; the lock
 * guards the map for the loops of other connections. The registries add
 * their own lookup rule on top. */
template <class Entries> struct per_conn_registry {
    std::mutex lock;
    std::unordered_map<std::uint64_t, Entries> by_conn;
    /** by_conn.size(), read without the lock by every on_close. */
    std::atomic<std::size_t> conns{0};

    /** Runs `add(entries of id)` under the lock, creating them if needed.
     * If `add` throws (std::bad_alloc), it rethrows, having dropped the
     * entries again if that left them empty. */
    template <class Add> decltype(auto) put_with(std::uint64_t id, Add &&add)
    {
        std::lock_guard<std::mutex> g(lock);
        Entries &list = by_conn[id];
        conns = by_conn.size();
        try {
            return add(list);
        } catch (...) {
            if (list.empty()) {
                by_conn.erase(id);
                conns = by_conn.size();
            }
            throw;
        }
    }

    /** Removes what `pick(entries of id)` takes out (it must not throw)
     * and returns it; empty if id has no entries or the lock fails. */
    template <class Pick> auto take_with(std::uint64_t id, Pick &&pick) noexcept
    {
        decltype(pick(std::declval<Entries &>())) found;
        try {
            std::lock_guard<std::mutex> g(lock);
            auto it = by_conn.find(id);
            if (it == by_conn.end())
                return found;
            found = pick(it->second);
            if (it->second.empty()) {
                by_conn.erase(it);
                conns = by_conn.size();
            }
        } catch (...) {
            // std::mutex::lock failing: the entry stays until the server goes.
        }
        return found;
    }

    /** Removes every entry of connection `id` (it is closing). */
    Entries take_all(std::uint64_t id) noexcept
    {
        Entries found;
        if (conns.load() == 0)
            return found;
        try {
            std::lock_guard<std::mutex> g(lock);
            auto it = by_conn.find(id);
            if (it != by_conn.end()) {
                found = std::move(it->second);
                by_conn.erase(it);
                conns = by_conn.size();
            }
        } catch (...) {
            // As in take_with().
        }
        return found;
    }
};

struct watch_registry;

/** One conn::watch_fd() callable; the pointer ss_conn_watch_fd() gets. */
struct watch_entry : std::enable_shared_from_this<watch_entry> {
    std::function<int(conn &, int, int)> fn;
    watch_registry *registry = nullptr;
    std::uint64_t conn_id = 0;
    int fd = -1;
    /** Which of the library's watches this is the callable of: a
     * watch_fd() replacing a watch keeps it (the library changes that
     * watch in place), a new watch gets a new one. */
    std::uint64_t token = 0;
};

/** The live watch callables of a server's connections, one per watched
 * fd: the library never frees a watch's data pointer, so the wrapper
 * mirrors which watches exist and destroys each callable when its watch
 * ends (the library ends them at unwatch, at a replacing watch, after a
 * call reporting a hang-up or error, and at on_close). */
struct watch_registry : per_conn_registry<std::vector<std::shared_ptr<watch_entry>>> {
    using entries = std::vector<std::shared_ptr<watch_entry>>;

    std::uint64_t next_token = 1;

    /** The token for a new watch of (id, fd): the current one's if there
     * is one (the library will replace that watch in place). */
    std::uint64_t token_for(std::uint64_t id, int fd)
    {
        std::lock_guard<std::mutex> g(lock);
        auto it = by_conn.find(id);
        if (it != by_conn.end())
            for (auto &e : it->second)
                if (e->fd == fd)
                    return e->token;
        return next_token++;
    }

    /** Records `entry`; returns the one it replaces (to be destroyed by
     * the caller, outside the lock). */
    std::shared_ptr<watch_entry> put(std::shared_ptr<watch_entry> entry)
    {
        return put_with(entry->conn_id, [&](entries &list) -> std::shared_ptr<watch_entry> {
            for (auto &e : list)
                if (e->fd == entry->fd)
                    return std::exchange(e, std::move(entry));
            list.push_back(std::move(entry));
            return nullptr;
        });
    }

    /** Removes the entry of (id, fd), if it is of watch `token` (any if 0),
     * and returns it. */
    std::shared_ptr<watch_entry> take(std::uint64_t id, int fd, std::uint64_t token = 0) noexcept
    {
        return take_with(id, [&](entries &list) noexcept {
            std::shared_ptr<watch_entry> found;
            for (std::size_t i = 0; i < list.size(); i++) {
                if (list[i]->fd == fd && (token == 0 || list[i]->token == token)) {
                    found = std::move(list[i]);
                    list.erase(list.begin() + static_cast<std::ptrdiff_t>(i));
                    break;
                }
            }
            return found;
        });
    }
};

struct timer_registry;

/** One conn::set_timer() callable; the pointer ss_conn_set_timer() gets. */
struct timer_entry {
    timer_registry *registry = nullptr;

    timer_entry() = default;
    timer_entry(const timer_entry &) = delete;
    timer_entry &operator=(const timer_entry &) = delete;
    virtual ~timer_entry() = default;
    virtual void run(conn &c, std::uint64_t timer_id) = 0;
};

/** A timer callable of type Fn, taking (conn&, id) or (conn&). */
template <class Fn> struct timer_callable final : timer_entry {
    Fn fn;

    template <class F> explicit timer_callable(F &&f) : fn(std::forward<F>(f)) {}
    void run(conn &c, std::uint64_t timer_id) override
    {
        if constexpr (std::is_invocable_v<Fn &, conn &, std::uint64_t>)
            fn(c, timer_id);
        else
            fn(c);
    }
};

/** The pending timer callables of a server's connections, by timer id:
 * the C API never hands a cancelled timer's data back, so the wrapper
 * destroys each callable itself: after its call, at cancel_timer(), or at
 * its connection's on_close (the library cancels the pending timers just
 * before). */
struct timer_registry
    : per_conn_registry<std::unordered_map<std::uint64_t, std::unique_ptr<timer_entry>>> {
    using of_conn = std::unordered_map<std::uint64_t, std::unique_ptr<timer_entry>>;

    /** Records `entry` as timer `timer_id` of connection `id`. If this
     * throws (std::bad_alloc, std::system_error), `entry` was destroyed
     * or is still the caller's. */
    void put(std::uint64_t id, std::uint64_t timer_id, std::unique_ptr<timer_entry> &entry)
    {
        put_with(id, [&](of_conn &timers) { timers.emplace(timer_id, std::move(entry)); });
    }

    /** Removes timer `timer_id` of connection `id` and returns it (empty
     * if there is none). */
    std::unique_ptr<timer_entry> take(std::uint64_t id, std::uint64_t timer_id) noexcept
    {
        return take_with(id, [&](of_conn &timers) noexcept {
            std::unique_ptr<timer_entry> found;
            auto entry = timers.find(timer_id);
            if (entry != timers.end()) {
                found = std::move(entry->second);
                timers.erase(entry);
            }
            return found;
        });
    }
};

/** Every callback of a server; the server's user data. */
struct handlers {
    std::function<int(request &)> setup, handle, finish;
    std::function<bool(request &)> verify_request;
    std::function<void(request &, ss_status, std::string_view)> handle_error;
    std::function<void(server_ref &)> handle_timeout, service_actions;
    std::function<int(conn &)> on_open;
    std::function<std::size_t(conn &, std::string_view)> on_data;
    std::function<void(conn &)> on_eof, on_close, on_drain;
    std::function<int(request &, std::string_view)> on_datagram;
    /** What request::hand_off() continues with. */
    std::function<int(request &)> continuation;
    /** Set once ss_server_new() returned, for reports from callbacks that
     * are given no server. */
    ss_server *server = nullptr;
    /** conn::watch_fd()'s callables; made by ss::server (a config's copy
     * has none). */
    std::shared_ptr<watch_registry> watches;
    /** conn::set_timer()'s callables; made by ss::server as `watches`. */
    std::shared_ptr<timer_registry> timers;
    /** config::add_loop_timer()'s callables; the C data pointer of each
     * is its index here, so that each server's loops call its own copy. */
    std::vector<std::function<void(server_ref &, std::size_t)>> loop_timers;
};

inline handlers &of(void *user_data) noexcept { return *static_cast<handlers *>(user_data); }

inline void free_handlers(void *user_data) noexcept { delete static_cast<handlers *>(user_data); }

/** A job posted with server_ref::post(). */
struct job {
    std::function<void(conn &)> fn;
    ss_server *server;
};

inline void tr_job(ss_conn *c, void *arg) noexcept
{
    std::unique_ptr<job> box(static_cast<job *>(arg));
    conn k(c);
    try {
        box->fn(k);
    } catch (...) {
        report_conn_current(box->server, c, "posted job");
    }
}

} // namespace detail

/** A borrowed server: what callbacks get (service_actions,
 * handle_timeout, request::server()), and the base of `ss::server`.
 * Thread: each method as the C function it calls (its `Thread:` line in
 * socketserver.h): shutdown(), drain(), draining(), drain_cut(), post(),
 * address(), port(), fileno(), live_threads(), live_children(),
 * queued_requests() and connections() from any thread; serve_forever(),
 * handle_request(), bind(), activate() one thread at a time; close() not
 * from this server's own loop. */
class server_ref {
public:
    server_ref() noexcept = default;
    explicit server_ref(ss_server *handle) noexcept : s_(handle) {}

    explicit operator bool() const noexcept { return s_ != nullptr; }
    ss_server *native_handle() const noexcept { return s_; }

    /** ss_server_bind() / ss_server_activate(), after bind_and_activate(false). */
    void bind() { detail::check(ss_server_bind(s_)); }
    void activate() { detail::check(ss_server_activate(s_)); }

    /** Until shutdown() or the end of a drain(); throws ss::error
     * otherwise (SS_ERR_CLOSED when close() on another thread stopped it,
     * SS_ERR_TIMEOUT when a drain's deadline cut something: drain_cut()
     * says how much, SS_ERR_WRONG_STATE once drained). */
    void serve_forever() { detail::check(ss_server_serve_forever(s_)); }

    /** At most one request: SS_OK, SS_ERR_TIMEOUT (the config's timeout
     * passed, or a drain's deadline cut something) or SS_ERR_SHUT_DOWN
     * (also after a drain); throws ss::error for anything else. */
    ss_status handle_request()
    {
        ss_status status = ss_server_handle_request(s_);
        if (status != SS_OK && status != SS_ERR_TIMEOUT && status != SS_ERR_SHUT_DOWN)
            throw error::last(status);
        return status;
    }

    /** ss_server_shutdown(): any thread, any callback, a signal handler;
     * returns its status instead of throwing. */
    ss_status shutdown() const noexcept { return ss_server_shutdown(s_); }

    /** ss_server_drain(): a graceful stop: no new connections, what is in
     * flight finishes (SS_EVENT: each connection closes once idle; see
     * conn::set_busy()), what is left is closed `deadline_ms` from now,
     * then serve_forever() returns (it throws ss::error with SS_ERR_TIMEOUT
     * if the deadline cut something: see drain_cut()). As shutdown():
     * any thread, any callback, a signal handler (async-signal-safe), so it
     * returns its status instead of throwing (SS_OK,
     * SS_ERR_INVALID_ARGUMENT for a negative deadline, SS_ERR_CLOSED,
     * SS_ERR_WRONG_STATE in a forked child; the C call sets no detail
     * message). The server cannot serve again afterwards. */
    ss_status drain(std::int64_t deadline_ms) const noexcept
    {
        return ss_server_drain(s_, deadline_ms);
    }
    /** ss_server_draining(): a drain was asked for (also once it is over). */
    bool draining() const noexcept { return ss_server_draining(s_); }
    /** ss_server_drain_cut(): how many connections (SS_EVENT) or requests
     * and children the last drain's deadline cut (0 if none). */
    std::size_t drain_cut() const
    {
        std::size_t cut = 0;
        detail::check(ss_server_drain_cut(s_, &cut));
        return cut;
    }

    /** ss_server_close(): not from this server's own loop. */
    void close() { detail::check(ss_server_close(s_)); }

    int fileno() const noexcept { return ss_server_fileno(s_); }

    std::string address() const
    {
        return detail::copy_string([this](char *buf, std::size_t cap, std::size_t *len) {
            return ss_server_address(s_, buf, cap, len);
        });
    }

    std::uint16_t port() const
    {
        std::uint16_t port = 0;
        detail::check(ss_server_port(s_, &port));
        return port;
    }

    std::size_t live_threads() const
    {
        std::size_t threads = 0;
        detail::check(ss_server_live_workers(s_, &threads, nullptr));
        return threads;
    }

    std::size_t live_children() const
    {
        std::size_t children = 0;
        detail::check(ss_server_live_workers(s_, nullptr, &children));
        return children;
    }

    std::size_t queued_requests() const
    {
        std::size_t queued = 0;
        detail::check(ss_server_queued_requests(s_, &queued));
        return queued;
    }

    std::size_t connections() const
    {
        std::size_t n = 0;
        detail::check(ss_server_connections(s_, &n));
        return n;
    }

    /** SS_EVENT: runs `job(conn)` on the loop of connection `conn_id` (from
     * conn::id()), from any thread; the conn is empty (false) if the
     * connection closed first. Throws ss::error if it cannot be posted
     * (the job is then destroyed uncalled). An exception from the job is
     * reported to handle_error. */
    template <class F> void post(std::uint64_t conn_id, F &&job) const
    {
        auto box = std::make_unique<detail::job>(
            detail::job{std::function<void(conn &)>(std::forward<F>(job)), s_});
        ss_status status = ss_server_post(s_, conn_id, &detail::tr_job, box.get());
        if (status != SS_OK)
            throw error::last(status);
        box.release(); // tr_job owns it now
    }

    /** ss_server_report_error(): `message` to handle_error, with `request`
     * (an empty one for a server-level error). */
    void report_error(const request &req, ss_status status, const std::string &message) const
    {
        detail::check(ss_server_report_error(s_, req.native_handle(), status, message.c_str()));
    }

protected:
    ss_server *s_ = nullptr;
};

inline server_ref request::server() const noexcept { return server_ref(ss_request_server(r_)); }

inline server_ref conn::server() const noexcept { return server_ref(ss_conn_server(c_)); }

inline conn error_conn() noexcept
{
    ss_conn *c = ss_error_conn();
    return conn(c != nullptr ? c : detail::reporting_conn());
}

namespace detail {

inline int tr_watch(ss_conn *c, int fd, int events, void *data) noexcept;

/** The watch callables of `c`'s server (one made by ss::server). */
inline watch_registry &watches_of(ss_conn *c, const char *what)
{
    ss_server *s = ss_conn_server(c);
    if (s == nullptr)
        throw error::last(c == nullptr ? SS_ERR_NULL_POINTER : SS_ERR_WRONG_STATE);
    auto *h = static_cast<handlers *>(ss_server_user_data(s));
    if (h == nullptr || !h->watches)
        throw error(SS_ERR_INVALID_ARGUMENT,
                    std::string(what) + ": only for connections of a server made by ss::server");
    return *h->watches;
}

} // namespace detail

template <class F> void conn::watch_fd(int fd, int events, F &&callback)
{
    auto entry = std::make_shared<detail::watch_entry>();
    entry->fn = detail::int_returning<conn &, int, int>(std::forward<F>(callback));
    if (!entry->fn)
        throw error(SS_ERR_NULL_POINTER, "conn::watch_fd: an empty callback");
    detail::watch_registry &registry = detail::watches_of(c_, "conn::watch_fd");
    entry->registry = &registry;
    entry->conn_id = id();
    entry->fd = fd;
    entry->token = registry.token_for(entry->conn_id, fd);
    // The library calls back with entry.get() only while the registry
    // holds it: from its return until the watch ends, all on this thread.
    detail::check(ss_conn_watch_fd(c_, fd, events, &detail::tr_watch, entry.get()));
    std::shared_ptr<detail::watch_entry> replaced;
    try {
        replaced = registry.put(entry);
    } catch (...) {
        // Out of memory recording it: the library must not keep the pointer.
        ss_conn_unwatch_fd(c_, fd);
        replaced = registry.take(entry->conn_id, fd);
        throw;
    }
    // `replaced` (the watch's previous callable) is destroyed here, or by
    // tr_watch once its call ends if it is the one running.
}

inline void conn::unwatch_fd(int fd)
{
    detail::watch_registry &registry = detail::watches_of(c_, "conn::unwatch_fd");
    detail::check(ss_conn_unwatch_fd(c_, fd));
    registry.take(id(), fd);
}

namespace detail {

inline void tr_timer(ss_conn *c, std::uint64_t timer_id, void *data) noexcept;

/** The timer callables of `c`'s server (one made by ss::server). */
inline timer_registry &timers_of(ss_conn *c, const char *what)
{
    ss_server *s = ss_conn_server(c);
    if (s == nullptr)
        throw error::last(c == nullptr ? SS_ERR_NULL_POINTER : SS_ERR_WRONG_STATE);
    auto *h = static_cast<handlers *>(ss_server_user_data(s));
    if (h == nullptr || !h->timers)
        throw error(SS_ERR_INVALID_ARGUMENT,
                    std::string(what) + ": only for connections of a server made by ss::server");
    return *h->timers;
}

} // namespace detail

template <class F> std::uint64_t conn::set_timer(std::uint64_t delay_ms, F &&callback)
{
    using Fn = std::decay_t<F>;
    if constexpr (std::is_same_v<Fn, std::nullptr_t>) {
        throw error(SS_ERR_NULL_POINTER, "conn::set_timer: an empty callback");
    } else {
        static_assert(std::is_invocable_v<Fn &, conn &, std::uint64_t> ||
                          std::is_invocable_v<Fn &, conn &>,
                      "a timer callable takes (ss::conn&, std::uint64_t timer_id) or (ss::conn&)");
        if constexpr (std::is_invocable_v<Fn &, conn &, std::uint64_t>)
            static_assert(std::is_void_v<std::invoke_result_t<Fn &, conn &, std::uint64_t>>,
                          "a timer callable returns void (throw to fail the connection)");
        else
            static_assert(std::is_void_v<std::invoke_result_t<Fn &, conn &>>,
                          "a timer callable returns void (throw to fail the connection)");
        std::unique_ptr<detail::timer_entry> entry =
            std::make_unique<detail::timer_callable<Fn>>(std::forward<F>(callback));
        if (detail::is_empty(static_cast<detail::timer_callable<Fn> &>(*entry).fn))
            throw error(SS_ERR_NULL_POINTER, "conn::set_timer: an empty callback");
        detail::timer_registry &registry = detail::timers_of(c_, "conn::set_timer");
        entry->registry = &registry;
        std::uint64_t timer_id = 0;
        // The library calls back with entry.get() only from a later turn of
        // this loop, by which time the registry holds it.
        detail::check(ss_conn_set_timer(c_, delay_ms, &detail::tr_timer, entry.get(), &timer_id));
        try {
            registry.put(id(), timer_id, entry);
        } catch (...) {
            // Out of memory recording it: the library must not keep the pointer.
            ss_conn_cancel_timer(c_, timer_id);
            throw;
        }
        return timer_id;
    }
}

inline bool conn::cancel_timer(std::uint64_t timer_id)
{
    detail::timer_registry &registry = detail::timers_of(c_, "conn::cancel_timer");
    ss_status status = ss_conn_cancel_timer(c_, timer_id);
    if (status == SS_ERR_INVALID_ARGUMENT)
        return false;
    detail::check(status);
    registry.take(id(), timer_id); // destroyed here: never called, not running
    return true;
}

namespace detail {

/** A request stage (setup, handle, finish): its result, or an exception
 * as the last error and -1. */
inline int run_stage(std::function<int(request &)> &fn, ss_request *r, const char *stage) noexcept
{
    request q(r);
    try {
        return fn(q);
    } catch (...) {
        return fail_return(stage);
    }
}

inline int tr_setup(ss_request *r, void *u) noexcept
{
    return run_stage(of(u).setup, r, "setup");
}

inline int tr_handle(ss_request *r, void *u) noexcept
{
    return run_stage(of(u).handle, r, "handle");
}

inline int tr_finish(ss_request *r, void *u) noexcept
{
    return run_stage(of(u).finish, r, "finish");
}

inline bool tr_verify_request(ss_request *r, void *u) noexcept
{
    request q(r);
    try {
        return of(u).verify_request(q);
    } catch (...) {
        report_current(ss_request_server(r), r, "verify_request");
        return false;
    }
}

inline void tr_handle_error(ss_request *r, ss_status status, const char *message, void *u) noexcept
{
    request q(r);
    try {
        of(u).handle_error(q, status, message != nullptr ? message : "");
    } catch (...) {
        failure f = current_failure("handle_error");
        stderr_line({f.message.c_str(), " (while reporting: ", message != nullptr ? message : "",
                     ")"});
    }
}

inline void tr_handle_timeout(ss_server *s, void *u) noexcept
{
    server_ref v(s);
    try {
        of(u).handle_timeout(v);
    } catch (...) {
        report_current(s, nullptr, "handle_timeout");
    }
}

inline void tr_service_actions(ss_server *s, void *u) noexcept
{
    server_ref v(s);
    try {
        of(u).service_actions(v);
    } catch (...) {
        report_current(s, nullptr, "service_actions");
    }
}

/** A connection event without a failure return (on_eof, on_drain): an
 * exception is reported, naming the connection, and closes it. */
inline void run_or_close(handlers &h, std::function<void(conn &)> &fn, ss_conn *c,
                         const char *what) noexcept
{
    conn k(c);
    try {
        fn(k);
    } catch (...) {
        report_conn_current(h.server, c, what);
        ss_conn_close(c);
    }
}

inline int tr_on_open(ss_conn *c, void *u) noexcept
{
    conn k(c);
    try {
        return of(u).on_open(k);
    } catch (...) {
        return fail_return("on_open");
    }
}

inline int tr_on_data(ss_conn *c, const std::uint8_t *data, std::size_t len, std::size_t *consumed,
                      void *u) noexcept
{
    conn k(c);
    try {
        *consumed = of(u).on_data(k, std::string_view(reinterpret_cast<const char *>(data), len));
        return 0;
    } catch (...) {
        return fail_return("on_data");
    }
}

inline void tr_on_eof(ss_conn *c, void *u) noexcept
{
    run_or_close(of(u), of(u).on_eof, c, "on_eof");
}

/** Installed in every SS_EVENT config: the user's on_close (if any), then
 * the end of the connection's watch callables (the library ends the
 * watches right after on_close). */
inline void tr_on_close(ss_conn *c, void *u) noexcept
{
    handlers &h = of(u);
    if (h.on_close) {
        conn k(c);
        try {
            h.on_close(k);
        } catch (...) {
            report_conn_current(h.server, c, "on_close");
        }
    }
    if (h.watches)
        h.watches->take_all(ss_conn_id(c)); // destroyed here, on the loop thread
    if (h.timers)
        h.timers->take_all(ss_conn_id(c)); // cancelled by the library before on_close
}

/** A conn::set_timer() callable's call: taken out of the registry first
 * (the timer is no longer pending), destroyed when the call returns. An
 * exception is reported, naming the connection, and closes it. */
inline void tr_timer(ss_conn *c, std::uint64_t timer_id, void *data) noexcept
{
    auto *raw = static_cast<timer_entry *>(data);
    std::unique_ptr<timer_entry> entry = raw->registry->take(ss_conn_id(c), timer_id);
    // Not found only if the registry's lock failed: it still owns `raw`.
    timer_entry *run = entry ? entry.get() : raw;
    conn k(c);
    try {
        run->run(k, timer_id);
    } catch (...) {
        report_conn_current(ss_conn_server(c), c, "timer");
        ss_conn_close(c);
    }
}

/** A config::add_loop_timer() callable's call: `data` is its index in the
 * server's own copy of the callables. An exception is reported. */
inline void tr_loop_timer(ss_server *s, std::size_t loop_index, void *data) noexcept
{
    auto *h = static_cast<handlers *>(ss_server_user_data(s));
    const auto index = static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(data));
    if (h == nullptr || index >= h->loop_timers.size())
        return; // cannot happen: the config is the wrapper's, and so is the server
    server_ref v(s);
    try {
        h->loop_timers[index](v, loop_index);
    } catch (...) {
        report_current(s, nullptr, "loop timer");
    }
}

/** An exception from on_drain (no failure return) is reported and closes
 * the connection, as for on_eof. */
inline void tr_on_drain(ss_conn *c, void *u) noexcept
{
    run_or_close(of(u), of(u).on_drain, c, "on_drain");
}

inline int tr_watch(ss_conn *c, int fd, int events, void *data) noexcept
{
    // Kept alive for the call even if it unwatches or replaces itself.
    std::shared_ptr<watch_entry> entry = static_cast<watch_entry *>(data)->weak_from_this().lock();
    if (!entry)
        return -1; // cannot happen: the registry holds every live entry
    int rc;
    conn k(c);
    try {
        rc = entry->fn(k, fd, events);
    } catch (...) {
        rc = fail_return("watch");
    }
    if ((events & (SS_WATCH_HANGUP | SS_WATCH_ERROR)) != 0)
        // The library removes this watch now (also if the call replaced
        // it in place, not if it unwatched it and watched anew).
        entry->registry->take(entry->conn_id, entry->fd, entry->token);
    return rc;
}

inline int tr_continuation(ss_request *r, void *u) noexcept
{
    request q(r);
    try {
        return of(u).continuation(q);
    } catch (...) {
        return fail_return("continuation");
    }
}

inline int tr_on_datagram(ss_request *r, const std::uint8_t *data, std::size_t len, void *u) noexcept
{
    request q(r);
    try {
        return of(u).on_datagram(q, std::string_view(reinterpret_cast<const char *>(data), len));
    } catch (...) {
        return fail_return("on_datagram");
    }
}

} // namespace detail

inline void request::hand_off(hand_off_target target)
{
    auto *callbacks = static_cast<detail::handlers *>(ss_request_server_user_data(r_));
    if (callbacks == nullptr || !callbacks->continuation)
        throw error(SS_ERR_INVALID_ARGUMENT,
                    "request::hand_off: no hand_off_continuation in the server's config");
    detail::check(ss_request_hand_off(r_, static_cast<int>(target), &detail::tr_continuation));
}

/** An owned ss_config: a template for servers (ss::server copies it and
 * its callbacks). Setters throw ss::error (e.g. SS_ERR_UNSUPPORTED for an
 * option of another mode) and return *this for chaining. Move-only; the
 * destructor frees it (servers made from it keep their copies).
 * Thread: any thread, one thread at a time per config. */
class config {
public:
    config(ss::transport transport, ss::concurrency concurrency)
        : h_(std::make_unique<detail::handlers>())
    {
        detail::check(
            ss_config_new(static_cast<int>(transport), static_cast<int>(concurrency), &c_));
        if (concurrency == ss::concurrency::event) {
            // Always: it also ends the connection's watch callables.
            ss_status status = ss_config_set_on_close(c_, &detail::tr_on_close);
            if (status != SS_OK) {
                ss_config_free(c_);
                throw error::last(status);
            }
        }
    }

    config(const config &) = delete;
    config &operator=(const config &) = delete;
    config(config &&other) noexcept : c_(std::exchange(other.c_, nullptr)), h_(std::move(other.h_)) {}
    config &operator=(config &&other) noexcept
    {
        if (this != &other) {
            ss_config_free(c_);
            c_ = std::exchange(other.c_, nullptr);
            h_ = std::move(other.h_);
        }
        return *this;
    }
    ~config() { ss_config_free(c_); }

    ss_config *native_handle() const noexcept { return c_; }

    config &reuse_address(bool on) { return done(ss_config_set_reuse_address(c_, on)); }
    config &reuse_port(bool on) { return done(ss_config_set_reuse_port(c_, on)); }
    config &backlog(std::int64_t n) { return done(ss_config_set_backlog(c_, n)); }
    config &ipv6_only(bool on) { return done(ss_config_set_ipv6_only(c_, on)); }
    config &bind_and_activate(bool on) { return done(ss_config_set_bind_and_activate(c_, on)); }
    config &timeout(std::int64_t ms) { return done(ss_config_set_timeout(c_, ms)); }
    config &request_timeout(std::int64_t ms) { return done(ss_config_set_request_timeout(c_, ms)); }
    config &tcp_nodelay(bool on) { return done(ss_config_set_tcp_nodelay(c_, on)); }
    config &read_buffer_size(std::size_t n) { return done(ss_config_set_read_buffer_size(c_, n)); }
    config &write_buffer_size(std::size_t n) { return done(ss_config_set_write_buffer_size(c_, n)); }
    config &max_datagram_size(std::size_t n) { return done(ss_config_set_max_datagram_size(c_, n)); }
    config &poll_interval(std::int64_t ms) { return done(ss_config_set_poll_interval(c_, ms)); }
    config &daemon_threads(bool on) { return done(ss_config_set_daemon_threads(c_, on)); }
    config &block_on_close(bool on) { return done(ss_config_set_block_on_close(c_, on)); }
    config &max_threads(std::size_t n) { return done(ss_config_set_max_threads(c_, n)); }
    config &thread_stack_size(std::size_t n) { return done(ss_config_set_thread_stack_size(c_, n)); }
    config &max_children(std::size_t n) { return done(ss_config_set_max_children(c_, n)); }
    config &threads(std::size_t n) { return done(ss_config_set_threads(c_, n)); }
    config &queue_size(std::size_t n) { return done(ss_config_set_queue_size(c_, n)); }
    config &idle_timeout(std::int64_t ms) { return done(ss_config_set_idle_timeout(c_, ms)); }
    config &max_connections(std::size_t n) { return done(ss_config_set_max_connections(c_, n)); }
    config &output_high_water(std::size_t n) { return done(ss_config_set_output_high_water(c_, n)); }
    config &input_limit(std::size_t n) { return done(ss_config_set_input_limit(c_, n)); }
    config &lingering(std::int64_t time_ms, std::int64_t timeout_ms)
    {
        return done(ss_config_set_lingering(c_, time_ms, timeout_ms));
    }
    config &request_deadline(std::int64_t ms) { return done(ss_config_set_request_deadline(c_, ms)); }
    config &max_connections_per_ip(std::size_t n)
    {
        return done(ss_config_set_max_connections_per_ip(c_, n));
    }
    /** SS_EVENT: on_drain's low-water mark (ss_config_set_output_low_water()). */
    config &output_low_water(std::size_t n) { return done(ss_config_set_output_low_water(c_, n)); }

    /** SS_EVENT: ss_config_add_loop_timer(): every event loop of each
     * server made from this config calls `callback(ss::server_ref&,
     * std::size_t loop_index)` (or `callback(ss::server_ref&)`) -> void
     * every `interval_ms` milliseconds while it serves (without drift,
     * missed periods skipped; stopped when serve_forever stops the loops,
     * still running during a drain). The loops call it concurrently (one
     * call per loop per interval: act on loop_index 0 for once per
     * server): make it thread-safe. The config keeps the callable and each
     * server its own copy, destroyed with the server's other callables (so
     * it must be copyable). An exception is reported to handle_error
     * ("loop timer threw: WHAT", no request) and the timer goes on.
     * Throws ss::error (SS_ERR_UNSUPPORTED in other modes,
     * SS_ERR_INVALID_ARGUMENT for `interval_ms` 0, SS_ERR_NULL_POINTER for
     * an empty callable); the callable is then not kept. There is no call
     * to remove one. */
    template <class F> config &add_loop_timer(std::uint64_t interval_ms, F &&callback)
    {
        std::function<void(server_ref &, std::size_t)> fn;
        using Fn = std::decay_t<F>;
        if constexpr (!std::is_same_v<Fn, std::nullptr_t>) {
            if (!detail::is_empty(callback)) {
                if constexpr (std::is_invocable_v<Fn &, server_ref &, std::size_t>)
                    fn = std::forward<F>(callback);
                else
                    fn = [f = Fn(std::forward<F>(callback))](server_ref &s, std::size_t) mutable {
                        f(s);
                    };
            }
        }
        if (!fn)
            throw error(SS_ERR_NULL_POINTER, "config::add_loop_timer: an empty callback");
        auto &timers = handlers().loop_timers;
        timers.push_back(std::move(fn));
        // The C data is the index: each server finds its own copy there.
        void *index = reinterpret_cast<void *>(static_cast<std::uintptr_t>(timers.size() - 1));
        ss_status status = ss_config_add_loop_timer(c_, interval_ms, &detail::tr_loop_timer, index);
        if (status != SS_OK) {
            timers.pop_back();
            throw error::last(status);
        }
        return *this;
    }

    // Callbacks: any callable; nullptr (or an empty std::function) clears
    // one. Where "void or int" is said, a callable returning void succeeds
    // unless it throws, one returning int succeeds with 0.

    /** handle(ss::request&) -> void or int. Required. */
    template <class F> config &handle(F &&f)
    {
        auto &slot = handlers().handle = detail::int_returning<request &>(std::forward<F>(f));
        return done(ss_config_set_handle(c_, slot ? &detail::tr_handle : nullptr));
    }
    /** setup(ss::request&) -> void or int. */
    template <class F> config &setup(F &&f)
    {
        auto &slot = handlers().setup = detail::int_returning<request &>(std::forward<F>(f));
        return done(ss_config_set_setup(c_, slot ? &detail::tr_setup : nullptr));
    }
    /** finish(ss::request&) -> void or int. */
    template <class F> config &finish(F &&f)
    {
        auto &slot = handlers().finish = detail::int_returning<request &>(std::forward<F>(f));
        return done(ss_config_set_finish(c_, slot ? &detail::tr_finish : nullptr));
    }
    /** verify_request(ss::request&) -> bool. */
    template <class F> config &verify_request(F &&f)
    {
        auto &slot = handlers().verify_request =
            detail::as_function<bool(request &)>(std::forward<F>(f));
        return done(ss_config_set_verify_request(c_, slot ? &detail::tr_verify_request : nullptr));
    }
    /** handle_error(ss::request& (false for a server-level error),
     * ss_status, std::string_view message). Unset: the library's default
     * line (stderr or the log callback). */
    template <class F> config &handle_error(F &&f)
    {
        auto &slot = handlers().handle_error =
            detail::as_function<void(request &, ss_status, std::string_view)>(std::forward<F>(f));
        return done(ss_config_set_handle_error(c_, slot ? &detail::tr_handle_error : nullptr));
    }
    /** handle_timeout(ss::server_ref&). */
    template <class F> config &handle_timeout(F &&f)
    {
        auto &slot = handlers().handle_timeout =
            detail::as_function<void(server_ref &)>(std::forward<F>(f));
        return done(ss_config_set_handle_timeout(c_, slot ? &detail::tr_handle_timeout : nullptr));
    }
    /** service_actions(ss::server_ref&). */
    template <class F> config &service_actions(F &&f)
    {
        auto &slot = handlers().service_actions =
            detail::as_function<void(server_ref &)>(std::forward<F>(f));
        return done(
            ss_config_set_service_actions(c_, slot ? &detail::tr_service_actions : nullptr));
    }
    /** SS_EVENT on_open(ss::conn&) -> void or int (non-zero closes it). */
    template <class F> config &on_open(F &&f)
    {
        auto &slot = handlers().on_open = detail::int_returning<conn &>(std::forward<F>(f));
        return done(ss_config_set_on_open(c_, slot ? &detail::tr_on_open : nullptr));
    }
    /** SS_EVENT on_data(ss::conn&, std::string_view data) -> std::size_t
     * consumed (see ss_data_fn); throw to close the connection as failed. */
    template <class F> config &on_data(F &&f)
    {
        auto &slot = handlers().on_data =
            detail::as_function<std::size_t(conn &, std::string_view)>(std::forward<F>(f));
        return done(ss_config_set_on_data(c_, slot ? &detail::tr_on_data : nullptr));
    }
    /** SS_EVENT on_eof(ss::conn&). */
    template <class F> config &on_eof(F &&f)
    {
        auto &slot = handlers().on_eof = detail::as_function<void(conn &)>(std::forward<F>(f));
        return done(ss_config_set_on_eof(c_, slot ? &detail::tr_on_eof : nullptr));
    }
    /** SS_EVENT on_close(ss::conn&). */
    template <class F> config &on_close(F &&f)
    {
        handlers().on_close = detail::as_function<void(conn &)>(std::forward<F>(f));
        // The trampoline stays set either way (it ends watch callables).
        return done(ss_config_set_on_close(c_, &detail::tr_on_close));
    }
    /** SS_EVENT on_drain(ss::conn&) (see ss_drain_fn): the queued output,
     * having reached the high-water mark, fell to the low-water mark. An
     * exception is reported to handle_error (error_conn() names the
     * connection) and closes that connection. */
    template <class F> config &on_drain(F &&f)
    {
        auto &slot = handlers().on_drain = detail::as_function<void(conn &)>(std::forward<F>(f));
        return done(ss_config_set_on_drain(c_, slot ? &detail::tr_on_drain : nullptr));
    }
    /** SS_EVENT, datagram transports: on_datagram(ss::request&,
     * std::string_view datagram) -> void or int. */
    template <class F> config &on_datagram(F &&f)
    {
        auto &slot = handlers().on_datagram =
            detail::int_returning<request &, std::string_view>(std::forward<F>(f));
        return done(ss_config_set_on_datagram(c_, slot ? &detail::tr_on_datagram : nullptr));
    }

    /** What request::hand_off() continues a request with (on its new
     * thread or in its child): (ss::request&) -> void or int; finish, the
     * datagram reply and handle_error follow there as usual. */
    template <class F> config &hand_off_continuation(F &&f)
    {
        handlers().continuation = detail::int_returning<request &>(std::forward<F>(f));
        return *this;
    }

    /** The callbacks set so far (ss::server copies them). */
    const detail::handlers &callbacks() const
    {
        if (!h_)
            throw error(SS_ERR_NULL_POINTER, "ss::config was moved from");
        return *h_;
    }

private:
    config &done(ss_status status)
    {
        detail::check(status);
        return *this;
    }

    detail::handlers &handlers()
    {
        if (!h_)
            throw error(SS_ERR_NULL_POINTER, "ss::config was moved from");
        return *h_;
    }

    ss_config *c_ = nullptr;
    std::unique_ptr<detail::handlers> h_;
};

/** An owned ss_server (move-only); the destructor closes and frees it
 * (see the rule for destroying a server at the top of this file).
 * Thread: construction on any thread; the destructor on any thread but
 * this server's own loop, after every other call has returned. */
class server : public server_ref {
public:
    /** ss_server_new() with `config`'s settings and a copy of its callbacks.
     * Throws ss::error (e.g. SS_ERR_IO for a bind that failed); the copy
     * of the callbacks is then already destroyed. */
    server(const config &config, const std::string &address)
    {
        auto *callbacks = fresh_callbacks(config);
        ss_server *handle = nullptr;
        // From here on the library owns `callbacks`, also if this fails.
        ss_status status = ss_server_new(config.native_handle(), address.c_str(), callbacks,
                                         &detail::free_handlers, &handle);
        if (status != SS_OK)
            throw error::last(status);
        callbacks->server = handle;
        s_ = handle;
    }

    /** ss_server_new_from_fd(): a server around `fd`, a socket already
     * bound (and maybe listening), e.g. one from listen_fds(). On success
     * the server owns `fd` (its destructor closes it); if this throws
     * ss::error, `fd` is still open and yours to close (see
     * ss_server_new_from_fd() for the checks and SS_ERR_PANIC). */
    static server from_fd(const config &config, int fd)
    {
        server made;
        auto *callbacks = fresh_callbacks(config);
        ss_server *handle = nullptr;
        ss_status status = ss_server_new_from_fd(config.native_handle(), fd, callbacks,
                                                 &detail::free_handlers, &handle);
        if (status != SS_OK)
            throw error::last(status);
        callbacks->server = handle;
        made.s_ = handle;
        return made;
    }

    server(const server &) = delete;
    server &operator=(const server &) = delete;
    server(server &&other) noexcept : server_ref(std::exchange(other.s_, nullptr)) {}
    server &operator=(server &&other) noexcept
    {
        if (this != &other) {
            ss_server_free(s_);
            s_ = std::exchange(other.s_, nullptr);
        }
        return *this;
    }
    ~server() { ss_server_free(s_); }

    /** Gives up ownership: the caller frees the handle with ss_server_free(). */
    ss_server *release() noexcept { return std::exchange(s_, nullptr); }

private:
    server() noexcept = default;

    /** The server's own copy of the config's callables (its user data). */
    static detail::handlers *fresh_callbacks(const config &config)
    {
        auto callbacks = std::make_unique<detail::handlers>(config.callbacks());
        callbacks->watches = std::make_shared<detail::watch_registry>();
        callbacks->timers = std::make_shared<detail::timer_registry>();
        return callbacks.release();
    }
};

/** ss_listen_fds(): the descriptors a service manager passed (systemd
 * socket activation), in its order, with their names; empty when none
 * were passed to this process. Give each to server::from_fd() (close
 * those you do not use). Throws ss::error for malformed variables. As
 * ss_listen_fds(): call it at start-up, before starting threads (it reads
 * and unsets environment variables). */
inline std::vector<listen_fd> listen_fds()
{
    std::size_t count = 0;
    ss_status status = ss_listen_fds(nullptr, 0, &count);
    if (status != SS_OK && status != SS_ERR_BUFFER_TOO_SMALL)
        throw error::last(status);
    std::vector<listen_fd> out;
    if (count == 0)
        return out;
    std::vector<ss_listen_fd> raw(count);
    detail::check(ss_listen_fds(raw.data(), raw.size(), &count));
    out.reserve(count);
    for (std::size_t i = 0; i < count && i < raw.size(); i++)
        out.push_back(listen_fd{raw[i].fd, std::string(raw[i].name)});
    return out;
}

/** The log callback's type: a level and one line (see ss_log_fn). */
using log_function = std::function<void(ss_log_level, std::string_view)>;

namespace detail {

inline std::mutex &log_lock()
{
    static std::mutex lock;
    return lock;
}

inline log_function *&log_current()
{
    static log_function *current = nullptr;
    return current;
}

inline bool &in_log_callback()
{
    static thread_local bool inside = false;
    return inside;
}

inline void tr_log(ss_log_level level, const char *message, void *user_data) noexcept
{
    in_log_callback() = true;
    try {
        (*static_cast<log_function *>(user_data))(level, message);
    } catch (...) {
        // Nowhere to report a failure of the log itself.
    }
    in_log_callback() = false;
}

} // namespace detail

/** ss_set_log_callback() with any callable (nullptr restores stderr); the
 * previous callable is destroyed once no call of it runs any more. It may
 * be called from any thread, concurrently; exceptions from it are dropped.
 * Throws ss::error (SS_ERR_WRONG_STATE) from inside the log callback. */
template <class F> void set_log_callback(F &&f)
{
    if (detail::in_log_callback())
        throw error(SS_ERR_WRONG_STATE, "ss::set_log_callback from inside the log callback");
    log_function fn = detail::as_function<void(ss_log_level, std::string_view)>(std::forward<F>(f));
    std::lock_guard<std::mutex> one(detail::log_lock());
    std::unique_ptr<log_function> fresh(fn ? new log_function(std::move(fn)) : nullptr);
    ss_status status = ss_set_log_callback(fresh ? &detail::tr_log : nullptr, fresh.get());
    if (status != SS_OK)
        throw error::last(status);
    // The library no longer calls the previous one, and no call is running.
    delete detail::log_current();
    detail::log_current() = fresh.release();
}

/** The library's version ("0.1.0") and number (SS_VERSION_NUMBER's scheme). */
inline const char *version() noexcept { return ss_version(); }
inline std::uint32_t version_number() noexcept { return ss_version_number(); }

} // namespace ss

#endif /* SOCKETSERVER_HPP */
