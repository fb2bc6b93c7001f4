#!/usr/bin/env bash
# Load benchmark: direct vs nginx (plain proxy hop, no signing) vs sigv4-sidecar (signing),
# all on loopback, in one invocation with interleaved rounds. See bench/README.md.
#
#   bench/run.sh                     # 3 rounds x 4 scenarios x 3 targets x 10 s (~7-8 min)
#   ROUNDS=5 DURATION=20s bench/run.sh
#
# Environment overrides:
#   ROUNDS (3)  DURATION (10s)  WARMUP (2s)  PROXY_CPU (0)  LOAD_CPU (1)  BASE_PORT (18180)
#   SKIP_BUILD=1 (use the existing target/release binaries)  KEEP_TMP=1 (keep logs/configs)
#   SCENARIOS="get-small-c1 get-small-c64 post-4k-c64 get-16k-c64" (subset/order)
#   RESULTS=<file> (also write the per-run raw results there, TSV)
#   SYSCALLS=1 (after the rounds, count syscalls and context switches per request of nginx and
#             the sidecar under GET small c=64 with `perf stat`)
#   PROFILE=1 (after the rounds, profile the sidecar with `perf record` under GET small c=64 for
#             PROFILE_SECS (10) and print the hottest symbols; ROUNDS=0 PROFILE=1 = profile only)
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BASE_PORT=${BASE_PORT:-18180}
SCENARIOS=${SCENARIOS:-"get-small-c1 get-small-c64 post-4k-c64 get-16k-c64"}

UPSTREAM_PORT=$((BASE_PORT + 1))
NGINX_PORT=$((BASE_PORT + 2))
SIDECAR_PORT=$((BASE_PORT + 3))
ADMIN_PORT=$((BASE_PORT + 4))
STS_PORT=$((BASE_PORT + 5))
GATEWAY_PORT=$((BASE_PORT + 6))

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET_DIR/release
# The release binary is stripped; a profile needs symbols: the profiling profile is the same
# code (LTO, one codegen unit) with line tables.
SIDECAR_BIN=$BIN/sigv4-sidecar
[ "${PROFILE:-0}" = 1 ] && SIDECAR_BIN=$TARGET_DIR/profiling/sigv4-sidecar
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- prerequisites
need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing ${need_apt[*]} with apt-get"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
command -v taskset >/dev/null || die "taskset (util-linux) is required"
command -v curl >/dev/null || die "curl is required"
NCPU=$(nproc --all)
[ "$NCPU" -ge 2 ] || die "needs at least 2 CPUs (proxy on one, load generator + upstream on another)"

if [ "${SKIP_BUILD:-0}" != 1 ]; then
    log "building (release)"
    (cd "$ROOT" && cargo build --release -p sigv4-sidecar -p sigv4-testbed --bins)
    if [ "${PROFILE:-0}" = 1 ]; then (cd "$ROOT" && cargo build --profile profiling -p sigv4-sidecar); fi
fi
[ -x "$SIDECAR_BIN" ] || die "$SIDECAR_BIN is missing"
for b in sigv4-sidecar bench-upstream local-stack; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing (build it: cargo build --release -p sigv4-sidecar -p sigv4-testbed --bins)"
done

