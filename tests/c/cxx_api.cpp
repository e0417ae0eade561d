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
    {"error_carries_status_and_message", error_carries_status_and_message},
    {"log_callback_replaced_and_restored", log_callback_replaced_and_restored},
    {"version_matches", version_matches},
};

} // namespace

int main(int argc, char **argv)
{
    return tu_main(argc, argv, tests, sizeof tests / sizeof tests[0]);
}
