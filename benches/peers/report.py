"""Turns the harness's raw measurements into report.json, report.md and the throughput plot.

    python report.py --raw raw.json [--spdl spdl.json] [--spdl-note TEXT]
                     [--values values.json] [--values-note TEXT] --outdir DIR
                     [--load-before "1.2 1.0 0.9"] [--png-copy PATH]

report.json is an array of objects, one per case, metric and peer:
``{"case", "metric", "unit", "higher_is_better", "ours", "peer", "peer_value", "ratio"}``
with ``ratio = ours / peer_value`` when higher is better and ``peer_value / ours`` otherwise,
so a ratio above 1 always means shm-arena wins; peer ``"limit"`` is the physical limit. Cases
that could not run have no row there (no invented numbers); report.md lists them and why.

Only the plot needs matplotlib; without it the report is written and the plot is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from collections import OrderedDict


# The targets, as (case prefix, metric, peer, minimum ratio). Ratios > 1 mean we win,
# so "ours <= 1.3x the bare ping-pong" is a ratio >= 1/1.3.
TARGETS = [
    ("1 ", "throughput", "rtrb", 0.8),
    ("1 ", "throughput", "crossbeam-channel", 2.0),
    ("2 ", "throughput", "limit", 0.8),
    ("4 ", "throughput", "limit", 0.8),
    ("3 ", "latency median", "limit", 1 / 1.3),
    ("3 ", "latency median", "iceoryx2", 1.0),
    ("5 ", "throughput", "crossbeam ArrayQueue", 1.0),
    ("6 ", "throughput (2 MiB)", "SPDL best", 3.0),
    ("6 ", "throughput (32 MiB)", "SPDL best", 1.5),
    ("6 worker pipeline (send", "throughput (32 MiB)", "limit", 0.8),
    ("7 ", "latency median", "pipe", 1.0),
    ("8 ", "throughput (2 MiB)", "SPDL best", 1.0),
    ("8 ", "throughput (32 MiB)", "SPDL best", 1.0),
    ("9 ", "throughput (2 MiB)", "SPDL best", 3.0),
    ("9 ", "throughput (32 MiB)", "limit", 0.8),
    # Issue 18: ahead of iceoryx2 in throughput at 4 MiB and in latency at 64 B.
    ("11 broadcast, 1 writer -> 2 subscriber processes, 4 MiB units", "throughput", "iceoryx2", 1.0),
    ("11 broadcast, 1 writer -> 4 subscriber processes, 4 MiB units", "throughput", "iceoryx2", 1.0),
    # Like for like: iceoryx2's subscribers always busy-poll.
    ("11 broadcast, 1 writer -> 2 subscriber processes, 64 B one-way latency (paced, our subscribers busy", "latency median", "iceoryx2", 1.0),
    ("11 broadcast, 1 writer -> 4 subscriber processes, 64 B one-way latency (paced, our subscribers busy", "latency median", "iceoryx2", 1.0),
]

# Modes of spdl_bench.py that are SPDL's own transports (the peers), and ours.
SPDL_MODES = ("pool", "ring", "none")
# The same arenas with prepared items (spdl_bench.py's `Items`), the peers of our
# "send, prepared item" variant.
SPDL_PREPARED_MODES = ("pool_prepared", "ring_prepared")


def target_for(case: str, metric: str, peer: str):
    for prefix, t_metric, t_peer, minimum in TARGETS:
        if case.startswith(prefix) and metric == t_metric and peer == t_peer:
            return minimum
    return None


def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        with open("/proc/loadavg") as f:
            load = " ".join(f.read().split()[:3])
    except OSError:
        load = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "load_after": load,
    }


def rows_from(raw: dict) -> list[dict]:
    """One row per (case, metric, non-ours contender), in the harness's order."""
    groups: "OrderedDict[tuple, list]" = OrderedDict()
    for m in raw["measurements"]:
        groups.setdefault((m["case"], m["metric"]), []).append(m)
    rows = []
    for (case, metric), ms in groups.items():
        ours = [m for m in ms if m["role"] == "ours"]
        if len(ours) != 1:
            continue
        ours = ours[0]
        for m in ms:
            if m is ours:
                continue
            rows.append(make_row(case, metric, ours["unit"], ours["higher_is_better"],
                                 ours["value"], "limit" if m["role"] == "limit" else m["contender"],
                                 m["value"], m["contender"]))
    return rows


