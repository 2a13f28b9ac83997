"""Reads the runs of scripts/against-probe: the limit probe's output, our bench's
results.json and flush-floor's lines, each checked as soon as it is written (`probe FILE`,
`ours FILE`, `floor FILE`), and at the end the report of ratios per round and their median
against each aim, and what one flush per booking costs against what each aim allows
(`report OUT ROUNDS CPU`). Not a command of its own."""
import json
import re
import statistics
import sys

NAMES = ["backend-sidecar", "backend", "frontend-sidecar", "frontend"]
UNIT_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def fail(why):
    sys.exit(f"against-probe: {why}")


def probe(path):
    """The probe's two result lines: full speed, and p50 / p99 / CPU at 1,000/s (in ms
    whatever the generator printed: wrk2 writes `590.00us`)."""
    text = open(path).read()
    full = re.search(r"full speed: (\d+) bookings/s", text)
    rate = re.search(
        r"p50 ([\d.]+)(us|ms|s) p99 ([\d.]+)(us|ms|s); CPU per booking (\d+) us: (.*)", text)
    if not (full and rate):
        fail(f"{path} is not the probe's output:\n{text}")
    words = rate.group(6).split()
    cpu = dict(zip(words[::2], map(float, words[1::2])))
    if sorted(cpu) != sorted(NAMES):
        fail(f"{path}: the probe's processes are {sorted(cpu)}, not {NAMES}")
    cpu["total"] = float(rate.group(5))
    return {
        "full": float(full.group(1)),
        "p50": float(rate.group(1)) * UNIT_MS[rate.group(2)],
        "p99": float(rate.group(3)) * UNIT_MS[rate.group(4)],
        "cpu": cpu,
    }


def ours(path):
    """Each row's full speed (answers without errors), and p50 / p99 / CPU at 1,000/s and
    p99.9 at 10/s (None when that rate did not run)."""
    rows = {}
    for row in json.load(open(path))["rows"]:
        name = row["row"]["id"]
        rates = {l["rate"]: l for l in row["latency"]}
        if row.get("error") or not row.get("max"):
            fail(f"{path}: row {name} did not run: {row.get('error')}")
        if 1000 not in rates:
            fail(f"{path}: row {name} has no run at 1,000/s")
        top = row["max"]
        if top["errors"]:
            fail(f"{path}: row {name} answered {top['errors']} errors at full speed")
        slow = rates.get(10, {}).get("measured", {})
        rows[name] = {
            "full": top["rps"],
            "p50": rates[1000]["measured"]["p50"],
            "p99": rates[1000]["measured"]["p99"],
            "cpu": rates[1000]["cpu_us_per_request"],
            "p999_10": slow.get("p999"),
        }
    return rows


FLOOR_MODES = ["unsynced", "inline", "handoff"]


def floor(path):
    """flush-floor's line: CPU µs per write and p50 / p99 ms."""
    text = open(path).read()
    m = re.search(r"flush floor \((\w+)\): .*; p50 ([\d.]+) ms p99 ([\d.]+) ms .*"
                  r"CPU per write (\d+) us", text)
    if not m:
        fail(f"{path} is not flush-floor's output:\n{text}")
    return {"mode": m.group(1), "p50": float(m.group(2)), "p99": float(m.group(3)),
            "cpu": float(m.group(4))}


def mean(a, b):
    if isinstance(a, dict):
        return {k: mean(a[k], b[k]) for k in a}
    return (a + b) / 2


def line(label, values, aim, fmt):
    """Per-round values, their median and, when `aim` is given, whether it meets it."""
    if any(v is None for v in values):
        print(f"  {label:28} not measured in every round")
        return
    med = statistics.median(values)
    mark = "" if aim is None else "meets" if aim(med) else "MISSES"
    cells = "  ".join(f"{fmt(v):>7}" for v in values)
    print(f"  {label:28} {cells}   median {fmt(med):>7}  {mark}".rstrip())


