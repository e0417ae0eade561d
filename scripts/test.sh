#!/usr/bin/env bash
# What `make test` runs: every test (Rust unit tests, the Rust core tests and
# the C tests, which build the library themselves) through `cargo test`,
# then one closing line with the totals over all test binaries.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release "$@" 2>&1 | tee "$log" || status=$?

# Sum the "test result: ok. N passed; M failed; ..." lines of every binary.
read -r passed failed < <(awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i) ~ /^passed;?$/) p += $(i - 1)
            if ($(i) ~ /^failed;?$/) f += $(i - 1)
        }
    } END { print p + 0, f + 0 }' "$log")
echo
echo "tests: $passed passed, $failed failed"
if ((status == 0 && passed == 0)); then
    echo "no test ran" >&2
    exit 1
fi
exit "$status"
