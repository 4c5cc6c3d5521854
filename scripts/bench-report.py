#!/usr/bin/env python3
"""Writes BENCHMARKS.md from one `make bench` run.

Reads what the benchmarks left under the target directory:
  - target/criterion/**/new/{benchmark,estimates}.json  (criterion, `--bench micro`)
  - target/bench/fuel.json                               (fuel per event of each example function)
  - target/bench/pipeline.json                           (`--bench pipeline`)
and describes the machine it ran on. Every figure in the file comes from that one run; the
analysis at the end (docs/bench-analysis.md) is written by hand for it.

Usage: scripts/bench-report.py [TARGET_DIR] [OUT]
"""
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "target"
OUT = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else ROOT / "BENCHMARKS.md"


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine():
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    mem_kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    os_name = next((l.split("=", 1)[1].strip().strip('"') for l in open("/etc/os-release") if l.startswith("PRETTY_NAME")), "")
    mosquitto = sh("sh", "-c", "mosquitto -h 2>&1 | head -1")
    nr = ROOT / ".cache/node-red/node_modules/node-red/package.json"
    node_red = json.load(open(nr))["version"] if nr.exists() else "not installed"
    disk = sh("sh", "-c", f"df -h --output=source,fstype {TARGET} | tail -1")
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} logical cores"),
        ("Memory", f"{mem_kb / 1048576:.0f} GiB"),
        ("OS, kernel", f"{os_name}, Linux {platform.release()}"),
        ("Disk (target dir)", disk),
        ("Rust", sh("rustc", "-V")),
        ("Mosquitto", mosquitto),
        ("Node-RED", f"{node_red} on Node.js {sh('node', '--version')}"),
        ("Date", datetime.date.today().isoformat()),
    ]


def criterion():
    """{full_id: (ns per iteration, elements per iteration or None)}"""
    out = {}
    root = TARGET / "criterion"
    for bench in root.glob("**/new/benchmark.json"):
        meta = json.load(open(bench))
        est = json.load(open(bench.parent / "estimates.json"))
        ns = (est.get("slope") or est["mean"])["point_estimate"]
        tp = meta.get("throughput") or {}
        elements = tp.get("Elements") or tp.get("ElementsAndBytes", {}).get("elements")
        out[meta["full_id"]] = (ns, elements)
    return out


def fmt_ns(ns):
    if ns is None:
        return "-"
    if ns < 1e3:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    if ns < 1e9:
        return f"{ns / 1e6:.2f} ms"
    return f"{ns / 1e9:.2f} s"


def fmt_rate(r):
    return "-" if r is None else f"{r:,.0f}/s"


def fmt_mb(kb):
    return "-" if kb is None else f"{kb / 1024:.1f} MB"


def verdict(ok):
    return "" if ok is None else "**met**" if ok else "**missed**"


