#!/usr/bin/env bash
# PM2 cluster mode and sockd side by side on the same unchanged app
# (examples/node-apps/express-app.js, 2 instances; issue 18).
#
#   bench/pm2same/run.sh          (from anywhere; after scripts/setup)
#
# Each supervisor is started the way its users would start it, from the
# same ecosystem file (instances: 2, exec_mode: 'cluster', wait_ready: true,
# kill_timeout: 5000; only PORT differs): `pm2 start ecosystem.config.js`
# with PM2_HOME in a temp dir, and `sockd run --pm2 ecosystem.config.js`
# plus --listen to bind 127.0.0.1 only (the app's listen(PORT) has no host,
# so PM2's daemon binds *:PORT; the clients use 127.0.0.1 for both). A third
# peer, sockd-b1, is the same sockd command with --reload-batch 1 (a rolling
# reload, one slot at a time, as PM2 reloads), and a fourth, sockd-ss,
# with --reuseport --slow-start 2s (traffic steering, issue 20: a new
# worker takes no connection before it is ready and its share ramps up
# over 2 s; not in the default PEERS), and a fifth, sockd-wu, with that and
# --warmup / --warmup-requests N (the preload warms each new worker up
# with N requests of its own before it is ready, WARMUP_REQUESTS, 200 by
# default; not in the default PEERS either). The peers run side by side
# on free ports of their own; only one load runs at a time, the peers
# alternated A B C A B C:
#   1. throughput: wrk -t2 -c32 -d5s --latency, THROUGHPUT_ROUNDS rounds;
#   2. reloads: wrk -t2 -c32 --latency (keep-alive) for as long as RELOADS
#      reloads one after another take (`pm2 reload express` vs
#      `sockd reload --wait`; wrk is started with a -d of 60 s per
#      reload and stopped with SIGINT once the last reload returned, which
#      makes wrk print its report), RELOAD_ROUNDS rounds; socket errors, non-2xx, p99;
#   3. the same wrk over a steady window of the same length (whole seconds,
#      rounded up), right after the reload window and a 2 s warm-up;
#   4. VmRSS (/proc/PID/status) of the supervisor and of its whole process
#      tree, idle, 10 s after start-up and again 45 s after the last load
#      (a loaded Node worker holds ~50 MiB more until V8 shrinks its heap
#      when idle, which takes up to ~30 s; a shorter wait would favour the
#      peer loaded first), and the supervisor's peak (VmHWM).
# Settings: PEERS (default "pm2 sockd sockd-b1"; any subset, in the order
# of alternation), THROUGHPUT_ROUNDS (0 skips 1.), RELOAD_ROUNDS (0 skips
# 2. and 3.), RELOADS, WARMUP_REQUESTS (sockd-wu's), SS_ARGS (more
# arguments for sockd-ss, e.g. "--reload-batch 1"), MEMORY=0 skips 4.
# (and its 55 s of waiting); e.g.
# the reload part alone: THROUGHPUT_ROUNDS=0 MEMORY=0 bench/pm2same/run.sh
# Needs node, npm, wrk, curl and Go (scripts/setup installs them) and the
# pinned PM2 of bench/peers/node/package-lock.json: taken from
# bench/peers/node/node_modules (scripts/bench installs it there), else
# installed once with npm ci into bench/results/pm2same/pm2 (git-ignored).
# Builds sockd into /tmp/sockd-bench (SOCKD_BIN=path runs that binary
# instead, e.g. one built at an earlier commit to compare). Raw wrk reports and logs go to
# bench/results/pm2same-<time>/ (OUT=dir to choose); the tables are
# printed at the end and written to summary.md there. About 7 minutes
# (the reload part alone: 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
. scripts/lib.sh

