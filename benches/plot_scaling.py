#!/usr/bin/env python3
"""Plots the scaling figures of benches/load.rs (clients.csv, tables.csv,
and chains.csv when the greylisting and blocklist sections ran).

    plot_scaling.py RESULTS_DIR OUT.png

Four panels: requests/s against C (rpol and the floor, medians of the
pairs, with the median ratio written beside each point); peak RSS against
C with the 50 MiB target; load time and RSS against the size of the
check_client_access table; and the cost per request against table size
(rpol's CPU per request at C=100, and one lookup_client call in process).
With chains.csv, two more: throughput rpol/floor against C for the plain,
greylisting and blocklist chains (issue 28's goals drawn), and their peak
RSS. Run by benches/load.sh; needs matplotlib.
"""

import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RSS_TARGET_MIB = 50


def rows(path):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def chain_rows(path):
    """chains.csv: the chain's name stays text, the rest are numbers."""
    with open(path, newline="") as f:
        return [{k: (v if k == "chain" else float(v)) for k, v in r.items()}
                for r in csv.DictReader(f)]


# Issue 28's throughput goals, as rpol/floor (the warm blocklists' is
# relative to the plain chain: drawn as 0.8 x its ratio).
GOALS = {"greylist; embedded": 0.5, "greylist; Redis": 0.3}


def main():
    results, out = sys.argv[1], sys.argv[2]
    clients = rows(os.path.join(results, "clients.csv"))
    tables = rows(os.path.join(results, "tables.csv"))
    stamp = ""
    md = os.path.join(results, "results.md")
    if os.path.exists(md):
        first = open(md).readline()
        if first.startswith("Run of "):
            stamp = first[len("Run of "):].split(" (")[0]

    chains_csv = os.path.join(results, "chains.csv")
    chains = chain_rows(chains_csv) if os.path.exists(chains_csv) else []
    fig, ax = plt.subplots(3 if chains else 2, 2, figsize=(12, 13.5 if chains else 9))
    fig.suptitle(f"rpol scaling, benches/load.sh {stamp}\n"
                 "seed port-25 chain + check_spf, warm DNS cache; medians of paired runs")

    c = [r["c"] for r in clients]
    a = ax[0][0]
    a.plot(c, [r["rpol_rps"] for r in clients], "o-", label="rpol")
    a.plot(c, [r["floor_rps"] for r in clients], "s--", label="protocol floor")
    for r in clients:
        a.annotate(f'{r["throughput_ratio"]:.2f}x', (r["c"], r["rpol_rps"]),
                   textcoords="offset points", xytext=(0, -14), ha="center", fontsize=8)
    a.set_xscale("log")
    a.set_ylim(bottom=0)
    a.set_xlabel("client connections C")
    a.set_ylabel("requests/s")
    a.set_title("Throughput against C (rpol/floor beside each point)")
    a.legend()
    a.grid(True, alpha=0.3)

    a = ax[0][1]
    a.plot(c, [r["rpol_peak_rss_mib"] for r in clients], "o-", label="rpol")
    a.plot(c, [r["floor_peak_rss_mib"] for r in clients], "s--", label="protocol floor")
    a.plot([1000], [RSS_TARGET_MIB], "rv", label=f"target: <= {RSS_TARGET_MIB} MiB at C=1,000")
    a.set_xscale("log")
    a.set_ylim(bottom=0)
    a.set_xlabel("client connections C")
    a.set_ylabel("peak RSS (VmHWM), MiB")
    a.set_title("Memory against C")
    a.legend()
    a.grid(True, alpha=0.3)

    n = [r["entries"] for r in tables]
    a = ax[1][0]
    a.plot(n, [r["check_config_s"] for r in tables], "o-", label="rpol --check-config (s)")
    a.plot(n, [r["first_answer_s"] for r in tables], "s-", label="start to first answer (s)")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("check_client_access table entries")
    a.set_ylabel("seconds")
    a.grid(True, alpha=0.3)
    b = a.twinx()
    b.plot(n, [r["rss_loaded_mib"] for r in tables], "^:", color="tab:green",
           label="RSS once loaded (MiB)")
    b.plot(n, [r["peak_rss_mib"] for r in tables], "v:", color="tab:red",
           label="peak RSS (MiB)")
    b.set_yscale("log")
    b.set_ylabel("MiB")
    lines = a.get_legend_handles_labels()
    more = b.get_legend_handles_labels()
    a.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    a.set_title("Load time and memory against table size")

    a = ax[1][1]
    a.plot(n, [r["rpol_cpu_us"] for r in tables], "o-", label="rpol CPU per request (us), C=100")
    a.plot(n, [r["lookup_ns"] / 1000 for r in tables], "s-",
           label="lookup_client, in process (us)")
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("check_client_access table entries")
    a.set_ylabel("microseconds per request")
    a.set_title("Cost per request against table size")
    a.legend(fontsize=8)
    a.grid(True, alpha=0.3)

    if chains:
        plot_chains(ax[2], clients, chains)

    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"plot_scaling: wrote {out}")


def plot_chains(ax, clients, chains):
    """Throughput rpol/floor and peak RSS against C, one line per chain:
    the plain chain of the main mix (clients.csv) and each chain of
    chains.csv (the cold runs, against a slow DNS server, left out)."""
    series = {"plain (main mix)": [(r["c"], r["throughput_ratio"], r["rpol_peak_rss_mib"])
                                   for r in clients]}
    for r in chains:
        if "slow DNS" in r["chain"]:
            continue
        series.setdefault(r["chain"].replace(";", ","), []).append(
            (r["c"], r["throughput_ratio"], r["rpol_peak_rss_mib"]))
    a, b = ax
    for name, points in series.items():
        points.sort()
        c = [p[0] for p in points]
        a.plot(c, [p[1] for p in points], "o-", label=name)
        b.plot(c, [p[2] for p in points], "o-", label=name)
    for name, goal in GOALS.items():
        if any(r["chain"] == name for r in chains):
            a.axhline(goal, linestyle=":", color="grey")
            a.annotate(f"goal {name.replace(';', ',')}: >= {goal}", (10, goal),
                       textcoords="offset points", xytext=(2, 2), fontsize=7)
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("client connections C")
    a.set_ylabel("throughput rpol/floor (median of pairs)")
    a.set_title("Throughput against C, by chain")
    a.legend(fontsize=7)
    a.grid(True, alpha=0.3)
    b.axhline(RSS_TARGET_MIB, linestyle=":", color="red")
    b.set_xscale("log")
    b.set_ylim(bottom=0)
    b.set_xlabel("client connections C")
    b.set_ylabel("peak RSS (VmHWM), MiB")
    b.set_title("Memory against C, by chain (greylisting: the pre-filled store)")
    b.legend(fontsize=7)
    b.grid(True, alpha=0.3)


if __name__ == "__main__":
    main()
