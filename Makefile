# Makefile for C users: `make` builds the release library and every program
# in c_examples/ into build/; `make demo` runs the main example; `make test`
# runs every test.
CARGO ?= cargo
CC ?= cc
CFLAGS ?= -std=c99 -O2 -g -Wall -Wextra -Wpedantic -Werror
LIBDIR := target/release
EXAMPLES := $(patsubst c_examples/%.c,build/%,$(wildcard c_examples/*.c))

.PHONY: all lib demo test clean
all: $(EXAMPLES)

lib:
	$(CARGO) build --release

build/%: c_examples/%.c include/socketserver.h lib
	@mkdir -p build
	$(CC) $(CFLAGS) -Iinclude $< -L$(LIBDIR) -lsocketserver -Wl,-rpath,$(abspath $(LIBDIR)) -lpthread -o $@

demo: all
	./scripts/demo.sh

test:
	$(CARGO) test --release

clean:
	rm -rf build
	$(CARGO) clean
