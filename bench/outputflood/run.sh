#!/usr/bin/env bash
# A worker that floods its stdout, under sockd and under PM2 cluster mode
# (issue 19, "worker output you can attribute").
#
#   bench/outputflood/run.sh      (from anywhere; after scripts/setup)
#
# One Node worker, bench/outputflood/flood.js: an HTTP server on PORT
# (listen(PORT), process.send('ready')) that on GET /flood writes LINES
# numbered lines of 50 bytes ("line N f=ID xxx…") with process.stdout.write
# as fast as it can (never waiting for 'drain') and answers when the last
# write completed. Both supervisors are started from the same ecosystem
# file (instances: 1, exec_mode: 'cluster', wait_ready: true, env PORT;
# no kill_timeout, so each keeps its default: PM2 1.6 s, sockd 30 s):
#   PM2:   PM2_HOME=$TMP/pm2home pm2 start ecosystem.config.js
#          destination: the worker's out log, $PM2_HOME/logs/flood-out-0.log
#   sockd: sockd run --pm2 ecosystem.config.js --listen http=tcp://127.0.0.1:PORT
#            --control $TMP/sockd.sock --worker-output prefix  >$TMP/sockd-stdout.txt
#          destination: sockd's stdout, a file ("[w0 gN] line …")
# Both run side by side on free ports of 127.0.0.1; one flood at a time;
# ROUNDS rounds, the order of the peers swapped every round (A B, B A, …),
# each step done for both peers before the next step:
#   1. a flood alone: does every line arrive whole and in order? Every line
#      the destination file got during the flood is classified: the flood's
#      own lines (numbers 1..LINES, strictly increasing, no gap), the app's
#      start/stop lines, anything else (a merged or split line); the time
#      the client waited for the answer and until the file stopped growing;
#   2. the supervisor during that flood: peak RSS (VmHWM of sockd's pid, of
#      PM2's God Daemon, reset with /proc/PID/clear_refs before the flood)
#      and CPU (utime+stime of /proc/PID/stat, before the flood and once it
#      stopped using any) per 100,000 lines;
#   3. the reload command (`sockd reload --wait`, `pm2 reload flood`) timed
#      idle, and timed while a flood runs (started RELOAD_AFTER s after the
#      flood), one of each per round; also when the old worker was gone, and
#      what of that flood arrived;
#   4. the worker during the flood of 1.: peak RSS (VmHWM, reset before)
#      and CPU per 100,000 lines.
# Also a round trip to the supervisor (`sockd status`, `pm2 ping`), timed
# RELOAD_AFTER s into the flood of 1. and idle before the idle reload.
# Needs node, npm, curl and Go (scripts/setup installs them) and the pinned
# PM2 of bench/peers/node/package-lock.json: taken from
# bench/peers/node/node_modules (scripts/bench installs it there), else
# installed once with npm ci into bench/results/pm2same/pm2 (git-ignored,
# shared with bench/pm2same/run.sh). Builds sockd into /tmp/sockd-bench.
# The destination files (~30 MB per flood) stay in a temp dir removed at
# exit; the per-flood results, logs and the tables (summary.md) go to
# bench/results/outputflood-<time>/ (OUT=dir to choose). Settings: ROUNDS
# (3), LINES (500000), RELOAD_AFTER (0.5), KILL_TIMEOUT (ms; unset: no
# kill_timeout in the file, each supervisor's default). About 2 minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
. scripts/lib.sh

ROUNDS=${ROUNDS:-3}
LINES=${LINES:-500000}
RELOAD_AFTER=${RELOAD_AFTER:-0.5}
KILL_TIMEOUT=${KILL_TIMEOUT:-}
APPDIR=$ROOT/bench/outputflood
NAME=flood

for t in node npm curl; do
  command -v "$t" >/dev/null || { echo "outputflood: $t not found; run scripts/setup" >&2; exit 1; }
done
use_go

