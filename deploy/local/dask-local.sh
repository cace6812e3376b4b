#!/usr/bin/env bash
# Start and stop a real Dask cluster on this machine's loopback interface: one
# `dask scheduler` and N `dask worker` processes, optionally with TLS using development
# certificates made here with openssl.
#
#   deploy/local/dask-local.sh start [--workers N] [--threads T] [--port P] [--tls]
#                                    [--memory-limit BYTES] [--no-nanny] [--dir DIR]
#   deploy/local/dask-local.sh env    [--dir DIR]   # exports for dem and other dask clients
#   deploy/local/dask-local.sh status [--dir DIR]
#   deploy/local/dask-local.sh stop   [--dir DIR]
#
# Everything lives in DIR (default: $DEM_CLUSTER_DIR or ./.dask-local): the scheduler
# file (scheduler.json), process ids (pids/), logs (logs/), worker scratch space
# (work/) and, with --tls, the certificates (certs/). Each worker runs under a nanny
# process (which restarts it if it dies or runs out of memory) unless --no-nanny.
# `stop` ends exactly the processes that `start` recorded there.
#
# Then, for example:
#   eval "$(deploy/local/dask-local.sh env)"
#   dem fit gmm data.zarr --var X -k 8 --checkpoint fit.zarr
# or, without the environment: dem fit ... --scheduler-file .dask-local/scheduler.json
# (plus --tls-ca-file/--tls-cert/--tls-key certs/{ca,client,client-key}.pem with --tls).
#
# The development certificates are for trying TLS on one machine only: a private CA
# valid for 30 days, with keys left unencrypted on disk. Use your organisation's CA
# for real clusters.
set -euo pipefail

usage() { sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; }

command=${1:-}
[[ -n $command ]] || { usage; exit 2; }
shift

dir=${DEM_CLUSTER_DIR:-./.dask-local}
workers=2
threads=1
port=0
tls=0
nanny=--nanny
memory_limit=auto
while [[ $# -gt 0 ]]; do
  case $1 in
    --workers) workers=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --memory-limit) memory_limit=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --tls) tls=1; shift ;;
    --no-nanny) nanny=--no-nanny; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "dask-local: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

dask_bin=${DASK:-dask}
if command -v "$dask_bin" >/dev/null; then
  python_bin=$(dirname "$(command -v "$dask_bin")")/python
  [[ -x $python_bin ]] || python_bin=${PYTHON:-python3}
elif [[ $command == start ]]; then
  echo "dask-local: '$dask_bin' not found; install distributed (or set DASK=/path/to/dask)" >&2
  exit 1
else
  python_bin=${PYTHON:-python3}
fi

certs=$dir/certs