# ---------------------------------------------------------------- processes and cleanup
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d /tmp/sigv4-bench.XXXXXX)
PIDS=()
cleanup() {
    local rc=$?
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill "${PIDS[i]}" 2>/dev/null || true
    done
    sleep 0.3
    for pid in "${PIDS[@]}"; do
        kill -9 "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    if [ "${KEEP_TMP:-0}" = 1 ] || [ $rc -ne 0 ]; then
        log "logs and configs kept in $TMP"
    else
        rm -rf "$TMP"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for <file> <regex> <seconds>
wait_for() {
    local file=$1 re=$2 secs=$3 i
    for ((i = 0; i < secs * 10; i++)); do
        grep -qE "$re" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in $UPSTREAM_PORT $NGINX_PORT $SIDECAR_PORT $ADMIN_PORT $STS_PORT $GATEWAY_PORT; do
    port_free "$p" || die "127.0.0.1:$p is in use (set BASE_PORT=...)"
done

log "starting bench-upstream on 127.0.0.1:$UPSTREAM_PORT (CPU $LOAD_CPU)"
taskset -c "$LOAD_CPU" "$BIN/bench-upstream" --port "$UPSTREAM_PORT" >"$TMP/upstream.log" 2>&1 &
UPSTREAM_PID=$!
PIDS+=("$UPSTREAM_PID")
wait_for "$TMP/upstream.log" '^READY' 10 || die "bench-upstream did not start: $(cat "$TMP/upstream.log")"

log "starting local-stack (STS emulator) on 127.0.0.1:$STS_PORT (CPU $LOAD_CPU)"
taskset -c "$LOAD_CPU" "$BIN/local-stack" --sts-port "$STS_PORT" --gateway-port "$GATEWAY_PORT" \
    --lifetime 1h >"$TMP/local-stack.log" 2>&1 &
PIDS+=("$!")
wait_for "$TMP/local-stack.log" '^READY' 20 || die "local-stack did not start: $(cat "$TMP/local-stack.log")"

log "starting nginx on 127.0.0.1:$NGINX_PORT (CPU $PROXY_CPU)"
USER_LINE=""
[ "$(id -u)" -eq 0 ] && USER_LINE="user root;"
sed -e "s#@TMP@#$TMP#g" -e "s#@UPSTREAM_PORT@#$UPSTREAM_PORT#g" \
    -e "s#@NGINX_PORT@#$NGINX_PORT#g" -e "s#@USER_LINE@#$USER_LINE#g" \
    "$HERE/nginx.conf.template" >"$TMP/nginx.conf"
"$NGINX" -t -q -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" \
    || die "nginx config test failed: $(cat "$TMP/nginx-error.log")"
taskset -c "$PROXY_CPU" "$NGINX" -p "$TMP" -e "$TMP/nginx-error.log" -c "$TMP/nginx.conf" \
    >"$TMP/nginx.out" 2>&1 &
NGINX_MASTER=$!
PIDS+=("$NGINX_MASTER")
NGINX_WORKER=""
for _ in $(seq 50); do
    NGINX_WORKER=$(pgrep -P "$NGINX_MASTER" | head -n1 || true)
    [ -n "$NGINX_WORKER" ] && break
    sleep 0.1
done
[ -n "$NGINX_WORKER" ] || die "nginx worker did not start: $(cat "$TMP/nginx-error.log")"

log "starting sigv4-sidecar on 127.0.0.1:$SIDECAR_PORT (CPU $PROXY_CPU)"
env -i PATH="$PATH" HOME="$TMP" \
    SIGV4_SIDECAR_UPSTREAM="http://127.0.0.1:$UPSTREAM_PORT/Prod" \
    SIGV4_SIDECAR_REGION=us-east-1 \
    SIGV4_SIDECAR_SERVICE=execute-api \
    SIGV4_SIDECAR_ROLE_ARN=arn:aws:iam::111111111111:role/sigv4-sidecar-demo \
    SIGV4_SIDECAR_LISTEN="127.0.0.1:$SIDECAR_PORT" \
    SIGV4_SIDECAR_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT" \
    SIGV4_SIDECAR_LOG_LEVEL=warn \
    AWS_ACCESS_KEY_ID=AKIDLOCALBASE \
    AWS_SECRET_ACCESS_KEY=local-base-secret-not-a-real-key \
    AWS_REGION=us-east-1 \
    AWS_ENDPOINT_URL_STS="http://127.0.0.1:$STS_PORT" \
    AWS_EC2_METADATA_DISABLED=true \
    AWS_CONFIG_FILE="$TMP/none" AWS_SHARED_CREDENTIALS_FILE="$TMP/none" \
    taskset -c "$PROXY_CPU" "$SIDECAR_BIN" >"$TMP/sidecar.log" 2>&1 &
SIDECAR_PID=$!
PIDS+=("$SIDECAR_PID")
ready=0
for _ in $(seq 100); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")" = 200 ]; then
        ready=1
        break
    fi
    sleep 0.1
done
[ $ready = 1 ] || die "sidecar not ready: $(curl -s "http://127.0.0.1:$ADMIN_PORT/readyz"; cat "$TMP/sidecar.log")"

# ---------------------------------------------------------------- measurement helpers
url_of() { # <target> <path>
    case $1 in
        direct) echo "http://127.0.0.1:$UPSTREAM_PORT/Prod$2" ;;
        nginx) echo "http://127.0.0.1:$NGINX_PORT$2" ;;
        sidecar) echo "http://127.0.0.1:$SIDECAR_PORT$2" ;;
    esac
}
proxy_pid() { # the process doing the proxying (nginx: its worker)
    case $1 in
        direct) echo "" ;;
        nginx) echo "$NGINX_WORKER" ;;
        sidecar) echo "$SIDECAR_PID" ;;
    esac
}
cpu_ticks() { # utime+stime of the whole process (all threads), in clock ticks
    [ -n "$1" ] || { echo 0; return; }
    sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'
}
status_kb() { # <pid> <VmRSS|VmHWM>
    [ -n "$1" ] || { echo 0; return; }
    awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"
}
reset_hwm() { [ -n "$1" ] && echo 5 >"/proc/$1/clear_refs" 2>/dev/null || true; }