def make_row(case, metric, unit, hib, ours, peer, peer_value, label=None) -> dict:
    ratio = ours / peer_value if hib else peer_value / ours
    row = {
        "case": case,
        "metric": metric,
        "unit": unit,
        "higher_is_better": hib,
        "ours": ours,
        "peer": peer,
        "peer_value": peer_value,
        "ratio": ratio,
    }
    # Not part of report.json's schema: kept aside for the markdown only.
    row["_label"] = label or peer
    return row


def spdl_rows(ours6: list[dict], spdl: dict) -> list[dict]:
    """Case 6 rows: each of our measurements against every SPDL mode of the same item size
    made the same way (refilled, or prepared once: see spdl_bench.py's ``Items``), against
    SPDL's best of those (the target's reference), and against one core copying the bytes
    each item costs (one copy prepared or in place, two refilled and sent)."""
    rows = []
    for m in ours6:
        prepared = "prepared" in m["case"]
        modes = SPDL_PREPARED_MODES if prepared else SPDL_MODES
        theirs = [r for r in spdl["results"]
                  if r["size"] == m["size"] and r["mode"] in modes]
        if not theirs:
            continue
        best = max(theirs, key=lambda r: r["items_per_s"])
        for r in theirs:
            rows.append(make_row(m["case"], m["metric"], "items/s", True, m["value"],
                                 f"SPDL {r['mode']}", r["items_per_s"],
                                 f"SPDL {spdl.get('spdl_version', '')} {r['mode']}"))
        rows.append(make_row(m["case"], m["metric"], "items/s", True, m["value"], "SPDL best",
                             best["items_per_s"], f"SPDL best ({best['mode']})"))
        memcpy = [r for r in spdl["results"] if r["size"] == m["size"] and r["mode"] == "memcpy"]
        if memcpy:
            copies = 2 if "(send)" in m["case"] else 1
            rows.append(make_row(m["case"], m["metric"], "items/s", True, m["value"], "limit",
                                 memcpy[0]["items_per_s"] / copies,
                                 f"limit (one core, {copies} cop{'ies' if copies > 1 else 'y'}"
                                 " per item)"))
    return rows


def python_rows(spdl: dict) -> list[dict]:
    """Cases 8 and 9, from spdl_bench.py's extra modes: SPDL's iterate_in_subprocess with
    shm_arena.Arena against SPDL's own transports, and shm_arena's own Python API (a child
    writing, this process reading) against SPDL's best and one core copying the bytes."""
    rows = []
    version = spdl.get("spdl_version", "")
    for size in sorted({r["size"] for r in spdl["results"]}):
        at = {r["mode"]: r for r in spdl["results"] if r["size"] == size}
        theirs = [at[m] for m in SPDL_MODES if m in at]
        if not theirs:
            continue
        best = max(theirs, key=lambda r: r["items_per_s"])
        metric = f"throughput ({size >> 20} MiB)"
        if "shm_arena" in at:
            case = "8 Python: SPDL iterate_in_subprocess with shm_arena.Arena, numpy items"
            ours = at["shm_arena"]["items_per_s"]
            for r in theirs:
                rows.append(make_row(case, metric, "items/s", True, ours, f"SPDL {r['mode']}",
                                     r["items_per_s"], f"SPDL {version} {r['mode']}"))
            rows.append(make_row(case, metric, "items/s", True, ours, "SPDL best",
                                 best["items_per_s"], f"SPDL best ({best['mode']})"))
        if "native" in at:
            case = "9 Python: shm_arena's own API, child writes in place, parent reads"
            ours = at["native"]["items_per_s"]
            rows.append(make_row(case, metric, "items/s", True, ours, "SPDL best",
                                 best["items_per_s"], f"SPDL best ({best['mode']})"))
            if "memcpy" in at:
                rows.append(make_row(case, metric, "items/s", True, ours, "limit",
                                     at["memcpy"]["items_per_s"], "limit (one core copying)"))
    return rows


