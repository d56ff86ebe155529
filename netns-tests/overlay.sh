# netns-tests/overlay.sh: the overlay's scenarios, sourced by run.sh (its helpers and
# namespaces). A second host (port 7445, overlay on) and runners oa, ob, oc, each in a namespace
# of its own with its own Docker engine (packet filter on, as Docker leaves nodes).

ocli() { in_ns "$H" env RIVER_CONFIG_DIR="$T/ohost/admin" timeout 300 "$RIVER" "$@"; }

start_overlay_host() {
  cat >"$T/ohost.toml" <<TOML
state_dir = "$T/ohost"
listen = "10.77.0.1:7445"
heartbeat_interval = "500ms"
offline_after = "3s"

[overlay]
enabled = true
TOML
  nsenter --net=/run/netns/"$H" "$RIVER" host --config "$T/ohost.toml" >>"$T/ohost.log" 2>&1 &
  track ohost $!
  wait_for "overlay host admin credentials" 20 test -f "$T/ohost/admin/cluster.toml"
  wait_for "overlay host answers" 20 ocli status
}

# overlay_runner NS NAME: a runner in NS on an engine of its own there, joined to the overlay host.
overlay_runner() {
  local ns=$1 name=$2
  cat >"$T/$name.toml" <<TOML
state_dir = "$T/$name"
name = "$name"
docker_socket = "$T/docker-$name.sock"
TOML
  local token
  token=$(ocli token create --ttl 10m 2>/dev/null | head -n1)
  nsenter --net=/run/netns/"$ns" "$RIVER" runner --config "$T/$name.toml" --join 10.77.0.1:7445 --token "$token" >>"$T/$name.log" 2>&1 &
  track "$name" $!
}

# have_engine: dockerd and the test image are here.
have_engine() { command -v dockerd >/dev/null && docker image inspect river-test/busybox:1 >/dev/null 2>&1; }