# Every target must answer 200 with the upstream's body before any load.
for t in direct nginx sidecar; do
    for path in /small /16k; do
        code=$(curl -s -o "$TMP/check.body" -w '%{http_code}' "$(url_of "$t" "$path")")
        [ "$code" = 200 ] && grep -q '"Hello World"' "$TMP/check.body" \
            || die "$t $path answered $code: $(head -c 300 "$TMP/check.body")"
    done
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/json' \
        --data-binary "@$HERE/wrk-report.lua" "$(url_of "$t" /small)")
    [ "$code" = 200 ] || die "$t POST answered $code"
done
log "all targets answer 200 (sidecar /readyz is 200)"

declare -A IDLE_RSS
IDLE_RSS[direct]=0
IDLE_RSS[nginx]=$(status_kb "$NGINX_WORKER" VmRSS)
IDLE_RSS[sidecar]=$(status_kb "$SIDECAR_PID" VmRSS)
NGINX_MASTER_RSS=$(status_kb "$NGINX_MASTER" VmRSS)

scenario_args() { # -> "<connections> <path> <body bytes>"
    case $1 in
        get-small-c1) echo "1 /small 0" ;;
        get-small-c64) echo "64 /small 0" ;;
        post-4k-c64) echo "64 /small 4096" ;;
        get-16k-c64) echo "64 /16k 0" ;;
        *) die "unknown scenario $1" ;;
    esac
}

RAW=$TMP/results.tsv
printf 'scenario\ttarget\tround\trps\tp50_us\tp99_us\terrors\trequests\tcpu_ticks\tpeak_kb\n' >"$RAW"

