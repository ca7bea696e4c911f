"""Targets, PASS/MISS evaluation and the printed table."""

from __future__ import annotations

from typing import Any

# (id, description, target text, getter(results) -> measured value or None, comparator)
TARGETS: list[tuple[str, str, str, Any, str]] = [
    # Issue 15: per worker CPU-second, load arriving while the worker runs, with its sink.
    ("s1live_cpu", "envelopes live + sink: events/CPU-s", ">= 250,000", lambda r: _g(r, "s1live", "events_per_cpu_s"), ">=250000"),
    ("s1live_vs_quix", "envelopes live / Quix live (per CPU-s)", ">= 2.0x", lambda r: _cpu_ratio(r, "s1live", "quixlive"), ">=2"),
    ("s2live_cpu", "single events live + sink: events/CPU-s", ">= 100,000", lambda r: _g(r, "s2live", "events_per_cpu_s"), ">=100000"),
    ("s2live_vs_quix", "single live / Quix live (per CPU-s)", ">= 1.0x", lambda r: _cpu_ratio(r, "s2live", "quixlive"), ">=1"),
    ("s1_cpu", "envelopes backlog, no sink: events/CPU-s", "(info)", lambda r: _g(r, "s1", "events_per_cpu_s"), ""),
    ("s2_cpu", "single events backlog, no sink: events/CPU-s", "(info)", lambda r: _g(r, "s2", "events_per_cpu_s"), ""),
    ("s1_vs_quix", "s1 / Quix backlog (per CPU-s)", "(info)", lambda r: _cpu_ratio(r, "s1", "quix"), ""),
    # The most a join with a changelog record per waiting prediction reaches while the worker's
    # own ClickHouse stores every outcome row (the floor's note gives it without those records).
    ("floor_sink_cpu", "floor + chdb storing outcomes: events/CPU-s", "(info)",
     lambda r: _g(r, "floor", "events_per_cpu_s_with_sink"), ""),
    ("s1_vs_naive", "s1 / naive faust (b)", ">= 20x", lambda r: _ratio(r, "s1", "naive"), ">=20"),
    ("s3_vs_s1", "two workers (s3) / one (s1)", ">= 1.8x", lambda r: _ratio(r, "s3", "s1"), ">=1.8"),
    ("s4_rss", "1M pending: worker RSS (MB)", "<= 400", lambda r: _pending_rss(r, 1_000_000), "<=400"),
    ("close_p99", "window close -> metrics p99 (s)", "<= 2", lambda r: _g(r, "latency", "window_close_p99_s"), "<=2"),
    ("alert_p99", "drift (settled) -> alert p99 (s)", "<= 1", lambda r: _g(r, "latency", "drift_alert_p99_s"), "<=1"),
    ("s5_rate", "outcome rows into chdb /s (s5)", ">= 200,000", lambda r: _g(r, "s5", "rows_per_s"), ">=200000"),
    ("retained_week", "100 series x 7 days of 60 s windows, 300 events each (MB)", "<= 1,024",
     lambda r: _g(r, "retained", "mb_100_series_week_at_300"), "<=1024"),
    ("partition_check", "partition check per record, 4,000-event batch (us)", "< 1",
     lambda r: _g(r, "partition_check", "batch_4000_us_per_record"), "<=0.999"),
    ("sdk_median", "SDK log_prediction median (us)", "<= 2", lambda r: _g2(r, "sdk", "broker_up", "median_us"), "<=2"),
    ("sdk_p99", "SDK log_prediction p99 (us)", "<= 20", lambda r: _g2(r, "sdk", "broker_up", "p99_us"), "<=20"),
    ("sdk_down_p99", "SDK p99 with broker down (us)", "<= 20", lambda r: _g2(r, "sdk", "broker_down", "p99_us"), "<=20"),
]


def _g(r: dict[str, Any], key: str, field: str) -> float | None:
    v = (r.get(key) or {}).get(field)
    return float(v) if isinstance(v, int | float) else None


def _g2(r: dict[str, Any], key: str, sub: str, field: str) -> float | None:
    v = ((r.get(key) or {}).get(sub) or {}).get(field)
    return float(v) if isinstance(v, int | float) else None


def _pending_rss(r: dict[str, Any], n: int) -> float | None:
    """Scenario 4's RSS with everything pending, only when it was run with at least ``n`` pending
    (the default run has 100,000: its RSS says nothing about a million)."""
    s4 = r.get("s4") or {}
    memory = s4.get("store", "memory://").startswith("memory")  # the target is for the memory store
    return _g(r, "s4", "rss_mb_all_pending") if memory and (s4.get("pending") or 0) >= n else None


