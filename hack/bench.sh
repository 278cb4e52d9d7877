#!/usr/bin/env bash
# The benchmark: regcred against the limit (a minimal writer) and the script way, on the
# real test bed, all release builds. Prints the tables; writes results.json, results.md
# and SVG charts to --out (default target/bench). docs/benchmarks.md explains the numbers.
#
#   hack/bench.sh                         300 and 1,000 namespaces, 5,000 for memory
#   hack/bench.sh --sizes 50 --memory-sizes 50 --new-namespaces 20 --idle-seconds 5
#   hack/bench.sh --help                  every option
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REGCRED_TESTBED_BIN=$(testbed_bin)
export REGCRED_TESTBED_BIN
cargo build --release --manifest-path "$root/Cargo.toml" -p regcred -p regcred-bench
target=$(target_dir)
export REGCRED_BIN="$target/release/regcred"
cd "$root"
exec "$target/release/regcred-bench" "$@"
