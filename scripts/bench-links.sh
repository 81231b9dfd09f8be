#!/usr/bin/env bash
# How full can TCP keep the swarm benchmark's links? (needs root, iproute2, python3)
#
#     scripts/bench-links.sh [N]        # N nodes, default 8
#
# Builds N network namespaces on a bridge with the same limits as
# scripts/bench-swarm.sh (tbf up and down at SWARM_MBIT, queue of
# SWARM_TBF_LATENCY_MS, TCP cubic). Every node runs a small piece server
# with 2 upload slots (503 when both are taken) and 2 fetchers that ask
# other nodes for SWARM_PIECE_KIB pieces over kept-alive HTTP/1.1, for
# SECONDS each in three patterns:
#
#   pairs   fetcher k of node i always asks node i+k+1: a perfect matching
#   random  each piece from a random other node; a 503 means ask another
#   sticky  keep asking the same node until it answers 503, then pick another
#   lease   before each piece, ask a coordinator on node 1 for a node with a
#           free upload slot; it counts every slot it hands out, and a
#           fetcher's next request gives its last one back
#   lease-ahead  the same, but the next lease is asked for when 85 % of the
#           current piece has arrived, so its round trip overlaps the transfer
#
# and prints each pattern's mean download goodput as a share of the link,
# and for the lease patterns the median time a lease took to come back (the
# coordinator's answers queue behind node 1's uploads, as the scheduler's
# queue behind the seed's). "pairs" is the ceiling any piece schedule can
# reach on these links; the swarm benchmark's downlinks, seen with
# scripts/swarm-timeline.py, say how far its matching of children to parents
# falls short of it.
#
# Settings (environment): SWARM_MBIT (20), SWARM_TBF_LATENCY_MS (50),
# SWARM_PIECE_KIB (1024), SECONDS_EACH (15). Only whole pieces received
# within SECONDS_EACH count, so with pieces that take a good part of it
# (4 MiB at 20 Mbit/s takes 3.4 s at half a link) every pattern reads low:
# raise SECONDS_EACH with the piece size.
set -euo pipefail

n="${1:-8}"
mbit="${SWARM_MBIT:-20}"
latency="${SWARM_TBF_LATENCY_MS:-50}"
kib="${SWARM_PIECE_KIB:-1024}"
secs="${SECONDS_EACH:-15}"
[ "$(id -u)" = 0 ] || { echo "error: bench-links builds network namespaces and needs root" >&2; exit 1; }
for tool in ip tc python3; do
    command -v "$tool" >/dev/null || { echo "error: '$tool' is missing: apt-get install iproute2 python3" >&2; exit 1; }
done
[ "$n" -ge 2 ] && [ "$n" -le 250 ] || { echo "error: N must be 2 to 250" >&2; exit 1; }

tag="dflk-$$"
work="$(mktemp -d)"
host_cc="$(sysctl -n net.ipv4.tcp_congestion_control)"
cleanup() {
    for i in $(seq 1 "$n"); do
        for p in $(ip netns pids "$tag-$i" 2>/dev/null || true); do kill -9 "$p" 2>/dev/null || true; done
        ip netns del "$tag-$i" 2>/dev/null || true
    done
    ip netns del "$tag-sw" 2>/dev/null || true
    sysctl -qw net.ipv4.tcp_congestion_control="$host_cc" || true
    rm -rf "$work"
}
trap cleanup EXIT

cat >"$work/node.py" <<'EOF'
"""One node: a piece server with two upload slots, then two fetchers for a
while. Node 0 also runs the lease coordinator."""
import http.client, http.server, os, random, socketserver, sys, threading, time

me, n, secs, pattern, size = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], int(sys.argv[5])
piece = os.urandom(size)
lock, uploads = threading.Lock(), [0]