# PM2, at the version bench/peers/node pins.
PM2=$ROOT/bench/peers/node/node_modules/.bin/pm2
if [ ! -x "$PM2" ]; then
  PM2DIR=$ROOT/bench/results/pm2same/pm2
  PM2=$PM2DIR/node_modules/.bin/pm2
  if [ ! -x "$PM2" ] || ! cmp -s "$ROOT/bench/peers/node/package-lock.json" "$PM2DIR/package-lock.json"; then
    echo "outputflood: installing the pinned PM2 into $PM2DIR" >&2
    mkdir -p "$PM2DIR"
    cp bench/peers/node/package.json bench/peers/node/package-lock.json "$PM2DIR/"
    (cd "$PM2DIR" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
fi
PM2_VERSION=$(node -p "require('$(dirname "$(readlink -f "$PM2")")/../package.json').version")

SOCKD=/tmp/sockd-bench
go build -o "$SOCKD" ./cmd/sockd
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD)
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no | grep -q . && echo " (uncommitted changes in the tree)" || true)

OUT=${OUT:-$ROOT/bench/results/outputflood-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/outputflood.XXXXXX)
export PM2_HOME=$TMP/pm2home PM2_DISABLE_VERSION_CHECK=true
SOCK=$TMP/sockd.sock
SOCKD_OUT=$TMP/sockd-stdout.txt

SOCKD_PID= CURL_PID=
cleanup() {
  set +e
  [ -n "$CURL_PID" ] && kill "$CURL_PID" 2>/dev/null
  if [ -f "$PM2_HOME/pm2.pid" ]; then
    local d
    d=$(cat "$PM2_HOME/pm2.pid")
    "$PM2" kill >"$OUT/pm2-kill.log" 2>&1
    cp "$PM2_HOME/pm2.log" "$OUT/pm2-daemon.log" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$d" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$d" 2>/dev/null && kill -KILL "$d"
  fi
  if [ -n "$SOCKD_PID" ] && kill -0 "$SOCKD_PID" 2>/dev/null; then
    kill -TERM "$SOCKD_PID"
    for _ in $(seq 100); do kill -0 "$SOCKD_PID" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$SOCKD_PID" 2>/dev/null && kill -KILL "$SOCKD_PID"
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

freeport() { node -e 's=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
PORT_PM2=$(freeport)
PORT_SOCKD=$(freeport)
while [ "$PORT_SOCKD" = "$PORT_PM2" ]; do PORT_SOCKD=$(freeport); done

ecosystem() { # ecosystem DIR PORT
  mkdir -p "$1"
  cat >"$1/ecosystem.config.js" <<EOF
module.exports = {
  apps: [{
    name: '$NAME',
    script: 'flood.js',
    cwd: '$APPDIR',
    instances: 1,
    exec_mode: 'cluster',
    wait_ready: true,${KILL_TIMEOUT:+
    kill_timeout: $KILL_TIMEOUT,}
    env: { PORT: $2 },
  }],
};
EOF
}
ecosystem "$TMP/pm2" "$PORT_PM2"
ecosystem "$TMP/sockd" "$PORT_SOCKD"
cp "$TMP/pm2/ecosystem.config.js" "$OUT/ecosystem.config.js"

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$(date -u '+%Y-%m-%d %H:%M UTC')
T0=$(date +%s)

# --- the two peers ---------------------------------------------------------
CMD_PM2="PM2_HOME=\$TMP/pm2home pm2 start ecosystem.config.js"
CMD_SOCKD="sockd run --pm2 ecosystem.config.js --listen http=tcp://127.0.0.1:$PORT_SOCKD --control \$TMP/sockd.sock --worker-output prefix >\$TMP/sockd-stdout.txt"
(cd "$TMP/pm2" && "$PM2" start ecosystem.config.js >"$OUT/pm2-start.log" 2>&1)
(cd "$TMP/sockd" && exec "$SOCKD" run --pm2 ecosystem.config.js --listen "http=tcp://127.0.0.1:$PORT_SOCKD" \
  --control "$SOCK" --worker-output prefix >"$SOCKD_OUT" 2>"$OUT/sockd-stderr.log") &
SOCKD_PID=$!
PM2_PID=$(cat "$PM2_HOME/pm2.pid")
tr '\0' ' ' <"/proc/$PM2_PID/cmdline" | grep -q "God Daemon" || { echo "outputflood: pid $PM2_PID is not PM2's daemon" >&2; exit 1; }

children() { # children PID: the pids whose parent is PID
  cat /proc/[0-9]*/status 2>/dev/null | awk -v p="$1" '/^Pid:/{pid=$2} /^PPid:/ && $2==p {print pid}' || true
}
sockd_status() { # sockd_status: "current ready-worker-pids…" from sockd status --json
  "$SOCKD" status --json --control "$SOCK" 2>/dev/null |
    node -e 'let b="";process.stdin.on("data",d=>b+=d).on("end",()=>{const s=JSON.parse(b);
      console.log([s.current, ...(s.workers||[]).filter(w=>w.state==="ready").map(w=>w.pid)].join(" "))})' || true
}
workers() { # the worker pids of a peer
  case $1 in
  pm2) children "$PM2_PID" ;;
  sockd) sockd_status | cut -d' ' -f2- -s | tr ' ' '\n' ;;
  esac
}
worker_of() { # the one worker's pid (waits for there to be exactly one)
  local i w
  for i in $(seq 300); do
    w=$(workers "$1")
    if [ "$(echo "$w" | grep -c .)" = 1 ] && { [ "$1" = pm2 ] || [ "$(sockd_status | cut -d' ' -f1)" = 1 ]; }; then
      echo "$w"; return 0
    fi
    sleep 0.1
  done
  echo "outputflood: $1 has not exactly one worker: $w" >&2; return 1
}
port_of() { [ "$1" = pm2 ] && echo "$PORT_PM2" || echo "$PORT_SOCKD"; }
sup_of() { [ "$1" = pm2 ] && echo "$PM2_PID" || echo "$SOCKD_PID"; }
waitready() {
  local i
  for i in $(seq 150); do
    if curl -sf -o /dev/null "http://127.0.0.1:$(port_of "$1")/" && worker_of "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "outputflood: $1 did not become ready" >&2; exit 1
}
waitready pm2
waitready sockd
PM2_OUT=$(ls "$PM2_HOME"/logs/"$NAME"-out*.log)
[ "$(echo "$PM2_OUT" | wc -l)" = 1 ] || { echo "outputflood: not one PM2 out log: $PM2_OUT" >&2; exit 1; }
dest_of() { [ "$1" = pm2 ] && echo "$PM2_OUT" || echo "$SOCKD_OUT"; }

