# Shell functions shared by bench/run and bench/ab (sourced, not run).

# need COMMAND PACKAGE: installs PACKAGE with apt when COMMAND is missing.
need() { command -v "$1" >/dev/null || { apt-get update -qq && apt-get install -y -qq "$2" >/dev/null; }; }

# start_server BINARY DIR: stocks eight SKUs well, starts `BINARY run` on a free
# port with its output in DIR, and sets PID and ADDR. The database and broker
# are the ones ORDERFLOW_DATABASE_URL and ORDERFLOW_BROKER_URL name.
start_server() {
  local bin="$1" dir="$2"
  for i in 1 2 3 4 5 6 7 8; do
    "$bin" stock set "sku-$i" 1000000000 >/dev/null
  done
  "$bin" run --listen 127.0.0.1:0 >"$dir/stdout" 2>"$dir/server.log" &
  PID=$!
  for _ in $(seq 100); do grep -q '^listening on' "$dir/stdout" 2>/dev/null && break; sleep 0.1; done
  ADDR="$(sed -n 's/^listening on //p' "$dir/stdout")"
  [ -n "$ADDR" ] || { echo "server did not start" >&2; cat "$dir/server.log" >&2; exit 1; }
}

# cpu_steal: prints the box's CPU time so far that the hypervisor gave to other
# guests ("steal") and its total, in ticks. On a shared virtual machine the
# speed drifts with it: compare two snapshots with steal_pct.
cpu_steal() { awk '$1 == "cpu" {t = 0; for (i = 2; i <= 9; i++) t += $i; print $9, t; exit}' /proc/stat; }

# steal_pct "S0 T0" "S1 T1": the share of CPU time stolen between two snapshots.
steal_pct() { echo "$1 $2" | awk '{printf "%.0f %%", ($4 > $2 ? ($3 - $1) * 100 / ($4 - $2) : 0)}'; }

# start_redis DIR: starts a redis-server of this run's own on a free port, its
# data in DIR, appending every write to its file and syncing it before it
# answers (what orderflow requires of a Redis broker), no snapshots; sets
# REDIS_PID and REDIS_PORT once it answers.
start_redis() {
  local dir="$1"
  mkdir -p "$dir"
  REDIS_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$dir" --daemonize no \
    --appendonly yes --appendfsync always --save "" --logfile "$dir/redis.log" &
  REDIS_PID=$!
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$REDIS_PORT" PING 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "redis-server did not start" >&2; cat "$dir/redis.log" >&2; exit 1
}