def _ratio(r: dict[str, Any], a: str, b: str) -> float | None:
    x, y = _g(r, a, "events_per_s"), _g(r, b, "events_per_s")
    return x / y if x and y else None


def _cpu_ratio(r: dict[str, Any], a: str, b: str) -> float | None:
    x, y = _g(r, a, "events_per_cpu_s"), _g(r, b, "events_per_cpu_s")
    return x / y if x and y else None


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for tid, desc, text, get, cmp in TARGETS:
        v = get(results)
        if v is None:
            status = "n/a"
        elif not cmp:
            status = "-"
        else:
            op, lim = cmp[:2], float(cmp[2:])
            ok = v >= lim if op == ">=" else v <= lim
            status = "PASS" if ok else "MISS"
        out.append({"id": tid, "what": desc, "target": text, "measured": v, "status": status})
    return out


def _num(v: Any, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float | int):
        return f"{v:,.{digits}f}"
    return str(v)


def _lat(v: Any) -> str:
    return "-" if v is None else f"{v * 1000:,.0f} ms"


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    r = res["results"]
    L: list[str] = []
    L.append("")
    L.append(f"Driftline bench ({m.get('mode')}) {m['date']}")
    L.append(f"  CPU: {m['cpu']} x {m['cores']} cores, RAM {m['ram_gb']} GB, Python {m['python']}")
    L.append("  load average at start " + " ".join(f"{x:.2f}" for x in m["loadavg_start"])
             + ", at end " + " ".join(f"{x:.2f}" for x in m.get("loadavg_end", [])))
    L.append("  " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()))
    L.append(f"  size: {m['size']:,} predictions per scenario, every one labelled ({2 * m['size']:,} input events)")
    L.append("")
    hdr = (f"{'scenario':<44} {'events/s':>11} {'ev/CPU-s':>10} {'CPU-us/ev':>10} {'peak RSS MB':>12} "
           f"{'elapsed s':>10}  notes")
    L.append(hdr)
    L.append("-" * len(hdr))

    def row(name: str, d: dict[str, Any] | None, rate: str = "events_per_s", cpu: str = "cpu_us_per_event",
            note: str = "") -> None:
        if not d:
            return
        if "skipped" in d or "error" in d:
            L.append(f"{name:<44} {'-':>11} {'-':>10} {'-':>10} {'-':>12} {'-':>10}  {d.get('skipped') or d.get('error')}")
            return
        L.append(f"{name:<44} {_num(d.get(rate)):>11} {_num(d.get('events_per_cpu_s')):>10} {_num(d.get(cpu), 1):>10} "
                 f"{_num(d.get('peak_rss_mb')):>12} {_num(d.get('elapsed_s', d.get('join_elapsed_s')), 2):>10}  {note}")
        stages = d.get("cpu_us_per_event_by_stage") or {}
        main = {k: v for k, v in stages.items() if not k.startswith("sink_")}
        sink = {k.removeprefix("sink_"): v for k, v in stages.items() if k.startswith("sink_")}
        if main:
            L.append(f"{'':<6}CPU-us per event by stage (main thread): " + ", ".join(f"{k} {v:.2f}" for k, v in main.items())
                     + ("; sink thread: " + ", ".join(f"{k} {v:.2f}" for k, v in sink.items()) if sink else ""))
        if d.get("cpu_us_per_event_by_thread"):
            L.append(f"{'':<6}CPU-us per event by thread: "
                     + ", ".join(f"{k} {v:.2f}" for k, v in d["cpu_us_per_event_by_thread"].items()))

    def cores(d: dict[str, Any]) -> str:
        return f"cores: workers {_num(d.get('cpu_cores_used'), 2)}, broker {_num(d.get('broker_cores_used'), 2)}"

    if "s1" in r:
        row("1 envelopes (~500 ev/msg), 8 parts, 1 worker", r["s1"],
            note=f"{r['s1'].get('kafka_messages', 0):,} Kafka msgs; {cores(r['s1'])}")
    if "s2" in r:
        row("2 single-event messages, 1 worker", r["s2"], note=cores(r["s2"]))
    if "s1live" in r:
        row("1live envelopes sent while running, + sink", r["s1live"], note=cores(r["s1live"]))
    if "s2live" in r:
        row("2live single events sent while running, + sink", r["s2live"], note=cores(r["s2live"]))
    if "s3" in r:
        d = r["s3"]
        row("3 envelopes, 2 workers (sum)", d, note=f"messages per worker {d.get('messages_each')}, CPU-us/ev "
                                                      f"each {d.get('cpu_us_per_event_each')}; {cores(d)}")
    if "s4" in r:
        d = r["s4"]
        store = "" if d.get("store", "memory://").startswith("memory") else f" ({d['store']})"
        row(f"4 joins after {d.get('pending', 0):,} pending{store}", d, rate="joins_per_s", cpu="cpu_us_per_label",
            note=f"RSS all pending {_num(d.get('rss_mb_all_pending'))} MB (labels/s, CPU-us per label)")
    if "s5" in r:
        row("5 sink only: outcome rows -> chdb", r["s5"], rate="rows_per_s", cpu="cpu_us_per_row", note="rows/s")
    for kind in ("envelopes", "single"):
        if kind in r.get("stages", {}):
            d = r["stages"][kind]
            row(f"join stage alone, {'envelopes' if kind == 'envelopes' else 'single events'}, no Kafka", d,
                rate="events_per_cpu_s", note=f"partition 0 of 8: {d['events']:,} events in {d['steps']} steps, best of 3")
    if "floor" in r:
        d = r["floor"]
        row("floor: decode + join + changelog, no checks", d, rate="events_per_cpu_s",
            cpu="floor_us_per_event", note="cumulative CPU-us per event: " + ", ".join(
                f"{k} {v:.2f}" for k, v in d["cumulative_us_per_event"].items()))
        if "sink_us_per_event" in d:
            rate = d["events_per_cpu_s_with_sink"]
            row("floor + ClickHouse storing the outcome rows",
                {"events_per_s": rate, "events_per_cpu_s": rate, "cpu_us_per_event": d["floor_with_sink_us_per_event"]},
                note=f"CPU-us per event: outcome envelopes {d['outputs_us_per_event']:.2f}, chdb storing their rows "
                     f"{d['sink_us_per_event']:.2f}; without the changelog records {d['join_with_sink_us_per_event']:.2f}")
    if "quix" in r:
        row("(a) Quix Streams consume+json+map, 1 proc", r["quix"], note="single-event messages")
    if "quixlive" in r:
        row("(a) Quix Streams, messages sent while running", r["quixlive"], note="single-event messages")
    if "naive" in r:
        d = r["naive"]
        row("(b) naive faust, per-event table writes", d,
            note=("time-boxed: " if d.get("time_boxed") else "") + f"{d.get('events', 0):,}/{d.get('of_events', 0):,} events")
    if "latency" in r:
        d = r["latency"]
        L.append("")
        L.append(f"latency (realtime {d['rate']:.0f} pred/s for {d['duration_s']:.0f}s, window {d['window_s']:.0f}s, "
                 f"lateness {d['allowed_lateness_s']:.0f}s, drift at {d['drift_at_s']:.0f}s):")
        L.append(f"  window close -> metrics message: p50 {_lat(d['window_close_p50_s'])}, p99 "
                 f"{_lat(d['window_close_p99_s'])}, max {_lat(d['window_close_max_s'])} "
                 f"({d['windows_measured']} windows' first messages)")
        L.append(f"  drift (settled) -> alert:        p50 {_lat(d['drift_alert_p50_s'])}, p99 "
                 f"{_lat(d['drift_alert_p99_s'])}, max {_lat(d['drift_alert_max_s'])} "
                 f"({d['drift_alerts_measured']} firing alerts, {d['drift_events']} drift events; "
                 f"from the triggering event, lateness included: p99 {_lat(d.get('drift_event_to_alert_p99_s'))})")
    if "sdk" in r:
        d = r["sdk"]
        L.append("")
        L.append(f"SDK log_prediction in the caller's thread ({d['calls']:,} calls):")
        for mode in ("broker_up", "broker_down"):
            if mode in d:
                x = d[mode]
                L.append(f"  {mode:<11}: median {x['median_us']:.2f} us, p99 {x['p99_us']:.2f} us, "
                         f"p99.9 {x['p999_us']:.1f} us, max {x['max_us']:,.0f} us, dropped {x['dropped']:,}, "
                         f"close() {x['close_s']}s")
    L.append("")
    L.append(f"{'target':<40} {'measured':>14} {'target':>12}  status")
    for t in res.get("targets", []):
        v = t["measured"]
        shown = "-" if v is None else (f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}")
        L.append(f"{t['what']:<40} {shown:>14} {t['target']:>12}  {t['status']}")
    for name, p in res.get("profiles", {}).items():
        L.append("")
        L.append(f"py-spy, {name} worker ({p['samples']:,} samples, raw stacks {p['raw_file']}), by area:")
        L.append("  " + ", ".join(f"{a} {share:.1f}%" for a, share in p.get("areas", [])))
        L.append("  top self frames:")
        for f, share in p["top_self"][:12]:
            L.append(f"  {share:5.1f}%  {f}")
    if res.get("errors"):
        L.append("")
        for k, e in res["errors"].items():
            L.append(f"ERROR {k}: {e}")
    L.append(f"\ntotal {res.get('total_s', 0):.0f}s")
    return "\n".join(L)
