#!/usr/bin/env bash
# Overlay throughput: iperf3 between containers on two runners over river's overlay, against a
# hand-made `ip link add … type vxlan` between the same two namespaces, in the same run.
#
#   ns h (host 10.78.0.1) ---+
#   ns a (runner, dockerd) --+-- bridge in ns sw (veths, MTU 1500)
#   ns b (runner, dockerd) --+
#
#   baseline: vxlan device "vxm" (VNI 99, port 4790) in a and b, 192.168.99.1 ⇄ .2, MTU 1450
#   river:    a container on a and one on b (river's VXLAN, bridge, routes), iperf3 run inside
#             the containers' network namespaces; and node to node over river's VXLAN device
#             (a's namespace to b's overlay gateway), which leaves out the containers' own hop
#
# Usage: bench/overlay.sh [path/to/river] [seconds per run]. Needs root, dockerd, iperf3 and the
# river-test/busybox:1 image (scripts/docker-env.sh). Prints a table; see docs/benchmarks.md.
set -euo pipefail

RIVER=$(realpath "${1:-target/release/river}")
SECS=${2:-10}
ID=$$
SW=rb${ID}sw H=rb${ID}h A=rb${ID}a B=rb${ID}b
T=$(mktemp -d /tmp/river-bench-overlay.XXXXXX)

for tool in iperf3 dockerd nsenter; do
  command -v "$tool" >/dev/null || { echo "needs $tool"; exit 1; }
done

cleanup() {
  set +e
  for f in "$T"/dockerd.*.pid; do [[ -f $f ]] && kill "$(cat "$f")"; done
  sleep 2
  for f in "$T"/pid.* "$T"/iperf.*.pid; do [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null; done
  sleep 0.5
  for ns in $SW $H $A $B; do ip netns del "$ns" 2>/dev/null; done
  grep " $T" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
  rm -rf "$T"
}
trap cleanup EXIT
# HOLD=1 keeps the setup until the file $T/release exists (for looking at it by hand).

in_ns() { local ns=$1; shift; nsenter --net=/run/netns/"$ns" "$@"; }
wait_for() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [[ $SECONDS -lt $deadline ]] || { echo "timed out: $*"; exit 1; }
    sleep 0.2
  done
}
machine() {
  ip netns add "$1"
  ip link add "p$1" type veth peer name eth0 netns "$1"
  ip link set "p$1" netns "$SW"
  ip -n "$SW" link set "p$1" master br0 up
  ip -n "$1" addr add "$2/24" dev eth0
  ip -n "$1" link set eth0 up
  ip -n "$1" link set lo up
}

ip netns add "$SW"
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set br0 up
machine "$H" 10.78.0.1
machine "$A" 10.78.0.11
machine "$B" 10.78.0.12

cli() { in_ns "$H" env RIVER_CONFIG_DIR="$T/host/admin" "$RIVER" "$@"; }
cat >"$T/host.toml" <<TOML
state_dir = "$T/host"
listen = "10.78.0.1:7443"
[overlay]
enabled = true
TOML
in_ns "$H" "$RIVER" host --config "$T/host.toml" >"$T/host.log" 2>&1 &
echo $! >"$T/pid.host"
wait_for 20 cli status

