#!/usr/bin/env bash
# Makes a Docker engine and river's test image available: installs docker.io and busybox-static
# (Debian/Ubuntu) when missing, starts dockerd when it is not running, and builds
# river-test/busybox:1 with `docker import` (no registry needed). Cached: a second run does nothing.
set -euo pipefail
IMAGE=river-test/busybox:1

missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
[[ -x /bin/busybox || -x /usr/bin/busybox ]] || missing+=(busybox-static)
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "== installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  # A dockerd killed without cleaning up leaves its pidfile, and a new one refuses to start.
  # "Gone" includes a zombie, and a pid reused by another program.
  for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null || true)
    comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    if [[ -z $state || $state == Z || ( $comm != dockerd && $comm != containerd ) ]]; then rm -f "$pidfile"; fi
  done
  echo "== starting dockerd (log: /tmp/river-dockerd.log)"
  nohup dockerd >/tmp/river-dockerd.log 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$dockerd_pid" 2>/dev/null || break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 /tmp/river-dockerd.log; exit 1; }
fi

if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "== building $IMAGE"
  busybox=$(command -v busybox)
  root=$(mktemp -d)
  mkdir -p "$root"/{bin,etc,tmp,proc,sys,dev,root}
  cp "$busybox" "$root/bin/busybox"
  for applet in $("$root/bin/busybox" --list); do
    [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$root/etc/passwd"
  echo 'root:x:0:' >"$root/etc/group"
  chmod 1777 "$root/tmp"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
  rm -rf "$root"
fi
echo "docker: engine $(docker version --format '{{.Server.Version}}'), image $IMAGE ready"