def report(out, rounds, cpu):
    probes = [mean(probe(f"{out}/probe-{r}-a.txt"), probe(f"{out}/probe-{r}-b.txt"))
              for r in range(1, rounds + 1)]
    runs = [ours(f"{out}/ours-{r}/results.json") for r in range(1, rounds + 1)]
    print(f"{cpu}, {rounds} rounds; ratios are ours / the probe's mean in the same round;"
          f" raw runs in {out}")
    print("probe per round: " + "; ".join(
        f"{p['full']:.0f}/s, p50 {p['p50']:.2f} p99 {p['p99']:.2f} ms, CPU {p['cpu']['total']:.0f} µs"
        for p in probes))
    ratio = lambda v: f"{v:.2f}×"
    for row in runs[0]:
        print(f"\n{row}  (rounds: " + ", ".join(map(str, range(1, rounds + 1))) + ")")
        o = [run[row] for run in runs]
        versus = lambda pick: [pick(a) / pick(p) for a, p in zip(o, probes)]
        line("full speed ≥ 0.85×", versus(lambda x: x["full"]), lambda m: m >= 0.85, ratio)
        line("CPU at 1,000/s ≤ 1.25×", versus(lambda x: x["cpu"]["total"]),
             lambda m: m <= 1.25, ratio)
        for n in NAMES:
            line(f"  {n}", versus(lambda x: x["cpu"][n]), lambda m: m <= 1.25, ratio)
        line("p50 at 1,000/s ≤ 1.25×", versus(lambda x: x["p50"]), lambda m: m <= 1.25, ratio)
        line("p99 at 1,000/s ≤ 1.5×", versus(lambda x: x["p99"]), lambda m: m <= 1.5, ratio)
        line("p99.9 at 10/s ≤ 5 ms", [a["p999_10"] for a in o], lambda m: m <= 5,
             lambda v: f"{v:.1f}ms")
    flush_bounds(out, rounds, probes)


def flush_bounds(out, rounds, probes):
    """What one flush per booking costs by itself, and an estimate of where a path as lean
    as the probe's would land if it made one: the probe's path plus the flush, over the
    probe's. An estimate, not a floor: the flush is timed apart from the probe, and this
    VM's speed moves between runs."""
    floors = [{m: floor(f"{out}/floor-{r}-{m}.txt") for m in FLOOR_MODES}
              for r in range(1, rounds + 1)]
    cpu = [f["inline"]["cpu"] - f["unsynced"]["cpu"] for f in floors]
    handoff = [f["handoff"]["cpu"] - f["inline"]["cpu"] for f in floors]
    # The probe makes the write too: only the flush is added.
    p50 = [f["inline"]["p50"] - f["unsynced"]["p50"] for f in floors]
    us = lambda v: f"{v:.0f}µs"
    ms = lambda v: f"{v:.3f}ms"
    print("\none fdatasync per booking by itself (flush-floor at 1,000/s, 12 KiB overwrites;"
          " CPU: inline less unsynced)")
    line("CPU of the flush", cpu, None, us)
    line("… more when handed off", handoff, None, us)
    line("p50 of the flush", p50, None, ms)
    print("estimate for the probe's path plus one flush per booking: (probe + flush) / probe")
    bound = lambda pick, add: [(pick(p) + a) / pick(p) for p, a in zip(probes, add)]
    ratio = lambda v: f"{v:.2f}×"
    line("CPU at 1,000/s (aim 1.25×)", bound(lambda p: p["cpu"]["total"], cpu), None, ratio)
    line("  backend-sidecar", bound(lambda p: p["cpu"]["backend-sidecar"], cpu), None, ratio)
    line("p50 at 1,000/s (aim 1.25×)", bound(lambda p: p["p50"], p50), None, ratio)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "probe" and len(sys.argv) == 3:
        print(probe(sys.argv[2]))
    elif what == "ours" and len(sys.argv) == 3:
        print(ours(sys.argv[2]))
    elif what == "floor" and len(sys.argv) == 3:
        print(floor(sys.argv[2]))
    elif what == "report" and len(sys.argv) == 5:
        report(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        fail("usage: against.py probe FILE | ours RESULTS_JSON | floor FILE | report OUT ROUNDS CPU")
