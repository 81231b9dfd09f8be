#!/usr/bin/env python3
"""Where a swarm benchmark's time went, second by second.

Reads the agents' logs of a benchmark run with piece logging on:

    SWARM_DIRECT=0 SWARM_AGENT_LOG="info,damselfly_agent::piece=debug" \
        SWARM_LOG_DIR=/tmp/swarm bash scripts/bench-swarm.sh 16
    scripts/swarm-timeline.py /tmp/swarm --mbit 50 --piece-kib 4096

(with SWARM_SEED_MBIT, SWARM_UP_MBIT or SWARM_DOWN_MBIT set, pass the same
as --seed-mbit, --up-mbit and --down-mbit)

and prints, per one-second step from the first piece request:

  * download: how much of each agent's link its piece transfers used (%);
  * upload: how much of each uploader's link (agents and the seed) was used;
  * starved: uploaders that sent nothing while holding pieces, with the
    number of other agents that lacked one of those pieces and were not
    already fetching it (0 means the swarm had nothing new to trade: it
    waited for the seed);
  * per piece, when its first copy and its last copy were complete;
  * how many requests a parent turned away because its upload slots were
    all busy (each costs the requester a round trip with a fetch slot);
  * the seed and the backlog: when the seed's last piece arrived, how much
    of its link it used until then, and how many piece copies the agents
    still lacked at that moment. With every link the same speed the
    Kumar & Ross bound is S/u_seed, so the makespan is about the seed's
    last arrival plus the time the agents need for that backlog;
  * the longest moment in which no piece arrived anywhere, once every
    agent held one: with every node's cache on one shared disk, page-cache
    writeback can hold up every agent's writes at once (scripts/bench-swarm.sh
    explains how to avoid it).

A transfer's bytes are spread evenly over its duration (from the request to
the verified piece, or for a stripe feed's piece from its first bytes), which
is what the agents log. With the registry's scheduler log in the same
directory (SWARM_REGISTRY_LOG=info,damselfly_registry::p2p::scheduler=debug),
it also says how long the seed's link idled in each phase of the run.
"""

import argparse
import datetime
import glob
import json
import os
import re

PIECE = re.compile(r"^(\S+)\s+DEBUG.*piece verified.*digest=(\S+) piece=(\d+) from=\"?([^\"\s]+)\"? millis=(\d+)")
REGISTERED = re.compile(r"registered with the registry agent_id=\"?([0-9a-f]+)")