class Pieces(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        with lock:
            full = uploads[0] >= 2
            uploads[0] += 0 if full else 1
        if full:
            self.send_response(503); self.send_header("Content-Length", "0"); self.end_headers()
            return
        try:
            self.send_response(200); self.send_header("Content-Length", str(size)); self.end_headers()
            self.wfile.write(piece)
        finally:
            with lock:
                uploads[0] -= 1

    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

class Coordinator(http.server.BaseHTTPRequestHandler):
    """GET /lease?me=I[&back=J]: gives back a slot of node J, then hands out
    a slot of a random other node with one free (-1 if none)."""

    protocol_version = "HTTP/1.1"
    free = [2] * n
    guard = threading.Lock()

    def do_GET(self):
        query = dict(kv.split("=") for kv in self.path.split("?", 1)[1].split("&"))
        asker = int(query["me"])
        with self.guard:
            if "back" in query:
                self.free[int(query["back"])] += 1
            candidates = [j for j in range(n) if j != asker and self.free[j] > 0]
            granted = random.choice(candidates) if candidates else -1
            if granted >= 0:
                self.free[granted] -= 1
        body = str(granted).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

threading.Thread(target=Server(("0.0.0.0", 8000), Pieces).serve_forever, daemon=True).start()
if me == 0:
    threading.Thread(target=Server(("0.0.0.0", 8001), Coordinator).serve_forever, daemon=True).start()
time.sleep(1.0)  # every node's server is up before anyone asks
start = time.time()
received = [0, 0]
lease_times = []

def leased_fetcher(k):
    """Fetches from whichever node the coordinator names, giving each slot back with the next ask."""
    coordinator = http.client.HTTPConnection("10.77.0.1", 8001)

    def lease(back):
        asked = time.time()
        coordinator.request("GET", f"/lease?me={me}" + ("" if back is None else f"&back={back}"))
        granted = int(coordinator.getresponse().read())
        lease_times.append(time.time() - asked)
        return granted

    conns, end = {}, start + secs
    source = lease(None)
    while time.time() < end:
        if source < 0:
            time.sleep(0.02)
            source = lease(None)
            continue
        conn = conns.setdefault(source, http.client.HTTPConnection(f"10.77.0.{source + 1}", 8000))
        ahead, answer, body, asking = [None], None, b"", None
        try:
            conn.request("GET", "/piece")
            answer = conn.getresponse()
            if pattern == "lease-ahead" and answer.status == 200:
                body = answer.read(size * 85 // 100)
                asking = threading.Thread(target=lambda: ahead.__setitem__(0, lease(source)))
                asking.start()
            body += answer.read()
        except (OSError, http.client.HTTPException) as e:
            print(f"node {me}: node {source} failed: {e!r}", file=sys.stderr)
            conns.pop(source).close()
        if asking is not None:
            asking.join()  # the next lease, which also gave this one back
        if answer is not None and answer.status == 200 and len(body) == size and time.time() < end:
            received[k] += len(body)
        source = ahead[0] if ahead[0] is not None else lease(source)

def fetcher(k):
    if pattern.startswith("lease"):
        return leased_fetcher(k)
    others = [j for j in range(n) if j != me]
    conns, source, end = {}, None, start + secs
    while time.time() < end:
        if pattern == "pairs":
            source = (me + k + 1) % n
        elif pattern == "random" or source is None:
            source = random.choice(others)
        conn = conns.setdefault(source, http.client.HTTPConnection(f"10.77.0.{source + 1}", 8000))
        try:
            conn.request("GET", "/piece")
            answer = conn.getresponse()
            body = answer.read()
        except (OSError, http.client.HTTPException) as e:
            print(f"node {me}: node {source} failed: {e!r}", file=sys.stderr)
            conns.pop(source).close()
            source = None
            continue
        if answer.status == 503:
            source = None
        elif time.time() < end:
            received[k] += len(body)

workers = [threading.Thread(target=fetcher, args=(k,)) for k in range(2)]
[w.start() for w in workers]
[w.join() for w in workers]
lease_times.sort()
print(sum(received), round(lease_times[len(lease_times) // 2] * 1000) if lease_times else "-", flush=True)
time.sleep(3.0)  # others may still be fetching a last piece from this node
EOF

sysctl -qw net.ipv4.tcp_congestion_control=cubic
ip netns add "$tag-sw"
ip -n "$tag-sw" link add br0 type bridge
ip -n "$tag-sw" link set br0 up
burst="$(( mbit * 1000 / 8 / 100 > 64 ? mbit * 1000 / 8 / 100 : 64 ))kb"
for i in $(seq 1 "$n"); do
    ns="$tag-$i"
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip -n "$tag-sw" link add "p$i" type veth peer name eth0 netns "$ns"
    ip -n "$tag-sw" link set "p$i" master br0
    ip -n "$tag-sw" link set "p$i" up
    ip -n "$ns" addr add "10.77.0.$i/24" dev eth0
    ip -n "$ns" link set eth0 up
    tc -n "$ns" qdisc add dev eth0 root tbf rate "${mbit}mbit" burst "$burst" latency "${latency}ms"
    tc -n "$tag-sw" qdisc add dev "p$i" root tbf rate "${mbit}mbit" burst "$burst" latency "${latency}ms"
done

echo "links: $n nodes, $mbit Mbit/s up and down, tbf queue ${latency} ms, TCP cubic, ${kib} KiB pieces, ${secs} s per pattern"
echo "| pattern     | download goodput / link | median lease round trip |"
echo "|-------------|------------------------:|------------------------:|"
for pattern in pairs random sticky lease lease-ahead; do
    for i in $(seq 1 "$n"); do
        ip netns exec "$tag-$i" python3 "$work/node.py" "$((i - 1))" "$n" "$secs" "$pattern" "$((kib * 1024))" \
            >"$work/$pattern-$i" &
    done
    wait
    goodput="$(cat "$work/$pattern"-* | awk -v n="$n" -v s="$secs" -v m="$mbit" \
        '{ bytes += $1 } END { printf "%.1f%%", bytes * 8 / s / n / (m * 1e6) * 100 }')"
    # The median over the nodes of each node's median lease time (node 1 asks itself).
    lease="$(cat "$work/$pattern"-* | awk '$2 != "-" { print $2 }' | sort -n | awk '{ t[NR] = $1 } END { print NR ? t[int((NR + 1) / 2)] " ms" : "-" }')"
    printf "| %-11s | %23s | %23s |\n" "$pattern" "$goodput" "$lease"
done