THROUGHPUT_ROUNDS=${THROUGHPUT_ROUNDS:-3}
RELOAD_ROUNDS=${RELOAD_ROUNDS:-2}
RELOADS=${RELOADS:-10}
MEMORY=${MEMORY:-1}
WARMUP_REQUESTS=${WARMUP_REQUESTS:-200}
PEERS=${PEERS:-pm2 sockd sockd-b1}
SS_ARGS=${SS_ARGS:-}
read -r -a SS_EXTRA <<<"$SS_ARGS"
for p in $PEERS; do
  case $p in pm2 | sockd | sockd-b1 | sockd-ss | sockd-wu) ;; *) echo "pm2same: unknown peer $p (pm2, sockd, sockd-b1, sockd-ss, sockd-wu)" >&2; exit 1 ;; esac
done
has() { [[ " $PEERS " == *" $1 "* ]]; }
APPDIR=$ROOT/examples/node-apps
APP=express-app.js
NAME=express

for t in node npm wrk curl; do
  command -v "$t" >/dev/null || { echo "pm2same: $t not found; run scripts/setup" >&2; exit 1; }
done
use_go

# The app's npm packages, as scripts/setup installs them.
if [ ! -d "$APPDIR/node_modules/express" ]; then
  echo "pm2same: npm ci in examples/node-apps (as scripts/setup does)" >&2
  (cd "$APPDIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
# PM2, at the version bench/peers/node pins.
PM2=$ROOT/bench/peers/node/node_modules/.bin/pm2
if [ ! -x "$PM2" ]; then
  PM2DIR=$ROOT/bench/results/pm2same/pm2
  PM2=$PM2DIR/node_modules/.bin/pm2
  if [ ! -x "$PM2" ] || ! cmp -s "$ROOT/bench/peers/node/package-lock.json" "$PM2DIR/package-lock.json"; then
    echo "pm2same: installing the pinned PM2 into $PM2DIR" >&2
    mkdir -p "$PM2DIR"
    cp bench/peers/node/package.json bench/peers/node/package-lock.json "$PM2DIR/"
    (cd "$PM2DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi
PM2_VERSION=$(node -p "require('$(dirname "$(readlink -f "$PM2")")/../package.json').version")

if [ -n "${SOCKD_BIN:-}" ]; then # a sockd built elsewhere (an earlier commit, to compare)
  SOCKD=$SOCKD_BIN
else
  SOCKD=/tmp/sockd-bench
  go build -o "$SOCKD" ./cmd/sockd
fi
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no | grep -q . && echo " (uncommitted changes in the tree)" || true)

OUT=${OUT:-$ROOT/bench/results/pm2same-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/pm2same.XXXXXX)
export PM2_HOME=$TMP/pm2home PM2_DISABLE_VERSION_CHECK=true
SOCK=$TMP/sockd.sock
SOCK_B1=$TMP/sockd-b1.sock
SOCK_SS=$TMP/sockd-ss.sock
SOCK_WU=$TMP/sockd-wu.sock

SOCKD_PID= SOCKD_B1_PID= SOCKD_SS_PID= SOCKD_WU_PID= WRK_PID=
stop_sockd() { # stop_sockd PID: SIGTERM, then SIGKILL after 20 s
  if [ -n "$1" ] && kill -0 "$1" 2>/dev/null; then
    kill -TERM "$1"
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$1" 2>/dev/null && kill -KILL "$1"
  fi
}
cleanup() {
  set +e
  [ -n "$WRK_PID" ] && kill "$WRK_PID" 2>/dev/null
  if [ -f "$PM2_HOME/pm2.pid" ]; then
    local d
    d=$(cat "$PM2_HOME/pm2.pid")
    "$PM2" kill >"$OUT/pm2-kill.log" 2>&1
    mkdir -p "$OUT/pm2home" && cp -r "$PM2_HOME/pm2.log" "$PM2_HOME/logs" "$OUT/pm2home/"
    for _ in $(seq 50); do kill -0 "$d" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$d" 2>/dev/null && kill -KILL "$d"
  fi
  stop_sockd "$SOCKD_PID"
  stop_sockd "$SOCKD_B1_PID"
  stop_sockd "$SOCKD_SS_PID"
  stop_sockd "$SOCKD_WU_PID"
  rm -rf "$TMP"
}
trap cleanup EXIT

freeport() { node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
PORT_PM2=$(freeport)
PORT_SOCKD=$(freeport)
while [ "$PORT_SOCKD" = "$PORT_PM2" ]; do PORT_SOCKD=$(freeport); done
PORT_B1=$(freeport)
while [ "$PORT_B1" = "$PORT_PM2" ] || [ "$PORT_B1" = "$PORT_SOCKD" ]; do PORT_B1=$(freeport); done
PORT_SS=$(freeport)
while [ "$PORT_SS" = "$PORT_PM2" ] || [ "$PORT_SS" = "$PORT_SOCKD" ] || [ "$PORT_SS" = "$PORT_B1" ]; do PORT_SS=$(freeport); done
PORT_WU=$(freeport)
while [ "$PORT_WU" = "$PORT_PM2" ] || [ "$PORT_WU" = "$PORT_SOCKD" ] || [ "$PORT_WU" = "$PORT_B1" ] || [ "$PORT_WU" = "$PORT_SS" ]; do PORT_WU=$(freeport); done

ecosystem() { # ecosystem DIR PORT: the one ecosystem file, as PM2's docs write it
  mkdir -p "$1"
  cat >"$1/ecosystem.config.js" <<EOF
module.exports = {
  apps: [{
    name: '$NAME',
    script: '$APP',
    cwd: '$APPDIR',
    instances: 2,
    exec_mode: 'cluster',
    wait_ready: true,
    kill_timeout: 5000,
    env: { PORT: $2 },
  }],
};
EOF
}
ecosystem "$TMP/pm2" "$PORT_PM2"
ecosystem "$TMP/sockd" "$PORT_SOCKD"
ecosystem "$TMP/sockd-b1" "$PORT_B1"
ecosystem "$TMP/sockd-ss" "$PORT_SS"
ecosystem "$TMP/sockd-wu" "$PORT_WU"
cp "$TMP/pm2/ecosystem.config.js" "$OUT/ecosystem.config.js"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u '+%Y-%m-%d %H:%M UTC')
T0=$(date +%s)

# --- the peers -------------------------------------------------------------
CMD_PM2="PM2_HOME=\$TMP/pm2home pm2 start ecosystem.config.js"
CMD_SOCKD="sockd run --pm2 ecosystem.config.js --listen http=tcp://127.0.0.1:$PORT_SOCKD --control \$TMP/sockd.sock"
CMD_B1="sockd run --pm2 ecosystem.config.js --listen http=tcp://127.0.0.1:$PORT_B1 --control \$TMP/sockd-b1.sock --reload-batch 1"
CMD_SS="sockd run --pm2 ecosystem.config.js --listen http=tcp://127.0.0.1:$PORT_SS --control \$TMP/sockd-ss.sock --reuseport --slow-start 2s${SS_ARGS:+ $SS_ARGS}"
CMD_WU="sockd run --pm2 ecosystem.config.js --listen http=tcp://127.0.0.1:$PORT_WU --control \$TMP/sockd-wu.sock --reuseport --slow-start 2s --warmup / --warmup-requests $WARMUP_REQUESTS"
PM2_PID=
if has pm2; then
  (cd "$TMP/pm2" && "$PM2" start ecosystem.config.js >"$OUT/pm2-start.log" 2>&1)
  PM2_PID=$(cat "$PM2_HOME/pm2.pid")
  tr '\0' ' ' <"/proc/$PM2_PID/cmdline" | grep -q "God Daemon" || { echo "pm2same: pid $PM2_PID is not PM2's daemon" >&2; exit 1; }
fi
if has sockd; then
  (cd "$TMP/sockd" && exec "$SOCKD" run --pm2 ecosystem.config.js --listen "http=tcp://127.0.0.1:$PORT_SOCKD" \
    --control "$SOCK" >"$OUT/sockd.log" 2>&1) &
  SOCKD_PID=$!
fi
if has sockd-b1; then
  (cd "$TMP/sockd-b1" && exec "$SOCKD" run --pm2 ecosystem.config.js --listen "http=tcp://127.0.0.1:$PORT_B1" \
    --control "$SOCK_B1" --reload-batch 1 >"$OUT/sockd-b1.log" 2>&1) &
  SOCKD_B1_PID=$!
fi
if has sockd-ss; then
  (cd "$TMP/sockd-ss" && exec "$SOCKD" run --pm2 ecosystem.config.js --listen "http=tcp://127.0.0.1:$PORT_SS" \
    --control "$SOCK_SS" --reuseport --slow-start 2s ${SS_EXTRA[@]+"${SS_EXTRA[@]}"} >"$OUT/sockd-ss.log" 2>&1) &
  SOCKD_SS_PID=$!
fi
if has sockd-wu; then
  (cd "$TMP/sockd-wu" && exec "$SOCKD" run --pm2 ecosystem.config.js --listen "http=tcp://127.0.0.1:$PORT_WU" \
    --control "$SOCK_WU" --reuseport --slow-start 2s --warmup / --warmup-requests "$WARMUP_REQUESTS" >"$OUT/sockd-wu.log" 2>&1) &
  SOCKD_WU_PID=$!
fi

children() { # children PID: the pids whose parent is PID
  cat /proc/[0-9]*/status 2>/dev/null | awk -v p="$1" '/^Pid:/{pid=$2} /^PPid:/ && $2==p {print pid}' || true
}
descendants() { local c; for c in $(children "$1"); do echo "$c"; descendants "$c"; done; }
rss_kb() { awk -v k="${2:-VmRSS}:" '$1==k{print $2; f=1} END{if(!f) print 0}' "/proc/$1/status" 2>/dev/null || echo 0; }

waitready() { # waitready PEER: both workers up and answering
  local port=$1 i
  for i in $(seq 150); do
    if curl -sf -o /dev/null "http://127.0.0.1:$port/" && [ "$(workers "$2" | wc -w)" -ge 2 ]; then return 0; fi
    sleep 0.2
  done
  echo "pm2same: $2 did not become ready" >&2; exit 1
}
workers() { # the worker pids of a peer
  case $1 in
  pm2) children "$PM2_PID" ;;
  sockd | sockd-b1 | sockd-ss | sockd-wu) "$SOCKD" status --json --control "$(sock_of "$1")" 2>/dev/null |
    node -e 'let b="";process.stdin.on("data",d=>b+=d).on("end",()=>{const s=JSON.parse(b);
      for(const w of s.workers||s.Workers||[]){const st=w.state||w.State;if(st==="ready")console.log(w.pid||w.PID)}})' || true ;;
  esac
}
sock_of() { case $1 in sockd-b1) echo "$SOCK_B1" ;; sockd-ss) echo "$SOCK_SS" ;; sockd-wu) echo "$SOCK_WU" ;; *) echo "$SOCK" ;; esac; }
port_of() { case $1 in pm2) echo "$PORT_PM2" ;; sockd) echo "$PORT_SOCKD" ;; sockd-b1) echo "$PORT_B1" ;; sockd-ss) echo "$PORT_SS" ;; sockd-wu) echo "$PORT_WU" ;; esac; }
sup_of() { case $1 in pm2) echo "$PM2_PID" ;; sockd) echo "$SOCKD_PID" ;; sockd-b1) echo "$SOCKD_B1_PID" ;; sockd-ss) echo "$SOCKD_SS_PID" ;; sockd-wu) echo "$SOCKD_WU_PID" ;; esac; }
for p in $PEERS; do waitready "$(port_of "$p")" "$p"; done