make_certificates() {
  command -v openssl >/dev/null || { echo "dask-local: --tls needs openssl" >&2; exit 1; }
  mkdir -p "$certs"
  chmod 700 "$certs"
  local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  openssl req -x509 "${ec[@]}" -keyout "$certs/ca-key.pem" -out "$certs/ca.pem" -days 30 \
    -subj "/CN=dem local development CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    2>/dev/null
  local role
  for role in scheduler worker client; do
    openssl req "${ec[@]}" -keyout "$certs/$role-key.pem" -out "$certs/$role.csr" \
      -subj "/CN=dem-$role" 2>/dev/null
    printf '%s\n' "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost" \
      "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
      "extendedKeyUsage=serverAuth,clientAuth" > "$certs/$role.ext"
    openssl x509 -req -in "$certs/$role.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca-key.pem" \
      -CAcreateserial -out "$certs/$role.pem" -days 30 -extfile "$certs/$role.ext" 2>/dev/null
    rm -f "$certs/$role.csr" "$certs/$role.ext"
  done
  chmod 600 "$certs"/*-key.pem
}

tls_args() {  # $1: role
  [[ -f $dir/tls ]] || return 0
  printf '%s\n' --tls-ca-file "$certs/ca.pem" --tls-cert "$certs/$1.pem" --tls-key "$certs/$1-key.pem"
}

alive() {  # a recorded pid that still runs a dask process
  local pid=$1
  kill -0 "$pid" 2>/dev/null && ps -p "$pid" -o args= | grep -q dask
}

print_env() {
  local address
  address=$("$python_bin" -c 'import json,sys; print(json.load(open(sys.argv[1]))["address"])' "$dir/scheduler.json")
  echo "export DASK_SCHEDULER_ADDRESS=$address"
  if [[ -f $dir/tls ]]; then
    local abs
    abs=$(cd "$certs" && pwd)
    echo "export DASK_DISTRIBUTED__COMM__TLS__CA_FILE=$abs/ca.pem"
    echo "export DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT=$abs/client.pem"
    echo "export DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY=$abs/client-key.pem"
    echo "export DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION=True"
  fi
}

stop_all() {
  [[ -d $dir/pids ]] || { echo "dask-local: nothing recorded in $dir/pids"; return 0; }
  local file pid
  for file in "$dir"/pids/worker-*.pid "$dir"/pids/scheduler.pid; do
    [[ -f $file ]] || continue
    pid=$(cat "$file")
    if alive "$pid"; then kill -TERM "$pid"; fi
  done
  for _ in $(seq 100); do
    local running=0
    for file in "$dir"/pids/*.pid; do
      [[ -f $file ]] && alive "$(cat "$file")" && running=1
    done
    [[ $running == 0 ]] && break
    sleep 0.1
  done
  for file in "$dir"/pids/*.pid; do
    [[ -f $file ]] || continue
    pid=$(cat "$file")
    if alive "$pid"; then kill -KILL "$pid"; fi
    rm -f "$file"
  done
  rm -f "$dir/scheduler.json"
  echo "dask-local: stopped the cluster in $dir"
}

case $command in
  start)
    if [[ -f $dir/pids/scheduler.pid ]] && alive "$(cat "$dir/pids/scheduler.pid")"; then
      echo "dask-local: a cluster is already running in $dir; stop it first" >&2; exit 1
    fi
    mkdir -p "$dir/pids" "$dir/logs" "$dir/work"
    rm -f "$dir/scheduler.json" "$dir/tls"
    if [[ $tls == 1 ]]; then make_certificates; touch "$dir/tls"; protocol=tls; else protocol=tcp; fi
    mapfile -t scheduler_tls < <(tls_args scheduler)
    nohup "$dask_bin" scheduler --host 127.0.0.1 --port "$port" --protocol "$protocol" \
      --scheduler-file "$dir/scheduler.json" --dashboard-address 127.0.0.1:0 \
      "${scheduler_tls[@]}" > "$dir/logs/scheduler.log" 2>&1 &
    echo $! > "$dir/pids/scheduler.pid"
    for _ in $(seq 300); do [[ -s $dir/scheduler.json ]] && break; sleep 0.1; done
    [[ -s $dir/scheduler.json ]] || { echo "dask-local: the scheduler did not start; see $dir/logs/scheduler.log" >&2; stop_all >&2; exit 1; }
    mapfile -t worker_tls < <(tls_args worker)
    for i in $(seq "$workers"); do
      nohup "$dask_bin" worker --scheduler-file "$dir/scheduler.json" --host 127.0.0.1 \
        --protocol "$protocol" --nthreads "$threads" --nworkers 1 --name "local-$i" \
        --memory-limit "$memory_limit" --local-directory "$dir/work" --no-dashboard "$nanny" \
        "${worker_tls[@]}" > "$dir/logs/worker-$i.log" 2>&1 &
      echo $! > "$dir/pids/worker-$i.pid"
    done
    # Wait until every worker has registered (the client uses the same TLS settings).
    if ! (eval "$(print_env)"; "$python_bin" - "$workers" <<'PY'
import sys
from distributed import Client
with Client(timeout=60) as client:
    client.wait_for_workers(int(sys.argv[1]), timeout=120)
PY
    ); then
      echo "dask-local: workers did not register; see $dir/logs/" >&2; stop_all >&2; exit 1
    fi
    echo "dask-local: scheduler $(print_env | head -1 | cut -d= -f2) with $workers worker(s); state in $dir"
    echo "dask-local: use it with: eval \"\$($0 env --dir $dir)\"  or  --scheduler-file $dir/scheduler.json"
    ;;
  env) print_env ;;
  status)
    for file in "$dir"/pids/*.pid; do
      [[ -f $file ]] || continue
      pid=$(cat "$file")
      if alive "$pid"; then state=running; else state=stopped; fi
      echo "$(basename "$file" .pid) $pid $state"
    done
    ;;
  stop) stop_all ;;
  *) usage >&2; exit 2 ;;
esac
