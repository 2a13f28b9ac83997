# Sourced by the measuring scripts (cpu-per-process, latency-by-layer, stalls): starts the
# booking path on free loopback ports, ours or the limit probe's four processes, so that
# each script compares the two started the same way. Not a command of its own.
#
#   . scripts/lib/stacks.sh   # makes $work (a temporary directory) and an empty pids;
#                             # on exit kills pids and jobs and removes $work (KEEP=1 keeps it)
#   stack_start ours|probe    # BIN=dir takes our binaries from dir (else `scripts/build`),
#                             # SYNC=FULL sets our SQLite's synchronous (NORMAL otherwise)
#
# Afterwards: pids holds (backend-sidecar backend frontend-sidecar frontend), in the order of
# stack_names; F is the frontend's port; L1..L3 the URLs that enter the path at the backend,
# its sidecar's invoke and the frontend's sidecar's invoke, RAND the oha flag their hotel
# pattern needs ("" for the probe); $work/bodies holds frontend bodies and $work/ubodies
# the matching backend bodies, one per line for `oha -Z`.

stack_names=(backend-sidecar backend frontend-sidecar frontend)

work=$(mktemp -d)
pids=()
# Under `set -e` a failing command would cut the trap short (and set the exit status):
# processes may be gone already, so nothing here may fail.
stack_stop() {
  kill "${pids[@]}" $(jobs -p) 2>/dev/null || true
  wait 2>/dev/null || true
  if [ "${KEEP:-}" = 1 ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
trap stack_stop EXIT

stack_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

stack_start() {
  case ${1:?stack_start ours|probe} in
    probe) stack_start_probe ;;
    ours) stack_start_ours ;;
    *) echo "unknown mode $1 (ours or probe)" >&2; return 2 ;;
  esac
}

stack_start_probe() {
  local bin=${TMPDIR:-/tmp}/limit-probe-target/release/limit-probe SA SB B
  [ -x "$bin" ] || { echo "run ../shared/limit-probe/run once first (it builds $bin)" >&2; return 1; }
  F=$(stack_port); SA=$(stack_port); SB=$(stack_port); B=$(stack_port)
  "$bin" sidecar --port "$SB" --upstream "127.0.0.1:$B" --strip --state sqlite --db "$work/state.db" --checkpoint bg --rt current & pids+=($!)
  "$bin" backend --port "$B" --upstream "127.0.0.1:$SB" --rt current & pids+=($!)
  "$bin" sidecar --port "$SA" --upstream "127.0.0.1:$SB" --rt current & pids+=($!)
  "$bin" frontend --port "$F" --upstream "127.0.0.1:$SA" --rt current & pids+=($!)
  local up=""
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$F/" && up=1 && break; sleep 0.1; done
  [ -n "$up" ] || { echo "the probe did not come up within 10 s" >&2; return 1; }
  python3 - >"$work/bodies" <<'PY'
import random
for i in range(60000):
    print('{"hotel_id":"h%d","room_id":"r%d","user_id":"u%d","check_in":"2026-12-01","check_out":"2026-12-04","guests":2,"request_id":"req-%d","channel":"web","note":"limit-probe booking request"}'
          % (random.randint(1, 1000), random.randint(1, 100), random.randint(1, 100000), i))
PY
  cp "$work/bodies" "$work/ubodies"
  L1="http://127.0.0.1:$B/x"
  L2="http://127.0.0.1:$SB/v1.0/invoke/backend/method/book_hotel/1"
  L3="http://127.0.0.1:$SA/v1.0/invoke/backend/method/book_hotel/1"
  RAND=""
}

stack_start_ours() {
  local B FH BH sidecar_b sidecar_f
  [ -n "${BIN:-}" ] || scripts/build >/dev/null
  BIN_DIR=${BIN:-$PWD/target/release}; export BIN_DIR SIDECAR_REGISTRY_DIR=$work/registry
  mkdir -p "$work/components"
  sed "s#data/state.db#$work/state.db#; s#\"FULL\"#\"${SYNC:-NORMAL}\"#" components/embedded/statestore.yaml >"$work/components/statestore.yaml"
  cp components/embedded/lockstore.yaml "$work/components/"
  F=$(stack_port); B=$(stack_port); FH=$(stack_port); BH=$(stack_port)
  "$BIN_DIR/sidecar" run --app-id backend --app-port "$B" --dapr-http-port "$BH" --dapr-grpc-port "$(stack_port)" \
    --resources-path "$work/components" --config config.yaml --log-level warn -- bash run_server.sh 1 warning &
  sidecar_b=$!
  "$BIN_DIR/sidecar" run --app-id frontend --app-port "$F" --dapr-http-port "$FH" --dapr-grpc-port "$(stack_port)" \
    --resources-path "$work/components" --config config.yaml --log-level warn -- bash run_frontend.sh 1 warning &
  sidecar_f=$!
  pids+=("$sidecar_b" "$sidecar_f")
  local up=""
  for _ in $(seq 150); do
    curl -fs -o /dev/null "http://127.0.0.1:$F/healthz" && curl -fs -o /dev/null "http://127.0.0.1:$B/healthz" && up=1 && break
    sleep 0.2
  done
  [ -n "$up" ] || { echo "the stack did not come up within 30 s" >&2; return 1; }
  pids=("$sidecar_b" "$(pgrep -P "$sidecar_b" -f 'backend --workers' | head -1)" "$sidecar_f" "$(pgrep -P "$sidecar_f" -f 'frontend --workers' | head -1)")
  python3 - "$work" <<'PY'
import datetime, json, random, sys
w = sys.argv[1]
first = datetime.date.today() + datetime.timedelta(days=1)
with open(w + "/bodies", "w") as b, open(w + "/ubodies", "w") as u:
    for i in range(60000):
        day = first + datetime.timedelta(days=random.randrange(365))
        user = {"user_id": "u%d" % i, "name": "N", "check_in": day.isoformat(),
                "check_out": (day + datetime.timedelta(days=3)).isoformat(), "rooms": 1}
        print(json.dumps({"hotel_id": random.randint(1, 300), "user": user}), file=b)
        print(json.dumps(user), file=u)
PY
  # A random hotel per request (oha's --rand-regex-url), as the frontend's bodies have.
  L1="http://127.0.0.1:$B/book_hotel/[1-2][0-9][0-9]"
  L2="http://127.0.0.1:$BH/v1.0/invoke/backend/method/book_hotel/[1-2][0-9][0-9]"
  L3="http://127.0.0.1:$FH/v1.0/invoke/backend/method/book_hotel/[1-2][0-9][0-9]"
  RAND="--rand-regex-url"
}
