#!/usr/bin/env bash
# POST /v1/call to `echo` with an API key: the hub against a bare aiohttp handler returning
# the same JSON, in the same run, with wrk on loopback.  Writes docs/benchmarks.md.
#   bash bench/http_call.sh [duration_s] [connections] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${2:-32}
ROUNDS=${3:-3}
PY=.venv/bin/python
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)"; exit 2; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

HUB_PORT=18080; BARE_PORT=18081; NOLEDGER_PORT=18082
write_config() {  # file port
cat > "$1" <<TOML
[http]
listen = "127.0.0.1:$2"
[http3]
enabled = false
[grpc]
enabled = false
[mdns]
enabled = false
[log]
level = "WARNING"
[plans.starter]
rate_limits = { api_calls = "100000000/min" }
[modules]
enabled = ["echo"]
TOML
}
write_config "$work/hub.toml" $HUB_PORT
write_config "$work/noledger.toml" $NOLEDGER_PORT
$PY -m daemon.cli serve --config "$work/hub.toml" --state-dir "$work/state" 2>"$work/hub.log" &
$PY bench/hub_without_ledger.py serve --config "$work/noledger.toml" --state-dir "$work/state2" 2>"$work/noledger.log" &
$PY bench/bare_http.py $BARE_PORT &
for _ in $(seq 300); do [ -f "$work/state/endpoints.json" ] && [ -f "$work/state2/endpoints.json" ] && break; sleep 0.1; done
sleep 0.5
KEY=$(cat "$work/state/bootstrap-admin.key")
KEY2=$(cat "$work/state2/bootstrap-admin.key")
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"action":"echo","payload":{"text":"hello, edge"}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = "$KEY"
LUA
sed "s/$KEY/$KEY2/" "$work/post.lua" > "$work/post2.lua"
run() {  # url [script] -> "rps p50_ms p99_ms"
  wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -s "${2:-$work/post.lua}" "$1/v1/call" > "$work/out" 2>&1
  $PY - "$work/out" <<'PYEOF'
import re, sys
text = open(sys.argv[1]).read()
def ms(label):
    m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)", text, re.M)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
if non2xx:
    sys.exit(f"non-2xx answers during the run: {non2xx.group(1)}\n{text}")
print(f"{rps:.0f} {ms(50):.2f} {ms(99):.2f}")
PYEOF
}
# warm both
wrk -t1 -c4 -d2s -s "$work/post.lua" "http://127.0.0.1:$HUB_PORT/v1/call" >/dev/null
wrk -t1 -c4 -d2s -s "$work/post.lua" "http://127.0.0.1:$BARE_PORT/v1/call" >/dev/null
wrk -t1 -c4 -d2s -s "$work/post2.lua" "http://127.0.0.1:$NOLEDGER_PORT/v1/call" >/dev/null
hub_runs=(); bare_runs=(); noledger_runs=()
for r in $(seq "$ROUNDS"); do
  bare_runs+=("$(run "http://127.0.0.1:$BARE_PORT")")
  hub_runs+=("$(run "http://127.0.0.1:$HUB_PORT")")
  noledger_runs+=("$(run "http://127.0.0.1:$NOLEDGER_PORT" "$work/post2.lua")")
  echo "round $r: bare ${bare_runs[-1]} | hub ${hub_runs[-1]} | hub, ledger stubbed ${noledger_runs[-1]}"
done
$PY - "$CONNS" "$DURATION" "${#hub_runs[@]}" "${hub_runs[@]}" "${bare_runs[@]}" "${noledger_runs[@]}" <<'PYEOF' | tee /dev/stderr | $PY bench/report.py http_call
import statistics, sys, platform, os, datetime
conns, duration, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [list(map(float, r.split())) for r in sys.argv[4:]]
hub, bare, noledger = rows[:n], rows[n:2 * n], rows[2 * n:]
med = lambda runs, i: statistics.median(r[i] for r in runs)
ratio = med(hub, 0) / med(bare, 0)
ledger_cost = 1 - med(hub, 0) / med(noledger, 0)
print(f"""## HTTP/1.1 `POST /v1/call` → `echo` (bench/http_call.sh)

{datetime.date.today()} · {os.cpu_count()} cores · Python {platform.python_version()} · wrk -t2 -c{conns} -d{duration}s, {n} rounds, medians.
The hub path: API key auth (cached), RBAC, rate limit, routing, scheduling, echo, a durable ledger
entry with group commit (fsync), receipt. The bare path: an aiohttp handler returning the same JSON.

| server | requests/s | p50 ms | p99 ms |
|---|---|---|---|
| bare aiohttp handler | {med(bare,0):.0f} | {med(bare,1):.2f} | {med(bare,2):.2f} |
| democratic-ai hub | {med(hub,0):.0f} | {med(hub,1):.2f} | {med(hub,2):.2f} |
| hub with the ledger append stubbed (bench/hub_without_ledger.py) | {med(noledger,0):.0f} | {med(noledger,1):.2f} | {med(noledger,2):.2f} |

Ratio hub / bare: **{ratio:.2f}x** requests/s (target ≥ 0.6x; p99 target < 20 ms at 32 connections).
The durable ledger costs **{ledger_cost:.0%}** of the hub's requests/s (target ≤ 15%).
""")
PYEOF