def seconds(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def read(directory):
    """(start, end, agent, piece, source) of every verified piece; sources are agent names or 'seed'."""
    ids, raw = {}, []
    for path in glob.glob(f"{directory}/agent-*.log"):
        agent = "a" + path.rsplit("-", 1)[1].split(".")[0]
        for line in open(path, encoding="utf-8", errors="replace"):
            m = REGISTERED.search(line)
            if m:
                ids[m.group(1)] = agent
            m = PIECE.search(line)
            if m:
                end = seconds(m.group(1))
                piece = f"{m.group(2)[-6:]}:{m.group(3)}"
                raw.append((end - int(m.group(5)) / 1000, end, agent, piece, m.group(4)))
    return [(s, e, a, p, ids.get(src, src)) for s, e, a, p, src in raw]


def busy_answers(directory):
    """Requests refused by a parent whose upload slots were all busy."""
    return sum(
        line.count("upload slot of the parent is busy")
        for path in glob.glob(f"{directory}/agent-*.log")
        for line in open(path, encoding="utf-8", errors="replace")
    )


def spread(rows, key, t0, steps, weight):
    """Per key, per step: the sum of weight(row) over the overlap of each row with the step."""
    out = {}
    for row in rows:
        start, end = row[0], row[1]
        line = out.setdefault(key(row), [0.0] * steps)
        for b in range(int(start - t0), min(steps, int(end - t0) + 1)):
            overlap = min(end, t0 + b + 1) - max(start, t0 + b)
            if overlap > 0:
                line[b] += weight(row) * overlap
    return out


def seed_backlog(rows, t0, link, down, piece, agents):
    """When the seed finished, how busy its link was, and what the agents still lacked then."""
    seed = [r for r in rows if r[4] == "seed"]
    if not seed:
        print("seed: sent no piece (the agents held the image already)\n")
        return
    done = max(r[1] for r in seed) - t0
    end = max(r[1] for r in rows) - t0
    share = 100 * len(seed) * piece / (link * done)
    after = sum(1 for r in rows if r[1] - t0 > done)
    before = len(rows) - after - len(seed)
    print(
        f"seed: {len(seed)} pieces, the last arrived at {done:.1f} s; its link was {share:.0f} % used until then "
        f"(at full rate they take {len(seed) * piece / link:.1f} s)"
    )
    print(
        f"backlog: {after} of {len(rows)} piece copies ({after / agents:.1f} per agent) still to come at that moment; "
        f"the agents traded {before / done:.1f} copies/s until then and {after / max(end - done, 1e-3):.1f} after, "
        f"for {end - done:.1f} s more (every downlink full: {agents * down / piece:.1f} copies/s)\n"
    )


def seed_phases(directory, rows, seed_link, piece):
    """Where the seed's link idled, by phase, from the registry's scheduler log.

    Needs SWARM_REGISTRY_LOG=info,damselfly_registry::p2p::scheduler=debug:
    each "seed pieces handed out" line says which blob's pieces went to whom.
    Every seed transfer's bytes are spread evenly over its duration (as for
    the tables above) and, in 10 ms steps from the first join's arrival to
    the last seed piece's, the link's unused share is added to the phase of
    that step: before the first hand-out; the start (from the first
    hand-out until two seed pieces are out at once); within a layer; a layer
    switch (from a blob's last hand-out until the next blob's first); the
    end (after the last hand-out).
    """
    path = f"{directory}/registry.log"
    if not os.path.exists(path):
        return
    hands, first_join = [], None
    for line in open(path, encoding="utf-8", errors="replace"):
        if not line.startswith("{"):
            continue
        j = json.loads(line)
        if j.get("message") == "seed pieces handed out":
            hands.append((seconds(j["timestamp"]), j["digest"][-6:], len(json.loads(j["pieces"]))))
        elif j.get("message") == "request" and j.get("path") == "/p2p/v1/swarms/join":
            at = seconds(j["timestamp"]) - j["micros"] / 1e6
            first_join = at if first_join is None else min(first_join, at)
    seed = [r for r in rows if r[4] == "seed"]
    if not hands or not seed or first_join is None:
        print("seed phases: no hand-outs in registry.log (run with SWARM_REGISTRY_LOG=info,damselfly_registry::p2p::scheduler=debug)\n")
        return
    blobs = []
    for t, d, _ in hands:
        if d not in blobs:
            blobs.append(d)
    first = {d: min(t for t, b, _ in hands if b == d) for d in blobs}
    last = {d: max(t for t, b, _ in hands if b == d) for d in blobs}
    step = 0.01
    end = max(r[1] for r in seed)
    n = int((end - first_join) / step) + 1
    used, out = [0.0] * n, [0] * n
    for start, stop, *_ in seed:
        rate = piece / max(stop - start, 1e-3)
        for k in range(max(0, int((start - first_join) / step)), min(n, int((stop - first_join) / step) + 1)):
            a, b = first_join + k * step, first_join + (k + 1) * step
            overlap = min(stop, b) - max(start, a)
            if overlap > 0:
                used[k] += rate * overlap
                out[k] += 1
    two = next((k for k in range(n) if out[k] >= 2), n)
    lost, gaps, span = {}, {}, {}
    for k in range(n):
        t = first_join + k * step
        if t < hands[0][0]:
            phase = "0 before the first hand-out"
        elif k < two:
            phase = "1 start: until two seed pieces are out"
        elif t >= last[blobs[-1]]:
            phase = "4 end: after the last hand-out"
        elif any(last[a] <= t < first[b] for a, b in zip(blobs, blobs[1:])):
            phase = "3 layer switches"
        else:
            phase = "2 within layers"
        idle = step * max(0.0, 1 - used[k] / (seed_link * step))
        lost[phase] = lost.get(phase, 0) + idle
        span[phase] = span.get(phase, 0) + step
        gaps[phase] = gaps.get(phase, 0) + (step if out[k] == 0 else 0)
    print(f"seed phases, from the first join ({n * step:.2f} s to the last seed piece; {len(blobs)} blobs, {len(hands)} hand-outs):")
    print("  phase                                     span s  link idle s  nothing out s")
    for phase in sorted(lost):
        print(f"  {phase[2:]:40s} {span[phase]:7.2f} {lost[phase]:12.2f} {gaps[phase]:14.2f}")
    print(f"  {'all':40s} {n * step:7.2f} {sum(lost.values()):12.2f} {sum(gaps.values()):14.2f}")
    for a, b in zip(blobs, blobs[1:]):
        print(f"  switch {a} -> {b}: last hand-out at {last[a] - first_join:.2f} s, next blob's first at {first[b] - first_join:.2f} s")
    print()


def order(name):
    return (name == "seed", int(name[1:]) if name[1:].isdigit() else 0, name)


def table(title, lines, fmt):
    print(title)
    for name in sorted(lines, key=order):
        cell = fmt(name)
        print(f"{name:>5} |" + "".join(cell(v) for v in lines[name]))
    print()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", help="the SWARM_LOG_DIR of a benchmark run with piece logging")
    ap.add_argument("--mbit", type=float, default=50, help="every node's link, as SWARM_MBIT (50)")
    ap.add_argument("--seed-mbit", type=float, help="the registry node's link, as SWARM_SEED_MBIT (--mbit)")
    ap.add_argument("--up-mbit", type=float, help="each agent's uplink, as SWARM_UP_MBIT (--mbit)")
    ap.add_argument("--down-mbit", type=float, help="each agent's downlink, as SWARM_DOWN_MBIT (--mbit)")
    ap.add_argument("--piece-kib", type=int, default=4096, help="piece size, as SWARM_PIECE_KIB (4096)")
    args = ap.parse_args()
    rows = read(args.logs)
    if not rows:
        raise SystemExit(f"no 'piece verified' lines in {args.logs}/agent-*.log: run with piece logging on")
    bytes_per_s = lambda mbit: (mbit if mbit is not None else args.mbit) * 1e6 / 8
    seed_link, up, down = bytes_per_s(args.seed_mbit), bytes_per_s(args.up_mbit), bytes_per_s(args.down_mbit)
    piece = args.piece_kib * 1024
    t0 = min(r[0] for r in rows)
    steps = int(max(r[1] for r in rows) - t0) + 1
    rate = lambda r: piece / max(r[1] - r[0], 1e-3)
    pct = lambda link: lambda v: f"{min(99, int(100 * v / link)):3d}"
    print(f"{len(rows)} pieces verified over {steps} s; columns are seconds from the first request")
    print(f"{busy_answers(args.logs)} requests turned away by a parent with every upload slot busy\n")
    table("download, % of each agent's link", spread(rows, lambda r: r[2], t0, steps, rate), lambda _: pct(down))
    table(
        "upload, % of each uploader's link",
        spread(rows, lambda r: r[4], t0, steps, rate),
        lambda name: pct(seed_link if name == "seed" else up),
    )

    agents = sorted({r[2] for r in rows}, key=order)
    print("starved: idle uploaders as <agent>:<pieces held>/<agents that could use one of them>")
    for b in range(steps):
        t = t0 + b + 0.5
        have = {a: {r[3] for r in rows if r[2] == a and r[1] <= t} for a in agents}
        fetching = {a: {r[3] for r in rows if r[2] == a and r[0] <= t < r[1]} for a in agents}
        sending = {r[4] for r in rows if r[0] <= t < r[1]}
        idle = []
        for u in agents:
            if u not in sending and have[u]:
                wanting = sum(1 for o in agents if o != u and have[u] - have[o] - fetching[o])
                idle.append(f"{u}:{len(have[u])}/{wanting}")
        print(f"{b:3d} " + " ".join(idle))
    print()

    seed_backlog(rows, t0, seed_link, down, piece, len(agents))
    seed_phases(args.logs, rows, seed_link, piece)
    # From when every agent holds a piece: before, gaps are the first transfers themselves.
    going = max(min(r[1] for r in rows if r[2] == a) for a in agents)
    ends = sorted(r[1] for r in rows if r[1] >= going)
    gap, at = max(((b - a, a) for a, b in zip(ends, ends[1:])), default=(0.0, going))
    print(f"longest moment with no piece arriving anywhere, once every agent held one: {gap:.2f} s, from {at - t0:.1f} s\n")

    first, last = {}, {}
    for _, end, _, p, _ in rows:
        first[p] = min(first.get(p, end), end)
        last[p] = max(last.get(p, end), end)
    print("piece         first copy  last copy  (s)")
    for p in sorted(first, key=first.get):
        print(f"{p:12s} {first[p] - t0:10.1f} {last[p] - t0:10.1f}")


if __name__ == "__main__":
    main()