# --- wrk and its report ----------------------------------------------------
# parse FILE: req/s p99_ms requests seconds connect read write timeout non2xx
parse() {
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /m$/) return v*60000; if (v ~ /s$/) return v*1000; return v }
    /^ +99%/ { p99 = ms($2) }
    / requests in / { req = $1; d = $4; sub(/,$/, "", d); secs = ms(d)/1000 }
    /Socket errors:/ { gsub(/,/, ""); c = $4; r = $6; w = $8; t = $10 }
    /Non-2xx or 3xx responses:/ { n = $5 }
    /^Requests\/sec:/ { rps = $2 }
    END { printf "%.0f %.2f %d %.2f %d %d %d %d %d\n", rps, p99, req, secs, c, r, w, t, n }' "$1"
}
wrkrun() { # wrkrun OUTFILE PEER SECONDS: a load that stops by itself
  wrk -t2 -c32 -d"$3"s --latency "http://127.0.0.1:$(port_of "$2")/" >"$1" 2>&1 || true
}
median() { sort -g | awk '{a[NR]=$1} END{if(NR==0){print "-"; exit} if(NR%2) v=a[(NR+1)/2]; else v=(a[NR/2]+a[NR/2+1])/2; if (v==int(v)) print v; else printf "%.2f\n", v}'; }
field() { cut -d' ' -f"$1"; }

