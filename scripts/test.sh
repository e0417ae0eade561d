#!/usr/bin/env bash
# What `make test` runs: every test (Rust unit tests, the Rust core tests and
# the C tests, which build the library themselves), built by
# `cargo test --release --no-run`, then the test binaries two at a time
# ($TEST_JOBS): many of them wait on sockets, compilers and child processes
# rather than keep both cores busy, so that `cargo test` running them one
# after the other leaves the machine half idle. Each binary's output is
# printed whole when it ends, as `cargo test` would print it; every binary
# runs even after a failure (like --no-fail-fast); then one closing line with
# the totals over all test binaries, and the binaries that failed.
#
#   scripts/test.sh [TEST_NAME_FILTER...]   (passed to every test binary)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

JOBS=${TEST_JOBS:-2}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# The test binaries, from cargo's JSON messages: "NAME KIND PATH" per line.
cargo test --release --no-run --message-format=json-render-diagnostics >"$logs/build.json"
python3 - "$logs/build.json" >"$logs/binaries" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        print(m["target"]["name"], m["target"]["kind"][0], m["executable"])
EOF
count=$(wc -l <"$logs/binaries")
((count > 0)) || { echo "test.sh: cargo built no test binary" >&2; exit 1; }

# The slowest first (compilers, pip, cmake, the fuzzers), so that the two
# lanes end together; the rest in cargo's order.
FIRST="cxx python_binding install fuzz_loopback bench_refs event hardening_blockio"
{
    for name in $FIRST; do
        awk -v n="$name" '$1 == n && $2 == "test"' "$logs/binaries"
    done
    awk -v first=" $FIRST " 'index(first, " " $1 " ") == 0 || $2 != "test"' "$logs/binaries"
} >"$logs/order"

# run_binary NAME KIND PATH: runs one test binary (with $TEST_FILTERS), its
# output to LOGS/NAME.KIND.out, its exit status to LOGS/NAME.KIND.status.
run_binary() {
    local name=$1 kind=$2 exe=$3 status=0
    # shellcheck disable=SC2086 # a list of filters
    "$exe" $TEST_FILTERS >"$LOGS/$name.$kind.out" 2>&1 </dev/null || status=$?
    echo "$status" >"$LOGS/$name.$kind.status"
    # Whole, as one block: the lanes' outputs never interleave.
    flock "$LOGS/print.lock" bash -c 'printf "\n     Running %s (%s)\n" "$1" "$2"; cat "$3"' \
        _ "$([[ $kind == test ]] && echo "tests/$name.rs" || echo "unittests src/lib.rs")" "$exe" \
        "$LOGS/$name.$kind.out"
}
export -f run_binary
export LOGS=$logs TEST_FILTERS="$*"

start=$SECONDS
# shellcheck disable=SC2016 # expanded by the inner shell
xargs -P "$JOBS" -L 1 bash -c 'run_binary "$@"' run_binary <"$logs/order" || true

# Sum the "test result: ok. N passed; M failed; ..." lines of every binary.
read -r passed failed < <(cat "$logs"/*.out | awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i) ~ /^passed;?$/) p += $(i - 1)
            if ($(i) ~ /^failed;?$/) f += $(i - 1)
        }
    } END { print p + 0, f + 0 }')
bad=()
while read -r name kind _; do
    st=$(cat "$logs/$name.$kind.status" 2>/dev/null || echo "not run")
    [[ $st == 0 ]] || bad+=("$name ($kind, exit status $st)")
done <"$logs/order"
echo
echo "tests: $passed passed, $failed failed, $count test binaries, in $((SECONDS - start)) s"
if ((${#bad[@]} > 0)); then
    printf 'test.sh: FAILED: %s\n' "${bad[@]}" >&2
    exit 1
fi
if ((passed == 0)); then
    echo "no test ran" >&2
    exit 1
fi
