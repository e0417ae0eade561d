/*
 * fork_each.c: sub-tests that pass, fail, hang and misbehave, for the test
 * of testutil.h's --fork-each runner (tests/c_api.rs, fork_each_*). Not one
 * of the suite's programs (it is not in tests/c/ itself): some of these
 * fail on purpose.
 */
#include "testutil.h"

static void passes(void) {}

static void fails(void)
{
    TU_FAIL("failing on purpose");
}

static void hangs(void)
{
    for (;;)
        pause();
}

static void leaks_fd(void)
{
    CHECK_SYS(dup(1));
}

/* Runs in a process of its own: its own process group, stdin from
 * /dev/null, an empty temporary directory of its own. */
static void isolated(void)
{
    char c;
    DIR *d;
    struct dirent *e;
    const char *dir = getenv("SS_TEST_TMPDIR");
    CHECK(dir != NULL);
    CHECK_EQ(getpgrp(), getpid());
    CHECK_EQ(read(0, &c, 1), 0);
    d = opendir(dir);
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL)
        CHECK(strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0);
    closedir(d);
    printf("isolated: ppid %d dir %s\n", (int)getppid(), dir);
}

static const tu_test tests[] = {
    {"passes", passes}, {"fails", fails}, {"hangs", hangs}, {"leaks_fd", leaks_fd},
    {"isolated", isolated},
};

TU_MAIN(tests)