# overlay_up: the overlay host and runners oa, ob, oc, each on an engine of its own; started by
# the first scenario that needs them, left running for the next.
overlay_up() {
  [[ -f $T/overlay.up ]] && return
  start_overlay_host
  docker save river-test/busybox:1 >"$T/busybox.tar"
  local ns name
  for pair in "$OA:oa" "$OB:ob" "$OC:oc"; do
    ns=${pair%%:*} name=${pair##*:}
    engine_in "$ns" "$name"
    docker -H "unix://$T/docker-$name.sock" load -i "$T/busybox.tar" >/dev/null
    overlay_runner "$ns" "$name"
  done
  touch "$T/overlay.up"
}

# What `river node overlay -o json` says, through a python expression on `o` (the view).
overlay_q() { ocli node overlay -o json | python3 -c "import json,sys; o=json.load(sys.stdin); print($1)"; }
# All of NAMES report a healthy overlay with N peers each.
overlay_healthy() {
  local n=$1; shift
  for m in "$@"; do
    [[ $(overlay_q "[(x['health'] or {}).get('ok') and x['health']['peers'] for x in o['members'] if x['name'] == '$m']") == "[$n]" ]] || return 1
  done
}
task_ip() { ocli task status "$1" -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['placement']['ip'])"; }
otask_running() { ocli task status "$1" | matches "state: *running"; }
# ologs ID: a task's output so far.
ologs() { ocli task logs "$1" 2>/dev/null; }
# Bytes received on eth0 of namespace $1 (/proc/net is per namespace; /sys is not re-mounted).
rx_bytes() { in_ns "$1" awk '$1 == "eth0:" { print $2 }' /proc/net/dev; }

# login_as NAME: a user NAME (role user) logged in from h, with config in $T/u-NAME.
login_as() {
  local token
  token=$(ocli user invite "$1" --role user --ttl 10m 2>/dev/null | head -n1)
  in_ns "$H" env RIVER_CONFIG_DIR="$T/u-$1" timeout 60 "$RIVER" login 10.77.0.1:7445 --token "$token" >/dev/null
}
# as_user NAME ARGS...: the CLI as user NAME.
as_user() { local who=$1; shift; in_ns "$H" env RIVER_CONFIG_DIR="$T/u-$who" timeout 120 "$RIVER" "$@"; }
# fetch_as NAME TASK URL: what NAME's task TASK gets from URL in 3 s (wget inside the container;
# busybox's own `wget -T` crashes), then `exit=` and wget's exit status (143: it hung, stopped).
fetch_as() { as_user "$1" connect "$2" -- sh -c "timeout 3 wget -q -O - $3; echo exit=\$?" 2>&1 | tr -d '\r'; }

# overlay_idle: no task of an earlier scenario holds cores (each node has the machine's two).
overlay_idle() {
  local t
  for t in $(ocli task list --all -o json | python3 -c "import json,sys; print(' '.join(str(t['id']) for t in json.load(sys.stdin) if t['state'] in ('queued', 'assigned', 'running', 'paused', 'stopped')))"); do
    ocli task kill "$t" >/dev/null 2>&1 || true
  done
  wait_for "every earlier task ended" 60 bash -c "[[ \$(RIVER_CONFIG_DIR=$T/ohost/admin nsenter --net=/run/netns/$H $RIVER task list --all -o json | python3 -c \"import json,sys; print(sum(t['state'] in ('queued', 'assigned', 'running', 'paused') for t in json.load(sys.stdin)))\") == 0 ]]"
}

#   [oa: A1, M1]   [ob: A2 (serving), M2]   [oc: A3 (serving), A4]      (A: alice's, M: mallory's)
#   containers reach only containers of their own owner on the overlay, across nodes and on one
#   node alike; no container can open a raw socket to forge another's address; an address given
#   to a new owner is no longer reachable by the old one's containers
test_overlay_owners() {
  if ! have_engine; then
    echo "    SKIP: needs dockerd and river-test/busybox:1 (scripts/docker-env.sh)"
    [[ -z ${RIVER_REQUIRE_DOCKER:-} ]]
    return
  fi
  overlay_up
  wait_for "every member's overlay built, three peers each" 60 overlay_healthy 3 host oa ob oc
  overlay_idle
  login_as alice
  login_as mallory
  local img=river-test/busybox:1 serve t
  serve='mkdir /www && echo "$0" >/www/s && httpd -p 8080 -h /www && exec sleep 600'
  declare -A c
  c[A1]=$(as_user alice task submit -t oa --image $img -- sh -c "$serve" alice-secret)
  c[M1]=$(as_user mallory task submit -t oa --image $img -- sh -c "$serve" mallory-page)
  c[A2]=$(as_user alice task submit -t ob --image $img -- sh -c "$serve" alice-secret)
  c[M2]=$(as_user mallory task submit -t ob --image $img -- sh -c "$serve" mallory-page)
  c[A3]=$(as_user alice task submit -t oc --image $img -- sh -c "$serve" alice-secret)
  c[A4]=$(as_user alice task submit -t oc --image $img -- sh -c "$serve" alice-secret)
  for t in "${c[@]}"; do wait_for "task $t running" 60 otask_running "$t"; done
  local a2 a3 got
  a2=$(task_ip "${c[A2]}") a3=$(task_ip "${c[A3]}")
  # reaches WHO FROM URL WANT: WHO's container FROM gets WANT from URL (allowing for the sets of
  # containers that have just started to arrive).
  reaches() {
    wait_for "$1's ${2} reaches $3" 20 bash -c "[[ \$(RIVER_CONFIG_DIR=$T/u-$1 nsenter --net=/run/netns/$H $RIVER connect ${c[$2]} -- timeout 3 wget -q -O - $3) == $4 ]]" \
      || { echo "    $1's $2 got: $(fetch_as "$1" "${c[$2]}" "$3")"; return 1; }
  }
  # refused WHO FROM URL: WHO's container FROM gets nothing from URL.
  refused() {
    got=$(fetch_as "$1" "${c[$2]}" "$3" || true)
    [[ $got == *exit=143* && $got != *secret* ]] || { echo "    $1's $2 reached $3: ${got//$'\n'/ | }"; return 1; }
  }
  echo "    alice's containers reach each other, across nodes and on one node"
  reaches alice A1 "http://$a2:8080/s" alice-secret
  reaches alice A4 "http://$a3:8080/s" alice-secret
  echo "    mallory's do not reach alice's, across nodes or on the same node"
  refused mallory M1 "http://$a2:8080/s"
  refused mallory M2 "http://$a2:8080/s"
  refused mallory M1 "http://$a3:8080/s"
  echo "    no raw sockets: a container cannot forge another's address"
  got=$(as_user mallory connect "${c[M2]}" -- arping -c 1 -w 2 -I eth0 "$a2" 2>&1 || true)
  [[ $got == *"Operation not permitted"* ]] || { echo "    arping from mallory's container: $got"; return 1; }
  echo "    an address given again belongs to its new owner only"
  as_user alice task kill "${c[A2]}" >/dev/null
  wait_for "alice's A2 ended" 30 bash -c "! RIVER_CONFIG_DIR=$T/ohost/admin nsenter --net=/run/netns/$H $RIVER task status ${c[A2]} | grep -q 'state: *running'"
  c[M3]=$(as_user mallory task submit -t ob --image $img -- sh -c "$serve" mallory-page)
  wait_for "mallory's M3 running" 60 otask_running "${c[M3]}"
  [[ $(task_ip "${c[M3]}") == "$a2" ]] || { echo "    the address was not given again: $(task_ip "${c[M3]}") instead of $a2"; return 1; }
  reaches mallory M1 "http://$a2:8080/s" mallory-page
  refused alice A1 "http://$a2:8080/s"
  for t in "${c[@]}"; do ocli task kill "$t" >/dev/null 2>&1 || true; done
}

#   [h: overlay host 10.128.0.1] ---br0--- [oa: engine, runner] [ob: …] [oc: …]
#   containers on oa and ob talk directly (not through h's link), reach the host's overlay
#   address; reservations are honoured, refused when forged or expired, and survive a host
#   restart; a runner restart keeps a connection between containers; removing oc removes its
#   entries on the others; a two-node group finds its master through MASTER_ADDR
test_overlay() {
  if ! have_engine; then
    echo "    SKIP: needs dockerd and river-test/busybox:1 (scripts/docker-env.sh)"
    [[ -z ${RIVER_REQUIRE_DOCKER:-} ]]
    return
  fi
  overlay_up
  wait_for "every member's overlay built, three peers each" 60 overlay_healthy 3 host oa ob oc
  overlay_idle
  local img=river-test/busybox:1 host_ip
  host_ip=$(overlay_q "[x['address'] for x in o['members'] if x['name'] == 'host'][0]")
  [[ $host_ip == 10.128.0.1 ]] || { echo "    host overlay address: $host_ip"; return 1; }

  echo "    containers on oa and ob: 8 MiB checksummed over TCP, directly; the host's overlay address"
  local server client sip
  # Something on the host's overlay address for containers to reach.
  mkdir -p "$T/www" && echo host-ok >"$T/www/hello"
  nsenter --net=/run/netns/"$H" python3 -m http.server --bind "$host_ip" --directory "$T/www" 8099 >>"$T/www.log" 2>&1 &
  track www $!
  wait_for "a web server on the host's overlay address" 20 in_ns "$H" python3 -c "import urllib.request; urllib.request.urlopen('http://$host_ip:8099/hello')"
  server=$(ocli task submit -t ob --image $img -- sh -c \
    'mkdir /www && dd if=/dev/urandom of=/www/data bs=1M count=8 2>/dev/null && md5sum /www/data | cut -d" " -f1 > /www/sum && exec httpd -f -p 8080 -h /www')
  wait_for "server task running" 30 otask_running "$server"
  sip=$(task_ip "$server")
  [[ $sip == 10.128.* ]] || { echo "    server address: $sip"; return 1; }
  local h_before a_before
  h_before=$(rx_bytes "$H") a_before=$(rx_bytes "$OA")
  client=$(ocli task submit -t oa --image $img --wait -- sh -c \
    "timeout 5 wget -q -O - http://$sip:8080/sum >/dev/null && echo tcp-ok; wget -q -O - http://$sip:8080/data | md5sum | cut -d' ' -f1; wget -q -O - http://$sip:8080/sum; timeout 5 wget -q -O - http://$host_ip:8099/hello" 2>&1) \
    || { echo "    client: $client"; return 1; }
  local id out
  id=$(ocli task list -o json | python3 -c "import json,sys; print(max(t['id'] for t in json.load(sys.stdin)))")
  out=$(ologs "$id")
  mapfile -t lines <<<"$out"
  [[ ${lines[0]} == tcp-ok && -n ${lines[1]} && ${lines[1]} == "${lines[2]}" && ${lines[3]} == host-ok ]] \
    || { echo "    client output: $out"; return 1; }
  local h_grew a_grew
  h_grew=$(( $(rx_bytes "$H") - h_before )) a_grew=$(( $(rx_bytes "$OA") - a_before ))
  [[ $a_grew -gt 8000000 && $h_grew -lt 1000000 ]] \
    || { echo "    oa received $a_grew bytes, the host $h_grew: not direct"; return 1; }
  ocli task kill "$server" >/dev/null

  echo "    VXLAN packets from outside the cluster are dropped"
  # r3 (10.77.0.13, no member) builds a VXLAN device aimed at oa, posing as a container of ob's
  # subnet, and pings a container on oa: the packets reach oa and are dropped before they
  # are decapsulated.
  local sink cip oa_mac echos_before echos_after
  sink=$(ocli task submit -t oa --image $img -- sleep 600)
  wait_for "sink task running" 30 otask_running "$sink"
  cip=$(task_ip "$sink")
  oa_mac=$(overlay_q "'02:72:' + ':'.join('%02x' % int(b) for b in [x['subnet'] for x in o['members'] if x['name'] == 'oa'][0].split('/')[0].split('.'))")
  ip -n "$R3" link add evil type vxlan id 4242 dstport 4789 remote 10.77.0.21 local 10.77.0.13 nolearning
  ip -n "$R3" addr add 10.128.2.250/32 dev evil
  ip -n "$R3" link set evil up
  ip -n "$R3" route add "$cip/32" dev evil src 10.128.2.250
  ip -n "$R3" neigh add "$cip" lladdr "$oa_mac" dev evil nud permanent
  icmp_echos() { ocli connect "$sink" -- sh -c "awk '/^Icmp:/ { n++ } /^Icmp:/ && n == 2 { print \$10 }' /proc/net/snmp"; }
  drops() { in_ns "$OA" iptables -t raw -L RIVER-VXLAN -v -n -x 2>/dev/null | awk '$3 == "DROP" { print $1 }' | grep . || echo 0; }
  echos_before=$(icmp_echos) drops_before=$(drops)
  in_ns "$R3" python3 "$HERE/icmp_echo.py" 10.128.2.250 "$cip" 5
  sleep 1
  echos_after=$(icmp_echos)
  [[ $echos_after == "$echos_before" ]] || { echo "    the container got $((echos_after - echos_before)) injected echo requests"; return 1; }
  [[ $(drops) -ge $((drops_before + 5)) ]] || { echo "    oa's filter dropped $(drops) packets (before: $drops_before)"; return 1; }
  ip -n "$R3" link del evil
  ocli task kill "$sink" >/dev/null

  echo "    reservations: honoured, held, released; forged and expired tokens refused"
  local rip token other
  mapfile -t r < <(ocli ip reserve --node oc --ttl 10m 2>/dev/null)
  rip=${r[0]} token=${r[1]}
  [[ $rip == 10.128.* && $token == rvip1.* ]] || { echo "    reserve: ${r[*]}"; return 1; }
  id=$(ocli task submit --image $img --ip-token "$token" -- sh -c 'ip -4 -o addr show eth0; exec sleep 600')
  wait_for "reserved task running" 30 otask_running "$id"
  wait_for "reserved task's output" 10 bash -c "RIVER_CONFIG_DIR=$T/ohost/admin nsenter --net=/run/netns/$H $RIVER task logs $id | grep -q ."
  ologs "$id" | matches " $rip/" || { echo "    the container has: $(ologs "$id")"; return 1; }
  [[ $(ocli task status "$id" -o json | python3 -c "import json,sys; print(json.load(sys.stdin)['placement']['node'])") == oc ]]
  ocli ip list | matches "^$rip .*$id" || { echo "    ip list: $(ocli ip list)"; return 1; }
  other=$(ocli task submit -t oc --image $img -- sleep 600)
  wait_for "other task running" 30 otask_running "$other"
  [[ $(task_ip "$other") != "$rip" ]] || { echo "    the reserved address was given to another task"; return 1; }
  ocli task kill "$other" >/dev/null
  ! ocli task submit --image $img --ip-token "$token" -- true 2>"$T/reuse.err" || { echo "    a used token worked again"; return 1; }
  grep -q "used already" "$T/reuse.err"
  ! ocli task submit --image $img --ip-token "${token%?}x" -- true 2>"$T/forged.err" || { echo "    a forged token worked"; return 1; }
  grep -q "not issued by this cluster or has been altered" "$T/forged.err"
  mapfile -t r < <(ocli ip reserve --node oa --ttl 1s 2>/dev/null)
  sleep 1.5
  ! ocli task submit --image $img --ip-token "${r[1]}" -- true 2>"$T/expired.err" || { echo "    an expired token worked"; return 1; }
  grep -q "expired" "$T/expired.err"
  ocli task kill "$id" >/dev/null
  wait_for "the reservation released when its task ends" 20 bash -c "! RIVER_CONFIG_DIR=$T/ohost/admin nsenter --net=/run/netns/$H $RIVER ip list | grep -q '^$rip '"

  echo "    host restart: subnets and reservations kept"
  local subnets_before kept
  subnets_before=$(overlay_q "sorted((x['name'], x['subnet']) for x in o['members'])")
  mapfile -t r < <(ocli ip reserve --node ob --ttl 10m 2>/dev/null)
  kept=${r[0]}
  local pid; pid=$(pid_of ohost)
  kill "$pid"
  wait_for "overlay host stops" 20 bash -c "! kill -0 $pid"
  start_overlay_host
  wait_for "runners back" 60 bash -c "[[ \$(RIVER_CONFIG_DIR=$T/ohost/admin nsenter --net=/run/netns/$H $RIVER node list | grep -c online) == 3 ]]"
  [[ $(overlay_q "sorted((x['name'], x['subnet']) for x in o['members'])") == "$subnets_before" ]] \
    || { echo "    subnets changed across the restart"; return 1; }
  id=$(ocli task submit --image $img --ip-token "${r[1]}" -- sh -c 'ip -4 -o addr show eth0; exec sleep 600') \
    || { echo "    the token did not survive the restart"; return 1; }
  wait_for "task with the kept reservation running" 30 otask_running "$id"
  [[ $(task_ip "$id") == "$kept" ]]
  ocli task kill "$id" >/dev/null

  echo "    runner restart: a connection between containers lives on"
  local listener talker
  # busybox nc ends the connection when its stdin ends: keep it open.
  listener=$(ocli task submit -t ob --image $img -- sh -c 'sleep 100000 | nc -l -p 6000 > /tmp/got')
  wait_for "listener running" 30 otask_running "$listener"
  sip=$(task_ip "$listener")
  talker=$(ocli task submit -t oa --image $img -- sh -c \
    "sleep 1; i=0; while :; do echo \$i; i=\$((i+1)); sleep 0.2; done | nc $sip 6000")
  wait_for "talker running" 30 otask_running "$talker"
  got() { ocli connect "$listener" -- sh -c 'wc -l < /tmp/got' 2>/dev/null | tr -d ' \r'; }
  wait_for "lines arriving" 20 bash -c "[[ \$(RIVER_CONFIG_DIR=$T/ohost/admin nsenter --net=/run/netns/$H $RIVER connect $listener -- sh -c 'wc -l < /tmp/got' | tr -d ' \r') -gt 0 ]]" \
    || { echo "    got: $(got); talker: $(ocli task status "$talker"; ologs "$talker"); listener: $(ocli task status "$listener")"; return 1; }
  pid=$(pid_of oa)
  kill "$pid"
  wait_for "oa's runner stops" 20 bash -c "! kill -0 $pid"
  nsenter --net=/run/netns/"$OA" "$RIVER" runner --config "$T/oa.toml" >>"$T/oa.log" 2>&1 &
  track oa $!
  wait_for "oa back" 30 bash -c "RIVER_CONFIG_DIR=$T/ohost/admin nsenter --net=/run/netns/$H $RIVER node list | grep -q '^oa *online'"
  wait_for "oa's overlay reconciled again" 30 overlay_healthy 3 oa
  local n1 n2
  n1=$(got); sleep 2; n2=$(got)
  [[ $n2 -gt $n1 ]] || { echo "    the stream stopped: $n1 then $n2 lines"; return 1; }
  echo "    host restart: the same connection lives on"
  pid=$(pid_of ohost)
  kill "$pid"
  wait_for "overlay host stops" 20 bash -c "! kill -0 $pid"
  start_overlay_host
  wait_for "every member reconciled again" 60 overlay_healthy 3 host oa ob oc
  n1=$(got); sleep 2; n2=$(got)
  [[ $n2 -gt $n1 ]] || { echo "    the stream stopped after the host restart: $n1 then $n2 lines"; return 1; }
  otask_running "$talker" && otask_running "$listener"
  ocli task kill "$talker" >/dev/null
  ocli task kill "$listener" >/dev/null

  echo "    a two-node group finds its master through MASTER_ADDR"
  local g
  g=$(ocli task submit --nodes 2 --image $img --wait -- sh -c \
    'if [ "$NODE_RANK" = 0 ]; then mkfifo /tmp/in; sleep 60 > /tmp/in & nc -l -p "$MASTER_PORT" < /tmp/in; else until echo "rank $NODE_RANK of $WORLD_SIZE" | nc "$MASTER_ADDR" "$MASTER_PORT"; do sleep 0.3; done; fi' 2>&1) \
    || { echo "    group: $g"; return 1; }
  local ids
  ids=$(ocli task list -o json | python3 -c "import json,sys; t=[x for x in json.load(sys.stdin) if x['assigned'].get('rank') is not None]; b=max(x['batch'] for x in t); print(' '.join(str(x['id']) for x in sorted(t, key=lambda x: x['assigned']['rank']) if x['batch'] == b))")
  [[ $(ologs "${ids%% *}") == "rank 1 of 2" ]] || { echo "    master got: $(ologs "${ids%% *}")"; return 1; }
  # One member fails: the group ends, with the failure's exit code and the reason on the other.
  set +e
  g=$(ocli task submit --nodes 2 --image $img --wait -- sh -c 'if [ "$NODE_RANK" = 1 ]; then exit 3; fi; exec sleep 600' 2>&1)
  local code=$?
  set -e
  [[ $code -eq 3 ]] || { echo "    a failed group gave exit code $code: $g"; return 1; }
  grep -q "member 1 of group" <<<"$g" || { echo "    no reason given: $g"; return 1; }

  echo "    removing oc removes its entries on the others"
  local oc_subnet
  oc_subnet=$(overlay_q "[x['subnet'] for x in o['members'] if x['name'] == 'oc'][0]")
  in_ns "$OA" bridge fdb show dev rvx0 | matches "dst 10.77.0.23"
  ocli node remove oc >/dev/null
  wait_for "oc's FDB entry gone on oa" 20 bash -c "! nsenter --net=/run/netns/$OA bridge fdb show dev rvx0 | grep -q 'dst 10.77.0.23'"
  wait_for "oc's route gone on ob" 20 bash -c "! nsenter --net=/run/netns/$OB ip route | grep -q '^$oc_subnet'"
  wait_for "oa no longer lets VXLAN in from oc" 20 bash -c "! nsenter --net=/run/netns/$OA iptables -t raw -S RIVER-VXLAN | grep -q 10.77.0.23"
  refute "the host still routes to oc's subnet" bash -c "nsenter --net=/run/netns/$H ip route | grep -q '^$oc_subnet'"
}
