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
#   make header        regenerates include/socketserver.h from src/ffi
#                      (tools/gen-header, cbindgen): run it after changing
#                      src/ffi. A plain build uses the committed header and
#                      does not build cbindgen.
#   make check-header  `make header`, then fails if the header differs from
#                      the committed one (CI)
#   make install       installs the library, the headers, pkg-config files
#                      and a CMake package (see "Install" below);
#                      `make uninstall` removes what it installed
#   make docs          the header's API documentation with doxygen, into
#                      build/docs/html/ (fails, naming doxygen, without it)
#   make clean         removes build/ (`make distclean` also runs cargo clean)
#
#   BUILD=debug        (e.g. `make BUILD=debug`) builds the library with
#                      cargo's dev profile (target/debug/) and links the
#                      examples against it; default BUILD=release
#   CARGO_TARGET_DIR   honoured: the library is looked for in
#                      $CARGO_TARGET_DIR/<profile>/ (default target/)
#
#   make valgrind      builds, then runs scripts/valgrind.sh (~3 min): every C
#                      test program and the examples under traffic in valgrind
#                      memcheck (no memory error, 0 bytes definitely lost)
#   make sanitize      builds the library with AddressSanitizer and with
#                      ThreadSanitizer (nightly Rust via rustup) into
#                      target/sanitize/, then runs scripts/sanitize.sh: the C
#                      tests and the examples under traffic with each
#
#   make bench         builds, then runs scripts/bench.sh (~7 min): every mode
#                      beside its hand-written C equivalent (benches/) and
#                      Python's socketserver, http_hello vs nginx, resp_server
#                      vs redis-server; one table of ratios, also written to
#                      benches/results/<date>.md

CARGO ?= cargo
# The examples must stay clean, portable C99: these flags are always used,
# whatever CFLAGS says (add your own with `make CFLAGS='-O0 -fsanitize=address'`).
STRICT_CFLAGS := -std=c99 -Wall -Wextra -Wpedantic -Werror
CFLAGS ?= -O2 -g
override CFLAGS += $(STRICT_CFLAGS)
CPPFLAGS += -Iinclude

BUILD ?= release
ifeq ($(BUILD),release)
CARGO_BUILD_FLAGS := --release
else ifeq ($(BUILD),debug)
CARGO_BUILD_FLAGS :=
else
$(error BUILD must be release or debug, not '$(BUILD)')
endif
# Where cargo puts the library: cargo itself reads CARGO_TARGET_DIR from the
# environment (make passes it on).
TARGET_DIR := $(if $(CARGO_TARGET_DIR),$(CARGO_TARGET_DIR),target)
# The built library's directory (LIBDIR is the install directory, below).
BUILD_LIBDIR := $(TARGET_DIR)/$(BUILD)
LIB_SO := $(BUILD_LIBDIR)/libsocketserver.so
LIB_A := $(BUILD_LIBDIR)/libsocketserver.a
# Link against the shared library; the rpath lets the programs find it
# without LD_LIBRARY_PATH (build.rs puts the libsocketserver.so.0 link,
# the SONAME the programs record, beside it).
LDFLAGS += -L$(BUILD_LIBDIR) -Wl,-rpath,$(abspath $(BUILD_LIBDIR))
LDLIBS += -lsocketserver -lpthread

