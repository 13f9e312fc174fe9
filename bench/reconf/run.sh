#!/usr/bin/env bash
# The benchmark of issue 22: a sockd@ instance's worker count changed
# 2 → 3 → 2 by editing its env file, applied by `systemctl reload` or by
# `systemctl restart`, under a paced load, for the Go demo worker and the
# Node example, in the systemd sandbox (e2e/reconf_bench_test.go). Needs
# root (it boots a sandboxed systemd, see e2e/README.md) and node.
#
#   bench/reconf/run.sh [ROUNDS [RATE]]     # defaults: 3 rounds, 200 req/s
#
# Prints the markdown table BENCHMARKS.md quotes, and keeps it in
# bench/results/reconf-DATE.md (not committed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
mkdir -p bench/results
out=bench/results/reconf-$(date -u +%Y%m%d-%H%M%S).md
SOCKD_BENCH_RECONF=1 SOCKD_BENCH_RECONF_ROUNDS=${1:-3} SOCKD_BENCH_RECONF_RATE=${2:-200} \
	SOCKD_BENCH_RECONF_OUT=$PWD/$out SOCKD_E2E_REQUIRE=1 \
	go test -count=1 -timeout 15m -run '^TestBenchReconfigure$' -v ./e2e/ >"$out.log" 2>&1 || {
	tail -50 "$out.log"
	exit 1
}
grep -E '^\s+reconf_bench_test.go:[0-9]+: (go|node) ' "$out.log" | sed 's/^ *//' || true
echo
echo "$(git rev-parse --short HEAD) $(date -u '+%Y-%m-%d %H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$out"
