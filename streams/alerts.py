"""Alert rules and the alert lifecycle (pure logic).

An alert is an incident with a lifecycle: ``firing`` once when its condition starts,
``resolved`` once when it clears, never twice in a row (deduplicated), and not firing
again within the rule's cooldown after a resolve. Every transition carries a stable
``alert_id`` (same on a replay) and the evidence behind it. Times are event times
(window ends, detection times), so a replay of the same input raises the same alerts.

Rules, per model (``driftline.streams.models.ModelConfig``):
- detector drift and warning (from ``driftline.detectors.policy``), kind ``concept_drift``;
  resolved once no alarm of that detector came for ``drift_resolve_s`` of event time;
- thresholds: a metric outside [min, max] with >= ``min_count`` events (``threshold``);
- relative drop: a metric ``drop`` below the mean of the previous windows (``threshold``);
- latency p99 above the SLO (``latency``);
- volume below ``volume_drop`` x or above ``volume_spike`` x the recent average (``volume``);
- label coverage below a floor, judged ``coverage_after_s`` (wall clock) after the window (``label_coverage``);
- data drift against the reference profile (``data_drift``): rule ``feature_drift``, one incident
  per feature (``feature`` = its name, ``prediction`` for the model output) whose statistic crosses
  its limit (``driftline.detectors.datadrift``: JS against the reference's chunk limits, or PSI
  against ``psi_warning``/``psi_drift``), and rule ``multivariate_drift`` for the PCA
  reconstruction error outside its reference limits;
- data quality against the reference (``data_quality``), one rule per check: ``missing_rate``,
  ``type_mismatch``, ``out_of_range``, ``unseen_categories``, ``feature_vanished``, ``feature_appeared``;
- fairness (``fairness``): a disparity across the groups of a protected segment key past its
  threshold (``driftline.detectors.fairness.FairnessRule``), judged only with ``min_group_events`` per group;
- champion / challenger (``challenger``): a challenger ``worse`` than the champion on a metric in
  ``consecutive_windows`` judged windows in a row; resolved by the next judged window that is not.
"""

from __future__ import annotations

from typing import Any

from driftline.schemas.messages import incident_id, make_alert
from driftline.streams.models import ModelConfig
from driftline.streams.windows import SeriesKey

Alert = dict[str, Any]