EXAMPLES := $(patsubst c_examples/%.c,build/%,$(wildcard c_examples/*.c))

.PHONY: all lib examples demo test bench valgrind sanitize header check-header clean distclean

# Cargo decides itself whether the library is up to date; the examples are
# then built by a second make, which sees the library's and the header's
# new timestamps (cargo rewrites the header only when it changes).
all: lib
	@$(MAKE) --no-print-directory examples

# build.rs makes the libsocketserver.so.N link when it runs; remade here if
# it went missing since.
lib:
	$(CARGO) build $(CARGO_BUILD_FLAGS)
	@test -e $(BUILD_LIBDIR)/$(SONAME) || ln -sfn libsocketserver.so $(BUILD_LIBDIR)/$(SONAME)

examples: $(EXAMPLES)

# Only when the library is missing (e.g. `make build/line_server` on a fresh
# checkout); `make` always asks cargo.
$(LIB_SO) $(LIB_A):
	$(CARGO) build $(CARGO_BUILD_FLAGS)

build:
	mkdir -p build

# Which BUILD the programs in build/ are linked against: switching BUILD
# relinks them.
BUILD_STAMP := build/.linked-against-$(BUILD)
$(BUILD_STAMP): | build
	rm -f build/.linked-against-*
	touch $@

build/%: c_examples/%.c include/socketserver.h $(LIB_SO) $(BUILD_STAMP) | build
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

# The scripts link and run against the library this make built.
bench valgrind: export SS_LIB_DIR = $(BUILD_LIBDIR)

bench: all
	./scripts/bench.sh

valgrind: all
	./scripts/valgrind.sh

# Builds its own libraries (nightly, -Zsanitizer) into target/sanitize/.
sanitize: all
	./scripts/sanitize.sh

test: all
	./scripts/test.sh

# The generator is a separate package (tools/gen-header, a workspace member),
# so that cbindgen's crates are built only here.
header:
	$(CARGO) run -q -p socketserver-gen-header

check-header: header
	@if git diff --exit-code -- include/socketserver.h; then \
		echo "include/socketserver.h is current"; \
	else \
		echo "include/socketserver.h is out of date: src/ffi changed it; commit the header `make header` regenerated" >&2; \
		exit 1; \
	fi

# ---------------------------------------------------------------------------
# Install
#
#   make install [PREFIX=/usr/local] [DESTDIR=] [LIBDIR=$(PREFIX)/lib]
#                [INCLUDEDIR=$(PREFIX)/include] [PKGCONFIGDIR=$(LIBDIR)/pkgconfig]
#                [CMAKEDIR=$(LIBDIR)/cmake/socketserver]
#   make uninstall (with the same variables)
#
# Installs libsocketserver.so.VERSION (SONAME libsocketserver.so.SOVERSION,
# set by build.rs) with the links libsocketserver.so.SOVERSION and
# libsocketserver.so, libsocketserver.a, every include/*.h and *.hpp,
# pkg-config files socketserver.pc (shared) and socketserver-static.pc, and
# the CMake package socketserverConfig.cmake + socketserverConfigVersion.cmake.
# VERSION and SOVERSION come from Cargo.toml.
#
# Hand-written rather than cargo-c's `cargo cinstall`: the result is the same
# (versioned .so, SONAME, .pc with Libs.private), but cargo-c is a cargo
# plugin built from source (it depends on the cargo crate itself, hundreds of
# crates), which every user and CI would have to build first, and it writes no
# CMake package; these rules need only make, sed and install.

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
CMAKEDIR ?= $(LIBDIR)/cmake/socketserver
INSTALL ?= install

# `version = "..."` of Cargo.toml's [package]; `soversion = N` of its
# [package.metadata.socketserver].
VERSION := $(shell sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml)
SOVERSION := $(shell sed -n '/^\[package\.metadata\.socketserver\]/,/^\[/s/^soversion *= *\([0-9]*\).*/\1/p' Cargo.toml)
VERSION_MAJOR := $(word 1,$(subst ., ,$(VERSION)))
VERSION_MINOR := $(word 2,$(subst ., ,$(VERSION)))
SONAME := libsocketserver.so.$(SOVERSION)
HEADERS := $(wildcard include/*.h include/*.hpp)

# The system libraries the static library needs, as rustc reports them for
# this build (`--print native-static-libs`); cargo rustc runs in a target
# directory of its own so that the extra flag does not invalidate the main
# build. Rewritten only when libsocketserver.a is newer.
NATIVE_STATIC_LIBS_FILE := $(BUILD_LIBDIR)/native-static-libs.txt
$(NATIVE_STATIC_LIBS_FILE): $(LIB_A)
	$(CARGO) rustc $(CARGO_BUILD_FLAGS) --lib --crate-type staticlib \
		--target-dir $(TARGET_DIR)/native-static-libs -- --print native-static-libs \
		2>$@.log.$$$$ || { cat $@.log.$$$$ >&2; rm -f $@.log.$$$$; exit 1; }; \
	sed -n 's/^note: native-static-libs: //p' $@.log.$$$$ | tail -n 1 >$@.$$$$; \
	rm -f $@.log.$$$$; \
	if [ -s $@.$$$$ ]; then mv $@.$$$$ $@; \
	else rm -f $@.$$$$; echo "rustc printed no native-static-libs line" >&2; exit 1; fi

# A path under $(PREFIX) is written as ${prefix}/... in the .pc files.
pc_path = $(patsubst $(PREFIX)/%,$${prefix}/%,$(patsubst $(PREFIX),$${prefix},$(1)))
# $(call subst_vars,TEMPLATE,DESTINATION): the template with @NAME@ replaced.
define subst_vars
	sed -e 's|@PREFIX@|$(PREFIX)|g' \
	    -e 's|@LIBDIR@|$(call pc_path,$(LIBDIR))|g' \
	    -e 's|@INCLUDEDIR@|$(call pc_path,$(INCLUDEDIR))|g' \
	    -e 's|@VERSION@|$(VERSION)|g' \
	    -e 's|@VERSION_MAJOR@|$(VERSION_MAJOR)|g' \
	    -e 's|@VERSION_MINOR@|$(VERSION_MINOR)|g' \
	    -e 's|@SONAME@|$(SONAME)|g' \
	    -e "s|@NATIVE_STATIC_LIBS@|$$native|g" \
	    -e "s|@CMAKE_NATIVE_STATIC_LIBS@|$$(echo $$native | tr ' ' ';')|g" \
	    -e "s|@CMAKE_TO_LIBDIR@|$$(realpath -m --relative-to='$(CMAKEDIR)' '$(LIBDIR)')|g" \
	    -e "s|@CMAKE_TO_INCLUDEDIR@|$$(realpath -m --relative-to='$(CMAKEDIR)' '$(INCLUDEDIR)')|g" \
	    -e "s|@SIZEOF_VOID_P@|$$(($$(getconf LONG_BIT) / 8))|g" \
	    $(1) >$(2)
endef

.PHONY: install uninstall
install: lib $(NATIVE_STATIC_LIBS_FILE)
	@test -n "$(VERSION)" -a -n "$(SOVERSION)" || { echo "no version or soversion in Cargo.toml" >&2; exit 1; }
	@readelf -d $(LIB_SO) | grep -q 'SONAME.*\[$(SONAME)\]' || \
		{ echo "$(LIB_SO) does not have the SONAME $(SONAME)" >&2; exit 1; }
	@# rustc's own version script exports only #[no_mangle] functions; one
	@# outside ss_* (e.g. from a dependency) would become ABI: refuse it.
	@leaked=$$(nm -D --defined-only $(LIB_SO) | awk '$$2 != "A" && $$NF !~ /^ss_/ { print $$NF }'); \
	if [ -n "$$leaked" ]; then echo "$(LIB_SO) exports symbols outside ss_*: $$leaked" >&2; exit 1; fi
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(CMAKEDIR)
	$(INSTALL) -m 755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/libsocketserver.so.$(VERSION)
	ln -sfn libsocketserver.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sfn $(SONAME) $(DESTDIR)$(LIBDIR)/libsocketserver.so
	$(INSTALL) -m 644 $(LIB_A) $(DESTDIR)$(LIBDIR)/libsocketserver.a
	$(INSTALL) -m 644 $(HEADERS) $(DESTDIR)$(INCLUDEDIR)/
	@native=$$(cat $(NATIVE_STATIC_LIBS_FILE)); set -e; \
	$(call subst_vars,pkgconfig/socketserver.pc.in,$(DESTDIR)$(PKGCONFIGDIR)/socketserver.pc); \
	$(call subst_vars,pkgconfig/socketserver-static.pc.in,$(DESTDIR)$(PKGCONFIGDIR)/socketserver-static.pc); \
	$(call subst_vars,cmake/socketserverConfig.cmake.in,$(DESTDIR)$(CMAKEDIR)/socketserverConfig.cmake); \
	$(call subst_vars,cmake/socketserverConfigVersion.cmake.in,$(DESTDIR)$(CMAKEDIR)/socketserverConfigVersion.cmake); \
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/socketserver.pc $(DESTDIR)$(PKGCONFIGDIR)/socketserver-static.pc \
		$(DESTDIR)$(CMAKEDIR)/socketserverConfig.cmake $(DESTDIR)$(CMAKEDIR)/socketserverConfigVersion.cmake
	@echo "installed libsocketserver $(VERSION) ($(SONAME)) under $(DESTDIR)$(PREFIX)"

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libsocketserver.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
		$(DESTDIR)$(LIBDIR)/libsocketserver.so $(DESTDIR)$(LIBDIR)/libsocketserver.a
	rm -f $(addprefix $(DESTDIR)$(INCLUDEDIR)/,$(notdir $(HEADERS)))
	rm -f $(DESTDIR)$(PKGCONFIGDIR)/socketserver.pc $(DESTDIR)$(PKGCONFIGDIR)/socketserver-static.pc
	rm -f $(DESTDIR)$(CMAKEDIR)/socketserverConfig.cmake $(DESTDIR)$(CMAKEDIR)/socketserverConfigVersion.cmake
	-rmdir $(DESTDIR)$(CMAKEDIR) 2>/dev/null

# ---------------------------------------------------------------------------
# API documentation of the headers (Doxyfile), into $(DOCS_DIR)/html/.
DOCS_DIR ?= build/docs
.PHONY: docs
docs:
	@command -v doxygen >/dev/null 2>&1 || \
		{ echo "make docs needs doxygen, which is not installed (Debian package: doxygen)" >&2; exit 1; }
	mkdir -p $(DOCS_DIR)
	SS_VERSION=$(VERSION) SS_DOCS_DIR=$(DOCS_DIR) doxygen Doxyfile
	@echo "documentation: $(DOCS_DIR)/html/index.html"

clean:
	rm -rf build

distclean: clean
	$(CARGO) clean