# Contenders of values_bench.py (case 10) other than shm_arena's send/recv, as the report
# names them.
VALUES_PEERS = {
    "queue": "multiprocessing.Queue (pickle)",
    "shm_pickle5": "shared_memory + pickle 5 out-of-band (ezmsg's way)",
}
VALUES_CASE_PY = "10 Python values, Python -> Python, send/recv of {seq, numpy uint8}"
VALUES_CASE_RUST = "10 Python values, Rust values_peer -> Python recv"


def values_rows(values: dict) -> list[dict]:
    """Case 10, from values_bench.py (medians of its reps): shm_arena's send/recv against each
    peer at every size, and against one core copying at 4 MiB; the Rust producer against the
    same limit."""
    rows = []
    res = values["results"]
    for size in sorted({r["size"] for r in res}):
        at = {(r["direction"], r["mode"]): r for r in res if r["size"] == size}
        metric = f"throughput ({human(size)})"
        ours = at.get(("py-py", "shm_arena"))
        limit = at.get(("limit", "memcpy"))
        ring = at.get(("limit", "memcpy_ring"))
        limits = [(r, label) for r, label in (
            (limit, "limit (one core copying, numpy.copyto, in cache)"),
            (ring, "limit (one core copying into a ring-sized destination)")) if r is not None]
        if ours is not None:
            for mode, label in VALUES_PEERS.items():
                if ("py-py", mode) in at:
                    rows.append(make_row(VALUES_CASE_PY, metric, "items/s", True,
                                         ours["items_per_s"], mode,
                                         at[("py-py", mode)]["items_per_s"], label))
            for r, label in limits:
                rows.append(make_row(VALUES_CASE_PY, metric, "items/s", True,
                                     ours["items_per_s"], "limit", r["items_per_s"], label))
        rust = at.get(("rust-py", "rust_shm_arena"))
        if rust is not None:
            for r, label in limits:
                rows.append(make_row(VALUES_CASE_RUST, metric, "items/s", True,
                                     rust["items_per_s"], "limit", r["items_per_s"], label))
    return rows