# run_one <scenario> <target> <round> [record]
run_one() {
    local scen=$1 t=$2 round=$3 conns path bytes url pid c0 c1 out line
    read -r conns path bytes <<<"$(scenario_args "$scen")"
    url=$(url_of "$t" "$path")
    pid=$(proxy_pid "$t")
    reset_hwm "$pid"
    c0=$(cpu_ticks "$pid")
    out=$(BENCH_BODY_BYTES=$bytes taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${4:-$DURATION}" \
        --timeout 5s -s "$HERE/wrk-report.lua" "$url" 2>&1) || die "wrk failed: $out"
    c1=$(cpu_ticks "$pid")
    [ "$round" = warmup ] && return 0
    line=$(grep '^BENCH ' <<<"$out") || die "no BENCH line from wrk: $out"
    # shellcheck disable=SC2086
    local requests duration_us connect read write status timeout p50_us p99_us
    eval "$(sed 's/^BENCH //' <<<"$line")"
    local errors=$((connect + read + write + status + timeout))
    local rps
    rps=$(awk -v r="$requests" -v d="$duration_us" 'BEGIN {printf "%.0f", r / (d / 1e6)}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$t" "$round" "$rps" "$p50_us" \
        "$p99_us" "$errors" "$requests" "$((c1 - c0))" "$(status_kb "$pid" VmHWM)" >>"$RAW"
    log "round $round $scen $t: $rps req/s p50 ${p50_us}us p99 ${p99_us}us errors $errors"
}

log "warm-up ($WARMUP per target)"
for t in direct nginx sidecar; do run_one get-small-c64 "$t" warmup "$WARMUP"; done

nscen=$(wc -w <<<"$SCENARIOS")
log "measuring: $ROUNDS rounds x $nscen scenarios x 3 targets x $DURATION"
for ((r = 1; r <= ROUNDS; r++)); do
    if ((r % 2)); then order="direct nginx sidecar"; else order="sidecar nginx direct"; fi
    for scen in $SCENARIOS; do
        for t in $order; do run_one "$scen" "$t" "$r"; done
    done
done

if [ "${SYSCALLS:-0}" = 1 ]; then
    command -v perf >/dev/null || die "SYSCALLS=1 needs perf (Debian: apt-get install linux-perf)"
    echo "== syscalls and context switches per request (GET small c=64, 5 s, perf stat) =="
    for t in nginx sidecar; do
        pid=$(proxy_pid "$t")
        taskset -c "$LOAD_CPU" perf stat -x, -e raw_syscalls:sys_enter,context-switches \
            -o "$TMP/stat-$t.csv" -p "$pid" -- sleep 5 &
        spid=$!
        out=$(taskset -c "$LOAD_CPU" wrk -t1 -c64 -d6s -s "$HERE/wrk-report.lua" "$(url_of "$t" /small)")
        wait "$spid" || die "perf stat failed: $(cat "$TMP/stat-$t.csv")"
        reqs=$(sed -n 's/^BENCH requests=\([0-9]*\) duration_us=\([0-9]*\).*/\1 \2/p' <<<"$out")
        awk -F, -v t="$t" -v r="$reqs" 'BEGIN {split(r, a, " "); rate = a[1] / (a[2] / 1e6) * 5}
            /sys_enter/ {sc = $1} /context-switches/ {cs = $1}
            END {printf "%-8s syscalls/req %.2f  context switches/req %.3f\n", t, sc / rate, cs / rate}' \
            "$TMP/stat-$t.csv"
    done
fi

if [ "${PROFILE:-0}" = 1 ]; then
    command -v perf >/dev/null || die "PROFILE=1 needs perf (Debian: apt-get install linux-perf)"
    psecs=${PROFILE_SECS:-10}
    log "profiling the sidecar (perf, ${psecs}s of GET small c=64)"
    taskset -c "$LOAD_CPU" perf record -q -F 1999 --call-graph dwarf,16384 -o "$TMP/perf.data" \
        -p "$SIDECAR_PID" -- sleep "$psecs" >"$TMP/perf.log" 2>&1 &
    perf_pid=$!
    sleep 0.5
    run_one get-small-c64 sidecar warmup "$((psecs - 1))s"
    wait "$perf_pid" || die "perf record failed: $(cat "$TMP/perf.log")"
    trim() { sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' | cut -c1-200; }
    perf report -i "$TMP/perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | trim | head -n 40 >"$TMP/profile-self.txt" || true
    perf report -i "$TMP/perf.data" --children --sort symbol --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]' | trim | grep -vE '\(inlined\)|\{closure|closure_env' \
        | head -n 60 >"$TMP/profile-children.txt" || true
    echo "== sidecar profile, self time (perf.data: $TMP/perf.data) =="
    cat "$TMP/profile-self.txt"
    echo "== sidecar profile, inclusive (children) =="
    cat "$TMP/profile-children.txt"
    KEEP_TMP=1
fi

# The sidecar's own count of what it answered: everything must be 2xx.
curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | grep '^sigv4_sidecar_requests_total' >"$TMP/codes.txt" || true
# code="0" = the client went away before the answer (wrk cuts its in-flight requests when a run
# ends: at most one per connection per run); anything else that is not 2xx is a failure.
bad_codes=$(awk '!/code="(2[0-9][0-9]|0)"/ {s += $NF} END {print s + 0}' "$TMP/codes.txt")
cut_codes=$(awk '/code="0"/ {s += $NF} END {print s + 0}' "$TMP/codes.txt")
[ -n "${RESULTS:-}" ] && cp "$RAW" "$RESULTS"

# ---------------------------------------------------------------- report
{
    echo "# sigv4-sidecar load benchmark: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "# machine: $NCPU CPUs, $(lscpu | awk -F: '/Model name/ && !m {gsub(/^ +/, "", $2); m = $2} END {print m}'); $(uname -r)"
    echo "# proxy on CPU $PROXY_CPU; wrk (-t1) + upstream + STS on CPU $LOAD_CPU; $ROUNDS rounds x $DURATION; nginx $("$NGINX" -v 2>&1 | sed 's/.*\///')"
    echo "# load average (1/5/15 min) at start: $LOAD_START; at end: $(cut -d' ' -f1-3 /proc/loadavg) (the benchmark itself keeps ~2 runnable)"
} >"$TMP/report.txt"

awk -F'\t' -v clk="$CLK_TCK" -v idle_nginx="${IDLE_RSS[nginx]}" -v idle_sidecar="${IDLE_RSS[sidecar]}" \
    -v scen_order="$SCENARIOS" '
function sortn(a, n,    i, j, v) { for (i = 2; i <= n; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v } }
function median(a, n) { sortn(a, n); return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
function mib(kb) { return kb > 0 ? sprintf("%.1f", kb / 1024) : "-" }
NR > 1 {
    k = $1 SUBSEP $2; n[k]++
    rps[k, n[k]] = $4; p50[k, n[k]] = $5; p99[k, n[k]] = $6
    err[k] += $7; req[k] += $8; ticks[k] += $9
    if ($10 > peak[k]) peak[k] = $10
}
END {
    ns = split(scen_order, S, " "); split("direct nginx sidecar", T, " ")
    printf "%-14s %-8s %10s %19s %9s %9s %7s %10s %9s %9s\n", "scenario", "target", "req/s", "(min-max)", "p50 ms", "p99 ms", "errors", "CPU us/req", "idle MiB", "peak MiB"
    for (s = 1; s <= ns; s++) for (t = 1; t <= 3; t++) {
        k = S[s] SUBSEP T[t]; m = n[k]; if (!m) continue
        for (i = 1; i <= m; i++) { a[i] = rps[k, i]; b[i] = p50[k, i]; c[i] = p99[k, i] }
        sortn(a, m); lo = a[1]; hi = a[m]
        med[k] = median(a, m); m50 = median(b, m); m99[k] = median(c, m)
        cpu[k] = (T[t] == "direct" || req[k] == 0) ? -1 : ticks[k] / clk * 1e6 / req[k]
        idle = (T[t] == "nginx") ? idle_nginx : (T[t] == "sidecar") ? idle_sidecar : 0
        printf "%-14s %-8s %10.0f %19s %9.3f %9.3f %7d %10s %9s %9s\n", S[s], T[t], med[k], sprintf("(%d-%d)", lo, hi), m50 / 1000, m99[k] / 1000, err[k], ((cpu[k] < 0) ? "-" : sprintf("%.1f", cpu[k])), mib(idle), mib(peak[k])
    }
    print ""
    printf "%-14s %18s %18s %20s %17s\n", "ratios", "thrpt sc/nginx", "thrpt sc/direct", "CPU/req sc/nginx", "p99 sc/nginx"
    for (s = 1; s <= ns; s++) {
        d = S[s] SUBSEP "direct"; g = S[s] SUBSEP "nginx"; x = S[s] SUBSEP "sidecar"
        if (!n[x]) continue
        printf "%-14s %18s %18s %20s %17s\n", S[s],
            ((med[g] > 0) ? sprintf("%.2f", med[x] / med[g]) : "-"),
            ((med[d] > 0) ? sprintf("%.2f", med[x] / med[d]) : "-"),
            ((cpu[g] > 0) ? sprintf("%.2f", cpu[x] / cpu[g]) : "-"),
            ((m99[g] > 0) ? sprintf("%.2f", m99[x] / m99[g]) : "-")
    }
}' "$RAW" >>"$TMP/report.txt"

{
    echo ""
    echo "# nginx master RSS (the table shows the worker): $(awk -v k="${NGINX_MASTER_RSS:-0}" 'BEGIN {printf "%.1f MiB", k / 1024}')"
    echo "# sidecar answers by status (from /metrics): non-2xx = $bad_codes (must be 0); cut by wrk at the end of a run = $cut_codes"
    sed 's/^/#   /' "$TMP/codes.txt"
} >>"$TMP/report.txt"

echo
cat "$TMP/report.txt"
[ -n "${RESULTS:-}" ] && cp "$TMP/report.txt" "${RESULTS%.tsv}.txt"

total_errors=$(awk -F'\t' 'NR > 1 {s += $7} END {print s + 0}' "$RAW")
if [ "$total_errors" -ne 0 ] || [ "$bad_codes" -ne 0 ]; then
    log "FAILED: $total_errors wrk errors, $bad_codes non-2xx sidecar answers"
    exit 1
fi
