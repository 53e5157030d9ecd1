#!/bin/bash
# Test harness: a Docker Swarm of N engines on this one host, each engine in its own network + mount +
# UTS namespace, joined by a bridge in a "switch" namespace (10.251.0.0/24), plus a client namespace
# (10.251.0.100) to send load from, where the name swarm.mfe.test is the manager (/etc/netns/mfesw-cl/hosts,
# which `ip netns exec` mounts over /etc/hosts). Needs root, iproute2 and util-linux (unshare, nsenter).
# usage: [NODES=3] [SWARM_DIR=/tmp/mfe-swarm] tests/swarm.sh up | down
# The manager's engine answers on unix://$SWARM_DIR/n1.sock, node k's on unix://$SWARM_DIR/nk.sock.
# Images are not loaded here: mfe-deploy ships what each node lacks (that is part of what is tested).
set -euo pipefail
B=${SWARM_DIR:-/tmp/mfe-swarm}; N=${NODES:-1}; NET=10.251.0; P=mfesw
dk() { local n=$1; shift; docker -H "unix://$B/n$n.sock" "$@"; }
start_engine() {
  local n=$1 d=$B/n$1
  mkdir -p "$d/data" "$d/exec" "$d/cg"; echo '{}' > "$d/daemon.json"
  # `ip netns exec` remounts /sys without the cgroup mounts: keep the host's cgroup tree (rbind, move).
  setsid unshare --mount --uts --propagation slave -- \
    nsenter --net="/run/netns/$P-n$n" -- sh -c "
      set -e
      mount --rbind /sys/fs/cgroup $d/cg
      umount -l /sys
      mount -t sysfs sysfs /sys
      mount --move $d/cg /sys/fs/cgroup
      hostname $P-n$n
      exec dockerd --config-file $d/daemon.json --data-root $d/data \
        --exec-root $d/exec --pidfile $d/dockerd.pid \
        --host unix://$B/n$n.sock --cgroup-parent /$P-n$n" \
    >"$d/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 1 120); do dk "$n" version >/dev/null 2>&1 && return 0; sleep 0.25; done
  echo "node $n did not start" >&2; tail "$d/dockerd.log" >&2; return 1
}
up() {
  [ -e "$B/n1.sock" ] && { echo "swarm.sh: already up ($B)" >&2; exit 1; }
  mkdir -p "$B"
  ip netns add $P-sw
  ip -n $P-sw link add br0 type bridge; ip -n $P-sw link set br0 up
  ip netns add $P-cl
  ip link add ${P}cl netns $P-sw type veth peer name eth0 netns $P-cl
  ip -n $P-sw link set ${P}cl master br0 up
  ip -n $P-cl addr add $NET.100/24 dev eth0; ip -n $P-cl link set eth0 up; ip -n $P-cl link set lo up
  mkdir -p /etc/netns/$P-cl
  printf '127.0.0.1 localhost\n%s.11 swarm.mfe.test\n' "$NET" > /etc/netns/$P-cl/hosts
  for n in $(seq 1 "$N"); do
    ip netns add "$P-n$n"
    ip link add "${P}p$n" netns "$P-sw" type veth peer name eth0 netns "$P-n$n"
    ip -n "$P-sw" link set "${P}p$n" master br0 up
    ip -n "$P-n$n" addr add "$NET.$((10+n))/24" dev eth0
    ip -n "$P-n$n" link set eth0 up; ip -n "$P-n$n" link set lo up
  done
  for n in $(seq 1 "$N"); do start_engine "$n"; done
  dk 1 swarm init --advertise-addr $NET.11 --listen-addr $NET.11:2377 >/dev/null
  local tok; tok=$(dk 1 swarm join-token -q worker)
  for n in $(seq 2 "$N"); do
    dk "$n" swarm join --token "$tok" --advertise-addr $NET.$((10+n)) --listen-addr $NET.$((10+n)):2377 $NET.11:2377 >/dev/null
  done
  for _ in $(seq 1 200); do
    [ "$(dk 1 node ls --format '{{.Status}}' | grep -c Ready)" = "$N" ] && return 0
    sleep 0.2
  done
  echo "swarm.sh: nodes not ready" >&2; dk 1 node ls >&2; return 1
}
down() {
  local n pid
  for n in $(seq "$N" -1 1); do [ -S "$B/n$n.sock" ] && timeout 20 docker -H "unix://$B/n$n.sock" swarm leave --force >/dev/null 2>&1 || true; done
  for n in $(seq 1 "$N"); do
    [ -f "$B/n$n/dockerd.pid" ] || continue
    pid=$(cat "$B/n$n/dockerd.pid"); kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  done
  for n in $(seq 1 "$N"); do  # leftovers: only processes in our namespaces or our cgroups
    for pid in $(ip netns pids "$P-n$n" 2>/dev/null) $(cat "/sys/fs/cgroup/pids/$P-n$n"/*/cgroup.procs "/sys/fs/cgroup/$P-n$n"/*/cgroup.procs 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null || true
    done
  done
  sleep 1
  for n in $(seq 1 "$N"); do ip netns del "$P-n$n" 2>/dev/null || true; done
  ip netns del $P-cl 2>/dev/null || true; ip netns del $P-sw 2>/dev/null || true
  rm -rf /etc/netns/$P-cl
  for n in $(seq 1 "$N"); do find /sys/fs/cgroup -depth -type d -path "*/$P-n$n*" -exec rmdir {} \; 2>/dev/null || true; done
  for m in $(findmnt -rn -o TARGET | grep "^$B" | sort -r); do umount -l "$m" 2>/dev/null || true; done
  if findmnt -rn -o TARGET | grep -q "^$B"; then echo "swarm.sh: mounts left under $B, not deleting" >&2; return 1; fi
  rm -rf "$B"
}
kill_engine() {  # kill -9 node k's engine (and so its containers' supervisor): a host that died
  local pid; pid=$(cat "$B/n$1/dockerd.pid"); kill -KILL "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  rm -f "$B/n$1.sock" "$B/n$1/dockerd.pid"
}
case "${1:-}" in
  up) up ;;
  down) down ;;
  kill) kill_engine "$2" ;;
  start) start_engine "$2" ;;
  *) echo "usage: $0 up|down|kill N|start N" >&2; exit 2 ;;
esac