docker save river-test/busybox:1 >"$T/busybox.tar"
for pair in "$A:a" "$B:b"; do
  ns=${pair%%:*} name=${pair##*:}
  in_ns "$ns" dockerd --data-root "$T/docker-$name" --exec-root "$T/x-$name" --pidfile "$T/dockerd.$name.pid" \
    -H "unix://$T/docker-$name.sock" --bridge=none ${DOCKERD_OPTS:-} >"$T/dockerd-$name.log" 2>&1 &
  wait_for 60 docker -H "unix://$T/docker-$name.sock" info
  docker -H "unix://$T/docker-$name.sock" load -i "$T/busybox.tar" >/dev/null
  printf 'state_dir = "%s"\nname = "%s"\ndocker_socket = "%s"\n' "$T/$name" "$name" "$T/docker-$name.sock" >"$T/$name.toml"
  in_ns "$ns" "$RIVER" runner --config "$T/$name.toml" --join 10.78.0.1:7443 \
    --token "$(cli token create 2>/dev/null | head -n1)" >"$T/$name.log" 2>&1 &
  echo $! >"$T/pid.$name"
done
wait_for 60 bash -c "[[ \$(RIVER_CONFIG_DIR=$T/host/admin nsenter --net=/run/netns/$H $RIVER node list | grep -c online) == 2 ]]"

# Two long-running containers, one per runner; iperf3 runs in their network namespaces.
ta=$(cli task submit -t a --image river-test/busybox:1 -- sleep 3600)
tb=$(cli task submit -t b --image river-test/busybox:1 -- sleep 3600)
running() { cli task status "$1" | grep "state: *running" >/dev/null; }
wait_for 60 running "$ta"
wait_for 60 running "$tb"
ip_of() { cli task status "$1" -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['placement']['ip'])"; }
pid_in() { docker -H "unix://$T/docker-$1.sock" inspect -f '{{.State.Pid}}' "$(docker -H "unix://$T/docker-$1.sock" ps -q --filter "label=river.task=$2")"; }
ipb=$(ip_of "$tb")
pa=$(pid_in a "$ta") pb=$(pid_in b "$tb")
mtu=$(nsenter --net=/proc/"$pa"/ns/net ip -o link show eth0 | sed -n 's/.* mtu \([0-9]*\).*/\1/p')

# The hand-made baseline between the same two namespaces, same MTU as river's.
for pair in "$A:10.78.0.12:192.168.99.1" "$B:10.78.0.11:192.168.99.2"; do
  IFS=: read -r ns remote addr <<<"$pair"
  ip -n "$ns" link add vxm type vxlan id 99 dstport 4790 remote "$remote" dev eth0
  ip -n "$ns" link set vxm mtu 1450 up
  ip -n "$ns" addr add "$addr/24" dev vxm
done

# iperf3 -c from namespace/pid $1 to $2 with $3 streams (port $4); prints Gbit/s received.
run_iperf() {
  local enter=$1 server=$2 streams=$3 port=${4:-5201}
  nsenter --net="$enter" iperf3 -c "$server" -p "$port" -t "$SECS" -P "$streams" -J 2>/dev/null \
    | python3 -c "import json,sys; print('%.2f' % (json.load(sys.stdin)['end']['sum_received']['bits_per_second'] / 1e9))"
}
server_in() { nsenter --net="$1" iperf3 -s -D -p "$3" --pidfile "$T/iperf.$2.pid"; sleep 0.5; }

server_in /run/netns/"$B" base 5201
server_in /run/netns/"$B" node 5202
server_in /proc/"$pb"/ns/net river 5201
gwb=$(ip -n "$B" -4 -o addr show river0 | awk '{print $4}' | cut -d/ -f1)
echo "overlay throughput (Gbit/s), iperf3 ${SECS}s per run, best of 3 interleaved runs, MTU $mtu"
printf '%-8s %-22s %-26s %-26s\n' streams "hand-made vxlan" "river, node to node" "river, container to container"
pct() { python3 -c "print('%.2f (%.0f%%)' % ($1, 100 * $1 / $2))"; }
for streams in 1 4; do
  # Interleaved, so drift on a shared machine hits all alike; the best of three each.
  b=0 n=0 r=0
  for _ in 1 2 3; do
    b=$(python3 -c "print(max($b, $(run_iperf /run/netns/"$A" 192.168.99.2 "$streams")))")
    n=$(python3 -c "print(max($n, $(run_iperf /run/netns/"$A" "$gwb" "$streams" 5202)))")
    r=$(python3 -c "print(max($r, $(run_iperf /proc/"$pa"/ns/net "$ipb" "$streams")))")
  done
  printf '%-8s %-22s %-26s %-26s\n' "$streams" "$b" "$(pct "$n" "$b")" "$(pct "$r" "$b")"
done
if [[ -n ${HOLD:-} ]]; then
  echo "holding: namespaces $A $B, container pids $pa $pb, touch $T/release to end"
  until [[ -e $T/release ]]; do sleep 1; done
fi