class AlertEngine:
    """Lifecycle state of one model's alerts; serialisable with ``to_state``.

    Examples
    --------
    >>> from driftline.streams.models import ModelConfig, ThresholdRule
    >>> cfg = ModelConfig(thresholds=(ThresholdRule("accuracy", min=0.9, min_count=10),))
    >>> eng = AlertEngine("m")
    >>> win = {"model_id": "m", "model_version": "1", "segment": "", "window_start": 0.0,
    ...        "window_end": 60.0, "metrics": {"accuracy": 0.5}, "counts": {"accuracy": 100}}
    >>> [a["status"] for a in eng.on_window(cfg, win, emitted_at=61.0)]
    ['firing']
    >>> eng.on_window(cfg, win, emitted_at=62.0)  # still firing: deduplicated
    []
    >>> win2 = dict(win, window_start=60.0, window_end=120.0, metrics={"accuracy": 0.95})
    >>> [a["status"] for a in eng.on_window(cfg, win2, emitted_at=121.0)]
    ['resolved']
    """

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.active: dict[str, dict[str, Any]] = {}  # incident key -> incident
        self.resolved_at: dict[str, float] = {}  # incident key -> event time of last resolve
        self.history: dict[str, dict[str, float]] = {}  # series|metric -> {window_start: value}
        # SeriesKey.encode() -> furthest judgement (``judgement_stage``) that no recorded window state
        # covers yet (``WindowMerger.state_records`` forgets the covered ones)
        self.judged: dict[str, float] = {}

    def first_judgement(self, win: dict[str, Any], complete: bool) -> bool:
        """``True`` (and remembered) unless this window revision, or a later one, was judged,
        with every partition's partial (``complete``) if it is now.

        After a crash the merge stage may emit a window again that the engine has already
        judged (its state is recorded before the window's), possibly at an older revision
        when the replayed partials fall into other batches: judging it again could resolve
        or re-time an incident the alerts topic already carries. A revision first judged
        incomplete is judged again once complete: the rules that wait for completeness
        (volume, data drift and quality) judge it then.
        """
        key = SeriesKey(win["model_id"], win["model_version"], win["segment"], float(win["window_start"])).encode()
        stage = judgement_stage(int(win.get("revision", 0)), complete)
        if self.judged.get(key, -1) >= stage:
            return False
        self.judged[key] = stage
        return True

    # ---- entry points --------------------------------------------------------------------
    def on_alarm(self, cfg: ModelConfig, alarm: dict[str, Any], emitted_at: float) -> list[Alert]:
        """A detector alarm (``drift_event`` + policy ``severity``) from a partition."""
        ev = alarm["drift_event"]
        severity = alarm.get("severity")
        if severity is None:
            return []
        rule = ev["detector"] if ev["kind"] == "drift" else f"{ev['detector']}_warning"
        ctx = {"model_id": ev["model_id"], "model_version": ev["model_version"], "segment": "",
               "window_start": ev["window_start"], "window_end": ev["window_end"]}
        key = self._key(ctx, rule, "error_rate")
        evidence = {"detector": ev["detector"], "kind": ev["kind"], "direction": ev["direction"],
                    "position": ev["position"], "partition": ev["partition"], "params": ev["params"],
                    "estimate_before": ev["estimate_before"], "estimate_after": ev["estimate_after"],
                    "drift_event_id": ev["event_id"], "policy": alarm.get("reason")}
        message = f"{ev['detector'].upper()} detected concept {ev['kind']} on {ev['model_id']} {ev['model_version']}"
        if ev["estimate_before"] is not None:
            message += f": error rate {_fmt(ev['estimate_before'])} -> {_fmt(ev['estimate_after'])}"
        incident = self.active.get(key)
        if incident is not None:
            incident["last_seen"] = max(incident["last_seen"], ev["detected_at"])
            return self._escalate(key, ctx, severity, value=ev["estimate_after"], threshold=None,
                                  detected_at=ev["detected_at"], emitted_at=emitted_at, message=message,
                                  evidence=evidence)
        return self._fire(cfg, key, ctx, rule=rule, kind="concept_drift", metric="error_rate", severity=severity,
                          value=ev["estimate_after"], threshold=None, detected_at=ev["detected_at"],
                          emitted_at=emitted_at, message=message, evidence=evidence)

    def on_window(self, cfg: ModelConfig, win: dict[str, Any], emitted_at: float,
                  judge_volume: bool = True) -> list[Alert]:
        """A merged window (metrics message) was emitted: evaluate the window rules.

        ``judge_volume``: the first emission of the window with all of its partitions' partials
        (volume is judged on it only: a partial window would look like a drop).
        """
        out: list[Alert] = []
        metrics, counts = win["metrics"], win["counts"]
        for r in cfg.thresholds:
            v, n = metrics.get(r.metric), counts.get(r.metric, 0)
            if v is None or n < r.min_count:
                continue
            for bound, limit, word in (("min", r.min, "below"), ("max", r.max, "above")):
                if limit is None:
                    continue
                bad = v < limit if bound == "min" else v > limit
                out += self._condition(cfg, win, f"{r.metric}_{bound}", "threshold", r.metric, bad, r.severity, v,
                                       limit, n, emitted_at, f"{r.metric} {v:.4g} {word} {limit} ({n} events)")
        for d in cfg.relative_drops:
            v, n = metrics.get(d.metric), counts.get(d.metric, 0)
            if v is None or n < d.min_count:
                continue
            base = self._baseline(win, d.metric, d.baseline_windows)
            self._remember(win, d.metric, v, d.baseline_windows)
            if base is None or base <= 0:
                continue
            bad = v < base * (1.0 - d.drop)
            out += self._condition(cfg, win, f"{d.metric}_drop", "threshold", d.metric, bad, d.severity, v,
                                   base * (1.0 - d.drop), n, emitted_at,
                                   f"{d.metric} {v:.4g} is {1 - v / base:.1%} below its recent mean {base:.4g}",
                                   {"baseline": base, "drop": d.drop})
        if cfg.latency_p99_slo_ms is not None and "latency_p99" in metrics:
            v = metrics["latency_p99"]
            out += self._condition(cfg, win, "latency_p99_max", "latency", "latency_p99", v > cfg.latency_p99_slo_ms,
                                   "warning", v, cfg.latency_p99_slo_ms, counts.get("latency_p99", 0), emitted_at,
                                   f"latency p99 {v:.1f} ms above the SLO {cfg.latency_p99_slo_ms} ms")
        if judge_volume and win["segment"] == "":
            out += self._volume(cfg, win, emitted_at)
        if win["segment"] == "":
            out += self._resolve_drift(cfg, win, emitted_at)
        return out

    def on_silence(self, cfg: ModelConfig, model_version: str, silent: bool, last_seen: float,
                   now: float) -> list[Alert]:
        """A model version's traffic, judged on processing time (``WindowMerger``): firing once it
        sent nothing for ``silence_after_s``, resolved when traffic returns.

        The incident's span is (last prediction seen, now): a return of traffic has a later
        last-seen time, which is what resolves it.
        """
        if cfg.silence_after_s is None:
            return []
        span = {"model_id": self.model_id, "model_version": model_version, "segment": "",
                "window_start": last_seen, "window_end": now, "revision": 0}
        quiet = now - last_seen
        return self._condition(cfg, span, "silence", "availability", "seconds_since_last_prediction", silent,
                               "critical", quiet, cfg.silence_after_s, 0, now,
                               f"no prediction from {self.model_id} {model_version} for {quiet:.0f} s "
                               f"(silence after {cfg.silence_after_s:.0f} s)")

    def on_coverage(self, cfg: ModelConfig, win: dict[str, Any], emitted_at: float) -> list[Alert]:
        """Label coverage of a window, judged once ``coverage_after_s`` after its end.

        Labels come late, so coverage is only meaningful once the expected label delay has
        passed; the merge stage calls this once per whole-model window when that time
        (wall clock) has come, whether or not the window was re-emitted since.
        """
        if cfg.label_coverage_min is None or "label_coverage" not in win["metrics"]:
            return []
        v = win["metrics"]["label_coverage"]
        return self._condition(cfg, win, "label_coverage_min", "label_coverage", "label_coverage",
                               v < cfg.label_coverage_min, "warning", v, cfg.label_coverage_min,
                               win["counts"].get("label_coverage", 0), emitted_at,
                               f"label coverage {v:.1%} below {cfg.label_coverage_min:.0%}")

    def on_data(self, cfg: ModelConfig, win: dict[str, Any], drift: list[dict[str, Any]],
                quality: dict[str, list[dict[str, Any]]], emitted_at: float, reference_version: int = 0,
                multivariate: dict[str, Any] | None = None) -> list[Alert]:
        """Data drift and data quality of a whole-model window against its reference.

        ``drift``: ``DriftResult.to_dict()`` of each feature (and the prediction); each judged
        result (enough samples) is one incident per (version, feature): fired when the feature
        drifts, kept while its windows drift, resolved by a later clean window (a feature not
        judged in a window changes nothing). ``multivariate``: ``compare_reconstruction``'s result,
        its own incident. ``quality``: check -> offending features (``{"feature", "value",
        "level", ...}``), every check present (an empty list = clean); ``{}`` when the window has
        too few events to judge; one incident per (version, check).
        """
        out: list[Alert] = self._drift_incidents(cfg, win, drift, emitted_at, reference_version)
        if multivariate is not None:
            out += self._multivariate(cfg, win, multivariate, emitted_at, reference_version)
        for check, offenders in quality.items():
            rank = {"warning": 1, "critical": 2}
            severity = max((o["level"] for o in offenders), key=lambda lv: rank[lv], default="warning")
            value = max((float(o["value"]) for o in offenders), default=0.0)
            threshold = min((o["threshold"] for o in offenders if o.get("threshold") is not None), default=None)
            names = ", ".join(o["feature"] for o in offenders[:5])
            n = int(win["counts"].get("prediction_count", 0))
            out += self._condition(
                cfg, win, check, "data_quality", f"data_{check}", bool(offenders), severity, value, threshold, n,
                emitted_at, f"data quality on {win['model_id']} {win['model_version']}: {check} ({names})",
                {"features": offenders, "reference_version": reference_version})
        return out

    def on_fairness(self, cfg: ModelConfig, win: dict[str, Any], rates: dict[str, Any],
                    emitted_at: float) -> list[Alert]:
        """Fairness of a whole-model window: ``rates`` maps protected key -> ``GroupRates``.

        One incident per (version, disparity, key): metric ``fairness.<key>.<disparity>``. A
        disparity that cannot be judged (fewer than two groups, or a group under
        ``min_group_events`` in the disparity's denominators) changes nothing.
        """
        from driftline.detectors.fairness import DISPARITY_METRICS

        if cfg.fairness is None:
            return []
        out: list[Alert] = []
        for key, r in sorted(rates.items()):
            per_group = r.group_metrics()
            disparities = r.disparities()
            for rule in cfg.fairness.rules():
                if (len(per_group) < 2 or r.min_denominator(rule.metric) < rule.min_group_events
                        or rule.metric not in disparities):
                    continue
                violation = rule.check(r)
                value = disparities[rule.metric]
                metric = f"fairness.{key}.{rule.metric}"
                op = "below" if DISPARITY_METRICS[rule.metric][1] else "above"
                message = (f"fairness on {win['model_id']} {win['model_version']}: {rule.metric} across {key} "
                           f"{value:.3g} {op} {rule.threshold:g}")
                evidence: dict[str, Any] = {"protected": key, "min_group_events": rule.min_group_events,
                                            "groups": {g: {k: m[k] for k in ("n", "positive_rate", "tpr", "fpr",
                                                                             "precision")}
                                                       for g, m in per_group.items()}}
                if violation is not None:
                    message += f" ({violation.worst_group!r} vs {violation.best_group!r})"
                    evidence.update(worst_group=violation.worst_group, best_group=violation.best_group)
                out += self._condition(cfg, win, rule.metric, "fairness", metric, violation is not None,
                                       cfg.fairness.severity, value, rule.threshold, r.n, emitted_at, message,
                                       evidence)
        return out

    def on_comparison(self, cfg: ModelConfig, cmp: dict[str, Any], emitted_at: float) -> list[Alert]:
        """A challenger compared with the champion in one window (a comparisons message).

        Per metric, the verdicts of judged windows (not ``insufficient_data``) are remembered
        by window; the challenger is bad when the last ``consecutive_windows`` of them, up to
        this one, are all ``worse``. One test per window and metric: requiring a run of
        verdicts keeps the false-alarm rate of a clean challenger far below ``alpha``.
        """
        champ = cfg.champion
        if champ is None:
            return []
        out: list[Alert] = []
        win = {"model_id": cmp["model_id"], "model_version": cmp["challenger_version"], "segment": "",
               "window_start": cmp["window_start"], "window_end": cmp["window_end"], "revision": cmp["revision"]}
        need = champ.consecutive_windows
        for c in cmp["comparisons"]:
            if c["verdict"] == "insufficient_data":
                continue
            series = f"cmp:{c['metric']}"
            self._remember(win, series, 1.0 if c["verdict"] == "worse" else 0.0, need)
            hist = self.history.get(self._series(win, series), {})
            run = [v for ws, v in sorted(hist.items(), key=lambda kv: float(kv[0]))
                   if float(ws) <= float(win["window_start"])][-need:]
            bad = len(run) == need and all(v == 1.0 for v in run)
            message = (f"challenger {cmp['challenger_version']} of {cmp['model_id']}: {c['metric']} "
                       f"{c['challenger']:.4g} vs champion {cmp['champion_version']} {c['champion']:.4g} "
                       f"(difference {c['difference']:+.4g}, {1 - c['alpha']:.0%} CI [{c['ci_low']:+.4g}, "
                       f"{c['ci_high']:+.4g}]), worse in {need} windows in a row")
            evidence = {"champion_version": cmp["champion_version"], "mode": cmp["mode"],
                        "consecutive_windows": need, **{k: c[k] for k in (
                            "champion", "challenger", "difference", "ci_low", "ci_high", "p_value", "n_champion",
                            "n_challenger", "alpha", "verdict")}}
            out += self._condition(cfg, win, "challenger_worse", "challenger", c["metric"], bad, champ.severity,
                                   c["difference"], 0.0, min(c["n_champion"], c["n_challenger"]), emitted_at,
                                   message, evidence)
        return out

    # ---- rules ---------------------------------------------------------------------------
    def _drift_incidents(self, cfg: ModelConfig, win: dict[str, Any], drift: list[dict[str, Any]],
                         emitted_at: float, reference_version: int) -> list[Alert]:
        """One incident per drifting feature (rule ``feature_drift``, metric = the judged statistic)."""
        out: list[Alert] = []
        judged = [r for r in drift if r.get("value") is not None and not r.get("note")]
        if judged:  # an incident of the one-per-version rule of earlier releases ends here
            legacy = self._key(win, "psi", "feature_psi")
            if legacy in self.active:
                out.append(self._resolve(legacy, win, emitted_at, None, "replaced by one incident per feature"))
        for r in judged:
            prediction = r.get("role") == "prediction"
            metric = f"prediction_{r['statistic']}" if prediction else f"feature_{r['statistic']}.{r['feature']}"
            severity = "critical" if r.get("severity") == "drift" else "warning"
            what = "the prediction distribution" if prediction else f"feature {r['feature']}"
            message = (f"data drift on {win['model_id']} {win['model_version']}: {what} "
                       f"{r['statistic'].upper()} {r['value']:.3g} (drift limit {r['limit']:.3g}, {r['limits']})")
            out += self._condition(cfg, win, "feature_drift", "data_drift", metric, bool(r.get("severity")), severity,
                                   r["value"], r["limit"], int(r["n_window"]), emitted_at, message,
                                   {**_drift_evidence(r), "reference_version": reference_version},
                                   feature=str(r["feature"]))
        return out

    def _multivariate(self, cfg: ModelConfig, win: dict[str, Any], mv: dict[str, Any], emitted_at: float,
                      reference_version: int) -> list[Alert]:
        """The PCA reconstruction error outside its reference limits (rule ``multivariate_drift``)."""
        if mv.get("note") or mv.get("limit") is None:
            return []
        v = float(mv["value"])
        message = (f"multivariate drift on {win['model_id']} {win['model_version']}: PCA reconstruction error "
                   f"{v:.3g} outside [{mv['lower_limit']:.3g}, {mv['limit']:.3g}] of {len(mv['features'])} features")
        evidence = {k: mv.get(k) for k in ("statistic", "value", "limit", "lower_limit", "reference_mean", "n_window",
                                           "features", "components", "explained_variance", "top_features")}
        return self._condition(cfg, win, "multivariate_drift", "data_drift", "multivariate_reconstruction_error",
                               mv.get("severity") == "drift", "critical", v,
                               mv["limit"] if v >= mv["limit"] else mv["lower_limit"], int(mv["n_window"]),
                               emitted_at, message, {**evidence, "reference_version": reference_version})

    def _volume(self, cfg: ModelConfig, win: dict[str, Any], emitted_at: float) -> list[Alert]:
        n = win["metrics"].get("prediction_count", 0.0)
        base = self._baseline(win, "prediction_count", cfg.volume_baseline_windows, minimum=3)
        self._remember(win, "prediction_count", n, cfg.volume_baseline_windows)
        if base is None or base < cfg.volume_min_count:
            return []
        low = cfg.volume_drop is not None and n < base * cfg.volume_drop
        high = cfg.volume_spike is not None and n > base * cfg.volume_spike
        out = self._condition(cfg, win, "volume_drop", "volume", "prediction_count", low, "warning", n,
                              base * (cfg.volume_drop or 0), int(n), emitted_at,
                              f"volume {n:.0f} is below {cfg.volume_drop}x its recent mean {base:.0f}", {"baseline": base})
        out += self._condition(cfg, win, "volume_spike", "volume", "prediction_count", high, "warning", n,
                               base * (cfg.volume_spike or 0), int(n), emitted_at,
                               f"volume {n:.0f} is above {cfg.volume_spike}x its recent mean {base:.0f}", {"baseline": base})
        return out

    def _resolve_drift(self, cfg: ModelConfig, win: dict[str, Any], emitted_at: float) -> list[Alert]:
        out: list[Alert] = []
        for key, inc in list(self.active.items()):
            if inc["kind"] != "concept_drift" or inc["model_version"] != win["model_version"]:
                continue
            if win["window_start"] > inc["last_seen"] + cfg.drift_resolve_s:
                out.append(self._resolve(key, win, emitted_at, inc["value"],
                                         f"no {inc['rule']} alarm for {cfg.drift_resolve_s:.0f} s"))
        return out

    # ---- lifecycle -----------------------------------------------------------------------
    def _condition(self, cfg: ModelConfig, win: dict[str, Any], rule: str, kind: str, metric: str, bad: bool,
                   severity: str, value: float, threshold: float | None, n: int, emitted_at: float, message: str,
                   extra: dict[str, Any] | None = None, feature: str = "") -> list[Alert]:
        key = self._key(win, rule, metric)
        if bad:
            evidence = {"metric": metric, "value": value, "threshold": threshold, "events": n,
                        "revision": win.get("revision", 0), **(extra or {})}
            if key in self.active:  # still bad: it may have turned from warning to critical
                return self._escalate(key, win, severity, value=value, threshold=threshold,
                                      detected_at=win["window_end"], emitted_at=emitted_at, message=message,
                                      evidence=evidence)
            return self._fire(cfg, key, win, rule=rule, kind=kind, metric=metric, severity=severity, value=value,
                              threshold=threshold, detected_at=win["window_end"], emitted_at=emitted_at,
                              message=message, evidence=evidence, feature=feature)
        if key in self.active and win["window_start"] >= self.active[key]["window_start"]:
            return [self._resolve(key, win, emitted_at, value, f"{metric} back to {value:.4g}")]
        return []

    def _fire(self, cfg: ModelConfig, key: str, ctx: dict[str, Any], *, rule: str, kind: str, metric: str,
              severity: str, value: float | None, threshold: float | None, detected_at: float, emitted_at: float,
              message: str, evidence: dict[str, Any], feature: str = "") -> list[Alert]:
        last = self.resolved_at.get(key)
        if last is not None and detected_at < last + cfg.cooldown_s:
            return []
        alert = make_alert(status="firing", severity=severity, kind=kind, rule=rule,  # type: ignore[arg-type]
                           model_id=ctx["model_id"], model_version=ctx["model_version"], segment=ctx["segment"],
                           metric=metric, value=value, threshold=threshold, window_start=ctx["window_start"],
                           window_end=ctx["window_end"], detected_at=detected_at, emitted_at=emitted_at,
                           message=message, evidence=evidence, incident_start=detected_at, feature=feature)
        self.active[key] = {"kind": kind, "rule": rule, "metric": metric, "severity": severity,
                            "model_version": ctx["model_version"], "segment": ctx["segment"],
                            "window_start": ctx["window_start"], "incident_start": detected_at,
                            "last_seen": detected_at, "value": value, "threshold": threshold,
                            **({"feature": feature} if feature else {})}
        return [dict(alert)]

    def _escalate(self, key: str, ctx: dict[str, Any], severity: str, *, value: float | None,
                  threshold: float | None, detected_at: float, emitted_at: float, message: str,
                  evidence: dict[str, Any]) -> list[Alert]:
        """An open incident's warning turns critical: a firing alert of its own (same incident,
        ``escalation``), so that routes on ``severity="critical"`` (the pager) hear of it."""
        inc = self.active[key]
        if not (severity == "critical" and inc["severity"] == "warning"):
            return []
        inc["severity"] = "critical"
        alert = make_alert(status="firing", severity="critical", kind=inc["kind"], rule=inc["rule"],  # type: ignore[arg-type]
                           model_id=ctx["model_id"], model_version=inc["model_version"], segment=inc["segment"],
                           metric=inc["metric"], value=value, threshold=threshold, window_start=ctx["window_start"],
                           window_end=ctx["window_end"], detected_at=detected_at, emitted_at=emitted_at,
                           message=f"escalated to critical: {message}", evidence=evidence,
                           incident_start=inc["incident_start"], feature=inc.get("feature", ""), escalation=True)
        return [dict(alert)]

    def _resolve(self, key: str, win: dict[str, Any], emitted_at: float, value: float | None, why: str) -> Alert:
        inc = self.active.pop(key)
        self.resolved_at[key] = win["window_end"]
        alert = make_alert(status="resolved", severity=inc["severity"], kind=inc["kind"], rule=inc["rule"],
                           model_id=self.model_id, model_version=inc["model_version"], segment=inc["segment"],
                           metric=inc["metric"], value=value, threshold=inc["threshold"],
                           window_start=win["window_start"], window_end=win["window_end"],
                           detected_at=win["window_end"], emitted_at=emitted_at, message=f"resolved: {why}",
                           evidence={"incident_id": incident_id(self.model_id, inc["model_version"], inc["segment"],
                                                                inc["rule"], inc["metric"], inc["incident_start"])},
                           incident_start=inc["incident_start"], feature=inc.get("feature", ""))
        return dict(alert)

    # ---- baselines -----------------------------------------------------------------------
    def _series(self, win: dict[str, Any], metric: str) -> str:
        return f"{win['model_version']}|{win['segment']}|{metric}"

    def _baseline(self, win: dict[str, Any], metric: str, n: int, minimum: int = 1) -> float | None:
        hist = self.history.get(self._series(win, metric), {})
        prev = [v for ws, v in sorted(hist.items(), key=lambda kv: float(kv[0])) if float(ws) < win["window_start"]][-n:]
        return sum(prev) / len(prev) if len(prev) >= minimum else None

    def _remember(self, win: dict[str, Any], metric: str, value: float, n: int) -> None:
        hist = self.history.setdefault(self._series(win, metric), {})
        hist[repr(float(win["window_start"]))] = value
        if len(hist) > n + 1:
            for ws in sorted(hist, key=float)[: len(hist) - n - 1]:
                del hist[ws]

    def _key(self, ctx: dict[str, Any], rule: str, metric: str) -> str:
        return f"{ctx['model_version']}|{ctx['segment']}|{rule}|{metric}"

    def to_state(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "active": self.active, "resolved_at": self.resolved_at,
                "history": self.history, "judged": self.judged}

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> AlertEngine:
        eng = cls(d["model_id"])
        eng.active, eng.resolved_at, eng.history = d["active"], d["resolved_at"], d["history"]
        eng.judged = d.get("judged", {})
        return eng


def judgement_stage(revision: int, complete: bool) -> float:
    """The order of a window's judgements: by revision, and at one revision incomplete first
    (a float: engines recorded before completeness held revisions, which read as incomplete)."""
    return revision + (0.5 if complete else 0.0)


def _drift_evidence(r: dict[str, Any]) -> dict[str, Any]:
    ev = {k: r.get(k) for k in ("feature", "kind", "severity", "statistic", "value", "limit", "limits", "psi", "js",
                                "ks", "ks_error_bound", "chi2", "chi2_pvalue", "n_reference", "n_window")
          if r.get(k) is not None}
    ev["top_shifted"] = [{"bin": b, "reference": ref, "window": w} for b, ref, w in r.get("top_shifted", [])]
    return ev


def _fmt(x: float | None) -> str:
    return "?" if x is None else f"{x:.3f}"

