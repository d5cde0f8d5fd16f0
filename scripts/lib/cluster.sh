# Sourced by scripts/test-cluster and scripts/test-cluster-install: what
# both real-cluster suites need before and after they touch the host.
# Expects LAB, K and WORK set, and `set -euo pipefail` in the caller.

say() { printf '\n=== %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; [[ -n ${FAIL_HOLD:-} ]] && sleep "$FAIL_HOLD"; exit 1; }
ok() { echo "ok: $*"; }

# cluster_preflight BRIDGE NETNS...: root, the k8s-lab binaries, no
# control plane running, and none of the suite's own links or namespaces
# left over from a run killed hard (say so rather than take them over).
cluster_preflight() {
  local br=$1 n f
  shift
  [[ $(id -u) == 0 ]] || fail "run as root (the cluster, the CNI and the speaker need it)"
  for f in bin/kube-apiserver bin/kubelet bin/kubectl bin/kube-proxy start-control-plane.sh start-node.sh stop-control-plane.sh; do
    [[ -x $LAB/$f ]] || fail "$LAB/$f is missing: build the cluster first (../shared/k8s/build.sh, see its README); not skipping"
  done
  if [[ -e $LAB/run/pids/kube-apiserver.pid ]] && kill -0 "$(cat "$LAB/run/pids/kube-apiserver.pid")" 2>/dev/null; then
    fail "a k8s-lab control plane is already running; stop it with $LAB/stop-control-plane.sh"
  fi
  ip link show "$br" >/dev/null 2>&1 && fail "$br exists (an earlier run's?): ip link del $br"
  for n in "$@"; do
    ip netns list | grep -qw "$n" && fail "network namespace $n exists (an earlier run's?): ip netns del $n"
  done
  return 0
}

# The speaker runs on the host's network and sets arp_ignore/arp_announce
# (all) there. It puts them back on exit from its record in
# /run/flatlan-speaker, but a run killed midway (the pods die with the
# cluster, the record with the host paths) once left the host at 1/2, and
# every later run took that for "before". So each suite saves what it
# saw (arp_save, before anything starts) and puts it back (arp_restore,
# in its exit trap), saying so.
arp_sysctls() { sysctl -n net.ipv4.conf.all.arp_ignore net.ipv4.conf.all.arp_announce | tr '\n' ' '; }
arp_save() { arp_sysctls >"$WORK/sysctl-before.txt"; }
arp_restore() {
  local want now
  want=$(cat "$WORK/sysctl-before.txt")
  now=$(arp_sysctls)
  [[ $now == "$want" ]] && return 0
  echo "restoring the host's arp_ignore/arp_announce (all): $now-> $want"
  set -- $want
  sysctl -qw net.ipv4.conf.all.arp_ignore="$1" net.ipv4.conf.all.arp_announce="$2"
}
