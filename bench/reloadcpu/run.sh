#!/usr/bin/env bash
# Where the CPU of a reload under load goes (issue 20): sockd --pm2 with
# the Express app of examples/node-apps (2 instances, --reuseport
# --slow-start 2s unless SOCKD_ARGS says otherwise) under wrk -t2 -c32
# (keep-alive, as BENCHMARKS.md section 2b), RELOADS reloads back to back
# (sockd reload --wait), then a steady window of the same length. Prints
# sockd's own CPU time in each window (utime+stime from /proc) beside
# wrk's figures; with PERF=1 it also records the whole process tree for
# the first 25 s of the reload window (perf record -g, inherited by the
# workers sockd forks) and prints the CPU share of each command.
#
#   bench/reloadcpu/run.sh                (after scripts/setup; needs wrk, node)
#   PERF=1 RELOADS=5 bench/reloadcpu/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
RELOADS=${RELOADS:-5}
SOCKD_ARGS=${SOCKD_ARGS:---reuseport --slow-start 2s}
APPDIR=$PWD/examples/node-apps
T=$(mktemp -d /tmp/reloadcpu.XXXX)
SOCKD=$T/sockd
go build -o "$SOCKD" ./cmd/sockd
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$T/ecosystem.config.js" <<EOC
module.exports = { apps: [{ name: 'express', script: 'express-app.js', cwd: '$APPDIR', instances: 2,
  exec_mode: 'cluster', wait_ready: true, kill_timeout: 5000, env: { PORT: $PORT } }] };
EOC
cd "$T"
# shellcheck disable=SC2086
"$SOCKD" run --pm2 ecosystem.config.js --listen "http=tcp://127.0.0.1:$PORT" --control "$T/s.sock" $SOCKD_ARGS >"$T/sockd.log" 2>&1 &
SP=$!
trap 'kill -TERM $SP 2>/dev/null; wait $SP 2>/dev/null || true' EXIT
for _ in $(seq 100); do "$SOCKD" status --control "$T/s.sock" --check >/dev/null 2>&1 && break; sleep 0.1; done
cpu() { awk '{print $14+$15}' "/proc/$SP/stat"; }
hz=$(getconf CLK_TCK)
wrk -t2 -c32 -d3s "http://127.0.0.1:$PORT/" >/dev/null # warm-up
c0=$(cpu); t0=$(date +%s.%N)
wrk -t2 -c32 -d600s --latency "http://127.0.0.1:$PORT/" >"$T/wrk-reload.txt" &
W=$!
PP=
if [ "${PERF:-0}" = 1 ]; then
  perf record -F 499 -g -p "$SP" -o "$T/perf.data" -- sleep 25 >/dev/null 2>&1 &
  PP=$!
fi
for _ in $(seq "$RELOADS"); do "$SOCKD" reload --wait --control "$T/s.sock" >/dev/null; done
c1=$(cpu); t1=$(date +%s.%N)
kill -INT $W; wait $W || true
[ -z "$PP" ] || wait "$PP" || true
secs=$(python3 -c "import math; print(math.ceil($t1 - $t0))")
sleep 2
c2=$(cpu)
wrk -t2 -c32 -d"${secs}s" --latency "http://127.0.0.1:$PORT/" >"$T/wrk-steady.txt"
c3=$(cpu)
printf 'sockd %s, %s reloads in %ss\n' "$SOCKD_ARGS" "$RELOADS" "$secs"
for w in reload steady; do
  case $w in reload) d=$((c1 - c0)) ;; steady) d=$((c3 - c2)) ;; esac
  printf '%-6s window: sockd CPU %5.2f s (%4.1f%% of one core); wrk %s req/s, p99 %s\n' "$w" \
    "$(python3 -c "print($d/$hz)")" "$(python3 -c "print(100*$d/$hz/$secs)")" \
    "$(awk '/Requests\/sec/ {print $2}' "$T/wrk-$w.txt")" "$(awk '$1 == "99%" {print $2}' "$T/wrk-$w.txt")"
done
if [ -n "$PP" ]; then
  echo "perf, first 25 s of the reload window, samples by command:"
  perf report -i "$T/perf.data" --stdio --no-children --sort comm -F overhead,sample,comm -g none 2>/dev/null | grep '%'
fi
echo "files: $T"