def main():
    lines = []
    w = lines.append
    micro = criterion()
    pipe_file = TARGET / "bench/pipeline.json"
    pipe = json.load(open(pipe_file)) if pipe_file.exists() else {}
    fuel_file = TARGET / "bench/fuel.json"
    fuel = json.load(open(fuel_file)) if fuel_file.exists() else {}
    fns = []
    for name in sorted(fuel):
        wasm, native = micro.get(f"example/{name}_wasm"), micro.get(f"example/{name}_native")
        if wasm:
            fns.append({"name": name, "fuel": fuel[name], "wasm_ns": wasm[0],
                        "native_ns": native[0] if native else None})
    runs = pipe.get("runs", [])

    def find(system, scenario):
        return next((r for r in runs if r["system"] == system and r["scenario"] == scenario), None)

    w("# Benchmarks")
    w("")
    w("Written by `make bench` (release build with LTO; `scripts/bench-report.py` assembles this file")
    w("from the run's results). Every system in a table ran on the same machine in the same run, so")
    w("read the **ratios**: absolute figures on a shared 2-core box drift from run to run.")
    w("")
    w("## Machine")
    w("")
    w("| | |")
    w("|---|---|")
    for k, v in machine():
        w(f"| {k} | {v} |")
    w("")

    # ---- targets
    targets = []
    mq0, kq0 = find("mosquitto", "max qos0"), find("kiri", "max qos0")
    mq1, kq1 = find("mosquitto", "max qos1"), find("kiri", "max qos1")
    nr0, nr1 = find("node-red", "max qos0"), find("node-red", "max qos1")
    m10, k10 = find("mosquitto", "10k/s qos1"), find("kiri", "10k/s qos1")
    k16 = find("kiri", "16 fns 10k/s qos1")
    store = pipe.get("store")
    eff = pipe.get("efficiency", [])
    idle = pipe.get("efficiency_idle", {})

    def eff_row(system, scenario):
        return next((r for r in eff if r["system"] == system and r["scenario"] == scenario), None)

    for site in ["embedded", "external"]:
        for scenario, limit in [("200/s qos1", 40), ("2000/s qos1", 20), ("max qos1", 15)]:
            r = eff_row(f"kiri {site}", scenario)
            if r and r.get("cpu_us_per_event") is not None:
                targets.append((f"CPU per event <= {limit} µs, durable path, {scenario.split()[0]}, {site} broker",
                                f"{r['cpu_us_per_event']:.0f} µs", r["cpu_us_per_event"] <= limit))
        for scenario, limit in [("200/s qos1", 1024), ("max qos1", 400)]:
            r = eff_row(f"kiri {site}", scenario)
            if r and r.get("written_per_event") is not None:
                targets.append((f"Disk written per event <= {limit:,} B, {scenario.split()[0]}, {site} broker",
                                f"{r['written_per_event']:,.0f} B", r["written_per_event"] <= limit))
    alone = [eff_row("mosquitto alone", sc) for sc in ["200/s qos1", "2000/s qos1", "max qos1"]]
    if all(r and r.get("cpu_us_per_event") is not None for r in alone):
        targets.append(("(for reference) Mosquitto alone's own CPU per message, same loads: 200/s, 2,000/s, max",
                        " / ".join(f"{r['cpu_us_per_event']:.0f} µs" for r in alone), None))
    if mq0 and kq0:
        ratio = kq0["per_sec"] / mq0["per_sec"]
        targets.append(("Pipeline throughput >= 50% of Mosquitto alone (trivial function, QoS 0 in)",
                        f"{fmt_rate(kq0['per_sec'])} vs {fmt_rate(mq0['per_sec'])}: {ratio:.0%}", ratio >= 0.5))
    if mq1 and kq1:
        ratio = kq1["per_sec"] / mq1["per_sec"]
        targets.append(("Pipeline throughput >= 60% of Mosquitto alone (QoS 1 in, fsync)",
                        f"{fmt_rate(kq1['per_sec'])} vs {fmt_rate(mq1['per_sec'])}: {ratio:.0%}", ratio >= 0.6))
    k16max = find("kiri", "16 fns max qos1")
    if mq1 and k16max:
        ratio = k16max["per_sec"] / mq1["per_sec"]
        targets.append(("Throughput with 16 functions >= 40% of Mosquitto alone (QoS 1 in)",
                        f"{fmt_rate(k16max['per_sec'])} vs {fmt_rate(mq1['per_sec'])}: {ratio:.0%}", ratio >= 0.4))
    if nr0 and kq0 and nr1 and kq1:
        ahead = kq0["per_sec"] > nr0["per_sec"] and kq1["per_sec"] > nr1["per_sec"]
        targets.append(("Kiri ahead of Node-RED (same flow, same load)",
                        f"QoS 0: {kq0['per_sec'] / nr0['per_sec']:.2f}x, QoS 1: {kq1['per_sec'] / nr1['per_sec']:.2f}x Node-RED's rate", ahead))
    m2, k2 = find("mosquitto", "2k/s qos1"), find("kiri", "2k/s qos1")
    if m2 and k2:
        add50, add99 = k2["p50_us"] - m2["p50_us"], k2["p99_us"] - m2["p99_us"]
        targets.append(("Added latency p50 <= 0.3 ms at 2,000 events/s (QoS 1 in, fsync)",
                        f"{add50 / 1000:.2f} ms ({k2['p50_us'] / 1000:.2f} vs {m2['p50_us'] / 1000:.2f} ms)", add50 <= 300))
        targets.append(("Added latency p99 <= 2 ms at 2,000 events/s",
                        f"{add99 / 1000:.2f} ms ({k2['p99_us'] / 1000:.2f} vs {m2['p99_us'] / 1000:.2f} ms)", add99 <= 2000))
    if m10 and k10:
        targets.append(("(for reference) added latency at 10k events/s",
                        f"p50 {(k10['p50_us'] - m10['p50_us']) / 1000:.2f} ms, p99 {(k10['p99_us'] - m10['p99_us']) / 1000:.2f} ms", None))
    if kq1:
        targets.append(("Durable path (QoS 1 in, ack after commit, fsync) >= 20k events/s",
                        fmt_rate(kq1["per_sec"]), kq1["per_sec"] >= 20000))
    for full_id, label, limit in [("invoke/cold_trivial", "Cold start (first call from a cached module) < 100 µs", 100e3),
                                  ("invoke/warm_trivial", "Warm invocation of a trivial function < 5 µs", 5e3)]:
        if full_id in micro:
            ns = micro[full_id][0]
            targets.append((label, fmt_ns(ns), ns < limit))
    if "example/threshold_cold" in micro:
        targets.append(("(for reference) cold start of a Rust example (1.1 MiB of memory)",
                        fmt_ns(micro["example/threshold_cold"][0]), None))
    ex = idle.get("example configuration")
    if ex:
        targets.append(("Idle RSS <= 10 MB with the example configuration",
                        f"{fmt_mb(ex['rss_kb'])} ({fmt_mb(ex['anon_kb'])} anonymous, {fmt_mb(ex['file_kb'])} file-backed)",
                        ex["rss_kb"] <= 10 * 1024))
    if k16 and k16.get("peak_rss_kb"):
        kb = k16["peak_rss_kb"]
        targets.append(("RSS < 32 MB at 10k events/s with 16 functions", f"{fmt_mb(kb)} peak", kb < 32 * 1024))
    if store:
        targets.append((f"{store['records']:,} buffered results <= 2.5x their raw bytes on disk",
                        f"{store['disk_ratio']:.2f}x ({store['disk_bytes'] / 1e6:,.0f} MB for {store['raw_bytes'] / 1e6:,.0f} MB)",
                        store["disk_ratio"] <= 2.5))
        targets.append(("Drain after an outage >= 20k msg/s over one TLS link",
                        fmt_rate(store["drain_per_sec"]), store["drain_per_sec"] >= 20000))
        targets.append(("RSS <= 64 MB while draining a million held results",
                        f"{fmt_mb(store['drain_peak_rss_kb'])} peak", store["drain_peak_rss_kb"] <= 64 * 1024))
    examples = {f["name"]: f["fuel"] for f in fns}
    if examples:
        worst = max(examples, key=examples.get)
        targets.append(("The example functions <= 5,000 fuel per event",
                        f"{min(examples.values()):,}-{examples[worst]:,} ({worst} the most)", examples[worst] <= 5000))
    binary = pipe.get("binary", {})
    if binary.get("aarch64_musl_device"):
        b = binary["aarch64_musl_device"]
        targets.append(("aarch64 binary <= 10 MiB stripped (the budget `cross/build.sh` enforces)",
                        f"{b / 1048576:.2f} MiB", b <= 10 * 1048576))
    w("## Targets")
    w("")
    w("| target | this run | |")
    w("|---|---|---|")
    for label, measured, ok in targets:
        w(f"| {label} | {measured} | {verdict(ok)} |")
    w("")
    w("What each missed target needs, and why, is in [Analysis and plan](#analysis-and-plan).")
    w("")

    # ---- end to end
    if runs:
        w("## End to end")
        w("")
        w("A load generator publishes numbered, timestamped 64-byte messages (a CBOR byte string) to")
        w("Mosquitto; a subscriber on the same Mosquitto, standing in for the cloud, records what")
        w("arrives. *Mosquitto alone* is the publisher → broker → subscriber path: the physical limit.")
        w("*Kiri* ingests from that Mosquitto (external broker mode, persistent session, manual acks),")
        w("runs a trivial WebAssembly function (it emits its input unchanged), commits the result to its")
        w("outbox (fsync per group commit unless *nofsync*) and forwards it to the same Mosquitto.")
        w("*Node-RED* runs the equivalent flow (mqtt in → function node → mqtt out, QoS 1 out).")
        w("Throughput is distinct messages received per second from the first publish to the last")
        w("arrival; *max* publishes as fast as the publisher can (QoS 1: 100 in flight).")
        w("")
        w("### Throughput")
        w("")
        w("| system | scenario | received / sent | rate | vs Mosquitto alone | CPU s per 10k | peak RSS |")
        w("|---|---|---|---|---|---|---|")
        for r in runs:
            if "max" not in r["scenario"]:
                continue
            base = find("mosquitto", f"max qos{r['qos']}")
            ratio = f"{r['per_sec'] / base['per_sec']:.0%}" if base and r["system"] != "mosquitto" else "-"
            cpu = "-" if r.get("cpu_secs_per_10k") is None else f"{r['cpu_secs_per_10k']:.2f}"
            w(f"| {r['system']} | {r['scenario']} | {r['received']:,} / {r['sent']:,} | {fmt_rate(r['per_sec'])} | {ratio} | {cpu} | {fmt_mb(r.get('peak_rss_kb'))} |")
        w("")
        w("### Latency at a fixed rate (QoS 1 in)")
        w("")
        w("Publish to arrival at the cloud subscriber, at 10,000 events/s (the target's rate) and at")
        w("2,000 events/s (below saturation on this machine). *Added* is the system's percentile minus")
        w("Mosquitto alone's at the same rate and percentile. A system that cannot sustain the rate")
        w("falls behind, and its latency is then the queue it builds (received/sent and the rate show it).")
        w("")
        w("| system | scenario | received / sent | rate | p50 | p99 | p99.9 | max | added p50 | added p99 | CPU s per 10k | peak RSS |")
        w("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in runs:
            if "k/s" not in r["scenario"]:
                continue
            rate = r["scenario"].split()[-2] if r["scenario"].startswith("16") else r["scenario"].split()[0]
            base = find("mosquitto", f"{rate} qos1") if r["system"] != "mosquitto" else None
            add = lambda k: "-" if not base else f"{(r[k] - base[k]) / 1000:.2f} ms"
            cpu = "-" if r.get("cpu_secs_per_10k") is None else f"{r['cpu_secs_per_10k']:.2f}"
            w(f"| {r['system']} | {r['scenario']} | {r['received']:,} / {r['sent']:,} | {fmt_rate(r['per_sec'])} | {r['p50_us'] / 1000:.2f} ms | {r['p99_us'] / 1000:.2f} ms | {r['p999_us'] / 1000:.2f} ms | {r['max_us'] / 1000:.2f} ms | {add('p50_us')} | {add('p99_us')} | {cpu} | {fmt_mb(r.get('peak_rss_kb'))} |")
        w("")
        dup = sum(r["duplicates"] for r in runs)
        lost = sum(r["lost"] for r in runs)
        w(f"Across all runs: {lost} messages lost, {dup} duplicates.")
        w("")

    if eff:
        w("## Efficiency at the rates gateways run")
        w("")
        w("The durable path (QoS 1 in, acknowledged after the flush, fsync on, the trivial function), at")
        w("200 and 2,000 events/s and as fast as the publisher goes, with the embedded broker (the")
        w("default: sensors publish to Kiri) and with Mosquitto as the site broker (`set_tcp_nodelay")
        w("true`), results forwarded to Mosquitto as the cloud. The gateway's own CPU time")
        w("(`/proc/<pid>/stat`, user + system) and bytes it caused to be written to storage")
        w("(`/proc/<pid>/io` `write_bytes`: 4 KiB for each page dirtied again after it was written")
        w("back) around each run, a second after its last result arrived, divided by the events.")
        w("*window* is `gateway.commit_window_ms` where it is not the default (20 ms embedded, 0")
        w("external); *1 CPU* is the gateway pinned to one core with `taskset`; *2 workers* is")
        w("`gateway.worker_threads = 2` (the async runtime on two threads; the default is one).")
        w("*mosquitto alone* is the yardstick: Mosquitto's own CPU time per message on the same")
        w("loads, from the publisher to a subscriber (QoS 1 in and out, no persistence).")
        w("")
        w("*p50, p99* are publish to arrival at the cloud subscriber; *ack p50, p99* the time from")
        w("the publisher's write of a message to its PUBACK: what the commit window costs a sensor.")
        w("")
        w("| gateway | load | received / sent | rate | CPU per event | written per event | p50 | p99 | ack p50 | ack p99 | peak RSS |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")

        def ms(us):
            return "-" if us is None else f"{us / 1000:.2f} ms"
        for r in eff:
            w(f"| {r['system']} | {r['scenario']} | {r['received']:,} / {r['sent']:,} | {fmt_rate(r['per_sec'])} | {r['cpu_us_per_event']:.0f} µs | {r['written_per_event']:,.0f} B | {ms(r['p50_us'])} | {ms(r['p99_us'])} | {ms(r.get('ack_p50_us'))} | {ms(r.get('ack_p99_us'))} | {fmt_mb(r.get('peak_rss_kb'))} |")
        w("")
        if idle:
            w("Idle memory (`/proc/<pid>/status`), a few seconds after start:")
            w("")
            w("| gateway | RSS | anonymous | file-backed |")
            w("|---|---|---|---|")
            for name, m in idle.items():
                w(f"| {name} | {fmt_mb(m['rss_kb'])} | {fmt_mb(m['anon_kb'])} | {fmt_mb(m['file_kb'])} |")
            w("")

    floor = pipe.get("commit_floor", [])
    if floor:
        w("### What a group commit costs: the outbox on sled against a plain log")
        w("")
        w("Groups of 1, 4 and 64 results (a 64-byte reading's envelope, 170 B each), each group")
        w("appended and then made durable, one after another: through Kiri's outbox as the gateway")
        w("opens it (sled, its flush, the `fsync` of its log; the results then acknowledged as the")
        w("uplink does) and through a plain append-only file (each result framed with its length and")
        w("CRC-32, one `write` and one `fdatasync` per group). CPU time of the whole process (sled's")
        w("threads included) and bytes it caused to be written, per commit. A gateway at 200")
        w("events/s with a 20 ms window commits groups of about 4.")
        w("")
        w("| group | store | CPU per commit | written per commit | time per commit | CPU per result | written per result |")
        w("|---|---|---|---|---|---|---|")
        for r in floor:
            g = r["group"]
            w(f"| {g} | {r['store']} | {r['cpu_us_per_commit']:.0f} µs | {r['written_per_commit']:,.0f} B | {r['wall_us_per_commit']:.0f} µs | {r['cpu_us_per_commit'] / g:.1f} µs | {r['written_per_commit'] / g:,.0f} B |")
        w("")

    if store:
        w("## Store and forward")
        w("")
        w(f"{store['records']:,} results of {store['payload_bytes']} B buffered with the cloud down (QoS 1 in,")
        w("fsync), then the cloud (Mosquitto with a TLS listener, certificates from rcgen) started and")
        w("drained by one TLS link, one result per message, 64 in flight.")
        w("")
        w("| | |")
        w("|---|---|")
        w(f"| results buffered | {store['records']:,} in {store['buffer_secs']:.1f} s ({store['records'] / store['buffer_secs']:,.0f}/s) |")
        w(f"| raw bytes (payloads) | {store['raw_bytes']:,} |")
        w(f"| store on disk | {store['disk_bytes']:,} ({store['disk_ratio']:.2f}x raw) |")
        w(f"| RSS with them buffered | {fmt_mb(store['rss_kb'])} (peak while buffering {fmt_mb(store['peak_rss_kb'])}) |")
        w(f"| drain | {store['drained']:,} in {store['drain_secs']:.1f} s: **{fmt_rate(store['drain_per_sec'])}**, {store['duplicates']} duplicates |")
        w(f"| drain CPU, peak RSS | {store['drain_cpu_secs_per_10k']:.2f} s per 10k, {fmt_mb(store['drain_peak_rss_kb'])} |")
        w("")

    w("## Footprint")
    w("")
    w("| | Kiri | Node-RED |")
    w("|---|---|---|")
    w(f"| idle RSS, one function | {fmt_mb(pipe.get('idle_rss_kb_1fn'))} | {fmt_mb(pipe.get('node_red_idle_rss_kb'))} |")
    w(f"| idle RSS, 16 functions | {fmt_mb(pipe.get('idle_rss_kb_16fn'))} | |")
    if k16:
        w(f"| peak RSS at 10k events/s, 16 functions | {fmt_mb(k16.get('peak_rss_kb'))} | {fmt_mb((find('node-red', '16 fns 10k/s qos1') or {}).get('peak_rss_kb'))} |")
    if binary:
        x86 = binary.get("x86_64_release_stripped")
        arm = binary.get("aarch64_musl_device")
        w(f"| binary, x86_64 (release profile, stripped) | {x86 / 1048576:.2f} MiB | |" if x86 else "| binary, x86_64 | not measured | |")
        w(f"| binary, aarch64 musl (device profile, static, stripped) | {arm / 1048576:.2f} MiB | |" if arm else "| binary, aarch64 | not built | |")
    w("")

    # ---- micro
    if micro:
        w("## Micro benchmarks (criterion)")
        w("")
        w("Median-ish point estimates (criterion's slope or mean) per iteration; per element where the")
        w("benchmark processes several (a batch).")
        w("")
        w("| benchmark | time per iteration | per element |")
        w("|---|---|---|")
        for full_id in sorted(micro):
            ns, elements = micro[full_id]
            per = fmt_ns(ns / elements) if elements else "-"
            w(f"| `{full_id}` | {fmt_ns(ns)} | {per} |")
        w("")
    if fns:
        w("## Example functions: WebAssembly (wasmi) against the same code compiled natively")
        w("")
        w("Each example's handler on a representative reading: in wasmi (`example/<name>_wasm`: the")
        w("whole invocation, from a warm instance) and compiled for the host against the SDK's mock")
        w("(`example/<name>_native`; the mock allocates, so the native side is a little slow and the")
        w("ratio a little low). Fuel is what the gateway meters (deterministic).")
        w("")
        w("| function | fuel per event | wasm | native | wasm / native |")
        w("|---|---|---|---|---|")
        for f in fns:
            ratio = f"{f['wasm_ns'] / f['native_ns']:.1f}x" if f.get("native_ns") else "-"
            w(f"| {f['name']} | {f.get('fuel', '-'):,} | {fmt_ns(f.get('wasm_ns'))} | {fmt_ns(f.get('native_ns'))} | {ratio} |")
        w("")

    w("## Reproduce")
    w("")
    w("```")
    w("make bench            # everything: builds (release, LTO), runs, rewrites BENCHMARKS.md")
    w("cargo bench -p kiri --bench micro                 # criterion only")
    w("cargo bench -p kiri --bench pipeline -- latency   # one end-to-end section")
    w("cargo bench -p kiri --bench pipeline -- efficiency  # CPU and bytes written per event")
    w("cargo bench -p kiri --bench pipeline -- commit      # a group commit: sled against a plain log")
    w("```")
    w("")
    analysis = ROOT / "docs/bench-analysis.md"
    if analysis.exists():
        w("## Analysis and plan")
        w("")
        w(analysis.read_text().strip())
        w("")
    OUT.write_text("\n".join(lines))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