# --- /proc -------------------------------------------------------------------
cpu_ticks() { # utime+stime, in clock ticks; the fields after the last ") "
  sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0
}
hwm_kb() { awk '$1=="VmHWM:"{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
reset_hwm() { echo 5 >"/proc/$1/clear_refs"; }
alive() { # a pid that exists and is not a zombie
  [ -r "/proc/$1/stat" ] && [ "$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]
}
HZ=$(getconf CLK_TCK)
now_ms() { echo $(($(date +%s%N) / 1000000)); }
fsize() { stat -c %s "$1"; }
median() { sort -g | awk '{a[NR]=$1} END{if(NR==0){print "-"; exit} if(NR%2) v=a[(NR+1)/2]; else v=(a[NR/2]+a[NR/2+1])/2; if (v==int(v)) print v; else printf "%.1f\n", v}'; }

# settle PEER PID: wait until the peer's destination file has not grown for
# 1 s and the supervisor PID has used no CPU for 0.5 s (at most 120 s);
# prints the time (ms) the file last grew
settle() {
  local f last_size last_grow c i s
  f=$(dest_of "$1")
  last_size=$(fsize "$f"); last_grow=$(now_ms)
  for i in $(seq 1200); do
    sleep 0.1
    s=$(fsize "$f")
    if [ "$s" != "$last_size" ]; then last_size=$s; last_grow=$(now_ms); continue; fi
    if [ $(($(now_ms) - last_grow)) -ge 1000 ]; then
      c=$(cpu_ticks "$2"); sleep 0.5
      [ "$(cpu_ticks "$2")" = "$c" ] && [ "$(fsize "$f")" = "$last_size" ] && break
    fi
  done
  echo "$last_grow"
}

# check PEER FILE OFFSET ID: the lines the file got from OFFSET on, against
# flood ID; prints: flood-lines first last gaps(missing numbers inside)
# backwards(number not above the previous) app-lines other-lines
check() {
  tail -c +"$(($3 + 1))" "$2" | awk -v peer="$1" -v id="$4" -v out="$OUT/other-$4.txt" '
    BEGIN { re = "^line [0-9]+ f=" id " x+$"; good = 0; first = 0; last = 0; gaps = 0; back = 0; app = 0; other = 0 }
    {
      body = $0
      if (peer == "sockd") {
        if (match(body, /^\[w0 g[0-9]+\] /)) body = substr(body, RLENGTH + 1)
        else { other++; if (other <= 20) print > out; next }
      }
      if (body ~ re && length(body) == 49) {
        n = body; sub(/^line /, "", n); sub(/ .*/, "", n); n += 0
        if (good == 0) first = n
        else if (n <= last) back++
        else if (n > last + 1) gaps += n - last - 1
        last = n; good++; next
      }
      if (body ~ /^flood\.js pid=[0-9]+ (listening on [0-9]+|stopping)$/) { app++; next }
      other++; if (other <= 20) print > out
    }
    END { print good, first, last, gaps, back, app, other }'
}

# flood PEER ID MODE: one flood of LINES lines; MODE plain or reload (the
# reload command is run RELOAD_AFTER s into the flood). Appends a line to
# $OUT/floods.txt:
#   ID peer mode rc client_ms arrived_ms sup_cpu_ticks sup_hwm_kb worker_cpu_ticks worker_hwm_kb node_peak_rss
#   good first last gaps back app other reload_ms old_gone_ms ping_ms
flood() {
  local p=$1 id=$2 mode=$3 f sup w off c0s c0w t0 t1 rc rms=- gone=- pms=- lastgrow c1s c1w hs hw np
  f=$(dest_of "$p"); sup=$(sup_of "$p"); w=$(worker_of "$p")
  off=$(fsize "$f")
  reset_hwm "$sup"; reset_hwm "$w"
  c0s=$(cpu_ticks "$sup"); c0w=$(cpu_ticks "$w")
  t0=$(now_ms)
  curl -s -m 600 -o "$OUT/flood-$id.json" "http://127.0.0.1:$(port_of "$p")/flood?id=$id&n=$LINES" &
  CURL_PID=$!
  if [ "$mode" = reload ]; then
    sleep "$RELOAD_AFTER"
    local a=$(now_ms)
    reload "$p" || echo "reload during flood $id failed" >>"$OUT/reload-cmd-$p.log"
    rms=$(($(now_ms) - a))
    for _ in $(seq 1200); do alive "$w" || break; sleep 0.05; done
    gone=$(($(now_ms) - a))
  else
    sleep "$RELOAD_AFTER"
    pms=$(ping_ms "$p")
  fi
  rc=0; wait "$CURL_PID" || rc=$?
  CURL_PID=
  t1=$(now_ms)
  lastgrow=$(settle "$p" "$sup")
  c1s=$(cpu_ticks "$sup"); hs=$(hwm_kb "$sup")
  if [ "$mode" = plain ]; then c1w=$(cpu_ticks "$w"); hw=$(hwm_kb "$w"); else c1w=$c0w; hw=-; fi
  np=$(node -e 'try{console.log(JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")).peak_rss)}catch(e){console.log("-")}' "$OUT/flood-$id.json")
  echo "$id $p $mode $rc $((t1 - t0)) $((lastgrow - t0)) $((c1s - c0s)) $hs $((c1w - c0w)) $hw $np $(check "$p" "$f" "$off" "$id") $rms $gone $pms" >>"$OUT/floods.txt"
}

reload() {
  case $1 in
  pm2) "$PM2" reload "$NAME" >>"$OUT/reload-cmd-pm2.log" 2>&1 ;;
  sockd) "$SOCKD" reload --wait --control "$SOCK" >>"$OUT/reload-cmd-sockd.log" 2>&1 ;;
  esac
}
ping_ms() { # ping_ms PEER: the time a round trip to the supervisor takes
  local a ok=
  a=$(now_ms)
  case $1 in
  pm2) "$PM2" ping >>"$OUT/ping-pm2.log" 2>&1 || ok="(failed)" ;;
  sockd) "$SOCKD" status --control "$SOCK" >>"$OUT/ping-sockd.log" 2>&1 || ok="(failed)" ;;
  esac
  echo "$(($(now_ms) - a))$ok"
}
idle_reload() { # idle_reload PEER ROUND: appends "round peer ms ok ping_ms" to reloads-idle.txt
  local a ok=1 ms pms
  pms=$(ping_ms "$1")
  sleep 0.5
  a=$(now_ms)
  reload "$1" || ok=0
  ms=$(($(now_ms) - a))
  echo "$2 $1 $ms $ok $pms" >>"$OUT/reloads-idle.txt"
  worker_of "$1" >/dev/null # the old worker gone
}

