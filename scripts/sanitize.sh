#!/usr/bin/env bash
# make sanitize: the library built with AddressSanitizer and with
# ThreadSanitizer, each into its own target directory
# (target/sanitize/{asan,tsan}/), then for each:
#   - every sub-test of every tests/c/*.c program, compiled with the
#     matching -fsanitize (scripts/ctests_under.sh; logs in
#     build/sanitize/{asan,tsan}/logs/);
#   - echo_server, http_hello and resp_server compiled the same way, under the traffic
#     of tests/fuzz_loopback.rs (hostile connections and a checking client).
# A sanitizer report makes the program exit non-zero (ASan at once, TSan at
# exit), which fails the run.
#
# Needs rustup's nightly toolchain with rust-src (-Zsanitizer, and
# -Zbuild-std for TSan, whose standard library must be instrumented too):
#   rustup toolchain install nightly --profile minimal --component rust-src
# and gcc's libasan/libtsan (Debian: libasan8, libtsan2, with gcc).
#
#   scripts/sanitize.sh [address|thread]...   (default: both)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v rustup >/dev/null 2>&1; then
    echo "sanitize: rustup is not installed (it provides the nightly toolchain)" >&2
    exit 1
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1 ||
    ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
    echo "sanitize: the nightly toolchain with rust-src is not installed:" >&2
    echo "  rustup toolchain install nightly --profile minimal --component rust-src" >&2
    exit 1
fi
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
CC=${CC:-cc}
export CC

# Sub-tests that cannot work under a sanitizer, each with the reason.
# - forking_crash_segv: the handler's child crashes on purpose; ASan turns
#   the SIGSEGV into its own report and exit 1 (handle_segv is left on, so
#   that real crashes are reported).
# - slow_reader_reading: measures the resident memory, which ASan's
#   quarantine and shadow memory inflate.
# - hardening_lifecycle.child_getters: forks while another thread keeps
#   allocating; gcc 12's libasan does not lock its allocator around fork,
#   so a child forked while that thread held the allocator's lock hangs in
#   its first malloc (seen in gdb: asan_malloc -> Mutex::Lock, from
#   ss_server_post in the child). glibc's malloc is fork-safe: not a
#   library defect.
# - review_core.spawn_fails and event_spawn_fails (both sanitizers): lower
#   RLIMIT_AS so that a thread stack cannot be mapped; the sanitizers' shadow memory does not
#   fit such a limit.
SKIP_address="acceptance_errors.forking_crash_segv event_load.slow_reader_reading
    hardening_lifecycle.child_getters review_core.spawn_fails review_core.event_spawn_fails"
# TSan, besides the same memory measurement and the same deliberate crash:
# - pool_core/event_core echo_*, close_*, handler_fails and
#   acceptance_misc.threads_reaped: count the
#   process's threads exactly; TSan adds a background thread (the shared
#   end-of-test checks allow it, TU_RUNTIME_THREADS in testutil.h).
SKIP_thread="event_load.slow_reader_reading acceptance_errors.forking_crash_segv
    pool_core.echo_tcp pool_core.echo_unix pool_core.close_drops_queued
    pool_core.close_serves_queued pool_core.handler_fails event_core.echo_tcp
    event_core.echo_udp event_core.echo_unix event_core.echo_unixdgram
    acceptance_misc.threads_reaped review_core.spawn_fails review_core.event_spawn_fails"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:halt_on_error=1:abort_on_error=0}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1}

status=0
for san in "${@:-address thread}"; do
    for s in $san; do
        case $s in
        address)
            short=asan build_std=()
            LINKER=$CC LINK_FLAGS="-fsanitize=address"
            ;;
        thread)
            # gcc's libtsan (gcc 12) lacks the __tsan_memcpy/memset/memmove
            # that rustc's LLVM instrumentation calls: link the runtime that
            # ships with the nightly toolchain instead (gcc's
            # instrumentation calls the same interface).
            short=tsan build_std=(-Zbuild-std)
            rt="$(rustc +nightly --print sysroot)/lib/rustlib/$TRIPLE/lib/librustc-nightly_rt.tsan.a"
            [[ -f $rt ]] || { echo "sanitize: $rt is missing" >&2; exit 1; }
            LINKER=c++ LINK_FLAGS="-Wl,--whole-archive $rt -Wl,--no-whole-archive -ldl -lm -lrt"
            ;;
        *)
            echo "sanitize: unknown sanitizer $s (address or thread)" >&2
            exit 2
            ;;
        esac
        start=$SECONDS
        echo "sanitize: building the library with -Zsanitizer=$s"
        RUSTFLAGS="-Zsanitizer=$s" cargo +nightly build "${build_std[@]}" --lib --release \
            --target "$TRIPLE" --target-dir "target/sanitize/$short"
        lib=target/sanitize/$short/$TRIPLE/release
        out=build/sanitize/$short
        # -Wno-tsan: gcc warns that TSan ignores __atomic_thread_fence (tests
        # use one next to real synchronization).
        cflags="-fsanitize=$s -fno-omit-frame-pointer -O1"
        [[ $s == thread ]] && cflags+=" -Wno-tsan"
        echo "sanitize: library built in $((SECONDS - start)) s"
        skip_var=SKIP_$s
        export LINKER LINK_FLAGS
        SKIP=$(echo ${!skip_var}) scripts/ctests_under.sh "$short" "$lib" "$out" 300 "$cflags" "" \
            $(cd tests/c && ls -- *.c | sed 's/\.c$//') || status=1

        mkdir -p "$out/examples"
        for ex in echo_server http_hello resp_server; do
            # shellcheck disable=SC2086 # cflags is a list of flags
            "$CC" -std=c99 -Wall -Wextra -Wpedantic -Werror -g $cflags -Iinclude \
                -c "c_examples/$ex.c" -o "$out/examples/$ex.o"
            # shellcheck disable=SC2086
            # --disable-new-dtags: an RPATH, which (unlike a RUNPATH) wins over
            # the LD_LIBRARY_PATH that `cargo test` sets to target/release/:
            # the examples must load the sanitized library.
            "${LINKER:-$CC}" -g "$out/examples/$ex.o" -o "$out/examples/$ex" $LINK_FLAGS \
                -L"$lib" -lsocketserver -Wl,--disable-new-dtags,-rpath,"$PWD/$lib" -lpthread
        done
        SS_FUZZ_PROGRAM_DIR=$PWD/$out/examples SS_FUZZ_CONNECTIONS=400 \
            cargo test --release --test fuzz_loopback -- --test-threads=2 || status=1
        echo "sanitize: $s done in $((SECONDS - start)) s"
    done
done
if ((status == 0)); then
    echo "sanitize: clean"
else
    echo "sanitize: FAILED (logs in build/sanitize/)" >&2
fi
exit $status