# --- 4. memory, idle after start-up -------------------------------------------
memory() { # memory LABEL: one line per peer into $OUT/memory.txt
  local p sup kids d tree extra
  for p in $PEERS; do
    sup=$(sup_of "$p")
    kids=$(workers "$p" | tr '\n' ' ')
    tree=0; extra=0
    for d in "$sup" $(descendants "$sup"); do
      tree=$((tree + $(rss_kb "$d")))
      # supervisor processes: everything in the tree that is not a worker
      # (sockd: sockd and its sockd-guard; PM2: the God Daemon)
      if [ "$d" != "$sup" ] && ! [[ " $kids " == *" $d "* ]]; then extra=$((extra + $(rss_kb "$d"))); fi
    done
    echo "$1 $p $(rss_kb "$sup") $extra $tree $(descendants "$sup" | wc -l) $(rss_kb "$sup" VmHWM) $(tr '\0' ' ' <"/proc/$sup/cmdline" | cut -c1-60 | tr ' ' '_')" >>"$OUT/memory.txt"
  done
}
: >"$OUT/memory.txt" >"$OUT/throughput.txt" >"$OUT/reloads.txt" >"$OUT/steady.txt"
if [ "$MEMORY" != 0 ]; then
  sleep 10
  memory idle-after-start