def values_table(values: dict) -> list[str]:
    """Every contender of case 10 by itself: median items/s and the spread of the reps."""
    cols = [("py-py", "shm_arena", "shm_arena send/recv"),
            ("py-py", "queue", "mp.Queue"),
            ("py-py", "shm_pickle5", "shared_memory + pickle 5"),
            ("py-py", "shm_arena_units", "shm_arena units, no envelope"),
            ("rust-py", "rust_shm_arena", "Rust -> Python recv"),
            ("limit", "memcpy", "memcpy in cache (limit)"),
            ("limit", "memcpy_ring", "memcpy into a ring-sized buffer (limit)")]
    res = values["results"]
    lines = [
        "",
        f"Case 10 by itself (`values_bench.py`, Python {values.get('python')}, "
        f"{values.get('start_method')} start method, {values.get('reps')} interleaved reps): "
        "median items/s of the reps ± half their range, relative to the median (the case-10 "
        "ratios above compare these medians, not best reps):",
        "",
        "| value size | " + " | ".join(c[2] for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for size in sorted({r["size"] for r in res}):
        at = {(r["direction"], r["mode"]): r for r in res if r["size"] == size}
        cells = []
        for direction, mode, _ in cols:
            r = at.get((direction, mode))
            cells.append("-" if r is None else
                         f"{fmt(r['items_per_s'])} ±{100 * r['spread'] / 2:.0f}%")
        lines.append(f"| {human(size)} | " + " | ".join(cells) + " |")
    costs = values.get("recv_cost_us", [])
    if costs:
        names = {"shm_arena": "`recv`", "shm_arena_units": "`next_unit` + `np.frombuffer`"}
        lines.append("")
        lines.append("Taking one value already in the ring, touching it and dropping it (one "
                     "process, median): " + "; ".join(
                         f"{names.get(c['mode'], c['mode'])} at {human(c['size'])} "
                         f"{c['median_us']:.1f} µs" for c in costs) + ".")
    return lines


def fmt(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e4:
        return f"{v / 1e3:.1f} k"
    if v >= 100:
        return f"{v:.0f}"
    return f"{v:.3g}"


def markdown(rows, raw, spdl, spdl_note, info, png_name, compact=False, values=None,
             values_note="") -> str:
    """The report; `compact` (the README's version) keeps, for case 6, only the rows against
    SPDL's best mode (the per-mode numbers are in the SPDL table below)."""
    if compact:
        rows = [r for r in rows
                if not r["case"].startswith("6 ") or r["peer"] in ("SPDL best", "limit")]
    lines = []
    mode = "quick" if raw.get("quick") else "full"
    lines.append("## Benchmarks: shm-arena side by side with its peers")
    lines.append("")
    lines.append(
        f"Machine: {info['nproc']} CPUs, {info['cpu']}, Linux {info['kernel']}; load average "
        f"{info.get('load_before', '?')} before the run, {info['load_after']} after "
        f"(a shared machine: absolute numbers drift, ratios are taken side by side in one run). "
        f"`ci/bench-report.sh{' --quick' if raw.get('quick') else ''}` ({mode} mode, "
        f"{raw.get('reps')} interleaved reps, each contender's best rep: on a shared machine other "
        f"load only slows a run down)."
    )
    lines.append("")
    lines.append("Ratio > 1 means shm-arena wins (ours/peer for throughput, peer/ours for "
                 "latency); *limit* is the physical limit (memcpy of the same bytes, a bare "
                 "atomic ping-pong in shared memory, or a bare futex wake-up). Payload is written "
                 "and read in every case.")
    lines.append("")
    lines.append("| ratio | case | metric | vs | shm-arena | peer | unit | target |")
    lines.append("|---:|---|---|---|---:|---:|---|---|")
    for r in rows:
        t = target_for(r["case"], r["metric"], r["peer"])
        if t is None:
            target = ""
        else:
            shown = f"≥ {t:.2f}×" if t != 1 / 1.3 else "≥ 0.77× (≤ 1.3× the limit)"
            target = f"{shown} {'met' if r['ratio'] >= t else '**missed**'}"
        lines.append(
            f"| **{r['ratio']:.2f}×** | {r['case']} | {r['metric']} | {r['_label']} | "
            f"{fmt(r['ours'])} | {fmt(r['peer_value'])} | {r['unit']} | {target} |"
        )
    unavailable = list(raw.get("unavailable", []))
    values_missing = [] if values is None else values.get("unavailable", [])
    if unavailable or spdl_note or values_note or values_missing:
        lines.append("")
        lines.append("Not measured in this run:")
        lines.append("")
        for u in unavailable:
            lines.append(f"- case {u['case']}: not available ({u['why']}).")
        if spdl_note:
            lines.append(f"- SPDL: {spdl_note}")
        if values_note:
            lines.append(f"- case 10 (Python values): {values_note}")
        for u in values_missing:
            where = f" at {human(u['size'])}" if "size" in u else ""
            lines.append(f"- case 10: {u['mode']}{where} not available ({u['why']}).")
    if spdl is not None:
        lines.append("")
        lines.append(f"SPDL {spdl.get('spdl_version')} `iterate_in_subprocess` by itself "
                     "(case 6's peers), items/s:")
        lines.append("")
        lines.append("| item size | items | pool arena | ring arena | no arena |")
        lines.append("|---|---:|---:|---:|---:|")
        by_size: "OrderedDict[int, dict]" = OrderedDict()
        for r in spdl["results"]:
            by_size.setdefault(r["size"], {})[r["mode"]] = r
        for size, modes in by_size.items():
            items = next(iter(modes.values()))["items"]
            cells = [fmt(modes[m]["items_per_s"]) if m in modes else "-"
                     for m in ("pool", "ring", "none")]
            lines.append(f"| {size >> 20} MiB | {items} | " + " | ".join(cells) + " |")
    if values is not None and values.get("results"):
        lines += values_table(values)
    if png_name:
        lines.append("")
        lines.append(f"![Throughput against unit size]({png_name})")
    lines.append("")
    return "\n".join(lines)


def plot(series, path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not available: no plot", file=sys.stderr)
        return False
    panels = [("threads", "Two threads"), ("processes", "Two processes")]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    styles = {"ours": dict(linewidth=2.6, marker="o"), "peer": dict(linewidth=1.4, marker="s"),
              "limit": dict(linewidth=1.4, linestyle="--", color="black", marker="")}
    for ax, (panel, title) in zip(axes, panels):
        by: "OrderedDict[str, list]" = OrderedDict()
        roles = {}
        for s in series:
            if s["panel"] == panel:
                by.setdefault(s["contender"], []).append((s["size"], s["gbps"]))
                roles[s["contender"]] = s["role"]
        for name, pts in by.items():
            pts.sort()
            label = f"{name} (limit)" if roles[name] == "limit" else name
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **styles[roles[name]])
        ax.set_xscale("log", base=2)
        # Log scale: 64-byte units move ~1 GB/s, large ones ~10-30 GB/s.
        ax.set_yscale("log")
        ax.set_title(f"{title}: payload written and read")
        ax.set_xlabel("unit size (bytes)")
        ticks = sorted({s["size"] for s in series if s["panel"] == panel})
        ax.set_xticks(ticks)
        ax.set_xticklabels([human(t) for t in ticks])
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("GB/s")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def human(n: int) -> str:
    for unit, shift in (("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--raw", required=True)
    p.add_argument("--spdl")
    p.add_argument("--spdl-note", default="")
    p.add_argument("--values", help="values_bench.py's JSON (case 10)")
    p.add_argument("--values-note", default="", help="why case 10 did not run, if it did not")
    p.add_argument("--outdir", required=True)
    p.add_argument("--load-before", default="?")
    p.add_argument("--png-copy")
    a = p.parse_args()
    with open(a.raw) as f:
        raw = json.load(f)
    spdl = None
    if a.spdl and os.path.exists(a.spdl):
        with open(a.spdl) as f:
            spdl = json.load(f)
    if spdl is not None:
        # Best rep (as the harness reports), also for an spdl.json written with medians.
        for r in spdl["results"]:
            if r.get("samples"):
                r["items_per_s"] = max(r["samples"])
    values = None
    if a.values and os.path.exists(a.values):
        with open(a.values) as f:
            values = json.load(f)
    info = machine()
    info["load_before"] = a.load_before
    rows = rows_from(raw)
    # Our case-6 side, when the harness measured it (one measurement per variant and item
    # size, with a "size" field); its peers come from spdl.json.
    ours6 = [m for m in raw["measurements"]
             if m["case"].startswith("6 ") and m["role"] == "ours" and "size" in m]
    rows = [r for r in rows if not r["case"].startswith("6 ")]
    if spdl is not None:
        rows += spdl_rows(ours6, spdl)
        rows += python_rows(spdl)
    if values is not None:
        # Medians, as values_bench.py reports them (its spread is in the case-10 table).
        rows += values_rows(values)
    os.makedirs(a.outdir, exist_ok=True)
    with open(os.path.join(a.outdir, "report.json"), "w") as f:
        json.dump([{k: v for k, v in r.items() if not k.startswith("_")} for r in rows], f,
                  indent=2)
    png = os.path.join(a.outdir, "throughput.png")
    have_png = bool(raw.get("series")) and plot(raw["series"], png)
    if have_png and a.png_copy:
        shutil.copyfile(png, a.png_copy)
    with open(os.path.join(a.outdir, "report.md"), "w") as f:
        f.write(markdown(rows, raw, spdl, a.spdl_note, info, "throughput.png" if have_png else None,
                         values=values, values_note=a.values_note))
    # The same text with the image path the README would use.
    with open(os.path.join(a.outdir, "readme-section.md"), "w") as f:
        f.write(markdown(rows, raw, spdl, a.spdl_note, info,
                         "benches/peers/throughput.png" if have_png else None, compact=True,
                         values=values, values_note=a.values_note))
    return 0


if __name__ == "__main__":
    sys.exit(main())
