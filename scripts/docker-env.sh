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
# An image with OpenSSH's sshd for `river ssh` tests: the busybox image plus Debian's sshd binary
# (the package unpacked, not installed, so no sshd starts on this machine) and its libraries.
SSHD_IMAGE=river-test/sshd:2
if ! docker image inspect "$SSHD_IMAGE" >/dev/null 2>&1; then
  echo "== building $SSHD_IMAGE"
  command -v ssh-keygen >/dev/null || { apt-get update -qq && apt-get install -y -qq openssh-client >/dev/null; }
  work=$(mktemp -d)
  # Package lists may be missing or stale on a fresh machine: refresh them once if needed.
  (cd "$work" && apt-get download -qq openssh-server openssh-sftp-server libwrap0 2>/dev/null) ||
    { apt-get update -qq && (cd "$work" && apt-get download -qq openssh-server openssh-sftp-server libwrap0); }
  for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/x"; done
  root=$work/root
  mkdir -p "$root"/{usr/sbin,usr/lib/openssh,etc/ssh,run/sshd,lib64,var/empty}
  cp "$work/x/usr/sbin/sshd" "$root/usr/sbin/sshd"
  cp "$work/x/usr/lib/openssh/sftp-server" "$root/usr/lib/openssh/sftp-server"
  # Every library sshd and sftp-server link, from this machine (libwrap from its package).
  LD_LIBRARY_PATH=$(dirname "$(find "$work/x" -name 'libwrap.so.0' | head -n1)") ldd "$work/x/usr/sbin/sshd" "$work/x/usr/lib/openssh/sftp-server" |
    awk '/=> \// {print $3} /^[ \t]*\/lib/ {print $1}' | while read -r lib; do
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  libwrap=$(find "$work/x" -name 'libwrap.so.0' | head -n1)
  [[ -e $root/lib/x86_64-linux-gnu/libwrap.so.0 ]] || { mkdir -p "$root/lib/x86_64-linux-gnu"; cp -L "$libwrap" "$root/lib/x86_64-linux-gnu/"; }
  ssh-keygen -q -t ed25519 -N '' -f "$root/etc/ssh/ssh_host_ed25519_key"
  cat >"$root/etc/ssh/sshd_config" <<'CONF'
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp /usr/lib/openssh/sftp-server
CONF
  cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
sshd:x:100:65534::/run/sshd:/bin/false
PASSWD
  docker create --name river-sshd-base "$IMAGE" true >/dev/null
  docker export river-sshd-base | tar -C "$root" -x --exclude=etc/passwd
  docker rm river-sshd-base >/dev/null
  chmod 755 "$root/run/sshd"
  tar -C "$root" -c . | docker import -c 'ENV PATH=/bin:/usr/sbin' -c 'CMD ["/usr/sbin/sshd", "-D", "-e"]' - "$SSHD_IMAGE" >/dev/null
  rm -rf "$work"
fi
echo "docker: engine $(docker version --format '{{.Server.Version}}'), images $IMAGE and $SSHD_IMAGE ready"
