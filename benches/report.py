#!/usr/bin/env python3
"""Turns the last criterion run (target/criterion) into the Markdown tables of BENCHMARKS.md.

    cargo bench --bench layers -- --warm-up-time 1 --measurement-time 3
    cargo bench --bench contention -- --warm-up-time 1 --measurement-time 3
    cargo bench -p bulwark-compare -- --warm-up-time 1 --measurement-time 3
    python3 benches/report.py [group-prefix ...]

Every case is reported as its median; a group with a `baseline` case also gets each case's
overhead over that baseline (same group, same run). Contention groups (`contention/...`) are
reported as throughput over all threads, with the two-thread / one-thread ratio.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "target" / "criterion"


def load():
    groups = {}
    for bench in ROOT.glob("**/new/benchmark.json"):
        meta = json.loads(bench.read_text())
        est = json.loads((bench.parent / "estimates.json").read_text())
        group = meta["group_id"]
        case = meta.get("function_id") or meta.get("value_str") or ""
        groups.setdefault(group, {})[case] = est["median"]["point_estimate"]
    return groups


def fmt(ns):
    if ns >= 1_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    if ns >= 1_000:
        return f"{ns / 1_000:.2f} µs"
    return f"{ns:.0f} ns"


def overhead(ns, base):
    d = ns - base
    sign = "+" if d >= 0 else "−"
    return f"{sign}{fmt(abs(d))}"


def table(group, cases):
    out = [f"### `{group}`", ""]
    if group.startswith("contention/"):
        out += ["| threads | time per call (all threads) | calls/s over all threads |", "| --- | --- | --- |"]
        rates = {}
        for case in sorted(cases):
            threads = int(case.split("_")[0])
            per_call = cases[case] / threads
            rates[threads] = 1e9 / per_call
            out.append(f"| {threads} | {fmt(per_call)} | {rates[threads] / 1e6:.2f} M |")
        if 1 in rates and 2 in rates:
            out += ["", f"Two threads / one thread: **{rates[2] / rates[1]:.2f}×**"]
        return out + [""]
    base = cases.get("baseline")
    if base is not None:
        out += ["| case | median | overhead over `baseline` |", "| --- | --- | --- |"]
    else:
        out += ["| case | median |", "| --- | --- |"]
    order = sorted(cases, key=lambda c: (c != "baseline", c))
    for case in order:
        ns = cases[case]
        if base is not None:
            extra = "" if case == "baseline" else overhead(ns, base)
            out.append(f"| {case} | {fmt(ns)} | {extra} |")
        else:
            out.append(f"| {case} | {fmt(ns)} |")
    return out + [""]


def main():
    prefixes = sys.argv[1:]
    groups = load()
    lines = []
    for group in sorted(groups):
        if prefixes and not any(group.startswith(p) for p in prefixes):
            continue
        lines += table(group, groups[group])
    print("\n".join(lines))


if __name__ == "__main__":
    main()
