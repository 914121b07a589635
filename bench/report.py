"""The results as a readable table (stdout) and a small chart (PNG, needs matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def table(r: dict[str, Any]) -> str:
    meta, machine, versions = r["meta"], r["meta"]["machine"], r["meta"]["versions"]
    lines = [
        f"mita-redis-mcp benchmark, {meta['date']}",
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB, "
        f"Linux {machine['kernel']}, Python {machine['python']}",
        "versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()),
        "load average (1/5/15 min) at start and end: "
        f"{r['timeline'][0]['load']} / {r['timeline'][-1]['load']}",
        f"keyspace: {r['seed']['keys']:,} keys seeded in {r['seed']['seconds']} s "
        f"(Redis used_memory {r['seed']['used_memory_mb']} MB)",
    ]
    if "latency" in r:
        lat = r["latency"]
        calls = next(iter(lat["series"].values()))["calls"]
        lines += ["", f"Per-call latency, {calls} sequential calls each (stdio, same Redis)"]
        lines.append(
            f"{'':66} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'x GET':>6} "
            f"{'server CPU/call':>15}"
        )
        for label in lat["order"]:
            s = lat["series"][label]
            # Only the MCP series have a server process to read the CPU of.
            cpu = s.get("server_cpu_us")
            lines.append(
                f"{label:66} {s['p50_ms']:8.3f} {s['p99_ms']:8.3f} {s['calls_per_s']:9.0f} "
                f"{s['x_redis_py_get']:6.1f} {'' if cpu is None else f'{cpu:.1f} us':>15}".rstrip()
            )
        for label, message in lat.get("skipped", {}).items():
            lines.append(f"{label}: skipped ({message})")
        lines.append("x GET: p50 over the faster of the two redis-py GET readings")
        sizes = lat["answer_bytes"]
        lines.append(
            "answer sizes (JSON bytes): "
            + ", ".join(f"{name} {size:,}" for name, size in sizes.items())
        )
    if "walk" in r:
        walk = r["walk"]
        lines += [
            "",
            f"Namespace walk over {walk['dbsize']:,} keys: keyspace_summary of the pattern "
            "(counting and summarising; budget 200,000 per call) and `keys` (returning "
            f"every key; scan budget {walk['budget']:,}, max items {walk['max_items']:,} "
            "per call), each following next_cursor, vs a raw redis-py SCAN COUNT 1000",
            f"{'':50} {'seconds':>8} {'calls':>6} {'keys':>9} {'examined/s':>11} "
            f"{'vs raw':>7} {'longest Redis cmd':>18}",
        ]
        for name in ("dense", "sparse"):
            w = walk[name]
            summary, ours, raw = w["keyspace_summary"], w["mita_redis_mcp"], w["raw_scan"]
            lines.append(
                f"{name + ' ' + w['pattern'] + ', keyspace_summary':50} "
                f"{summary['seconds']:8.2f} {summary['calls']:6} "
                f"{summary['keys_counted']:9,} {summary['examined_per_s']:11,} "
                f"{w['summary_examined_per_s_vs_raw']:6.0%} "
                f"{_us(summary['longest_redis_command_us']):>18}"
            )
            lines.append(
                f"{name + ' ' + w['pattern'] + ', keys':50} {ours['seconds']:8.2f} "
                f"{ours['calls']:6} "
                f"{ours['keys_returned']:9,} {ours['examined_per_s']:11,} "
                f"{w['examined_per_s_vs_raw']:6.0%} {_us(ours['longest_redis_command_us']):>18}"
            )
            lines.append(
                f"{name + ' ' + w['pattern'] + ', raw SCAN':50} {raw['seconds']:8.2f} "
                f"{raw['calls']:6} {raw['keys_matched']:9,} {raw['examined_per_s']:11,} "
                f"{'':>7} {_us(raw['longest_redis_command_us']):>18}"
            )
            lines.append(
                f"{'':4}keyspace_summary: {summary['redis_commands']:,} Redis commands "
                f"({summary['keys_sampled']:,} keys sampled), slowest call "
                f"{summary['slowest_call_ms']} ms; Redis command p99.9 "
                f"{_us(summary['redis_command_p999_us'])}; longest: "
                + "; ".join(
                    f"{_us(us)} {cmd[:48]}" for us, cmd in summary["longest_redis_commands"][:3]
                )
            )
            lines.append(
                f"{'':4}keys: {ours['redis_commands']:,} Redis commands, "
                f"{ours['answer_bytes'] / 2**20:.1f} MB of answers, slowest call "
                f"{ours['slowest_call_ms']} ms; Redis command p99.9 "
                f"{_us(ours['redis_command_p999_us'])}"
            )
            lines.append(
                f"{'':4}raw SCAN: {raw['calls']:,} commands; Redis command p99.9 "
                f"{_us(raw.get('redis_command_p999_us', 0))}; longest: "
                + "; ".join(
                    f"{_us(us)} {cmd[:48]}" for us, cmd in raw["longest_redis_commands"][:3]
                )
            )
        every = walk.get("keyspace_summary")
        if every:
            done = "complete" if every["complete"] else "stopped at the time cap"
            lines.append(
                f"keyspace_summary of every prefix ('*', budget 200,000 per call): "
                f"{every['calls']} calls in {every['seconds']} s ({done}), "
                f"{every['scanned_hint_sum']:,} keys examined = {every['examined_per_s']:,}/s "
                f"({every['vs_raw_dense']:.0%} of the dense raw SCAN's rate, "
                f"{every['vs_raw_sparse']:.0%} of the sparse one's), "
                f"{every['keys_counted']:,} keys counted, {every['keys_sampled']:,} sampled; "
                f"longest Redis command {_us(every['longest_redis_command_us'])} "
                f"({every['longest_redis_command']})"
            )
        lines.append(f"walk server after the walks: {_proc(walk['server_after'])}")
    if "big_values" in r:
        lines += [
            "",
            "Big values: `get`, fresh server process per row (3 calls)",
            f"{'':42} {'first ms':>9} {'median ms':>10} {'answer B':>11} {'peak RSS':>9} "
            f"{'longest cmd':>12}",
        ]
        for b in r["big_values"]:
            label = f"{b['value']} ({b['config']})"
            lines.append(
                f"{label:42} {b['first_ms']:9.1f} {b['median_ms']:10.1f} {b['answer_bytes']:11,} "
                f"{b['peak_rss_mb']:7.1f}MB {_us(b['longest_redis_command_us']):>12}"
            )
    if "cold_start" in r:
        cold = r["cold_start"]
        lines += [
            "",
            "Cold start: spawn to tools/list answered (initialize included); "
            "the `python -c pass` rows: start to exit",
        ]
        rows: list[tuple[str, dict[str, Any]]] = [
            (k, v) for k, v in cold.items() if k not in ("uvx", "imports")
        ]
        rows += [(k, v) for k, v in cold["uvx"].items() if isinstance(v, dict)]
        width = max(42, *(len(label) for label, _ in rows))
        lines.append(f"{'':{width}} {'median ms':>10} {'min':>8} {'max':>8} {'runs':>5}")
        for label, c in rows:
            lines.append(
                f"{label:{width}} {c['median_ms']:10.1f} {c['min_ms']:8.1f} {c['max_ms']:8.1f} "
                f"{c['runs']:5}"
            )
        for label, message in cold["uvx"].items():
            if "skipped" in label:
                lines.append(f"uvx: {message}")
        imports = cold["imports"]
        lines.append(
            f"imports of cli+app+server: {imports['total_ms']} ms; top: "
            + ", ".join(f"{i['module']} {i['cumulative_ms']}" for i in imports["top"][:8])
        )
    if "soak" in r:
        soak = r["soak"]
        lines += [
            "",
            f"Server process over {soak['calls']:,} get calls ({soak['calls_per_s']:,.0f} calls/s)",
            f"  session start:          {_proc(soak['at_session_start'])}",
            f"  after latency series:   {_proc(soak['after_latency_series'])}",
            f"  soak start:             {_proc(soak['soak_start'])}",
            f"  soak end:               {_proc(soak['soak_end'])}",
            f"  growth over the soak:   {soak['rss_growth_mb']:+.1f} MB RSS, "
            f"{soak['fd_growth']:+d} fds",
        ]
    profile = r.get("profile", {})
    if "skipped" in profile:
        lines += ["", f"Profile: skipped ({profile['skipped']})"]
    elif profile:
        spy = profile["py_spy"]
        if "skipped" in spy:
            lines += ["", f"py-spy profile: skipped ({spy['skipped']})"]
        else:
            lines += [
                "",
                f"Profile (py-spy --gil, the server process during {profile['calls']} "
                f"get calls, {spy['samples']:,} samples holding the GIL; "
                f"{spy['worker_threads_percent']}% of them in anyio worker threads)",
                "  self (on top of the stack):",
            ]
            lines += [f"    {e['percent']:5.1f}%  {e['function']}" for e in spy["self"][:12]]
            lines.append("  total (anywhere in the stack):")
            lines += [f"    {e['percent']:5.1f}%  {e['function']}" for e in spy["total"][:20]]
        cp = profile["cprofile"]
        if "skipped" in cp:
            lines += ["", f"cProfile: skipped ({cp['skipped']})"]
        else:
            lines += [
                "",
                f"Profile (cProfile, server main thread, {cp['calls']} get calls minus a "
                f"server that answered none: {cp['us_per_request']} us of CPU per get "
                "under cProfile, which inflates it)",
                f"  {'tottime':>7} {'us/get':>7} {'calls/get':>9}  function",
            ]
            lines += [
                f"  {e['percent']:6.1f}% {e['us_per_request']:7.1f} "
                f"{e['calls_per_request']:9.2f}  {e['function']}"
                for e in cp["tottime"][:20]
            ]
            lines.append(
                "  (calls of an async def count each resumption after an await, not each call)"
            )
            lines.append(
                "  calls per get: "
                + ", ".join(f"{k} {v}" for k, v in cp["calls_per_request"].items())
            )
    return "\n".join(lines)


def chart(r: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "chart skipped: matplotlib is not installed (pip install matplotlib)"
    lat = r["latency"]
    labels = [label for label in lat["order"] if not label.startswith("client validation")]
    p50 = [lat["series"][label]["p50_ms"] for label in labels]
    p99 = [lat["series"][label]["p99_ms"] for label in labels]
    soak = r["soak"]["samples"]
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(11, 1.5 + 0.33 * len(labels)), gridspec_kw={"width_ratios": [2.2, 1]}
    )
    y = list(range(len(labels)))
    left.barh([i - 0.2 for i in y], p50, height=0.4, label="p50", color="#3b6ea8")
    left.barh([i + 0.2 for i in y], p99, height=0.4, label="p99", color="#a8c4e0")
    short = [
        label.replace("mita-redis-mcp ", "ours: ").replace(", no client validation", ", no valid.")
        for label in labels
    ]
    left.set_yticks(y, short, fontsize=7)
    left.invert_yaxis()
    left.set_xscale("log")
    left.set_xlabel("ms per call (log)")
    left.legend(fontsize=8)
    left.set_title(f"Per-call latency, {lat['series'][labels[0]]['calls']} calls", fontsize=9)
    right.plot([s["calls"] for s in soak], [s["rss_mb"] for s in soak], marker=".")
    right.set_xlabel("get calls")
    right.set_ylabel("server RSS (MB)")
    right.set_ylim(bottom=0)
    right.set_title("Server RSS over the soak", fontsize=9)
    machine = r["meta"]["machine"]
    fig.suptitle(
        f"mita-redis-mcp, {r['meta']['date']}, {machine['cores']} cores, "
        f"Redis {r['meta']['versions']['redis-server']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f"chart: {path}"


def _us(us: int) -> str:
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us} us"


def _proc(p: dict[str, Any]) -> str:
    return f"RSS {p['rss_mb']} MB (peak {p['peak_rss_mb']} MB), {p['fds']} fds"
