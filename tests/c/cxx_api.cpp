// cxx_api: include/socketserver.hpp over real sockets on 127.0.0.1, run by
// tests/cxx.rs (built with g++ and with clang++, -std=c++17 -Wall -Wextra
// -Wpedantic -Werror). RAII and ownership of the callables, move
// semantics, exceptions thrown by callbacks (std and not std, blocking
// handlers and event callbacks, callbacks without a failure return),
// ss::error for failed calls, the log callback wrapper.
#include "testutil.h"

#include "socketserver.hpp"

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace {

// Counts live copies: the callables' captures, copied into each server.
struct tracker {
    static std::atomic<int> live;
    tracker() { live++; }
    tracker(const tracker &) { live++; }
    ~tracker() { live--; }
};
std::atomic<int> tracker::live{0};

// What handle_error saw, from any thread.
struct reports {
    std::mutex lock;
    // A deque: references to its elements stay valid as more are added.
    std::deque<std::pair<ss_status, std::string>> seen;
    bool had_request = false;

    void add(ss::request &request, ss_status status, std::string_view message)
    {
        std::lock_guard<std::mutex> g(lock);
        seen.emplace_back(status, std::string(message));
        had_request = had_request || static_cast<bool>(request);
    }
    size_t count()
    {
        std::lock_guard<std::mutex> g(lock);
        return seen.size();
    }
    const std::pair<ss_status, std::string> &at(size_t i)
    {
        std::lock_guard<std::mutex> g(lock);
        return seen.at(i);
    }
};

// serve_forever on a thread of its own (a std::thread: testutil's runner
// wants a C function).
struct serving {
    ss::server &server;
    std::thread thread;
    ss_status result = SS_OK;

    explicit serving(ss::server &s) : server(s)
    {
        thread = std::thread([this] {
            try {
                server.serve_forever();
            } catch (const ss::error &e) {
                result = e.status();
            }
        });
    }
    void stop()
    {
        CHECK_OK(server.shutdown());
        thread.join();
        CHECK_OK(result);
    }
};

int connect_to(const ss::server &server)
{
    return tu_connect(SOCK_STREAM, server.address().c_str(), nullptr);
}

// One line echoed by a fresh client.
void expect_echo(const ss::server &server, const char *line)
{
    int fd = connect_to(server);
    tu_send_str(fd, line);
    tu_expect_line(fd, line);
    close(fd);
}

ss::config line_echo_config(ss::concurrency mode)
{
    ss::config config(ss::transport::tcp, mode);
    config.poll_interval(10).handle([](ss::request &r) { r.write(r.readline()); });
    return config;
}

// ----------------------------------------------------------------- RAII

void raii_callables_freed_once()
{
    {
        ss::config config(ss::transport::tcp, ss::concurrency::threading);
        tracker t;
        auto hits = std::make_shared<std::atomic<int>>(0);
        config.poll_interval(10).handle([t, hits](ss::request &r) {
            (*hits)++;
            r.write(r.readline());
        });
        const int in_config = tracker::live;
        CHECK(in_config >= 2); // ours and the config's
        {
            ss::server server(config, "127.0.0.1:0");
            // The server has its own copy of every callable.
            CHECK_EQ(tracker::live, in_config + 1);
            CHECK_EQ(hits.use_count(), 3);
            serving s(server);
            expect_echo(server, "raii\n");
            s.stop();
            CHECK_EQ(*hits, 1);
        }
        // Destroying the server (ss_server_free) ran the finalizer: its
        // copy is gone, exactly once.
        CHECK_EQ(tracker::live, in_config);
        CHECK_EQ(hits.use_count(), 2);
        // The config is a template: a second server from it works too.
        ss::server again(config, "127.0.0.1:0");
        CHECK_EQ(tracker::live, in_config + 1);
    }
    CHECK_EQ(tracker::live, 0);
}

void raii_failed_new_frees_callables()
{
    ss::config config(ss::transport::tcp, ss::concurrency::sync);
    tracker t;
    config.handle([t](ss::request &) {});
    const int before = tracker::live;
    bool thrown = false;
    try {
        ss::server server(config, "definitely not an address");
    } catch (const ss::error &e) {
        thrown = true;
        CHECK_EQ(e.status(), SS_ERR_ADDRESS);
    }
    CHECK(thrown);
    // The library ran the finalizer before ss_server_new returned.
    CHECK_EQ(tracker::live, before);
}

// -------------------------------------------------------------- moving

void move_semantics()
{
    ss::config first = line_echo_config(ss::concurrency::sync);
    ss::config config = std::move(first);
    CHECK(first.native_handle() == nullptr);
    CHECK(config.native_handle() != nullptr);
    bool thrown = false;
    try {
        first.poll_interval(10);
    } catch (const ss::error &e) {
        thrown = true;
        CHECK_EQ(e.status(), SS_ERR_NULL_POINTER);
    }
    CHECK(thrown);

    ss::server a(config, "127.0.0.1:0");
    ss_server *handle = a.native_handle();
    ss::server b(std::move(a));
    CHECK(a.native_handle() == nullptr);
    CHECK(!a);
    CHECK(b.native_handle() == handle);
    {
        serving s(b);
        expect_echo(b, "moved\n");
        s.stop();
    }

    // Move assignment frees the server it replaces (its callables too).
    tracker t;
    ss::config other(ss::transport::tcp, ss::concurrency::sync);
    other.handle([t](ss::request &) {});
    const int before = tracker::live;
    ss::server c(other, "127.0.0.1:0");
    CHECK_EQ(tracker::live, before + 1);
    c = std::move(b);
    CHECK_EQ(tracker::live, before);
    CHECK(c.native_handle() == handle);
    // release() hands the handle over.
    ss_server *raw = c.release();
    CHECK(raw == handle && !c);
    ss_server_free(raw);
}

// ---------------------------------------------------------- exceptions

struct not_std {
    int code;
};

// The first request of each kind throws; every later one is echoed: the
// server keeps serving after handle_error.
void exception_path(ss::concurrency mode, bool standard)
{
    reports seen;
    std::atomic<int> calls{0};
    ss::config config(ss::transport::tcp, mode);
    config.poll_interval(10)
        .handle([&calls, standard](ss::request &r) {
            std::string line = r.readline();
            if (calls++ == 0) {
                if (standard)
                    throw std::runtime_error("boom from a std::runtime_error");
                throw not_std{42};
            }
            r.write(line);
        })
        .handle_error([&seen](ss::request &r, ss_status st, std::string_view m) { seen.add(r, st, m); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    tu_send_str(fd, "first\n");
    tu_expect_eof(fd, 5000);
    close(fd);
    WAIT_FOR(seen.count() == 1, 5000);
    auto [status, message] = seen.at(0);
    CHECK_EQ(status, SS_ERR_HANDLER);
    CHECK_CONTAINS(message.c_str(), "handle callback returned -1");
    if (standard)
        CHECK_CONTAINS(message.c_str(), "handle threw: boom from a std::runtime_error");
    else
        CHECK_CONTAINS(message.c_str(), "handle threw an exception not derived from std::exception");
    CHECK(seen.had_request);
    expect_echo(server, "second\n");
    expect_echo(server, "third\n");
    s.stop();
    CHECK_EQ(seen.count(), 1);
}

void exception_std_sync() { exception_path(ss::concurrency::sync, true); }
void exception_non_std_sync() { exception_path(ss::concurrency::sync, false); }
void exception_std_threading() { exception_path(ss::concurrency::threading, true); }
void exception_non_std_pool() { exception_path(ss::concurrency::thread_pool, false); }

// SS_FORKING: the exception is caught in the request's child, whose
// default handle_error line (on the stderr it inherited) carries what();
// the server forks the next child as usual.
void exception_std_forking()
{
    tu_capture capture;
    tu_capture_stderr(&capture);
    {
        ss::config config(ss::transport::tcp, ss::concurrency::forking);
        config.poll_interval(10).handle([](ss::request &r) {
            std::string line = r.readline();
            if (line == "throw\n")
                throw std::runtime_error("thrown in the child");
            r.write(line);
        });
        ss::server server(config, "127.0.0.1:0");
        serving s(server);
        int fd = connect_to(server);
        tu_send_str(fd, "throw\n");
        tu_expect_eof(fd, 5000);
        close(fd);
        expect_echo(server, "next child\n");
        s.stop();
        // close (in the destructor) waits for the children.
    }
    char text[4096];
    tu_end_capture(&capture, text, sizeof text);
    CHECK_CONTAINS(text, "socketserver: error processing request from 127.0.0.1:");
    CHECK_CONTAINS(text, "handle threw: thrown in the child");
    tu_check_no_children();
}

// An ss::error escaping a handler keeps its status and the library's
// message, as a failed call in a C handler does.
void exception_ss_error_keeps_status()
{
    reports seen;
    ss::config config(ss::transport::tcp, ss::concurrency::sync);
    config.poll_interval(10)
        .request_timeout(50)
        .handle([](ss::request &r) { r.readline(); }) // the client stays silent
        .handle_error([&seen](ss::request &r, ss_status st, std::string_view m) { seen.add(r, st, m); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    tu_expect_eof(fd, 5000);
    close(fd);
    WAIT_FOR(seen.count() == 1, 5000);
    CHECK_EQ(seen.at(0).first, SS_ERR_TIMEOUT);
    CHECK_CONTAINS(seen.at(0).second.c_str(), "timed out after 50 ms");
    s.stop();
}

// Without a handle_error of our own, the library's default line carries
// the exception's text (here to the log callback).
void exception_default_handle_error()
{
    std::mutex lock;
    std::vector<std::pair<ss_log_level, std::string>> lines;
    ss::set_log_callback([&](ss_log_level level, std::string_view line) {
        std::lock_guard<std::mutex> g(lock);
        lines.emplace_back(level, std::string(line));
    });
    auto count = [&] {
        std::lock_guard<std::mutex> g(lock);
        return lines.size();
    };
    {
        ss::config config(ss::transport::tcp, ss::concurrency::sync);
        config.poll_interval(10).handle([](ss::request &) { throw std::logic_error("logged boom"); });
        ss::server server(config, "127.0.0.1:0");
        serving s(server);
        int fd = connect_to(server);
        tu_expect_eof(fd, 5000);
        close(fd);
        WAIT_FOR(count() == 1, 5000);
        s.stop();
    }
    ss::set_log_callback(nullptr);
    CHECK_EQ(lines.at(0).first, SS_LOG_ERROR);
    CHECK_CONTAINS(lines.at(0).second.c_str(), "socketserver: error processing request from 127.0.0.1:");
    CHECK_CONTAINS(lines.at(0).second.c_str(), "handle threw: logged boom");
}

// setup and finish throwing: as failing callbacks (finish still runs after
// a failing handle; a failing setup skips handle and finish).
void exception_setup_finish()
{
    reports seen;
    std::atomic<int> handled{0}, finished{0};
    ss::config config(ss::transport::tcp, ss::concurrency::sync);
    config.poll_interval(10)
        .setup([](ss::request &r) {
            if (r.readline() == "fail-setup\n")
                throw std::runtime_error("setup said no");
        })
        .handle([&handled](ss::request &r) {
            handled++;
            r.write("handled\n");
        })
        .finish([&finished](ss::request &) {
            finished++;
            throw std::runtime_error("finish failed");
        })
        .handle_error([&seen](ss::request &r, ss_status st, std::string_view m) { seen.add(r, st, m); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    tu_send_str(fd, "fail-setup\n");
    tu_expect_eof(fd, 5000);
    close(fd);
    WAIT_FOR(seen.count() == 1, 5000);
    CHECK_CONTAINS(seen.at(0).second.c_str(), "setup threw: setup said no");
    CHECK_EQ(handled, 0);
    CHECK_EQ(finished, 0);
    fd = connect_to(server);
    tu_send_str(fd, "ok\n");
    tu_expect_line(fd, "handled\n");
    tu_expect_eof(fd, 5000);
    close(fd);
    WAIT_FOR(seen.count() == 2, 5000);
    CHECK_CONTAINS(seen.at(1).second.c_str(), "finish threw: finish failed");
    CHECK_EQ(finished, 1);
    s.stop();
}

// Event mode: an on_data that throws fails its connection only.
void event_on_data_throws()
{
    reports seen;
    std::atomic<int> closed{0};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1)
        .on_data([](ss::conn &c, std::string_view data) -> std::size_t {
            if (data.substr(0, 3) == "bad")
                throw std::runtime_error("on_data refuses " + std::string(data.substr(0, 3)));
            c.write(data);
            return data.size();
        })
        .on_close([&closed](ss::conn &) { closed++; })
        .handle_error([&seen](ss::request &r, ss_status st, std::string_view m) { seen.add(r, st, m); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int good = connect_to(server);
    tu_send_str(good, "one\n");
    tu_expect_line(good, "one\n");
    int bad = connect_to(server);
    tu_send_str(bad, "bad\n");
    tu_expect_eof(bad, 5000);
    close(bad);
    WAIT_FOR(seen.count() == 1, 5000);
    CHECK_EQ(seen.at(0).first, SS_ERR_HANDLER);
    CHECK_CONTAINS(seen.at(0).second.c_str(), "on_data threw: on_data refuses bad");
    WAIT_FOR(closed == 1, 5000);
    // The other connection is unaffected, and new ones are served.
    tu_send_str(good, "two\n");
    tu_expect_line(good, "two\n");
    close(good);
    int third = connect_to(server);
    tu_send_str(third, "three\n");
    tu_expect_line(third, "three\n");
    close(third);
    WAIT_FOR(closed == 3, 5000);
    s.stop();
    CHECK_EQ(seen.count(), 1);
}

// Callbacks with no failure return: the exception is reported to
// handle_error and the server goes on (verify_request then refuses the
// request, on_eof closes the connection).
void void_callbacks_throw()
{
    reports seen;
    std::atomic<int> actions{0};
    ss::config config(ss::transport::tcp, ss::concurrency::sync);
    config.poll_interval(10)
        .verify_request([](ss::request &r) {
            if (r.client_address().empty())
                return false;
            static std::atomic<int> first{0};
            if (first++ == 0)
                throw std::runtime_error("verify exploded");
            return true;
        })
        .handle([](ss::request &r) { r.write(r.readline()); })
        .service_actions([&actions](ss::server_ref &) {
            if (actions++ == 0)
                throw not_std{7};
        })
        .handle_error([&seen](ss::request &r, ss_status st, std::string_view m) { seen.add(r, st, m); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    WAIT_FOR(seen.count() >= 1, 5000); // the first service_actions
    CHECK_EQ(seen.at(0).first, SS_ERR_HANDLER);
    CHECK_CONTAINS(seen.at(0).second.c_str(), "service_actions threw an exception not derived");
    int fd = connect_to(server);
    tu_expect_eof(fd, 5000); // refused
    close(fd);
    WAIT_FOR(seen.count() == 2, 5000);
    CHECK_CONTAINS(seen.at(1).second.c_str(), "verify_request threw: verify exploded");
    CHECK(seen.had_request);
    WAIT_FOR(actions >= 3, 5000);
    expect_echo(server, "after\n");
    s.stop();
    CHECK_EQ(seen.count(), 2);
}

void event_on_eof_and_close_throw()
{
    reports seen;
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1)
        .on_data([](ss::conn &, std::string_view data) { return data.size(); })
        .on_eof([](ss::conn &) { throw std::runtime_error("eof handler broke"); })
        .on_close([](ss::conn &) { throw std::runtime_error("close handler broke"); })
        .handle_error([&seen](ss::request &r, ss_status st, std::string_view m) { seen.add(r, st, m); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    tu_send_str(fd, "x");
    CHECK_SYS(shutdown(fd, SHUT_WR));
    // on_eof threw: the connection is closed instead of held open.
    tu_expect_eof(fd, 5000);
    close(fd);
    WAIT_FOR(seen.count() == 2, 5000);
    CHECK_CONTAINS(seen.at(0).second.c_str(), "on_eof threw: eof handler broke");
    CHECK_CONTAINS(seen.at(1).second.c_str(), "on_close threw: close handler broke");
    CHECK(!seen.had_request);
    s.stop();
}

// A job posted from another thread runs on the connection's loop; one that
// throws is reported.
void event_post()
{
    reports seen;
    std::atomic<std::uint64_t> id{0};
    std::atomic<bool> opened{false};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1)
        .on_open([&](ss::conn &c) {
            id = c.id();
            opened = true;
        })
        .on_data([](ss::conn &, std::string_view data) { return data.size(); })
        .handle_error([&seen](ss::request &r, ss_status st, std::string_view m) { seen.add(r, st, m); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    WAIT_FOR(opened, 5000);
    std::string text = "posted\n";
    server.post(id, [text](ss::conn &c) {
        CHECK(c);
        c.write(text);
    });
    tu_expect_line(fd, "posted\n");
    server.post(id, [](ss::conn &) { throw std::runtime_error("job failed"); });
    WAIT_FOR(seen.count() == 1, 5000);
    CHECK_CONTAINS(seen.at(0).second.c_str(), "posted job threw: job failed");
    close(fd);
    s.stop();
    // Not serving any more: the post is refused and the job destroyed.
    tracker t;
    const int before = tracker::live;
    bool thrown = false;
    try {
        server.post(id, [t](ss::conn &) {});
    } catch (const ss::error &e) {
        thrown = true;
        CHECK_EQ(e.status(), SS_ERR_WRONG_STATE);
    }
    CHECK(thrown);
    CHECK_EQ(tracker::live, before);
}

// request::hand_off: the rest of the request on a new thread, with the
// config's continuation; one that throws is reported like handle.
void hand_off_thread()
{
    reports seen;
    std::atomic<int> finished{0};
    ss::config config(ss::transport::tcp, ss::concurrency::sync);
    config.poll_interval(10)
        .handle([](ss::request &r) { r.hand_off(ss::hand_off_target::thread); })
        .hand_off_continuation([](ss::request &r) {
            std::string line = r.readline();
            if (line == "boom\n")
                throw std::runtime_error("continuation exploded");
            r.write("continued: " + line);
        })
        .finish([&finished](ss::request &) { finished++; })
        .handle_error([&seen](ss::request &r, ss_status st, std::string_view m) { seen.add(r, st, m); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    tu_send_str(fd, "line\n");
    tu_expect_line(fd, "continued: line\n");
    tu_expect_eof(fd, 5000);
    close(fd);
    fd = connect_to(server);
    tu_send_str(fd, "boom\n");
    tu_expect_eof(fd, 5000);
    close(fd);
    WAIT_FOR(seen.count() == 1, 5000);
    CHECK_CONTAINS(seen.at(0).second.c_str(), "continuation threw: continuation exploded");
    WAIT_FOR(finished == 2, 5000);
    s.stop();

    // Without a continuation in the config: refused, the handler fails.
    ss::config bare(ss::transport::tcp, ss::concurrency::sync);
    bare.poll_interval(10)
        .handle([](ss::request &r) { r.hand_off(ss::hand_off_target::thread); })
        .handle_error([&seen](ss::request &r, ss_status st, std::string_view m) { seen.add(r, st, m); });
    ss::server plain(bare, "127.0.0.1:0");
    serving t(plain);
    fd = connect_to(plain);
    tu_expect_eof(fd, 5000);
    close(fd);
    WAIT_FOR(seen.count() == 2, 5000);
    CHECK_EQ(seen.at(1).first, SS_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(seen.at(1).second.c_str(), "no hand_off_continuation");
    t.stop();
}

// ------------------------------------------------ event connection calls

// Calls `fn(line)` for each complete line of `data` (with its '\n') while
// it returns true; returns the bytes of the lines it was given.
template <class F> std::size_t each_line(std::string_view data, F &&fn)
{
    std::size_t used = 0;
    for (;;) {
        std::size_t nl = data.find('\n', used);
        if (nl == std::string_view::npos)
            return used;
        std::string_view line = data.substr(used, nl + 1 - used);
        used = nl + 1;
        if (!fn(line))
            return used;
    }
}

// Posts `job` to connection `id` and waits until it ran: one more turn of
// that connection's loop.
template <class F> void run_on_loop(const ss::server &server, std::uint64_t id, F job)
{
    auto done = std::make_shared<std::atomic<bool>>(false);
    server.post(id, [job, done](ss::conn &c) mutable {
        CHECK(c);
        job(c);
        *done = true;
    });
    WAIT_FOR(*done, 5000);
}

// Everything a pipe's non-blocking read end holds now.
std::string drain_pipe(int fd)
{
    std::string got;
    char buf[256];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        got.append(buf, static_cast<std::size_t>(n));
    return got;
}

void make_pipe(int fds[2]) { CHECK_SYS(pipe2(fds, O_NONBLOCK | O_CLOEXEC)); }

// What handle_error saw for a connection: the message and error_conn()'s id.
struct conn_reports {
    std::mutex lock;
    std::vector<std::pair<std::string, std::uint64_t>> seen;

    void add(ss::request &r, std::string_view message)
    {
        CHECK(!r);
        ss::conn failing = ss::error_conn();
        std::lock_guard<std::mutex> g(lock);
        seen.emplace_back(std::string(message), failing ? failing.id() : 0);
    }
    size_t count()
    {
        std::lock_guard<std::mutex> g(lock);
        return seen.size();
    }
    std::pair<std::string, std::uint64_t> at(size_t i)
    {
        std::lock_guard<std::mutex> g(lock);
        return seen.at(i);
    }
};

// pause_reading holds input (received, and still in the kernel) until
// resume_reading, which presents the held part first.
void event_pause_resume_reading()
{
    std::atomic<std::uint64_t> id{0};
    std::atomic<int> data_calls{0};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1).on_data([&](ss::conn &c, std::string_view data) {
        data_calls++;
        return each_line(data, [&](std::string_view line) {
            if (line == "pause\n") {
                CHECK(!c.reading_paused());
                c.pause_reading();
                c.pause_reading(); // twice is once
                CHECK(c.reading_paused());
                id = c.id();
                c.write("paused\n");
                return false; // the rest stays held
            }
            c.write("echo " + std::string(line));
            return true;
        });
    });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    tu_send_str(fd, "pause\nheld\n");
    tu_expect_line(fd, "paused\n");
    const int calls = data_calls;
    tu_send_str(fd, "later\n"); // in the server's receive queue when send returns
    // Several loop turns with input waiting: not read while paused.
    for (int turn = 0; turn < 3; turn++)
        run_on_loop(server, id, [&](ss::conn &c) {
            CHECK(c.reading_paused());
            int queued = 0;
            CHECK_SYS(ioctl(c.fileno(), FIONREAD, &queued));
            CHECK(queued >= 6);
            CHECK_EQ(data_calls, calls);
        });
    run_on_loop(server, id, [](ss::conn &c) {
        c.resume_reading();
        CHECK(!c.reading_paused());
    });
    tu_expect_line(fd, "echo held\n");
    tu_expect_line(fd, "echo later\n");
    close(fd);
    s.stop();
}

// Reads from `fd` until the data ends with '\n' (the flood is 'x's, then
// one line); returns it all.
std::string read_through_line(int fd)
{
    std::string got;
    std::vector<char> buf(1 << 16);
    while (got.empty() || got.back() != '\n') {
        size_t n = tu_recv_some(fd, buf.data(), buf.size(), got.size());
        if (n == 0)
            TU_FAIL("EOF after %zu bytes", got.size());
        got.append(buf.data(), n);
    }
    return got;
}

// Writes 16 KiB pieces until the high-water mark refuses one; returns the
// bytes queued.
std::size_t flood(ss::conn &c)
{
    const std::string chunk(16384, 'x');
    std::size_t queued = 0;
    ss_status status;
    while ((status = c.try_write(chunk)) == SS_OK)
        queued += chunk.size();
    CHECK_EQ(status, SS_ERR_WOULD_BLOCK);
    return queued;
}

// on_drain: once the output that hit the high-water mark is down to the
// low-water mark; the callable writes and resumes reading there.
void event_on_drain_low_water()
{
    std::atomic<int> drains{0};
    std::atomic<std::size_t> flooded{0}, pending_at_drain{0};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1)
        .output_high_water(65536)
        .output_low_water(4096)
        .on_data([&](ss::conn &c, std::string_view data) {
            return each_line(data, [&](std::string_view line) {
                if (line == "flood\n") {
                    flooded = flood(c);
                    c.pause_reading();
                    return false;
                }
                c.write(line);
                return true;
            });
        })
        .on_drain([&](ss::conn &c) {
            drains++;
            pending_at_drain = c.pending_output();
            c.write("drained " + std::to_string(flooded) + "\n");
            c.resume_reading();
        });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    tu_send_str(fd, "flood\n");
    std::string got = read_through_line(fd);
    std::size_t xs = got.find_first_not_of('x');
    const std::string tail = got.substr(xs), want = "drained " + std::to_string(flooded) + "\n";
    CHECK_STREQ(tail.c_str(), want.c_str());
    CHECK_EQ(xs, flooded.load());
    CHECK(flooded >= 65536);
    CHECK_EQ(drains, 1);
    CHECK(pending_at_drain <= 4096);
    // Reading resumed in on_drain.
    tu_send_str(fd, "ping\n");
    tu_expect_line(fd, "ping\n");
    close(fd);
    s.stop();
    CHECK_EQ(drains, 1);
}

// An exception from on_drain reaches handle_error, naming the connection
// (also through error_conn()), and closes that connection only.
void event_on_drain_throws()
{
    conn_reports seen;
    std::atomic<std::uint64_t> flooder{0};
    std::atomic<int> closed{0};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1)
        .output_high_water(65536)
        .on_data([&](ss::conn &c, std::string_view data) {
            return each_line(data, [&](std::string_view line) {
                if (line == "flood\n") {
                    flooder = c.id();
                    flood(c);
                    c.pause_reading();
                    return false;
                }
                c.write(line);
                return true;
            });
        })
        .on_drain([](ss::conn &) { throw std::runtime_error("drain broke"); })
        .on_close([&closed](ss::conn &) { closed++; })
        .handle_error([&seen](ss::request &r, ss_status, std::string_view m) { seen.add(r, m); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int good = connect_to(server);
    tu_send_str(good, "one\n");
    tu_expect_line(good, "one\n");
    int bad = connect_to(server);
    tu_send_str(bad, "flood\n");
    // Reads the flood; the close after the throw ends it.
    std::vector<char> buf(1 << 16);
    size_t total = 0, n;
    while ((n = tu_recv_some(bad, buf.data(), buf.size(), total)) > 0)
        total += n;
    close(bad);
    CHECK(total >= 65536);
    WAIT_FOR(seen.count() == 1, 5000);
    auto [message, id] = seen.at(0);
    CHECK_CONTAINS(message.c_str(), ("connection " + std::to_string(flooder) + " from 127.0.0.1:").c_str());
    CHECK_CONTAINS(message.c_str(), "on_drain threw: drain broke");
    CHECK_EQ(id, flooder.load());
    CHECK(!ss::error_conn()); // only inside handle_error
    WAIT_FOR(closed == 1, 5000);
    tu_send_str(good, "two\n");
    tu_expect_line(good, "two\n");
    close(good);
    WAIT_FOR(closed == 2, 5000);
    s.stop();
    CHECK_EQ(seen.count(), 1);
}

// shutdown_write: the peer reads the end, the connection still reads;
// abort: the peer gets a reset; on_close once for each.
void event_shutdown_write_and_abort()
{
    std::atomic<int> closes{0}, after_half{0}, refused{0};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1)
        .on_data([&](ss::conn &c, std::string_view data) {
            return each_line(data, [&](std::string_view line) {
                if (line == "half\n") {
                    c.write("bye\n");
                    c.shutdown_write();
                    c.shutdown_write(); // twice is once
                    try {
                        c.write("more\n");
                    } catch (const ss::error &e) {
                        if (e.status() == SS_ERR_CLOSED)
                            refused++;
                    }
                    CHECK_EQ(c.try_writev({"a", "b"}), SS_ERR_CLOSED);
                } else if (line == "still\n") {
                    after_half++;
                } else if (line == "abort\n") {
                    c.abort();
                    c.abort();
                } else {
                    c.write(line);
                }
                return true;
            });
        })
        .on_close([&closes](ss::conn &) { closes++; });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int half = connect_to(server);
    tu_send_str(half, "half\n");
    tu_expect_line(half, "bye\n");
    char c;
    CHECK_EQ(recv(half, &c, 1, 0), 0); // the write side's end
    WAIT_FOR(refused == 1, 5000);
    tu_send_str(half, "still\n");
    WAIT_FOR(after_half == 1, 5000);
    CHECK_EQ(closes, 0);
    close(half);
    WAIT_FOR(closes == 1, 5000);

    int aborted = connect_to(server);
    tu_send_str(aborted, "abort\n");
    CHECK(tu_readable_within(aborted, 5000));
    CHECK_EQ(recv(aborted, &c, 1, 0), -1);
    CHECK_EQ(errno, ECONNRESET);
    close(aborted);
    WAIT_FOR(closes == 2, 5000);
    s.stop();
    CHECK_EQ(closes, 2);
}

// writev with string views (a few, and more than fit on the stack), with
// iovecs; more than 1024 buffers refused.
void event_writev()
{
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1).on_data([](ss::conn &c, std::string_view data) {
        return each_line(data, [&](std::string_view) {
            c.writev({"one ", "two", "", " three\n"});
            struct iovec iov[2];
            char four[] = "four ", five[] = "five\n";
            iov[0].iov_base = four;
            iov[0].iov_len = 5;
            iov[1].iov_base = five;
            iov[1].iov_len = 5;
            c.writev(iov, 2);
            std::vector<std::string_view> many(40, "z");
            many.push_back("\n");
            c.writev(many.data(), many.size());
            std::vector<std::string_view> too_many(1025, "n");
            CHECK_EQ(c.try_writev(too_many.data(), too_many.size()), SS_ERR_INVALID_ARGUMENT);
            bool thrown = false;
            try {
                c.writev(too_many.data(), too_many.size());
            } catch (const ss::error &e) {
                thrown = true;
                CHECK_EQ(e.status(), SS_ERR_INVALID_ARGUMENT);
                CHECK_CONTAINS(e.what(), "1025 buffers");
            }
            CHECK(thrown);
            // The library's own check: a NULL base with a length.
            iov[0].iov_base = nullptr;
            CHECK_EQ(c.try_writev(iov, 2), SS_ERR_INVALID_ARGUMENT);
            c.writev(static_cast<const struct iovec *>(nullptr), 0);
            c.write("done\n");
            return true;
        });
    });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    tu_send_str(fd, "go\n");
    tu_expect_line(fd, "one two three\n");
    tu_expect_line(fd, "four five\n");
    tu_expect_line(fd, (std::string(40, 'z') + "\n").c_str());
    tu_expect_line(fd, "done\n");
    close(fd);
    s.stop();
}

// conn::server() and the raw addresses, over TCP and an unnamed Unix client.
void event_conn_server_and_addresses()
{
    struct seen_t {
        std::mutex lock;
        ss_server *server = nullptr;
        std::uint16_t port = 0;
        ss::socket_address peer, local;
        bool opened = false;
    } seen;
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1)
        .on_open([&seen](ss::conn &c) {
            std::lock_guard<std::mutex> g(seen.lock);
            seen.server = c.server().native_handle();
            seen.port = c.server().port();
            seen.peer = c.peer_sockaddr();
            seen.local = c.local_sockaddr();
            seen.opened = true;
        })
        .on_data([](ss::conn &, std::string_view data) { return data.size(); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    WAIT_FOR([&] {
        std::lock_guard<std::mutex> g(seen.lock);
        return seen.opened;
    }(), 5000);
    sockaddr_in me{};
    socklen_t len = sizeof me;
    CHECK_SYS(getsockname(fd, reinterpret_cast<sockaddr *>(&me), &len));
    {
        std::lock_guard<std::mutex> g(seen.lock);
        CHECK(seen.server == server.native_handle());
        CHECK_EQ(seen.port, server.port());
        CHECK_EQ(seen.peer.family(), AF_INET);
        CHECK_EQ(seen.peer.length, static_cast<socklen_t>(sizeof(sockaddr_in)));
        auto *peer = reinterpret_cast<const sockaddr_in *>(seen.peer.get());
        CHECK_EQ(peer->sin_port, me.sin_port);
        CHECK_EQ(seen.local.family(), AF_INET);
        auto *local = reinterpret_cast<const sockaddr_in *>(seen.local.get());
        CHECK_EQ(ntohs(local->sin_port), server.port());
        CHECK_EQ(ntohl(local->sin_addr.s_addr), INADDR_LOOPBACK);
    }
    close(fd);
    s.stop();
    // Off the loop thread conn::server() is empty (ss_conn_server's rule)
    // and a view of no connection too.
    CHECK(!ss::conn().server());

    char name[108];
    tu_abstract(name, sizeof name, "cxx-addr");
    ss::config unix_config(ss::transport::unix_stream, ss::concurrency::event);
    unix_config.threads(1)
        .on_open([&seen](ss::conn &c) {
            std::lock_guard<std::mutex> g(seen.lock);
            seen.peer = c.peer_sockaddr();
            seen.local = c.local_sockaddr();
            seen.opened = true;
        })
        .on_data([](ss::conn &, std::string_view data) { return data.size(); });
    seen.opened = false;
    ss::server unix_server(unix_config, name);
    serving u(unix_server);
    fd = connect_to(unix_server);
    WAIT_FOR([&] {
        std::lock_guard<std::mutex> g(seen.lock);
        return seen.opened;
    }(), 5000);
    {
        std::lock_guard<std::mutex> g(seen.lock);
        CHECK_EQ(seen.peer.family(), AF_UNIX);
        CHECK_EQ(seen.peer.length, static_cast<socklen_t>(sizeof(sa_family_t)));
        CHECK_EQ(seen.local.family(), AF_UNIX);
        CHECK(seen.local.length > sizeof(sa_family_t));
    }
    close(fd);
    u.stop();
}

// request::client_sockaddr(): the client's address as getsockname gives it.
void request_client_sockaddr()
{
    std::mutex lock;
    ss::socket_address seen;
    ss::config config(ss::transport::tcp, ss::concurrency::sync);
    config.poll_interval(10).handle([&](ss::request &r) {
        {
            std::lock_guard<std::mutex> g(lock);
            seen = r.client_sockaddr();
        }
        r.write(r.readline());
    });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    tu_send_str(fd, "where\n");
    tu_expect_line(fd, "where\n");
    sockaddr_in me{};
    socklen_t len = sizeof me;
    CHECK_SYS(getsockname(fd, reinterpret_cast<sockaddr *>(&me), &len));
    close(fd);
    s.stop();
    CHECK_EQ(seen.family(), AF_INET);
    CHECK_EQ(seen.length, static_cast<socklen_t>(sizeof(sockaddr_in)));
    auto *client = reinterpret_cast<const sockaddr_in *>(seen.get());
    CHECK_EQ(client->sin_port, me.sin_port);
    CHECK_EQ(client->sin_addr.s_addr, me.sin_addr.s_addr);
}

// watch_fd's callables: each destroyed exactly once, when its watch ends
// (replaced, unwatched, after the hang-up call, unwatching itself after
// its call, at the connection's close), and at once if watch_fd throws.
void event_watch_fd_callables()
{
    int p1[2], p2[2], p3[2], p4[2], p5[2], p6[2];
    make_pipe(p1);
    make_pipe(p2);
    make_pipe(p3);
    make_pipe(p4);
    make_pipe(p5);
    make_pipe(p6);
    const int base = tracker::live;
    std::atomic<int> watched_at_close{-1};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1)
        .on_data([&](ss::conn &c, std::string_view data) {
            return each_line(data, [&](std::string_view line) {
                std::string reply;
                if (line == "w1\n") {
                    c.watch_fd(p1[0], SS_WATCH_READ, [t = tracker()](ss::conn &k, int fd, int) {
                        k.write("p1 " + drain_pipe(fd) + "\n");
                    });
                } else if (line == "w1b\n") { // replaces w1's, destroyed now
                    c.watch_fd(p1[0], SS_WATCH_READ, [t = tracker()](ss::conn &k, int fd, int) {
                        k.write("p1b " + drain_pipe(fd) + "\n");
                        return 0;
                    });
                } else if (line == "un1\n") {
                    c.unwatch_fd(p1[0]);
                    try {
                        c.unwatch_fd(p1[0]);
                    } catch (const ss::error &e) {
                        reply = "again " + std::to_string(e.status()) + " ";
                    }
                } else if (line == "w2\n") {
                    c.watch_fd(p2[0], SS_WATCH_READ, [t = tracker()](ss::conn &k, int fd, int ev) {
                        std::string got = drain_pipe(fd);
                        if (ev & SS_WATCH_HANGUP)
                            k.write("p2 end " + got + "\n");
                        else
                            k.write("p2 " + got + "\n");
                    });
                } else if (line == "w3\n") {
                    std::string text(100, 's'); // on the heap: freed memory would show
                    c.watch_fd(p3[0], SS_WATCH_READ,
                               [t = tracker(), text](ss::conn &k, int fd, int) {
                                   drain_pipe(fd);
                                   k.unwatch_fd(fd);
                                   // Still alive until this call returns.
                                   k.write(text.substr(0, 4) + " " + std::to_string(tracker::live) +
                                           "\n");
                               });
                } else if (line == "w5\n") {
                    // Replaced in place during its last call: the library
                    // ends that watch, so the replacement goes too.
                    c.watch_fd(p5[0], SS_WATCH_READ, [t = tracker()](ss::conn &k, int fd, int ev) {
                        if (ev & SS_WATCH_HANGUP) {
                            k.watch_fd(fd, SS_WATCH_READ, [t = tracker()](ss::conn &, int, int) {
                                TU_FAIL("a watch replaced in its last call was called");
                            });
                            k.write("p5 replaced " + std::to_string(k.watched_fds()) + "\n");
                        }
                    });
                } else if (line == "w6\n") {
                    // Unwatched and watched anew during its last call: a new
                    // watch, which the library keeps (and calls: the pipe
                    // still hangs up).
                    c.watch_fd(p6[0], SS_WATCH_READ, [t = tracker()](ss::conn &k, int fd, int ev) {
                        if (ev & SS_WATCH_HANGUP) {
                            k.unwatch_fd(fd);
                            k.watch_fd(fd, SS_WATCH_READ,
                                       [t = tracker(), text = std::string(100, 'q')](
                                           ss::conn &k2, int, int ev2) {
                                           if (ev2 & SS_WATCH_HANGUP)
                                               k2.write("p6 again " + text.substr(0, 2) + " " +
                                                        std::to_string(tracker::live) + "\n");
                                       });
                        }
                    });
                } else if (line == "w4\n") { // two, left for the close
                    c.watch_fd(p4[0], SS_WATCH_READ, [t = tracker()](ss::conn &, int, int) {});
                    c.watch_fd(p1[0], SS_WATCH_WRITE | SS_WATCH_READ,
                               [t = tracker()](ss::conn &, int, int) {});
                } else if (line == "bad\n") {
                    int statuses[3] = {0, 0, 0};
                    try {
                        c.watch_fd(p1[0], 0, [t = tracker()](ss::conn &, int, int) {});
                    } catch (const ss::error &e) {
                        statuses[0] = e.status();
                    }
                    try {
                        c.watch_fd(c.fileno(), SS_WATCH_READ, [t = tracker()](ss::conn &, int, int) {});
                    } catch (const ss::error &e) {
                        statuses[1] = e.status();
                    }
                    try {
                        c.watch_fd(p1[0], SS_WATCH_READ, nullptr);
                    } catch (const ss::error &e) {
                        statuses[2] = e.status();
                    }
                    reply = "bad " + std::to_string(statuses[0]) + " " + std::to_string(statuses[1]) +
                            " " + std::to_string(statuses[2]) + " ";
                }
                c.write(reply + "live " + std::to_string(tracker::live - base) + " watching " +
                        std::to_string(c.watched_fds()) + "\n");
                return true;
            });
        })
        .on_close([&](ss::conn &c) { watched_at_close = static_cast<int>(c.watched_fds()); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);
    char line[256];

    tu_send_str(fd, "w1\n");
    tu_expect_line(fd, "live 1 watching 1\n");
    CHECK_EQ(write(p1[1], "a", 1), 1);
    tu_expect_line(fd, "p1 a\n");
    tu_send_str(fd, "w1b\n");
    tu_expect_line(fd, "live 1 watching 1\n");
    CHECK_EQ(write(p1[1], "b", 1), 1);
    tu_expect_line(fd, "p1b b\n");
    tu_send_str(fd, "un1\n");
    tu_expect_line(fd, ("again " + std::to_string(SS_ERR_INVALID_ARGUMENT) + " live 0 watching 0\n").c_str());

    tu_send_str(fd, "w2\n");
    tu_expect_line(fd, "live 1 watching 1\n");
    CHECK_EQ(write(p2[1], "zz", 2), 2);
    close(p2[1]);
    // "p2 zz" then "p2 end ", or at once "p2 end zz": the last call.
    do {
        tu_recv_line(fd, line, sizeof line);
    } while (std::string(line).rfind("p2 end", 0) != 0);
    WAIT_FOR(tracker::live == base, 5000);
    tu_send_str(fd, "count\n");
    tu_expect_line(fd, "live 0 watching 0\n");

    tu_send_str(fd, "w3\n");
    tu_expect_line(fd, "live 1 watching 1\n");
    CHECK_EQ(write(p3[1], "x", 1), 1);
    tu_expect_line(fd, ("ssss " + std::to_string(base + 1) + "\n").c_str());
    WAIT_FOR(tracker::live == base, 5000);

    tu_send_str(fd, "w5\n");
    tu_expect_line(fd, "live 1 watching 1\n");
    close(p5[1]);
    tu_expect_line(fd, "p5 replaced 1\n");
    WAIT_FOR(tracker::live == base, 5000);
    tu_send_str(fd, "count\n");
    tu_expect_line(fd, "live 0 watching 0\n");

    tu_send_str(fd, "w6\n");
    tu_expect_line(fd, "live 1 watching 1\n");
    close(p6[1]);
    // Still alive in its call (1 live): not taken for the first one's.
    tu_expect_line(fd, ("p6 again qq " + std::to_string(base + 1) + "\n").c_str());
    WAIT_FOR(tracker::live == base, 5000);
    tu_send_str(fd, "count\n");
    tu_expect_line(fd, "live 0 watching 0\n");

    tu_send_str(fd, "bad\n");
    tu_expect_line(fd, ("bad " + std::to_string(SS_ERR_INVALID_ARGUMENT) + " " +
                        std::to_string(SS_ERR_INVALID_ARGUMENT) + " " +
                        std::to_string(SS_ERR_NULL_POINTER) + " live 0 watching 0\n")
                           .c_str());

    tu_send_str(fd, "w4\n");
    tu_expect_line(fd, "live 2 watching 2\n");
    close(fd);
    WAIT_FOR(tracker::live == base, 5000);
    CHECK_EQ(watched_at_close, 2);
    s.stop();
    CHECK_EQ(tracker::live, base);
    for (int *p : {p1, p2, p3, p4, p5, p6})
        for (int i = 0; i < 2; i++)
            if (i == 0 || (p != p2 && p != p5 && p != p6))
                close(p[i]);
}

// A pipe whose two ends close with the last copy of the callable that
// holds it (closed exactly once, or the fd check at exit fails).
struct owned_pipe {
    int fds[2];
    owned_pipe() { make_pipe(fds); }
    owned_pipe(const owned_pipe &) = delete;
    ~owned_pipe()
    {
        close(fds[0]);
        close(fds[1]);
    }
};

// Many connections on four loops watching at once: each watch's callable
// (and the pipe it owns) is destroyed exactly once, at its connection's
// close, whichever loop it ran on.
void event_watch_many_loops()
{
    const int base = tracker::live;
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(4).on_data([](ss::conn &c, std::string_view data) {
        return each_line(data, [&](std::string_view) {
            auto pipe = std::make_shared<owned_pipe>();
            c.watch_fd(pipe->fds[0], SS_WATCH_READ, [t = tracker(), pipe](ss::conn &k, int fd, int) {
                drain_pipe(fd);
                k.write("fired\n");
            });
            CHECK_EQ(write(pipe->fds[1], "!", 1), 1);
            return true;
        });
    });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    for (int round = 0; round < 3; round++) {
        std::vector<int> clients;
        for (int i = 0; i < 16; i++)
            clients.push_back(connect_to(server));
        for (int fd : clients)
            tu_send_str(fd, "watch\n");
        for (int fd : clients)
            tu_expect_line(fd, "fired\n");
        CHECK_EQ(tracker::live, base + 16);
        for (int fd : clients)
            close(fd);
        WAIT_FOR(tracker::live == base, 5000);
    }
    s.stop();
    CHECK_EQ(tracker::live, base);
}

// A watch callable that throws: handle_error gets it (error_conn() is that
// connection), that connection closes, the callable is destroyed, another
// connection goes on.
void event_watch_throws()
{
    conn_reports seen;
    int p[2];
    make_pipe(p);
    const int base = tracker::live;
    std::atomic<std::uint64_t> watcher{0};
    std::atomic<int> closed{0};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1)
        .on_data([&](ss::conn &c, std::string_view data) {
            return each_line(data, [&](std::string_view line) {
                if (line == "watch\n") {
                    watcher = c.id();
                    c.watch_fd(p[0], SS_WATCH_READ, [t = tracker()](ss::conn &, int, int) {
                        throw std::runtime_error("watch broke");
                    });
                    c.write("watching\n");
                } else {
                    c.write(line);
                }
                return true;
            });
        })
        .on_close([&closed](ss::conn &) { closed++; })
        .handle_error([&seen](ss::request &r, ss_status, std::string_view m) { seen.add(r, m); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int good = connect_to(server);
    tu_send_str(good, "one\n");
    tu_expect_line(good, "one\n");
    int bad = connect_to(server);
    tu_send_str(bad, "watch\n");
    tu_expect_line(bad, "watching\n");
    CHECK_EQ(tracker::live, base + 1);
    CHECK_EQ(write(p[1], "!", 1), 1);
    tu_expect_eof(bad, 5000);
    close(bad);
    WAIT_FOR(seen.count() == 1, 5000);
    auto [message, id] = seen.at(0);
    CHECK_CONTAINS(message.c_str(), ("connection " + std::to_string(watcher) + " from 127.0.0.1:").c_str());
    CHECK_CONTAINS(message.c_str(), "watch callback returned -1 (last error: watch threw: watch broke)");
    CHECK_EQ(id, watcher.load());
    WAIT_FOR(closed == 1, 5000);
    WAIT_FOR(tracker::live == base, 5000);
    tu_send_str(good, "two\n");
    tu_expect_line(good, "two\n");
    close(good);
    s.stop();
    CHECK_EQ(seen.count(), 1);
    close(p[0]);
    close(p[1]);
}

// --------------------------------------------------------------- timers

// How often the once_probe of each slot was destroyed. A probe is
// move-only and counts only while it is not moved from: a callable
// holding one is destroyed exactly once iff its slot reads 1 (a second
// destruction of the same object would be a double free valgrind reports).
std::atomic<int> probe_destroyed[16];
std::atomic<int> probe_called[16];

struct once_probe {
    int slot;
    explicit once_probe(int s) : slot(s) {}
    once_probe(once_probe &&other) noexcept : slot(std::exchange(other.slot, -1)) {}
    once_probe(const once_probe &) = delete;
    once_probe &operator=(const once_probe &) = delete;
    once_probe &operator=(once_probe &&) = delete;
    ~once_probe()
    {
        if (slot >= 0)
            probe_destroyed[slot]++;
    }
};

std::string probe_state(int slot)
{
    return "destroyed " + std::to_string(probe_destroyed[slot]) + " called " +
           std::to_string(probe_called[slot]) + "\n";
}

// Each timer callable (move-only, holding a once_probe) destroyed exactly
// once: after it fired (not during its call), at cancel_timer (never
// called), after a reset and its one run; cancel and reset of a timer no
// longer pending (its own id inside its call, a fired one); a timer
// cancelling another due at the same moment; set_timer refused (empty
// callable, after close()) destroying the callable at once.
void event_timer_callables()
{
    const int base = tracker::live;
    std::atomic<std::uint64_t> reset_id{0};
    std::atomic<int> closed_status{0};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1).on_data([&](ss::conn &c, std::string_view data) {
        return each_line(data, [&](std::string_view line) {
            if (line == "fire\n") {
                std::uint64_t id = c.set_timer(10, [p = once_probe(0)](ss::conn &k, std::uint64_t) {
                    probe_called[0]++;
                    // Alive during its own call.
                    k.write("fired " + probe_state(0));
                });
                CHECK(id != 0);
                c.write("set\n");
            } else if (line == "cancel\n") {
                std::uint64_t id = c.set_timer(60000, [p = once_probe(1)](ss::conn &) {
                    probe_called[1]++;
                });
                const bool first = c.cancel_timer(id);
                const int at_once = probe_destroyed[1];
                const bool again = c.cancel_timer(id);
                c.write("cancel " + std::to_string(first) + " " + std::to_string(at_once) + " " +
                        std::to_string(again) + "\n");
            } else if (line == "reset\n") {
                reset_id = c.set_timer(60000, [p = once_probe(2), t = tracker()](ss::conn &k) {
                    probe_called[2]++;
                    k.write("reset fired\n");
                });
                c.reset_timer(reset_id, 10); // the same callable, sooner
                c.write("reset " + probe_state(2));
            } else if (line == "reset again\n") {
                int status = 0;
                try {
                    c.reset_timer(reset_id, 10); // it has run
                } catch (const ss::error &e) {
                    status = e.status();
                }
                c.write("again " + std::to_string(status) + " " +
                        std::to_string(c.cancel_timer(reset_id)) + "\n");
            } else if (line == "self\n") {
                c.set_timer(0, [p = once_probe(3)](ss::conn &k, std::uint64_t self) {
                    probe_called[3]++;
                    // No longer pending inside its own call.
                    const bool cancelled = k.cancel_timer(self);
                    int status = 0;
                    try {
                        k.reset_timer(self, 10);
                    } catch (const ss::error &e) {
                        status = e.status();
                    }
                    // Setting another from inside works.
                    k.set_timer(0, [p2 = once_probe(4)](ss::conn &k2) {
                        probe_called[4]++;
                        k2.write("second " + probe_state(3));
                    });
                    k.write("self " + std::to_string(cancelled) + " " + std::to_string(status) + "\n");
                });
            } else if (line == "other\n") {
                // Due at the same moment, run in the order set: the first
                // cancels the second, which never runs.
                auto victim = std::make_shared<std::uint64_t>(0);
                c.set_timer(20, [p = once_probe(5), victim](ss::conn &k) {
                    probe_called[5]++;
                    const bool cancelled = k.cancel_timer(*victim);
                    k.write("other " + std::to_string(cancelled) + " " + probe_state(6));
                });
                *victim = c.set_timer(20, [p = once_probe(6)](ss::conn &) {
                    probe_called[6]++;
                    TU_FAIL("a cancelled timer ran");
                });
            } else if (line == "bad\n") {
                int statuses[2] = {0, 0};
                try {
                    c.set_timer(10, nullptr);
                } catch (const ss::error &e) {
                    statuses[0] = e.status();
                }
                try {
                    c.set_timer(10, std::function<void(ss::conn &)>());
                } catch (const ss::error &e) {
                    statuses[1] = e.status();
                }
                c.write("bad " + std::to_string(statuses[0]) + " " + std::to_string(statuses[1]) +
                        "\n");
            } else if (line == "close\n") {
                c.write("closing\n");
                c.close();
                try {
                    c.set_timer(0, [p = once_probe(7)](ss::conn &) { probe_called[7]++; });
                } catch (const ss::error &e) {
                    closed_status = e.status();
                }
                // Refused: destroyed before set_timer returned.
                CHECK_EQ(probe_destroyed[7], 1);
                return false;
            } else if (line.substr(0, 6) == "count ") {
                c.write(probe_state(std::stoi(std::string(line.substr(6)))));
            }
            return true;
        });
    });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int fd = connect_to(server);

    tu_send_str(fd, "fire\n");
    tu_expect_line(fd, "set\n");
    tu_expect_line(fd, "fired destroyed 0 called 1\n");
    tu_send_str(fd, "count 0\n"); // after the timer's call returned
    tu_expect_line(fd, "destroyed 1 called 1\n");

    tu_send_str(fd, "cancel\n");
    tu_expect_line(fd, "cancel 1 1 0\n");

    tu_send_str(fd, "reset\n");
    tu_expect_line(fd, "reset destroyed 0 called 0\n");
    tu_expect_line(fd, "reset fired\n");
    tu_send_str(fd, "reset again\n");
    tu_expect_line(fd, ("again " + std::to_string(SS_ERR_INVALID_ARGUMENT) + " 0\n").c_str());
    tu_send_str(fd, "count 2\n");
    tu_expect_line(fd, "destroyed 1 called 1\n");

    tu_send_str(fd, "self\n");
    tu_expect_line(fd, ("self 0 " + std::to_string(SS_ERR_INVALID_ARGUMENT) + "\n").c_str());
    tu_expect_line(fd, "second destroyed 1 called 1\n");
    tu_send_str(fd, "count 4\n");
    tu_expect_line(fd, "destroyed 1 called 1\n");

    tu_send_str(fd, "other\n");
    tu_expect_line(fd, "other 1 destroyed 1 called 0\n");
    tu_send_str(fd, "count 5\n");
    tu_expect_line(fd, "destroyed 1 called 1\n");

    tu_send_str(fd, "bad\n");
    tu_expect_line(fd, ("bad " + std::to_string(SS_ERR_NULL_POINTER) + " " +
                        std::to_string(SS_ERR_NULL_POINTER) + "\n")
                           .c_str());

    tu_send_str(fd, "close\n");
    tu_expect_line(fd, "closing\n");
    tu_expect_eof(fd, 5000);
    close(fd);
    CHECK_EQ(closed_status, SS_ERR_CLOSED);
    s.stop();
    const int called[] = {1, 0, 1, 1, 1, 1, 0, 0};
    for (int slot = 0; slot < 8; slot++) {
        CHECK_EQ(probe_destroyed[slot], 1);
        CHECK_EQ(probe_called[slot], called[slot]);
    }
    CHECK_EQ(tracker::live, base);
}

// Timers still pending when their connection closes (the client leaves,
// close() in on_data, the server stops): each callable destroyed exactly
// once, at that close, never called; on_close sees them alive.
void event_timer_close()
{
    const int base = tracker::live;
    std::atomic<int> closes{0};
    std::atomic<int> live_in_on_close{-1};
    std::atomic<int> next_slot{0};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(2)
        .on_data([&](ss::conn &c, std::string_view data) {
            return each_line(data, [&](std::string_view line) {
                // Two pending timers each: a move-only one and a copyable one.
                const int slot = next_slot++;
                c.set_timer(60000, [p = once_probe(slot)](ss::conn &) { probe_called[p.slot]++; });
                c.set_timer(UINT64_MAX, [t = tracker()](ss::conn &) { TU_FAIL("ran"); });
                if (line == "close\n") {
                    c.close();
                    return false;
                }
                c.write("pending\n");
                return true;
            });
        })
        .on_close([&](ss::conn &) {
            if (closes++ == 0)
                live_in_on_close = tracker::live - base;
        });
    {
        ss::server server(config, "127.0.0.1:0");
        serving s(server);
        // The client leaves.
        int leaving = connect_to(server);
        tu_send_str(leaving, "stay\n");
        tu_expect_line(leaving, "pending\n");
        CHECK_EQ(tracker::live, base + 1);
        CHECK_EQ(probe_destroyed[0], 0);
        close(leaving);
        WAIT_FOR(closes == 1, 5000);
        WAIT_FOR(probe_destroyed[0] == 1, 5000);
        CHECK_EQ(live_in_on_close, 1); // destroyed after on_close
        CHECK_EQ(tracker::live, base);
        // close() from on_data.
        int closing = connect_to(server);
        tu_send_str(closing, "close\n");
        tu_expect_eof(closing, 5000);
        close(closing);
        WAIT_FOR(probe_destroyed[1] == 1, 5000);
        WAIT_FOR(tracker::live == base, 5000);
        // The server stops with connections (on both loops) holding timers.
        std::vector<int> clients;
        for (int i = 0; i < 4; i++) {
            clients.push_back(connect_to(server));
            tu_send_str(clients.back(), "stay\n");
            tu_expect_line(clients.back(), "pending\n");
        }
        CHECK_EQ(tracker::live, base + 4);
        s.stop();
        CHECK_EQ(tracker::live, base);
        for (int fd : clients)
            close(fd);
    }
    for (int slot = 0; slot < 6; slot++) {
        CHECK_EQ(probe_destroyed[slot], 1);
        CHECK_EQ(probe_called[slot], 0);
    }
    CHECK_EQ(closes, 6);
}

// Counts every destruction of a callable holding it (move-only; moved-from
// ones do not count).
std::atomic<long> many_destroyed{0};
struct counted_once {
    bool owner = true;
    counted_once() = default;
    counted_once(counted_once &&other) noexcept : owner(std::exchange(other.owner, false)) {}
    counted_once(const counted_once &) = delete;
    counted_once &operator=(const counted_once &) = delete;
    counted_once &operator=(counted_once &&) = delete;
    ~counted_once()
    {
        if (owner)
            many_destroyed++;
    }
};

// 8 connections on two loops, each setting 2000 timers (delays 0-49 ms)
// and cancelling every other one at once, then leaving 100 pending for its
// close: the registry is shared by the loops; every callable is destroyed
// exactly once, the fired half called once each.
void event_timer_many()
{
    constexpr int per_conn = 2000, pending = 100, conns = 8;
    std::atomic<long> fired{0};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(2).on_data([&](ss::conn &c, std::string_view data) {
        return each_line(data, [&](std::string_view) {
            auto left = std::make_shared<int>(per_conn / 2); // this loop's only
            for (int i = 0; i < per_conn; i++) {
                std::uint64_t id = c.set_timer(static_cast<std::uint64_t>(i % 50),
                                               [p = counted_once(), left, &fired](ss::conn &k) {
                                                   fired++;
                                                   if (--*left == 0)
                                                       k.write("done\n");
                                               });
                if (i % 2 == 1)
                    CHECK(c.cancel_timer(id));
            }
            for (int i = 0; i < pending; i++)
                c.set_timer(UINT64_MAX, [p = counted_once()](ss::conn &) { TU_FAIL("ran"); });
            return true;
        });
    });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    const double start = tu_now_ms();
    std::vector<int> clients;
    for (int i = 0; i < conns; i++)
        clients.push_back(connect_to(server));
    for (int fd : clients)
        tu_send_str(fd, "go\n");
    for (int fd : clients)
        tu_expect_line(fd, "done\n");
    const double elapsed = tu_now_ms() - start;
    CHECK_EQ(fired, conns * per_conn / 2);
    // Fired and cancelled ones are gone; the pending ones wait for the close.
    WAIT_FOR(many_destroyed == conns * per_conn, 5000);
    for (int fd : clients)
        close(fd);
    WAIT_FOR(many_destroyed == conns * (per_conn + pending), 5000);
    s.stop();
    CHECK_EQ(many_destroyed, conns * (per_conn + pending));
    CHECK_EQ(fired, conns * per_conn / 2);
    fprintf(stderr, "event_timer_many: %d timers set (half cancelled) and fired in %.1f ms\n",
            conns * (per_conn + pending), elapsed);
}

// A timer callable that throws: handle_error gets its what(), naming the
// connection (error_conn() too); that connection closes, another goes on;
// the callable is destroyed once.
void event_timer_throws()
{
    conn_reports seen;
    std::atomic<std::uint64_t> failing{0};
    std::atomic<int> closed{0};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1)
        .on_data([&](ss::conn &c, std::string_view data) {
            return each_line(data, [&](std::string_view line) {
                if (line == "arm\n") {
                    failing = c.id();
                    c.set_timer(5, [p = once_probe(0)](ss::conn &) {
                        probe_called[0]++;
                        throw std::runtime_error("timer broke");
                    });
                    c.write("armed\n");
                } else {
                    c.write(line);
                }
                return true;
            });
        })
        .on_close([&closed](ss::conn &) { closed++; })
        .handle_error([&seen](ss::request &r, ss_status, std::string_view m) { seen.add(r, m); });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int good = connect_to(server);
    tu_send_str(good, "one\n");
    tu_expect_line(good, "one\n");
    int bad = connect_to(server);
    tu_send_str(bad, "arm\n");
    tu_expect_line(bad, "armed\n");
    tu_expect_eof(bad, 5000);
    close(bad);
    WAIT_FOR(seen.count() == 1, 5000);
    auto [message, id] = seen.at(0);
    CHECK_CONTAINS(message.c_str(), ("connection " + std::to_string(failing) + " from 127.0.0.1:").c_str());
    CHECK_CONTAINS(message.c_str(), "timer threw: timer broke");
    CHECK_EQ(id, failing.load());
    WAIT_FOR(closed == 1, 5000);
    CHECK_EQ(probe_called[0], 1);
    CHECK_EQ(probe_destroyed[0], 1);
    tu_send_str(good, "two\n");
    tu_expect_line(good, "two\n");
    close(good);
    s.stop();
    CHECK_EQ(seen.count(), 1);
}

// config::add_loop_timer: every loop calls the server's own copy with its
// index; one that throws is reported and goes on; refused ones keep no
// callable; the copies are destroyed with the server and the config.
void event_loop_timer()
{
    reports seen;
    const int base = tracker::live;
    std::atomic<int> ticks[2] = {{0}, {0}};
    std::atomic<int> throws{0};
    std::atomic<bool> bad_index{false};
    {
        ss::config config(ss::transport::tcp, ss::concurrency::event);
        config.threads(2)
            .on_data([](ss::conn &c, std::string_view data) {
                c.write(data);
                return data.size();
            })
            .handle_error([&seen](ss::request &r, ss_status st, std::string_view m) { seen.add(r, st, m); })
            .add_loop_timer(5,
                            [t = tracker(), &ticks, &bad_index](ss::server_ref &s, std::size_t loop) {
                                if (!s || loop > 1)
                                    bad_index = true;
                                else
                                    ticks[loop]++;
                                s.connections(); // the server, usable here
                            })
            .add_loop_timer(5, [&throws](ss::server_ref &) {
                if (throws++ == 0)
                    throw std::runtime_error("tick broke");
            });
        const int in_config = tracker::live;
        CHECK_EQ(in_config, base + 1);
        // Refused: nothing kept.
        int statuses[3] = {0, 0, 0};
        ss::config blocking(ss::transport::tcp, ss::concurrency::threading);
        try {
            blocking.add_loop_timer(5, [t = tracker()](ss::server_ref &) {});
        } catch (const ss::error &e) {
            statuses[0] = e.status();
        }
        try {
            config.add_loop_timer(0, [t = tracker()](ss::server_ref &) {});
        } catch (const ss::error &e) {
            statuses[1] = e.status();
        }
        try {
            config.add_loop_timer(5, nullptr);
        } catch (const ss::error &e) {
            statuses[2] = e.status();
        }
        CHECK_EQ(statuses[0], SS_ERR_UNSUPPORTED);
        CHECK_EQ(statuses[1], SS_ERR_INVALID_ARGUMENT);
        CHECK_EQ(statuses[2], SS_ERR_NULL_POINTER);
        CHECK_EQ(tracker::live, in_config);
        {
            ss::server server(config, "127.0.0.1:0");
            CHECK_EQ(tracker::live, in_config + 1); // the server's own copy
            serving s(server);
            WAIT_FOR(ticks[0] >= 3 && ticks[1] >= 3, 5000);
            WAIT_FOR(throws >= 3, 5000); // it goes on after throwing
            WAIT_FOR(seen.count() == 1, 5000);
            CHECK_EQ(seen.at(0).first, SS_ERR_HANDLER);
            CHECK_CONTAINS(seen.at(0).second.c_str(), "loop timer threw: tick broke");
            CHECK(!seen.had_request);
            expect_echo(server, "tick\n");
            s.stop();
            CHECK(!bad_index);
        }
        CHECK_EQ(tracker::live, in_config);
        // A second server from the config gets its own copy again.
        ss::server again(config, "127.0.0.1:0");
        CHECK_EQ(tracker::live, in_config + 1);
    }
    CHECK_EQ(tracker::live, base);
    CHECK_EQ(seen.count(), 1);
}

// ---------------------------------------------------------------- drain

// connect(2) to the server's address fails: the drained listener refuses.
bool refuses(const ss::server &server)
{
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons(server.port());
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_SYS(fd);
    const int rc = connect(fd, reinterpret_cast<sockaddr *>(&sin), sizeof sin);
    const int err = errno;
    close(fd);
    return rc < 0 && err == ECONNREFUSED;
}

// A drain with an idle connection and a busy one (its answer comes from a
// worker thread, posted, the connection marked busy meanwhile), asked for
// from the test's thread or from inside the busy connection's on_data:
// the idle one closes at once while the busy one is held, new connections
// are refused, the busy client gets its whole (large) answer and then the
// end, and serve_forever returns by itself (no cut).
constexpr std::size_t big_answer = 4u << 20; // more than the socket buffers hold

void drain_path(bool from_handler)
{
    std::atomic<bool> received{false}, release{false}, draining_inside{false};
    std::atomic<int> closed{0};
    std::thread worker;
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1)
        .on_data([&](ss::conn &c, std::string_view data) {
            return each_line(data, [&](std::string_view line) {
                if (line != "work\n") {
                    c.write(line);
                    return true;
                }
                c.set_busy(true);
                if (from_handler) {
                    CHECK_OK(c.server().drain(10000));
                    draining_inside = c.server().draining();
                }
                ss::server_ref srv = c.server();
                const std::uint64_t id = c.id();
                worker = std::thread([&release, srv, id] {
                    WAIT_FOR(release, 10000);
                    srv.post(id, [](ss::conn &k) {
                        CHECK(k);
                        k.write(std::string(big_answer, 'a') + "\n");
                        k.set_busy(false);
                    });
                });
                received = true;
                return true;
            });
        })
        .on_close([&closed](ss::conn &) { closed++; });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int idle = connect_to(server);
    tu_send_str(idle, "hi\n");
    tu_expect_line(idle, "hi\n");
    int busy = connect_to(server);
    tu_send_str(busy, "work\n");
    WAIT_FOR(received, 5000);
    if (from_handler) {
        CHECK(draining_inside);
    } else {
        CHECK(!server.draining());
        CHECK_OK(server.drain(10000));
    }
    CHECK(server.draining());
    // The idle one goes at once; the busy one is held.
    tu_expect_eof(idle, 5000);
    close(idle);
    WAIT_FOR(closed == 1, 5000);
    WAIT_FOR(server.connections() == 1, 5000); // counted until on_close returned
    // The serving loop shuts the listener down once it sees the drain.
    WAIT_FOR(refuses(server), 5000);
    release = true;
    std::string got = read_through_line(busy);
    CHECK_EQ(got.size(), big_answer + 1);
    CHECK_EQ(got.find_first_not_of('a'), big_answer);
    tu_expect_eof(busy, 5000);
    close(busy);
    s.thread.join(); // returns by itself
    CHECK_OK(s.result);
    worker.join();
    CHECK_EQ(closed, 2);
    CHECK_EQ(server.drain_cut(), 0u);
    // Drained: it does not serve again.
    ss_status again = SS_OK;
    try {
        server.serve_forever();
    } catch (const ss::error &e) {
        again = e.status();
    }
    CHECK_EQ(again, SS_ERR_WRONG_STATE);
}

void event_drain_from_thread() { drain_path(false); }
void event_drain_from_handler() { drain_path(true); }

// SS_THREADING: drain() from the test's thread with an idle keep-alive
// connection (its handler blocked reading: it gets the end at once) and a
// busy one (its handler still working: waited for, its whole answer sent;
// it sees draining() and returns); serve_forever returns by itself.
void threading_drain()
{
    std::atomic<bool> slow_started{false}, release{false}, saw_draining{false};
    ss::config config(ss::transport::tcp, ss::concurrency::threading);
    config.poll_interval(10).handle([&](ss::request &r) {
        for (;;) {
            std::string line = r.readline();
            if (line.empty())
                return;
            if (line == "slow\n") {
                slow_started = true;
                WAIT_FOR(release, 10000);
                r.write(std::string(big_answer, 'b') + "\n");
            } else {
                r.write(line);
            }
            if (r.server().draining()) {
                saw_draining = true;
                return;
            }
        }
    });
    ss::server server(config, "127.0.0.1:0");
    serving s(server);
    int idle = connect_to(server);
    tu_send_str(idle, "hi\n");
    tu_expect_line(idle, "hi\n");
    int busy = connect_to(server);
    tu_send_str(busy, "slow\n");
    WAIT_FOR(slow_started, 5000);
    CHECK_OK(server.drain(10000));
    tu_expect_eof(idle, 5000);
    close(idle);
    // The serving loop shuts the listener down once it sees the drain.
    WAIT_FOR(refuses(server), 5000);
    release = true;
    std::string got = read_through_line(busy);
    CHECK_EQ(got.size(), big_answer + 1);
    tu_expect_eof(busy, 5000);
    close(busy);
    s.thread.join();
    CHECK_OK(s.result);
    CHECK(saw_draining);
    CHECK_EQ(server.drain_cut(), 0u);
}

// The deadline cuts a connection kept busy: serve_forever throws
// SS_ERR_TIMEOUT, drain_cut() counts it; a negative deadline is refused
// (a status, not an exception: drain() is async-signal-safe).
void event_drain_deadline_cut()
{
    std::atomic<bool> busy_set{false};
    ss::config config(ss::transport::tcp, ss::concurrency::event);
    config.threads(1).on_data([&](ss::conn &c, std::string_view data) {
        c.set_busy(true); // never cleared
        busy_set = true;
        return data.size();
    });
    ss::server server(config, "127.0.0.1:0");
    CHECK_EQ(server.drain(-1), SS_ERR_INVALID_ARGUMENT);
    CHECK(!server.draining());
    serving s(server);
    int fd = connect_to(server);
    tu_send_str(fd, "x\n");
    WAIT_FOR(busy_set, 5000);
    const double start = tu_now_ms();
    CHECK_OK(server.drain(100));
    s.thread.join();
    CHECK_EQ(s.result, SS_ERR_TIMEOUT);
    CHECK(tu_now_ms() - start >= 90);
    CHECK_EQ(server.drain_cut(), 1u);
    tu_expect_eof(fd, 5000);
    close(fd);
}

// ------------------------------------------------------ adopted sockets

int bound_socket(int type, bool listening)
{
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    CHECK_SYS(fd);
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_SYS(bind(fd, reinterpret_cast<sockaddr *>(&sin), sizeof sin));
    if (listening)
        CHECK_SYS(listen(fd, 16));
    return fd;
}

bool is_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

// server::from_fd: adopts a bound socket (and owns it on success only);
// listen_fds(): the systemd protocol, as a vector.
void server_from_fd_and_listen_fds()
{
    ss::config config = line_echo_config(ss::concurrency::threading);
    {
        int fd = bound_socket(SOCK_STREAM, false); // the server listens itself
        ss::server server = ss::server::from_fd(config, fd);
        CHECK_EQ(server.fileno(), fd);
        serving s(server);
        expect_echo(server, "adopted\n");
        s.stop();
    }
    // A datagram socket for a TCP config: refused, still the caller's, and
    // the server's copy of the callables is gone.
    tracker t;
    config.verify_request([t](ss::request &) { return true; });
    const int before = tracker::live;
    int udp = bound_socket(SOCK_DGRAM, false);
    bool thrown = false;
    try {
        ss::server::from_fd(config, udp);
    } catch (const ss::error &e) {
        thrown = true;
        CHECK_EQ(e.status(), SS_ERR_INVALID_ARGUMENT);
        CHECK(!e.detail().empty());
    }
    CHECK(thrown);
    CHECK(is_open(udp));
    CHECK_EQ(tracker::live, before);
    close(udp);

    // Nothing passed.
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    CHECK(ss::listen_fds().empty());
    // One socket passed as descriptor 3, named.
    if (is_open(3))
        TU_FAIL("descriptor 3 is taken: cannot pass a socket there");
    int listener = bound_socket(SOCK_STREAM, true);
    if (listener != 3) {
        CHECK_SYS(dup2(listener, 3));
        close(listener);
    }
    CHECK_SYS(setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1));
    CHECK_SYS(setenv("LISTEN_FDS", "1", 1));
    CHECK_SYS(setenv("LISTEN_FDNAMES", "web", 1));
    std::vector<ss::listen_fd> fds = ss::listen_fds();
    CHECK_EQ(fds.size(), 1u);
    CHECK_EQ(fds[0].fd, 3);
    CHECK_STREQ(fds[0].name.c_str(), "web");
    CHECK(getenv("LISTEN_FDS") == nullptr);
    CHECK((fcntl(3, F_GETFD) & FD_CLOEXEC) != 0);
    CHECK(ss::listen_fds().empty()); // taken once
    {
        ss::server server = ss::server::from_fd(config, fds[0].fd);
        serving s(server);
        expect_echo(server, "activated\n");
        s.stop();
    }
    CHECK(!is_open(3)); // the server closed it
    // Malformed variables.
    CHECK_SYS(setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1));
    CHECK_SYS(setenv("LISTEN_FDS", "many", 1));
    thrown = false;
    try {
        ss::listen_fds();
    } catch (const ss::error &e) {
        thrown = true;
        CHECK_EQ(e.status(), SS_ERR_INVALID_ARGUMENT);
    }
    CHECK(thrown);
}

// ---------------------------------------------------------------- errors

void error_carries_status_and_message()
{
    ss::config config = line_echo_config(ss::concurrency::sync);
    bool thrown = false;
    try {
        ss::server server(config, "256.1.2.3:x");
    } catch (const ss::error &e) {
        thrown = true;
        CHECK_EQ(e.status(), SS_ERR_ADDRESS);
        CHECK(!e.detail().empty());
        CHECK_CONTAINS(e.what(), "SS_ERR_ADDRESS");
        CHECK_CONTAINS(e.what(), e.detail().c_str());
        CHECK_EQ(e.os_error(), 0);
        const std::runtime_error &base = e; // derives std::runtime_error
        CHECK_STREQ(base.what(), e.what());
    }
    CHECK(thrown);

    ss::server taken(config, "127.0.0.1:0");
    thrown = false;
    try {
        ss::server twice(config, taken.address());
    } catch (const ss::error &e) {
        thrown = true;
        CHECK_EQ(e.status(), SS_ERR_IO);
        CHECK_EQ(e.os_error(), EADDRINUSE);
        CHECK_CONTAINS(e.what(), "(os error 98)");
    }
    CHECK(thrown);

    // An option of another mode.
    thrown = false;
    try {
        config.idle_timeout(100);
    } catch (const ss::error &e) {
        thrown = true;
        CHECK_EQ(e.status(), SS_ERR_UNSUPPORTED);
    }
    CHECK(thrown);
}

// ---------------------------------------------------------------- log

void log_callback_replaced_and_restored()
{
    tracker t;
    const int before = tracker::live;
    std::atomic<int> first_lines{0};
    ss::set_log_callback([t, &first_lines](ss_log_level, std::string_view) { first_lines++; });
    CHECK_EQ(tracker::live, before + 1);
    ss::set_log_callback([](ss_log_level, std::string_view) {});
    // The previous callable is destroyed once the library no longer calls it.
    CHECK_EQ(tracker::live, before);
    ss::set_log_callback(nullptr);

    // Back on stderr: the default handle_error's line goes there.
    tu_capture capture;
    tu_capture_stderr(&capture);
    {
        ss::config config(ss::transport::tcp, ss::concurrency::sync);
        config.poll_interval(10).handle([](ss::request &) { throw std::runtime_error("to stderr"); });
        ss::server server(config, "127.0.0.1:0");
        serving s(server);
        int fd = connect_to(server);
        tu_expect_eof(fd, 5000);
        close(fd);
        s.stop();
    }
    char text[4096];
    tu_end_capture(&capture, text, sizeof text);
    CHECK_CONTAINS(text, "handle threw: to stderr");
    CHECK_EQ(first_lines, 0);

    // From inside the log callback: refused, not a deadlock.
    std::atomic<int> refused{0};
    ss::set_log_callback([&refused](ss_log_level, std::string_view) {
        try {
            ss::set_log_callback(nullptr);
        } catch (const ss::error &e) {
            if (e.status() == SS_ERR_WRONG_STATE)
                refused++;
        }
    });
    {
        ss::config config(ss::transport::tcp, ss::concurrency::sync);
        config.poll_interval(10).handle([](ss::request &) { throw 1; });
        ss::server server(config, "127.0.0.1:0");
        serving s(server);
        int fd = connect_to(server);
        tu_expect_eof(fd, 5000);
        close(fd);
        WAIT_FOR(refused == 1, 5000);
        s.stop();
    }
    ss::set_log_callback(nullptr);
}

void version_matches()
{
    CHECK_STREQ(ss::version(), SS_VERSION_STRING);
    CHECK_EQ(ss::version_number(), SS_VERSION_NUMBER);
    static_assert(SS_VERSION_NUMBER ==
                      SS_VERSION_OF(SS_VERSION_MAJOR, SS_VERSION_MINOR, SS_VERSION_PATCH),
                  "the number follows the parts");
}

TU_SETTLED(raii_callables_freed_once)
TU_SETTLED(exception_std_threading)
TU_SETTLED(exception_non_std_pool)
TU_SETTLED(hand_off_thread)
TU_SETTLED(server_from_fd_and_listen_fds)
TU_SETTLED(threading_drain)

const tu_test tests[] = {
    {"raii_callables_freed_once", raii_callables_freed_once_settled},
    {"raii_failed_new_frees_callables", raii_failed_new_frees_callables},
    {"move_semantics", move_semantics},
    {"exception_std_sync", exception_std_sync},
    {"exception_non_std_sync", exception_non_std_sync},
    {"exception_std_threading", exception_std_threading_settled},
    {"exception_non_std_pool", exception_non_std_pool_settled},
    {"exception_std_forking", exception_std_forking},
    {"exception_ss_error_keeps_status", exception_ss_error_keeps_status},
    {"exception_default_handle_error", exception_default_handle_error},
    {"exception_setup_finish", exception_setup_finish},
    {"event_on_data_throws", event_on_data_throws},
    {"void_callbacks_throw", void_callbacks_throw},
    {"event_on_eof_and_close_throw", event_on_eof_and_close_throw},
    {"event_post", event_post},
    {"hand_off_thread", hand_off_thread_settled},
    {"event_pause_resume_reading", event_pause_resume_reading},
    {"event_on_drain_low_water", event_on_drain_low_water},
    {"event_on_drain_throws", event_on_drain_throws},
    {"event_shutdown_write_and_abort", event_shutdown_write_and_abort},
    {"event_writev", event_writev},
    {"event_conn_server_and_addresses", event_conn_server_and_addresses},
    {"request_client_sockaddr", request_client_sockaddr},
    {"event_watch_fd_callables", event_watch_fd_callables},
    {"event_watch_many_loops", event_watch_many_loops},
    {"event_watch_throws", event_watch_throws},
    {"event_timer_callables", event_timer_callables},
    {"event_timer_close", event_timer_close},
    {"event_timer_many", event_timer_many},
    {"event_timer_throws", event_timer_throws},
    {"event_loop_timer", event_loop_timer},
    {"event_drain_from_thread", event_drain_from_thread},
    {"event_drain_from_handler", event_drain_from_handler},
    {"event_drain_deadline_cut", event_drain_deadline_cut},
    {"threading_drain", threading_drain_settled},
    {"server_from_fd_and_listen_fds", server_from_fd_and_listen_fds_settled},
    {"error_carries_status_and_message", error_carries_status_and_message},
    {"log_callback_replaced_and_restored", log_callback_replaced_and_restored},
    {"version_matches", version_matches},
};

} // namespace

int main(int argc, char **argv)
{
    return tu_main(argc, argv, tests, sizeof tests / sizeof tests[0]);
}
