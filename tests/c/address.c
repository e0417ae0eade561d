/*
 * address: port 0 resolution, ss_server_address's buffer rules,
 * ss_server_port, Unix path and abstract addresses, and the state checks
 * before bind.
 */
#include "testutil.h"

static int never_called(ss_request *request, void *user)
{
    (void)request;
    (void)user;
    TU_FAIL("handle must not run in this test");
    return -1;
}

static ss_server *new_server(int transport, const char *address)
{
    ss_config *config = tu_config(transport, never_called);
    ss_server *server = tu_server(config, address, NULL);
    ss_config_free(config);
    return server;
}

/* The bound port from getsockname() on the server's own descriptor. */
static unsigned kernel_port(ss_server *server)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    CHECK_SYS(getsockname(ss_server_fileno(server), (struct sockaddr *)&ss, &len));
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    CHECK(ss.ss_family == AF_INET6);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void check_port0(int transport, const char *address, const char *prefix)
{
    char buf[128];
    char expect[128];
    size_t len = 0;
    uint16_t port = 0;
    ss_server *server = new_server(transport, address);

    CHECK_OK(ss_server_address(server, buf, sizeof buf, &len));
    CHECK_EQ(len, strlen(buf));
    CHECK_OK(ss_server_port(server, &port));
    CHECK(port != 0);
    CHECK_EQ(port, kernel_port(server));
    snprintf(expect, sizeof expect, "%s%u", prefix, (unsigned)port);
    CHECK_STREQ(buf, expect);
    /* The address the kernel reports, formatted the same way. */
    tu_sockname(ss_server_fileno(server), expect, sizeof expect);
    CHECK_STREQ(buf, expect);
    ss_server_free(server);
}

static void port0_ipv4(void)
{
    check_port0(SS_TCP, "127.0.0.1:0", "127.0.0.1:");
    check_port0(SS_UDP, "127.0.0.1:0", "127.0.0.1:");
}

static void port0_ipv6(void)
{
    check_port0(SS_TCP, "[::1]:0", "[::1]:");
    check_port0(SS_UDP, "[::1]:0", "[::1]:");
}

/* "localhost:0" resolves (to a loopback address) and binds. */
static void localhost(void)
{
    char buf[128];
    uint16_t port = 0;
    ss_server *server = new_server(SS_TCP, "localhost:0");
    tu_server_addr(server, buf, sizeof buf);
    CHECK(strncmp(buf, "127.", 4) == 0 || strncmp(buf, "[::1]:", 6) == 0);
    CHECK_OK(ss_server_port(server, &port));
    CHECK(port != 0);
    ss_server_free(server);
}

static void buffer_rules(void)
{
    char full[128];
    char buf[128];
    size_t len = 0;
    size_t need;
    ss_server *server = new_server(SS_TCP, "127.0.0.1:0");

    tu_server_addr(server, full, sizeof full);
    need = strlen(full);
    CHECK(need >= strlen("127.0.0.1:1"));

    /* NULL, 0: the way to ask for the length. */
    CHECK_ST(ss_server_address(server, NULL, 0, &len), SS_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, need);
    CHECK(ss_last_error_message()[0] != '\0');
    CHECK_ST(ss_server_address(server, NULL, 0, NULL), SS_ERR_BUFFER_TOO_SMALL);

    /* Room for the text but not the NUL: too small, nothing copied. */
    memset(buf, 'x', sizeof buf);
    len = 0;
    CHECK_ST(ss_server_address(server, buf, need, &len), SS_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, need);
    CHECK_EQ(buf[0], 'x');
    CHECK_EQ(buf[need - 1], 'x');

    /* A small buffer: nothing copied, the needed length reported. */
    len = 0;
    CHECK_ST(ss_server_address(server, buf, 4, &len), SS_ERR_BUFFER_TOO_SMALL);
    CHECK_EQ(len, need);
    CHECK_EQ(buf[0], 'x');

    /* Exactly enough. */
    len = 0;
    CHECK_OK(ss_server_address(server, buf, need + 1, &len));
    CHECK_EQ(len, need);
    CHECK_STREQ(buf, full);
    CHECK_STREQ(ss_last_error_message(), "");

    /* out_len is optional. */
    memset(buf, 'x', sizeof buf);
    CHECK_OK(ss_server_address(server, buf, sizeof buf, NULL));
    CHECK_STREQ(buf, full);

    /* A NULL buffer with a non-zero size. */
    CHECK_ST(ss_server_address(server, NULL, 10, &len), SS_ERR_NULL_POINTER);
    ss_server_free(server);
}

static void check_unix(int transport, const char *address)
{
    char buf[256];
    size_t len = 0;
    uint16_t port = 1234;
    ss_server *server = new_server(transport, address);

    CHECK_OK(ss_server_address(server, buf, sizeof buf, &len));
    CHECK_STREQ(buf, address);
    CHECK_EQ(len, strlen(address));
    CHECK_ST(ss_server_port(server, &port), SS_ERR_UNSUPPORTED);
    CHECK_EQ(port, 1234);
    CHECK(ss_last_error_message()[0] != '\0');
    /* The kernel agrees. */
    tu_sockname(ss_server_fileno(server), buf, sizeof buf);
    CHECK_STREQ(buf, address);
    ss_server_free(server);
    if (address[0] == '/')
        CHECK(!tu_path_exists(address));
}

static void unix_path(void)
{
    char path[200];
    tu_path(path, sizeof path, "a.sock");
    check_unix(SS_UNIX_STREAM, path);
    tu_path(path, sizeof path, "d.sock");
    check_unix(SS_UNIX_DATAGRAM, path);
}

static void unix_abstract(void)
{
    char name[200];
    tu_abstract(name, sizeof name, "addr-stream");
    check_unix(SS_UNIX_STREAM, name);
    tu_abstract(name, sizeof name, "addr-dgram");
    check_unix(SS_UNIX_DATAGRAM, name);
}

/* With bind_and_activate off there is no address or port before bind. */
static void before_bind(void)
{
    char buf[128];
    size_t len = 777;
    uint16_t port = 4321;
    ss_server *server;
    ss_config *config = tu_config(SS_TCP, never_called);
    CHECK_OK(ss_config_set_bind_and_activate(config, false));
    server = tu_server(config, "127.0.0.1:0", NULL);
    ss_config_free(config);

    memset(buf, 'x', sizeof buf);
    CHECK_ST(ss_server_address(server, buf, sizeof buf, &len), SS_ERR_WRONG_STATE);
    CHECK_EQ(buf[0], 'x');
    CHECK_ST(ss_server_port(server, &port), SS_ERR_WRONG_STATE);
    CHECK_EQ(port, 4321);
    CHECK_OK(ss_server_bind(server));
    CHECK_OK(ss_server_port(server, &port));
    CHECK(port != 0);
    CHECK_OK(ss_server_address(server, buf, sizeof buf, &len));
    CHECK(strncmp(buf, "127.0.0.1:", 10) == 0);
    ss_server_free(server);
}

static const tu_test tests[] = {
    {"port0_ipv4", port0_ipv4},
    {"port0_ipv6", port0_ipv6},
    {"localhost", localhost},
    {"buffer_rules", buffer_rules},
    {"unix_path", unix_path},
    {"unix_abstract", unix_abstract},
    {"before_bind", before_bind},
};

TU_MAIN(tests)
