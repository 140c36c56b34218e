#!/usr/bin/env python3
"""Draws `aiokit bench` results (Debian: python3-matplotlib).

  plot-bench.py sweep.json out.png
      From `aiokit bench --sweep=iodepth=... [--compare] --output-format=json`: IOPS and p99 completion
      latency against the swept value, one line per engine.
  plot-bench.py run.json [more.json ...] out.png
      From single runs (aiokit's or fio's JSON, which share the layout): completion latency percentiles of
      each job and direction, one line each, labelled by file, job and engine.
"""
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt  # noqa: E402


def load(path):
    with open(path) as f:
        text = f.read()
    # fio may print warnings before its JSON.
    return json.loads(text[text.index("{"):])


def size_value(text):
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = str(text).lower().rstrip("ib")
    if t and t[-1] in units:
        return float(t[:-1]) * units[t[-1]]
    return float(t)


def plot_sweep(doc, out):
    table = doc["aiokit_table"]
    keys = [k for k in ("iodepth", "bs", "numjobs") if k in table[0]]
    if not keys:
        sys.exit("plot-bench: the table has no swept option (run with --sweep)")
    key = keys[0]
    engines = []
    for row in table:
        if row["engine"] not in engines:
            engines.append(row["engine"])
    fig, (ax_iops, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    for engine in engines:
        rows = [r for r in table if r["engine"] == engine and "iops" in r]
        if not rows:
            continue
        xs = [size_value(r[key]) for r in rows]
        ax_iops.plot(xs, [r["iops"] / 1000 for r in rows], marker="o", label=engine)
        ax_p99.plot(xs, [r["clat_p99_ns"] / 1000 for r in rows], marker="o", label=engine)
    refused = [f"{r['engine']}: {r['refused']}" for r in table if r.get("refused")]
    opts = doc["jobs"][0]["job options"] if doc.get("jobs") else {}
    title = f"{opts.get('rw', '')} direct={opts.get('direct', '')} {opts.get('filename', '')}"
    for ax, label in ((ax_iops, "IOPS (thousands)"), (ax_p99, "p99 completion latency (us)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(key)
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax_p99.set_yscale("log")
    fig.suptitle(title + ("\nrefused: " + "; ".join(refused) if refused else ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def nines(p):
    # 50 -> 0.30, 90 -> 1, 99 -> 2, 99.9 -> 3: percentiles spread as a latency tail is read.
    return -math.log10(1 - p / 100.0)


def plot_percentiles(paths, out):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ticks = [50, 90, 99, 99.9, 99.99]
    for path in paths:
        doc = load(path)
        for job in doc["jobs"]:
            for direction in ("read", "write"):
                d = job.get(direction)
                if not d or not d.get("total_ios"):
                    continue
                pct = d["clat_ns"]["percentile"]
                ps = sorted(float(k) for k in pct if 0 < float(k) < 100)
                engine = job.get("aiokit", {}).get("engine") or job["job options"].get("ioengine", "")
                tool = "aiokit" if "aiokit" in job else "fio"
                label = f"{tool} {engine} {job['jobname']} {direction} ({os.path.basename(path)})"
                ax.plot([nines(p) for p in ps], [pct[f"{p:.6f}"] / 1000 for p in ps], marker=".", label=label)
    ax.set_xticks([nines(p) for p in ticks])
    ax.set_xticklabels([f"p{p:g}" for p in ticks])
    ax.set_yscale("log")
    ax.set_xlabel("percentile")
    ax.set_ylabel("completion latency (us)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    if len(sys.argv) < 3 or sys.argv[1] in ("-h", "--help"):
        print(__doc__)
        sys.exit(0 if len(sys.argv) > 1 else 2)
    inputs, out = sys.argv[1:-1], sys.argv[-1]
    if not out.endswith((".png", ".svg", ".pdf")):
        sys.exit(f"plot-bench: the last argument is the picture to write (.png, .svg or .pdf), not {out!r}")
    first = load(inputs[0])
    if len(inputs) == 1 and "aiokit_table" in first:
        plot_sweep(first, out)
    else:
        plot_percentiles(inputs, out)
    print(f"plot-bench: wrote {out}")


if __name__ == "__main__":
    main()
