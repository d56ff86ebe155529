#!/usr/bin/env bash
# netns-tests: the real `river` binary, one network namespace per machine.
#
#   ns $H (host)            ns $R1 (runner r1)      ns $R2 (runner r2)
#   10.77.0.1  h0           10.77.0.11  r1          10.77.0.12  r2
#        |                       |                       |
#   -----+-------- bridge br0 in ns $SW (the "switch") --+-----
#     (cutting a link: ip -n $SW link set <port> down)
#
# Each scenario asserts what an operator sees (`river node list`, exit codes, log lines), waits
# by polling real state (never fixed sleeps for correctness), and everything is torn down on exit,
# pass or fail. Usage: netns-tests/run.sh [path/to/river] [scenario...]
set -euo pipefail

RIVER=${1:-target/debug/river}
RIVER=$(realpath "$RIVER")
HERE=$(dirname "$(realpath "$0")")
shift || true
ONLY=("$@")

if [[ $EUID -ne 0 ]] || ! command -v ip >/dev/null || ! command -v nsenter >/dev/null; then
  echo "SKIP netns-tests: needs root, iproute2 and nsenter (util-linux)"
  exit 0
fi

ID=$$
SW=rv${ID}sw H=rv${ID}h R1=rv${ID}r1 R2=rv${ID}r2 R3=rv${ID}r3 R4=rv${ID}r4
OA=rv${ID}oa OB=rv${ID}ob OC=rv${ID}oc
T=$(mktemp -d /tmp/river-netns.XXXXXX)
PASS=0 FAIL=0

# Scenarios run in subshells, so process ids live in files: $T/pid.NAME.
track() { echo "$2" >"$T/pid.$1"; }
pid_of() { cat "$T/pid.$1"; }