fi

# --- 1. throughput -----------------------------------------------------------
if [ "$THROUGHPUT_ROUNDS" -gt 0 ]; then
  echo "pm2same: throughput" >&2
  for p in $PEERS; do wrkrun "$OUT/warmup-$p.txt" "$p" 3; done
fi
for r in $(seq "$THROUGHPUT_ROUNDS"); do
  for p in $PEERS; do
    sleep 1
    wrkrun "$OUT/tp-$p-$r.txt" "$p" 5
    echo "$r $p $(parse "$OUT/tp-$p-$r.txt")" >>"$OUT/throughput.txt"
  done
done

# --- 2 and 3. reloads under load, and the same window without --------------
reload() {
  case $1 in
  pm2) "$PM2" reload "$NAME" >>"$OUT/reload-cmd-pm2.log" 2>&1 ;;
  sockd | sockd-b1 | sockd-ss | sockd-wu) "$SOCKD" reload --wait --control "$(sock_of "$1")" >>"$OUT/reload-cmd-$1.log" 2>&1 ;;
  esac
}
[ "$RELOAD_ROUNDS" -gt 0 ] && echo "pm2same: reloads" >&2
for r in $(seq "$RELOAD_ROUNDS"); do
  for p in $PEERS; do
    sleep 1
    wrkrun "$OUT/warm-$p-$r.txt" "$p" 2
    wrk -t2 -c32 -d$((RELOADS * 60))s --latency "http://127.0.0.1:$(port_of "$p")/" >"$OUT/reload-$p-$r.txt" 2>&1 &
    WRK_PID=$!
    sleep 0.5
    ok=0 durs=""
    t1=$(date +%s%N)
    for i in $(seq "$RELOADS"); do
      a=$(date +%s%N)
      if reload "$p"; then ok=$((ok + 1)); else echo "reload $i of round $r failed" >>"$OUT/reload-cmd-$p.log"; fi
      durs+="$(( ($(date +%s%N) - a) / 1000000 )) "
    done
    t2=$(date +%s%N)
    sleep 0.5
    kill -INT "$WRK_PID" || true
    wait "$WRK_PID" || true
    WRK_PID=
    echo "$r $p $ok $(( (t2 - t1) / 1000000 )) $(echo $durs | tr ' ' '\n' | median) $(parse "$OUT/reload-$p-$r.txt")" >>"$OUT/reloads.txt"
    # 3. the steady window of the same length, after a warm-up of the
    # workers the last reload started
    secs=$(parse "$OUT/reload-$p-$r.txt" | field 4)
    secs=$(awk -v s="$secs" 'BEGIN{n=int(s); if (n < s) n++; print n}')
    wrkrun "$OUT/warm2-$p-$r.txt" "$p" 2
    wrkrun "$OUT/steady-$p-$r.txt" "$p" "$secs"
    echo "$r $p $(parse "$OUT/steady-$p-$r.txt")" >>"$OUT/steady.txt"
  done