# the clear_refs reset works here?
reset_hwm "$SOCKD_PID"
[ "$(hwm_kb "$SOCKD_PID")" -le "$(($(awk '$1=="VmRSS:"{print $2}' "/proc/$SOCKD_PID/status") + 512))" ] ||
  { echo "outputflood: writing 5 to /proc/PID/clear_refs does not reset VmHWM here" >&2; exit 1; }

: >"$OUT/floods.txt" >"$OUT/reloads-idle.txt"
sleep 2
for r in $(seq "$ROUNDS"); do
  if [ $((r % 2)) = 1 ]; then order="pm2 sockd"; else order="sockd pm2"; fi
  for p in $order; do
    echo "outputflood: round $r, $p: flood" >&2
    sleep 1; flood "$p" "r$r-$p-plain" plain
  done
  for p in $order; do
    echo "outputflood: round $r, $p: reload, idle" >&2
    sleep 1; idle_reload "$p" "$r"
  done
  for p in $order; do
    echo "outputflood: round $r, $p: reload during a flood" >&2
    sleep 1; flood "$p" "r$r-$p-reload" reload
    worker_of "$p" >/dev/null
  done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
MINUTES=$(awk -v s=$(($(date +%s) - T0)) 'BEGIN{printf "%.1f", s/60}')

