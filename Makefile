# libsocketserver, for C users.
#
#   make               release library (target/release/libsocketserver.{so,a})
#                      and every program in c_examples/, built into build/
#   make demo          builds, then runs scripts/demo.sh (echo_server over the
#                      four transports and in every mode, driven by
#                      build/echo_client)
#   make test          every test: the C examples must build cleanly, then
#                      scripts/test.sh: `cargo test --release` (Rust tests and
#                      the C tests, which build the library themselves) and a
#                      closing "N passed, N failed" line
#   make check-header  regenerates include/socketserver.h (cargo build) and
#                      fails if it differs from the committed one
#   make clean         removes build/ (`make distclean` also runs cargo clean)
#
#   make valgrind      builds, then runs scripts/valgrind.sh (~3 min): every C
#                      test program and the examples under traffic in valgrind
#                      memcheck (no memory error, 0 bytes definitely lost)
#   make sanitize      builds the library with AddressSanitizer and with
#                      ThreadSanitizer (nightly Rust via rustup) into
#                      target/sanitize/, then runs scripts/sanitize.sh: the C
#                      tests and the examples under traffic with each
#
#   make bench         builds, then runs scripts/bench.sh (~2 min): event mode
#                      vs a plain-C epoll echo server (ratios), KiB per idle
#                      connection, wrk against http_hello,
#                      resp_server vs redis-server under redis-benchmark

CARGO ?= cargo
# The examples must stay clean, portable C99: these flags are always used,
# whatever CFLAGS says (add your own with `make CFLAGS='-O0 -fsanitize=address'`).
STRICT_CFLAGS := -std=c99 -Wall -Wextra -Wpedantic -Werror
CFLAGS ?= -O2 -g
override CFLAGS += $(STRICT_CFLAGS)
CPPFLAGS += -Iinclude

LIBDIR := target/release
LIB_SO := $(LIBDIR)/libsocketserver.so
LIB_A := $(LIBDIR)/libsocketserver.a
# Link against the shared library; the rpath lets the programs find it
# without LD_LIBRARY_PATH.
LDFLAGS += -L$(LIBDIR) -Wl,-rpath,$(abspath $(LIBDIR))
LDLIBS += -lsocketserver -lpthread

EXAMPLES := $(patsubst c_examples/%.c,build/%,$(wildcard c_examples/*.c))

.PHONY: all lib examples demo test bench valgrind sanitize check-header clean distclean

# Cargo decides itself whether the library is up to date; the examples are
# then built by a second make, which sees the library's and the header's
# new timestamps (cargo rewrites the header only when it changes).
all: lib
	@$(MAKE) --no-print-directory examples

lib:
	$(CARGO) build --release

examples: $(EXAMPLES)

# Only when the library is missing (e.g. `make build/line_server` on a fresh
# checkout); `make` always asks cargo.
$(LIB_SO) $(LIB_A):
	$(CARGO) build --release

build:
	mkdir -p build

build/%: c_examples/%.c include/socketserver.h $(LIB_SO) | build
	$(CC) $(CPPFLAGS) $(CFLAGS) $< -o $@ $(LDFLAGS) $(LDLIBS)

# C++ examples (c_examples/*.cpp, over include/socketserver.hpp): C++17,
# as strict as the C ones whatever CXXFLAGS says.
STRICT_CXXFLAGS := -std=c++17 -Wall -Wextra -Wpedantic -Werror
CXXFLAGS ?= -O2 -g
CXX_EXAMPLES := $(patsubst c_examples/%.cpp,build/%,$(wildcard c_examples/*.cpp))
examples: $(CXX_EXAMPLES)
build/%: c_examples/%.cpp include/socketserver.hpp include/socketserver.h $(LIB_SO) | build
	$(CXX) $(CPPFLAGS) $(CXXFLAGS) $(STRICT_CXXFLAGS) $< -o $@ $(LDFLAGS) $(LDLIBS)

# The demo's client is plain POSIX sockets: it does not link the library.
build/echo_client: LDFLAGS :=
build/echo_client: LDLIBS :=

demo: all
	./scripts/demo.sh

bench: all
	./scripts/bench.sh

valgrind: all
	./scripts/valgrind.sh

# Builds its own libraries (nightly, -Zsanitizer) into target/sanitize/.
sanitize: all
	./scripts/sanitize.sh

test: all
	./scripts/test.sh

check-header:
	$(CARGO) build --release
	@if git diff --exit-code -- include/socketserver.h; then \
		echo "include/socketserver.h is current"; \
	else \
		echo "include/socketserver.h is out of date: src/ffi changed it; commit the regenerated header" >&2; \
		exit 1; \
	fi

clean:
	rm -rf build

distclean: clean
	$(CARGO) clean