cleanup() {
  set +e
  # Docker engines first, given time to unmount their layers.
  for f in "$T"/dockerd.*.pid; do
    [[ -f $f ]] || continue
    pid=$(cat "$f"); kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  done
  for f in "$T"/pid.*; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null; done
  sleep 0.3
  for f in "$T"/pid.*; do [[ -f $f ]] && kill -9 "$(cat "$f")" 2>/dev/null; done
  for ns in $SW $H $R1 $R2 $R3 $R4 $OA $OB $OC; do ip netns del "$ns" 2>/dev/null; done
  grep " $T" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  if [[ $FAIL -gt 0 ]]; then
    echo "--- logs of the last run (kept in $T) ---"
    tail -n 30 "$T"/*.log 2>/dev/null
  else
    rm -rf "$T"
  fi
}
trap cleanup EXIT

# Runs a command in a namespace. Background processes use nsenter directly instead: a function
# run with `&` is a subshell, and its pid (`$!`) would not be the process to stop.
in_ns() { local ns=$1; shift; nsenter --net=/run/netns/"$ns" "$@"; }

# Machine $1 with address $2 gets a veth whose other end ($3) joins the bridge.
machine() {
  local ns=$1 addr=$2 port=$3
  ip netns add "$ns"
  ip link add "${port}" type veth peer name eth0 netns "$ns"
  ip link set "${port}" netns "$SW"
  ip -n "$SW" link set "${port}" master br0 up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

topology() {
  ip netns add "$SW"
  ip -n "$SW" link add br0 type bridge
  ip -n "$SW" link set br0 up
  machine "$H" 10.77.0.1 p${ID}h
  machine "$R1" 10.77.0.11 p${ID}r1
  machine "$R2" 10.77.0.12 p${ID}r2
  machine "$R3" 10.77.0.13 p${ID}r3
  machine "$R4" 10.77.0.14 p${ID}r4
  machine "$OA" 10.77.0.21 p${ID}oa
  machine "$OB" 10.77.0.22 p${ID}ob
  machine "$OC" 10.77.0.23 p${ID}oc
}

# matches GREP-ARGS...: grep that reads all its input. `grep -q` stops at the first match, and
# the command writing into the pipe then fails on the closed pipe — which `pipefail` reports as a
# failure of the whole check.
matches() { grep "$@" >/dev/null; }

# refute DESCRIPTION COMMAND...: fails the scenario if COMMAND succeeds (a bare `! cmd` never
# fails a script under `set -e`).
refute() {
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then
    echo "    unexpectedly: $what"
    return 1
  fi
}

# wait_for DESCRIPTION SECONDS COMMAND...: polls until COMMAND succeeds.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [[ $SECONDS -ge $deadline ]]; then
      echo "    timed out after ${secs}s waiting for: $what"
      return 1
    fi
    sleep 0.2
  done
}

# Every command a check runs is bounded, so a hang fails its scenario rather than the whole run.
cli() { in_ns "$H" env RIVER_CONFIG_DIR="$T/host/admin" timeout 300 "$RIVER" "$@"; }
node_state() { cli node list -o json | python3 -c "import json,sys; print({n['name']: n['state'] for n in json.load(sys.stdin)}.get('$1', 'absent'))"; }
task_running() { cli task status "$1" | matches "state: *running"; }
state_is() { [[ $(node_state "$1") == "$2" ]]; }

start_host() {
  cat >"$T/host.toml" <<TOML
state_dir = "$T/host"
listen = "10.77.0.1:7443"
advertise = ["10.77.0.1"]
heartbeat_interval = "500ms"
offline_after = "3s"
TOML
  nsenter --net=/run/netns/"$H" "$RIVER" host --config "$T/host.toml" >>"$T/host.log" 2>&1 &
  track host $!
  wait_for "host admin credentials" 20 test -f "$T/host/admin/cluster.toml"
  wait_for "host answers" 20 cli status
}

# start_runner NS NAME [extra args]: starts a runner (joining when given --join/--token).
start_runner() {
  local ns=$1 name=$2; shift 2
  nsenter --net=/run/netns/"$ns" "$RIVER" runner --state-dir "$T/$name" --name "$name" "$@" >>"$T/$name.log" 2>&1 &
  track "$name" $!
}

# engine_in NS NAME [dockerd options]: a Docker engine of its own in namespace NS, at
# $T/docker-NAME.sock.
engine_in() {
  local ns=$1 name=$2 sock=$T/docker-$2.sock
  shift 2
  in_ns "$ns" dockerd --data-root "$T/docker-$name" --exec-root "$T/docker-$name-exec" --pidfile "$T/dockerd.$name.pid" \
    -H "unix://$sock" --bridge=none --cgroup-parent="river-netns-$ID-$name" "$@" \
    >"$T/dockerd-$name.log" 2>&1 &
  wait_for "$name's Docker engine" 60 docker -H "unix://$sock" info
}

# engine_in_r4 NAME: an engine in r4's namespace that leaves its packet filter alone.
engine_in_r4() { engine_in "$R4" "$1" --iptables=false --ip-masq=false; }

# runner_on_engine NAME: a runner NAME in r4 using the engine engine_in_r4 NAME started, joined.
runner_on_engine() {
  local name=$1
  cat >"$T/$name.toml" <<TOML
state_dir = "$T/$name"
name = "$name"
docker_socket = "$T/docker-$name.sock"
TOML
  nsenter --net=/run/netns/"$R4" "$RIVER" runner --config "$T/$name.toml" --join 10.77.0.1:7443 --token "$(new_token)" >>"$T/$name.log" 2>&1 &
  track "$name" $!
  wait_for "$name online" 20 state_is "$name" online
}

new_token() { cli token create --ttl 10m --uses "${1:-1}" 2>/dev/null | head -n1; }

scenario() {
  local name=$1
  if [[ ${#ONLY[@]} -gt 0 && ! " ${ONLY[*]} " =~ " $name " ]]; then return; fi
  echo "# $name"
  # Not the condition of an `if`: there bash ignores `set -e`, and a failed step would not stop
  # the scenario.
  set +e
  ( set -e; "test_$name" )
  local rc=$?
  set -e
  if [[ $rc -eq 0 ]]; then
    echo "ok - $name"; PASS=$((PASS + 1))
  else
    echo "not ok - $name"; FAIL=$((FAIL + 1))
  fi
}

# ---------------------------------------------------------------------------------------------

#   [h 10.77.0.1] ---br0--- [r1 .11]   r1, r2 join with one-time tokens;
#                   \------- [r2 .12]   both listed online, each at its own address
test_join() {
  start_runner "$R1" r1 --join 10.77.0.1:7443 --token "$(new_token)"
  start_runner "$R2" r2 --join 10.77.0.1:7443 --token "$(new_token)"
  wait_for "r1 online" 20 state_is r1 online
  wait_for "r2 online" 20 state_is r2 online
  # The host sees each runner at its own address, over the bridge.
  cli node show r1 | matches "address:     10.77.0.11:"
  cli node list | matches "^r2 *online"
}

#   [h] ---br0---X--- [r1]   r1's port on the bridge goes down for a while:
#            \------- [r2]   r1 offline (r2 stays online), then online again on the same connection
test_cut_link() {
  ip -n "$SW" link set p${ID}r1 down
  wait_for "r1 offline after the link is cut" 15 state_is r1 offline
  [[ $(node_state r2) == online ]] || { echo "    r2 went offline too"; return 1; }
  ip -n "$SW" link set p${ID}r1 up
  wait_for "r1 online once the link is back" 40 state_is r1 online
}

#   [h] ---br0--- [r1]
#            \--X-- [r2]   cut past QUIC's 20 s idle timeout: r2's runner reconnects by itself
test_long_cut() {
  # Longer than QUIC's idle timeout: the connection dies, the runner reconnects by itself.
  ip -n "$SW" link set p${ID}r2 down
  wait_for "r2 offline" 15 state_is r2 offline
  wait_for "r2's runner notices the broken connection" 40 grep -q "reconnecting in" "$T/r2.log"
  ip -n "$SW" link set p${ID}r2 up
  wait_for "r2 online after reconnecting" 60 state_is r2 online
}

#   [h restarts] ---br0--- [r1], [r2]   both come back without help
test_host_restart() {
  local pid; pid=$(pid_of host)
  kill "$pid"
  wait_for "host stops" 20 bash -c "! kill -0 $pid"
  refute "the stopped host still answers" cli status
  start_host
  wait_for "r1 back after the host restart" 60 state_is r1 online
  wait_for "r2 back after the host restart" 60 state_is r2 online
}

#   [h] ---br0--- [r1]
#            \-------- [r2 removed]   r2 is cut off, stops, and is refused if started again
test_revoked_node() {
  cli node remove r2 | matches "revoked"
  # The runner is told and stops, saying why; started again, it is refused again.
  wait_for "r2's runner stops" 20 bash -c "! kill -0 $(pid_of r2)"
  grep -q "removed from the cluster" "$T/r2.log"
  in_ns "$R2" timeout 60 "$RIVER" runner --state-dir "$T/r2" >"$T/r2-again.log" 2>&1 && { echo "    a removed node ran again"; return 1; }
  grep -q "removed from the cluster" "$T/r2-again.log"
  [[ $(node_state r2) == absent ]]
  [[ $(node_state r1) == online ]]
}

#   [h :7443 cluster A, :7444 cluster B] ---br0--- [r3]
#   a B token against A fails the fingerprint check; B's runner is refused by A, both ways round
test_wrong_ca() {
  # A second cluster, on the host machine's namespace at another port.
  nsenter --net=/run/netns/"$H" "$RIVER" host --state-dir "$T/other" --listen 10.77.0.1:7444 >>"$T/other.log" 2>&1 &
  track other $!
  wait_for "second host" 20 test -f "$T/other/admin/cluster.toml"
  local foreign
  foreign=$(in_ns "$H" env RIVER_CONFIG_DIR="$T/other/admin" timeout 60 "$RIVER" token create 2>/dev/null | head -n1)
  # Its token does not work against our host: the CA fingerprint does not match.
  if in_ns "$R3" timeout 60 "$RIVER" runner --state-dir "$T/r3" --name r3 --join 10.77.0.1:7443 --token "$foreign" >"$T/r3.log" 2>&1; then
    echo "    joined with another cluster's token"; return 1
  fi
  grep -q "does not match the fingerprint" "$T/r3.log"
  # A runner of the other cluster, pointed at our host, is refused at the TLS handshake.
  nsenter --net=/run/netns/"$R3" "$RIVER" runner --state-dir "$T/r3b" --name r3 --join 10.77.0.1:7444 --token "$foreign" >"$T/r3b.log" 2>&1 &
  local pid=$!
  track r3b "$pid"
  wait_for "r3 joined the other cluster" 20 grep -q "joined the cluster" "$T/r3b.log"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  # Pointed at our host with the other cluster's CA, the runner refuses our host...
  sed -i 's/7444/7443/' "$T/r3b/identity/cluster.toml"
  if in_ns "$R3" timeout 60 "$RIVER" runner --state-dir "$T/r3b" >"$T/r3c.log" 2>&1; then
    echo "    a foreign runner stayed connected"; return 1
  fi
  grep -q "host's certificate is not trusted" "$T/r3c.log"
  # ...and trusting our CA but presenting the other cluster's certificate, our host refuses it.
  cp "$T/host/ca.crt" "$T/r3b/identity/ca.crt"
  if in_ns "$R3" timeout 60 "$RIVER" runner --state-dir "$T/r3b" >"$T/r3d.log" 2>&1; then
    echo "    our host accepted a foreign certificate"; return 1
  fi
  grep -q "host rejected this certificate" "$T/r3d.log"
  [[ $(node_state r3) == absent ]]
  cli status | matches "1 online"
}

#   [h] ---br0--- [r4 + its own dockerd]
#   a task submitted at the host runs in r4's engine; its output and exit code come back
test_tasks() {
  if ! command -v dockerd >/dev/null || ! docker image inspect river-test/busybox:1 >/dev/null 2>&1; then
    echo "    SKIP: needs dockerd and river-test/busybox:1 (scripts/docker-env.sh)"
    [[ -z ${RIVER_REQUIRE_DOCKER:-} ]]
    return
  fi
  engine_in_r4 d1
  docker save river-test/busybox:1 | docker -H "unix://$T/docker-d1.sock" load >/dev/null
  runner_on_engine d1
  local out code
  set +e
  out=$(cli task submit -t d1 --image river-test/busybox:1 --wait -- sh -c 'echo from-$RIVER_NODE; exit 3' 2>&1)
  code=$?
  set -e
  [[ $code -eq 3 ]] || { echo "    --wait gave exit code $code: $out"; return 1; }
  local id
  id=$(cli task list -o json | python3 -c "import json,sys; print(max(t['id'] for t in json.load(sys.stdin)))")
  [[ $(cli task logs "$id") == from-d1 ]] || { echo "    logs: $(cli task logs "$id")"; return 1; }
  # It ran in r4's engine: the host machine's engine never saw it.
  refute "the host machine's engine ran d1's task" bash -c "docker ps -a --filter label=river.node=d1 --format '{{.Names}}' | grep -q ."
}

#   [h] ---br0--- [r4: d1 (engine with busybox), d2 (a fresh engine with no image at all)]
#   an environment made on d1, edited and committed there, runs on d2: the image reached d2's
#   engine over the mesh, from the host, with no registry and no shared filesystem
test_environments() {
  if [[ ! -S $T/docker-d1.sock ]]; then
    echo "    SKIP: needs the engine of the tasks scenario"
    [[ -z ${RIVER_REQUIRE_DOCKER:-} ]]
    return
  fi
  local sock=$T/docker-d2.sock
  engine_in_r4 d2
  [[ -z $(docker -H "unix://$sock" images -q) ]] || { echo "    d2's engine is not empty"; return 1; }
  runner_on_engine d2
  cli env create lab --from river-test/busybox:1 --node d1 >/dev/null
  local editing
  editing=$(cli env shell lab --detach -t d1)
  cli connect "$editing" -- sh -c 'echo made-on-d1 > /etc/lab-marker'
  cli env commit lab -m "add a marker" >/dev/null
  local out
  out=$(cli task submit -t d2 --env lab --wait -- cat /etc/lab-marker 2>&1) || { echo "    task on d2: $out"; return 1; }
  local id
  id=$(cli task list -o json | python3 -c "import json,sys; print(max(t['id'] for t in json.load(sys.stdin)))")
  [[ $(cli task logs "$id") == made-on-d1 ]] || { echo "    logs: $(cli task logs "$id")"; return 1; }
  # d2's engine now has exactly that version, which it could only have had from the host.
  docker -H "unix://$sock" images --format '{{.Repository}}:{{.Tag}}' | matches -x 'river-env/lab:v2'
  [[ $(cli env list -o json | python3 -c "import json,sys; print([e for e in json.load(sys.stdin) if e['name'] == 'lab'][0]['versions'][1]['fetches'])") == 1 ]]
}

#   [user in h] --mesh--> [host h] --mesh--> [d1 in r4: container, server on its 127.0.0.1]
#   `river forward` and `river connect` from the host's namespace reach a server bound to the
#   container's loopback on another machine; nothing on r4 is reachable from h otherwise
test_forward() {
  if [[ ! -S $T/docker-d1.sock ]]; then
    echo "    SKIP: needs the engine of the tasks scenario"
    [[ -z ${RIVER_REQUIRE_DOCKER:-} ]]
    return
  fi
  local id
  id=$(cli task submit -t d1 --image river-test/busybox:1 -- sh -c \
    'mkdir /www && echo served-from-d1 > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www')
  wait_for "task $id running" 20 task_running "$id"
  nsenter --net=/run/netns/"$H" env RIVER_CONFIG_DIR="$T/host/admin" "$RIVER" forward "$id" 8080 -l 18080 >"$T/forward.out" 2>"$T/forward.log" &
  track forward $!
  wait_for "forward listening" 20 grep -q 127.0.0.1:18080 "$T/forward.out"
  local page
  page=$(in_ns "$H" curl -s --max-time 20 http://127.0.0.1:18080/index.html)
  [[ $page == served-from-d1 ]] || { echo "    got: $page"; return 1; }
  # The container's loopback server is not reachable from the host's namespace any other way.
  refute "the container's loopback server is reachable from the host" in_ns "$H" curl -s --max-time 2 http://10.77.0.14:8080/
  [[ $(cli connect "$id" -- cat /www/index.html) == served-from-d1 ]]
}

#   [user in h] --mesh--> [host h] --mesh--> [d1, d2 in r4, each its own engine]
#   a VPS on d1 reached over SSH (busybox: no sshd), stopped, then started on d2 from the snapshot
#   the host took: its files arrive in d2's engine over the mesh, and d1's container goes
test_vps() {
  if [[ ! -S $T/docker-d2.sock ]]; then
    echo "    SKIP: needs the engines of the tasks and environments scenarios"
    [[ -z ${RIVER_REQUIRE_DOCKER:-} ]]
    return
  fi
  ssh-keygen -q -t ed25519 -N "" -f "$T/vpskey"
  local id
  id=$(cli vps create -t d1 --image river-test/busybox:1 --ssh-key "$T/vpskey.pub" --wait 2>/dev/null)
  vssh() {
    cli ssh "$id" -i "$T/vpskey" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
      -o LogLevel=ERROR -o BatchMode=yes "$@"
  }
  vssh 'echo made-on-d1 > /root/marker'
  [[ $(vssh 'cat /root/marker') == made-on-d1 ]] || { echo "    ssh on d1 failed"; return 1; }
  cli vps stop "$id" >/dev/null
  vps_stopped() { cli vps status "$id" | matches 'state: *stopped'; }
  wait_for "VPS $id stopped" 30 vps_stopped
  cli vps start "$id" --on d2 --wait >/dev/null
  cli vps status "$id" | matches "node: *d2"
  [[ $(vssh 'cat /root/marker') == made-on-d1 ]] || { echo "    the file did not move to d2"; return 1; }
  docker -H "unix://$T/docker-d2.sock" ps --filter "label=river.task=$id" --format '{{.Names}}' | matches .
  wait_for "d1's copy removed" 20 bash -c \
    "! docker -H unix://$T/docker-d1.sock ps -a --filter label=river.task=$id --format '{{.Names}}' | grep -q ."
}

# The overlay's scenarios: netns-tests/overlay.sh.
source "$HERE/overlay.sh"
source "$HERE/dashboard.sh"

# ---------------------------------------------------------------------------------------------

topology
start_host
scenario join
scenario cut_link
scenario long_cut
scenario host_restart
scenario revoked_node
scenario wrong_ca
scenario tasks
scenario environments
scenario forward
scenario vps
scenario overlay_owners
scenario overlay_dashboard
scenario overlay
echo
echo "netns: $PASS passed, $FAIL failed"
[[ $FAIL -eq 0 ]]