# --- the tables --------------------------------------------------------------
label() { [ "$1" = pm2 ] && echo "PM2 $PM2_VERSION cluster mode" || echo "sockd --worker-output prefix"; }
ms_per_100k() { awk -v t="$1" -v hz="$HZ" -v n="$LINES" 'BEGIN{printf "%.0f", t * 1000 / hz * 100000 / n}'; }
mib() { [ "$1" = - ] && echo - || awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }
sec() { awk -v m="$1" 'BEGIN{printf "%.2f", m/1000}'; }
col() { # col PEER MODE FIELD: that field of every flood of PEER in MODE
  awk -v p="$1" -v m="$2" -v f="$3" '$2==p && $3==m {print $f}' "$OUT/floods.txt"
}
{
  echo "Run $START, $MINUTES minutes; load average $LOAD_BEFORE before, $LOAD_AFTER after."
  echo "Versions: node $(node --version), pm2 $PM2_VERSION, sockd $COMMIT$DIRTY, $(go version | cut -d' ' -f3)."
  echo "Machine: $(nproc) cores, $(uname -r). $LINES lines of 50 bytes per flood, $ROUNDS rounds; kill_timeout: ${KILL_TIMEOUT:-not set (PM2 1600 ms, sockd 30 s)}."
  echo "PM2: $CMD_PM2"
  echo "sockd: $CMD_SOCKD"
  echo
  echo "### 1. Did every line arrive, whole and in order? (a flood alone)"
  echo
  echo "| peer | round | flood lines in the destination | first – last | missing inside | out of order | app's own lines | other lines (merged, split, foreign) | client waited s | last line in file s |"
  echo "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"
  while read -r id p mode rc cms ams cs hs cw hw np good first last gaps back app other rms gone pms; do
    [ "$mode" = plain ] || continue
    echo "| $(label "$p") | $(r=${id%%-*}; echo ${r#r}) | $good / $LINES | $first – $last | $gaps | $back | $app | $other | $(sec "$cms") | $(sec "$ams") |"
  done <"$OUT/floods.txt"
  for p in pm2 sockd; do
    echo "| $(label "$p") | median | $(col "$p" plain 12 | median) / $LINES | | | | | | $(sec "$(col "$p" plain 5 | median)") | $(sec "$(col "$p" plain 6 | median)") |"
  done
  echo
  echo "### 2 and 4. The supervisor and the worker during that flood"
  echo
  echo "| peer | round | supervisor CPU ms per 100k lines | supervisor peak RSS MiB | worker CPU ms per 100k lines | worker peak RSS MiB (VmHWM) | worker peak RSS MiB (Node's own, sampled) |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
  while read -r id p mode rc cms ams cs hs cw hw np good first last gaps back app other rms gone pms; do
    [ "$mode" = plain ] || continue
    echo "| $(label "$p") | $(r=${id%%-*}; echo ${r#r}) | $(ms_per_100k "$cs") | $(mib "$hs") | $(ms_per_100k "$cw") | $(mib "$hw") | $([ "$np" = - ] && echo - || awk -v b="$np" 'BEGIN{printf "%.1f", b/1048576}') |"
  done <"$OUT/floods.txt"
  for p in pm2 sockd; do
    echo "| $(label "$p") | median | $(ms_per_100k "$(col "$p" plain 7 | median)") | $(mib "$(col "$p" plain 8 | median)") | $(ms_per_100k "$(col "$p" plain 9 | median)") | $(mib "$(col "$p" plain 10 | median)") | $(awk -v b="$(col "$p" plain 11 | median)" 'BEGIN{printf "%.1f", b/1048576}') |"
  done
  echo
  echo "### 3. The reload command, idle and during a flood (started $RELOAD_AFTER s into it)"
  echo
  echo "| peer | round | idle: reload ms | during a flood: reload ms | … old worker gone after ms | … that flood's lines in the destination | … out of order / other lines | … client's answer | status/ping ms idle → during a flood |"
  echo "|---|---:|---:|---:|---:|---:|---:|---|---:|"
  for p in pm2 sockd; do
    for r in $(seq "$ROUNDS"); do
      i=$(awk -v p="$p" -v r="$r" '$1==r && $2==p {print $3 ($4==1 ? "" : " (failed)")}' "$OUT/reloads-idle.txt")
      read -r id _ mode rc cms ams cs hs cw hw np good first last gaps back app other rms gone _ < <(awk -v id="r$r-$p-reload" '$1==id' "$OUT/floods.txt")
      pi=$(awk -v p="$p" -v r="$r" '$1==r && $2==p {print $5}' "$OUT/reloads-idle.txt")
      pf=$(awk -v id="r$r-$p-plain" '$1==id {print $21}' "$OUT/floods.txt")
      ans=$([ "$rc" = 0 ] && [ -s "$OUT/flood-$id.json" ] && echo "answered after $(sec "$cms") s" || echo "no answer (curl exit $rc, after $(sec "$cms") s)")
      echo "| $(label "$p") | $r | $i | $rms | $gone | $good / $LINES | $back / $other | $ans | $pi → $pf |"
    done
    echo "| $(label "$p") | median | $(awk -v p="$p" '$2==p {print $3}' "$OUT/reloads-idle.txt" | median) | $(col "$p" reload 19 | median) | $(col "$p" reload 20 | median) | $(col "$p" reload 12 | median) / $LINES | | | $(awk -v p="$p" '$2==p {print $5}' "$OUT/reloads-idle.txt" | median) → $(col "$p" plain 21 | median) |"
  done
} | tee "$OUT/summary.md"
echo "outputflood: results in $OUT" >&2