done

# --- 4. memory, idle after the loads -----------------------------------------
if [ "$MEMORY" != 0 ]; then
  sleep 45
  memory idle-after-loads
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
MINUTES=$(awk -v s=$(($(date +%s) - T0)) 'BEGIN{printf "%.1f", s/60}')

# --- the tables --------------------------------------------------------------
label() { case $1 in pm2) echo "PM2 $PM2_VERSION cluster mode" ;; sockd) echo "sockd --pm2" ;; sockd-b1) echo "sockd --pm2 --reload-batch 1" ;; sockd-ss) echo "sockd --pm2 --reuseport --slow-start 2s${SS_ARGS:+ $SS_ARGS}" ;; sockd-wu) echo "sockd --pm2 --reuseport --slow-start 2s --warmup / --warmup-requests $WARMUP_REQUESTS" ;; esac; }
{
  echo "Run $START, $MINUTES minutes; load average $LOAD_BEFORE before, $LOAD_AFTER after."
  echo "Versions: node $(node --version), pm2 $PM2_VERSION, $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2), sockd $COMMIT$DIRTY, $(go version | cut -d' ' -f3)."
  echo "Machine: $(nproc) cores, $(uname -r)."
  has pm2 && echo "PM2: $CMD_PM2"
  has sockd && echo "sockd: $CMD_SOCKD"
  has sockd-b1 && echo "sockd-b1: $CMD_B1"
  has sockd-ss && echo "sockd-ss: $CMD_SS"
  has sockd-wu && echo "sockd-wu: $CMD_WU"
  if [ "$THROUGHPUT_ROUNDS" -gt 0 ]; then
  echo
  echo "### 1. Throughput (wrk -t2 -c32 -d5s --latency)"
  echo
  echo "| peer | req/s per round | req/s median | p99 ms per round | p99 ms median | socket errors + non-2xx |"
  echo "|---|---|---:|---|---:|---:|"
  for p in $PEERS; do
    rows=$(awk -v p=$p '$2==p' "$OUT/throughput.txt")
    errs=$(echo "$rows" | awk '{s+=$7+$8+$9+$10+$11} END{print s}')
    echo "| $(label $p) | $(echo "$rows" | field 3 | paste -sd, | sed 's/,/, /g') | $(echo "$rows" | field 3 | median) | $(echo "$rows" | field 4 | paste -sd, | sed 's/,/, /g') | $(echo "$rows" | field 4 | median) | $errs |"
  done
  fi
  if [ "$RELOAD_ROUNDS" -gt 0 ]; then
  echo
  echo "### 2. Reloads under load (wrk -t2 -c32 --latency, keep-alive, for $RELOADS reloads one after another)"
  echo
  echo "| peer | round | reloads ok | window s | reload ms (median) | requests | connect | read | write | timeout | non-2xx |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  while read -r r p ok win rmed rps p99 req secs c rd w t n; do
    echo "| $(label $p) | $r | $ok / $RELOADS | $secs | $rmed | $req | $c | $rd | $w | $t | $n |"
  done <"$OUT/reloads.txt"
  for p in $PEERS; do
    echo "| $(label $p) | median | | $(awk -v p=$p '$2==p{print $9}' "$OUT/reloads.txt" | median) | $(awk -v p=$p '$2==p{print $5}' "$OUT/reloads.txt" | median) | | $(awk -v p=$p '$2==p{print $10}' "$OUT/reloads.txt" | median) | $(awk -v p=$p '$2==p{print $11}' "$OUT/reloads.txt" | median) | $(awk -v p=$p '$2==p{print $12}' "$OUT/reloads.txt" | median) | $(awk -v p=$p '$2==p{print $13}' "$OUT/reloads.txt" | median) | $(awk -v p=$p '$2==p{print $14}' "$OUT/reloads.txt" | median) |"
  done
  echo
  echo "### 3. p99 and req/s during reloads against a steady window of the same length"
  echo
  echo "| peer | round | req/s steady → reloads | p99 ms steady → reloads | p99 reloads / steady | socket errors + non-2xx steady |"
  echo "|---|---:|---:|---:|---:|---:|"
  : >"$OUT/ratios.txt"
  for p in $PEERS; do
    for r in $(seq "$RELOAD_ROUNDS"); do
      s=$(awk -v p=$p -v r=$r '$1==r && $2==p' "$OUT/steady.txt")
      d=$(awk -v p=$p -v r=$r '$1==r && $2==p' "$OUT/reloads.txt")
      ratio=$(awk -v a="$(echo "$d" | field 7)" -v b="$(echo "$s" | field 4)" 'BEGIN{printf "%.2f", a/b}')
      echo "$p $ratio $(echo "$s" | field 3) $(echo "$d" | field 6) $(echo "$s" | field 4) $(echo "$d" | field 7)" >>"$OUT/ratios.txt"
      echo "| $(label $p) | $r | $(echo "$s" | field 3) → $(echo "$d" | field 6) | $(echo "$s" | field 4) → $(echo "$d" | field 7) | ${ratio}× | $(echo "$s" | awk '{print $7+$8+$9+$10+$11}') |"
    done
    m() { awk -v p=$p -v f="$1" '$1==p{print $f}' "$OUT/ratios.txt" | median; }
    echo "| $(label $p) | median | $(m 3) → $(m 4) | $(m 5) → $(m 6) | $(m 2)× | |"
  done
  fi
  if [ "$MEMORY" != 0 ]; then
  echo
  echo "### 4. Memory (VmRSS, MiB)"
  echo
  echo "| peer | when | supervisor process | other non-worker processes | supervisor + workers (whole tree) | processes in tree | supervisor process peak (VmHWM) so far |"
  echo "|---|---|---:|---:|---:|---:|---:|"
  mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
  while read -r when p sup extra tree n hwm cmd; do
    echo "| $(label $p) | $when | $(mib $sup) | $(mib $extra) | $(mib $tree) | $((n + 1)) | $(mib $hwm) |"
  done <"$OUT/memory.txt"
  fi
} | tee "$OUT/summary.md"
echo "pm2same: raw reports in $OUT" >&2
