//! `GetResults` as a table people read: what kind of intervals it carries
//! (fixed-horizon, or always-valid for a sequential experiment) and how its
//! p-values are adjusted; per metric and variant the value, the difference
//! with control and its interval (absolute and relative), and the adjusted
//! p-value; then the sample ratio check, the sanity checks and the
//! guardrails.

use std::{fmt::Write, time::SystemTime};

use exp_proto::v1;

fn role(role: i32) -> &'static str {
    match v1::MetricRole::try_from(role) {
        Ok(v1::MetricRole::Primary) => "primary",
        Ok(v1::MetricRole::Secondary) => "secondary",
        Ok(v1::MetricRole::Guardrail) => "guardrail",
        _ => "",
    }
}

fn signed(value: f64, percent: bool) -> String {
    if percent {
        format!("{:+.1}%", value * 100.0)
    } else {
        format!("{value:+.4}")
    }
}

fn interval(interval: Option<&v1::ConfidenceInterval>, percent: bool) -> String {
    interval.map_or_else(String::new, |interval| {
        format!(
            "[{}, {}]",
            signed(interval.lower, percent),
            signed(interval.upper, percent)
        )
    })
}

fn p_value(p: f64) -> String {
    if p < 0.001 {
        "<0.001".into()
    } else {
        format!("{p:.3}")
    }
}

fn thousands(count: u64) -> String {
    let digits = count.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The line under an adjusted metric row: the variance CUPED removed and
/// the unadjusted estimate.
fn cuped_line(cuped: &v1::CupedResult) -> String {
    let reduction = if cuped.variance_reduction_undefined {
        "-".to_owned()
    } else {
        format!("{:.1}%", cuped.variance_reduction * 100.0)
    };
    let unadjusted = if cuped.unadjusted_status == v1::ComparisonStatus::Computed as i32 {
        format!(
            "unadjusted {} {}, p {}",
            signed(cuped.unadjusted_absolute_difference, false),
            interval(cuped.unadjusted_absolute_interval.as_ref(), false),
            p_value(cuped.unadjusted_p_value)
        )
    } else {
        "unadjusted not compared".to_owned()
    };
    format!(
        "  {:<27} {:<10} {:<14} CUPED: variance removed {reduction}; {unadjusted}",
        "", "", ""
    )
}

/// Whether intervals of this kind are always valid (sequential).
fn sequential(kind: i32) -> bool {
    kind == v1::IntervalKind::Sequential as i32
}

/// What the intervals are, for people (with N* when always valid).
fn interval_kind(kind: i32, tuning_parameter: u32) -> String {
    if sequential(kind) {
        format!(
            "always-valid (sequential, N* {}) intervals and p-values: valid at every look",
            thousands(u64::from(tuning_parameter))
        )
    } else {
        "fixed-horizon intervals and p-values: valid at one planned look".to_owned()
    }
}

/// How the adjusted p-values were adjusted, for people.
fn correction(name: &str) -> String {
    match name {
        "holm" => "p-values adjusted by Holm across treatments".to_owned(),
        "benjamini_hochberg" => "p-values adjusted by Benjamini-Hochberg across secondary \
                                 metrics and treatments (Holm for the primary metric and guardrails)"
            .to_owned(),
        other => format!("p-values adjusted by {other}"),
    }
}

/// The whole results table.
pub fn render(results: &v1::GetResultsResponse) -> String {
    let mut out = String::new();
    let level = ((1.0 - results.alpha) * 100.0).round();
    let freshness = results
        .data_freshness_time
        .and_then(|time| SystemTime::try_from(time).ok())
        .map_or_else(
            || "no events yet".to_owned(),
            |time| format!("events up to {}", humantime::format_rfc3339_seconds(time)),
        );
    let _ = writeln!(
        out,
        "{} (revision {}): alpha {}; {freshness}",
        results.experiment_id, results.revision, results.alpha,
    );
    let _ = writeln!(
        out,
        "{}; {}",
        interval_kind(results.interval_kind, results.sequential_tuning_parameter),
        correction(&results.multiple_comparison_correction)
    );
    let _ = writeln!(
        out,
        "counted through log position {}{}",
        results.counted_position,
        if results.pending_events == 0 {
            " (nothing waiting)".to_owned()
        } else {
            format!(
                "; {} events waiting, the oldest for {:.1} s",
                thousands(results.pending_events),
                results.lag_seconds
            )
        }
    );
    let _ = writeln!(out);
    for variant in &results.variants {
        let _ = writeln!(
            out,
            "  {:<14} {:>10} units{}",
            variant.variant,
            thousands(variant.exposed_units),
            if variant.is_control {
                "  (control)"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(out);
    let interval_header = if sequential(results.interval_kind) {
        format!("{level}% always-valid")
    } else {
        format!("{level}% interval")
    };
    let _ = writeln!(
        out,
        "  {:<27} {:<10} {:<14} {:>10} {:>10} {:<22} {:>8} {:<18} {:>8}",
        "metric",
        "role",
        "variant",
        "value",
        "diff",
        interval_header,
        "rel",
        interval_header,
        "p (adj.)"
    );
    let metrics = results
        .variants
        .first()
        .map_or(0, |variant| variant.metrics.len());
    for index in 0..metrics {
        for (row, variant) in results.variants.iter().enumerate() {
            let Some(metric) = variant.metrics.get(index) else {
                continue;
            };
            let (name, metric_role) = if row == 0 {
                (metric.metric.as_str(), role(metric.role))
            } else {
                ("", "")
            };
            let value = if metric.value_undefined {
                "-".to_owned()
            } else {
                format!("{:.4}", metric.value)
            };
            let status = v1::ComparisonStatus::try_from(metric.comparison_status)
                .unwrap_or(v1::ComparisonStatus::Unspecified);
            if status != v1::ComparisonStatus::Computed {
                let why = match status {
                    v1::ComparisonStatus::Control => "",
                    v1::ComparisonStatus::NoData => "not compared: no data",
                    v1::ComparisonStatus::TooFewUnits => "not compared: too few units",
                    v1::ComparisonStatus::NoVariance => "not compared: no variance in either arm",
                    _ => "not compared",
                };
                let line = format!(
                    "  {:<27} {:<10} {:<14} {:>10} {}",
                    name, metric_role, variant.variant, value, why
                );
                let _ = writeln!(out, "{}", line.trim_end());
                continue;
            }
            let _ = writeln!(
                out,
                "  {:<27} {:<10} {:<14} {:>10} {:>10} {:<22} {:>8} {:<18} {:>8}{}",
                name,
                metric_role,
                variant.variant,
                value,
                signed(metric.absolute_difference, false),
                interval(metric.absolute_interval.as_ref(), false),
                if metric.relative_undefined {
                    "n/a".into()
                } else {
                    signed(metric.relative_difference, true)
                },
                if metric.relative_undefined {
                    "(control is 0)".into()
                } else {
                    interval(metric.relative_interval.as_ref(), true)
                },
                p_value(metric.adjusted_p_value),
                if metric.significant { " *" } else { "" }
            );
            if let Some(cuped) = metric.cuped.as_ref().filter(|cuped| cuped.applied) {
                let _ = writeln!(out, "{}", cuped_line(cuped));
            }
        }
    }
    let _ = writeln!(out, "  (* significant at alpha {})", results.alpha);
    if let Some(days) = results
        .variants
        .iter()
        .flat_map(|variant| &variant.metrics)
        .find_map(|metric| metric.cuped.as_ref().filter(|cuped| cuped.applied))
        .map(|cuped| cuped.pre_period_days)
    {
        let _ = writeln!(
            out,
            "  (CUPED: rows followed by a CUPED line are adjusted for the metric's measure over \
             the {days} whole UTC days before the day of each unit's first exposure; the line \
             gives the unadjusted estimate and the variance removed)"
        );
    }
    let _ = writeln!(out);
    match &results.sample_ratio {
        Some(check) => {
            let _ = writeln!(
                out,
                "  sample ratio: chi-square {:.2}, p {} -> {}",
                check.chi_square,
                p_value(check.p_value),
                if check.mismatch {
                    "MISMATCH: the split is broken, do not trust these results"
                } else {
                    "ok"
                }
            );
        }
        None => {
            let _ = writeln!(out, "  sample ratio: not enough exposures yet");
        }
    }
    for check in &results.sanity_checks {
        let _ = writeln!(
            out,
            "  {}: {} ({})",
            check.name,
            if check.passed { "ok" } else { "FAILED" },
            check.detail
        );
    }
    for guardrail in &results.guardrails {
        let state = match v1::GuardrailState::try_from(guardrail.state) {
            Ok(v1::GuardrailState::Ok) => "ok",
            Ok(v1::GuardrailState::Breached) => "BREACHED",
            Ok(v1::GuardrailState::InsufficientData) => "insufficient data",
            _ => "unknown",
        };
        let _ = writeln!(
            out,
            "  guardrail {} on {}: {} ({} against control, tolerated {:.1}%, always-valid p {})",
            guardrail.metric,
            guardrail.variant,
            state,
            if guardrail.state == v1::GuardrailState::InsufficientData as i32 {
                "-".to_owned()
            } else {
                signed(guardrail.relative_difference, true)
            },
            guardrail.threshold * 100.0,
            p_value(guardrail.always_valid_p_value)
        );
    }
    out
}

/// A results timeline: per point, its time, each variant's units and the
/// primary metric (the first), with the difference and its interval for
/// treatments.
pub fn render_timeline(timeline: &v1::GetResultsTimelineResponse) -> String {
    let mut out = String::new();
    let level = ((1.0 - timeline.alpha) * 100.0).round();
    let metric = timeline
        .points
        .iter()
        .flat_map(|point| &point.variants)
        .find_map(|variant| variant.metrics.first())
        .map_or("-", |metric| metric.metric.as_str());
    let always_valid = timeline
        .points
        .last()
        .is_some_and(|point| sequential(point.interval_kind));
    let _ = writeln!(
        out,
        "{} over time: {metric}, cumulative, with its {level}% {}interval against control",
        timeline.experiment_id,
        if always_valid {
            "always-valid (sequential) "
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "  {:<22} {:<14} {:>10} {:>10} {:>10} {:<22}",
        "time (UTC)", "variant", "units", "value", "diff", "interval"
    );
    for point in &timeline.points {
        let time = point
            .time
            .and_then(|time| SystemTime::try_from(time).ok())
            .map_or_else(
                || "-".to_owned(),
                |time| humantime::format_rfc3339_seconds(time).to_string(),
            );
        let label = if point.current {
            format!("{time} (now)")
        } else {
            time
        };
        for (row, variant) in point.variants.iter().enumerate() {
            let Some(metric) = variant.metrics.first() else {
                continue;
            };
            let computed = metric.comparison_status == v1::ComparisonStatus::Computed as i32;
            let _ = writeln!(
                out,
                "  {:<22} {:<14} {:>10} {:>10} {:>10} {:<22}",
                if row == 0 { label.as_str() } else { "" },
                variant.variant,
                thousands(variant.exposed_units),
                if metric.value_undefined {
                    "-".to_owned()
                } else {
                    format!("{:.4}", metric.value)
                },
                if computed {
                    signed(metric.absolute_difference, false)
                } else {
                    String::new()
                },
                if computed {
                    interval(metric.absolute_interval.as_ref(), false)
                } else {
                    String::new()
                },
            );
        }
    }
    out
}

/// A plan's answer: the sample size and, when daily units were given,
/// the days.
pub fn render_plan(plan: &v1::PlanExperimentResponse) -> String {
    let mut out = format!(
        "to find a change of {:+.6} (effect size {:.4}) at alpha {} with power {}:\n\
         control units        {}\n\
         units per treatment  {}\n\
         units in all         {}\n\
         eligible units       {}\n",
        plan.absolute_effect,
        plan.effect_size,
        plan.alpha,
        plan.power,
        plan.control_units,
        plan.units_per_treatment,
        plan.total_units,
        plan.eligible_units,
    );
    if plan.days > 0.0 {
        out.push_str(&format!("days                 {:.1}\n", plan.days));
        let source = match v1::DailyUnitsSource::try_from(plan.daily_units_source) {
            Ok(v1::DailyUnitsSource::Given) => " (given)",
            Ok(v1::DailyUnitsSource::Experiment) => " (seen in the experiment, last 24 h)",
            Ok(v1::DailyUnitsSource::Placement) => " (seen on the placement, last 24 h)",
            _ => "",
        };
        out.push_str(&format!(
            "at units a day       {:.0}{source}\n",
            plan.daily_units
        ));
    }
    if let Some(progress) = &plan.progress {
        out.push_str(&format!(
            "so far: {} control units, detecting {:.1}% now; {:.0} eligible units a day seen; {:.1} days left\n",
            progress.control_units,
            progress.minimum_detectable_effect * 100.0,
            progress.observed_daily_units,
            progress.days_left,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_says_the_daily_units_its_days_are_at_and_where_they_came_from() {
        let plan = v1::PlanExperimentResponse {
            eligible_units: 565_120,
            days: 4.7,
            daily_units: 120_000.0,
            daily_units_source: v1::DailyUnitsSource::Placement as i32,
            ..Default::default()
        };
        let printed = render_plan(&plan);
        assert!(printed.contains("days                 4.7"), "{printed}");
        assert!(
            printed.contains("at units a day       120000 (seen on the placement, last 24 h)"),
            "{printed}"
        );
        let without = render_plan(&v1::PlanExperimentResponse::default());
        assert!(!without.contains("units a day"), "{without}");
    }

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn a_treatment_row_shows_difference_interval_and_adjusted_p_value() {
        let metric = |value, compared: bool| v1::MetricResult {
            metric: "add_to_cart_rate".into(),
            role: v1::MetricRole::Primary as i32,
            value,
            absolute_difference: 0.02,
            absolute_interval: compared.then_some(v1::ConfidenceInterval {
                lower: 0.01,
                upper: 0.03,
                level: 0.95,
            }),
            relative_difference: 0.2,
            relative_interval: compared.then_some(v1::ConfidenceInterval {
                lower: 0.1,
                upper: 0.3,
                level: 0.95,
            }),
            p_value: 0.0001,
            adjusted_p_value: 0.0002,
            significant: compared,
            comparison_status: if compared {
                v1::ComparisonStatus::Computed
            } else {
                v1::ComparisonStatus::Control
            } as i32,
            ..Default::default()
        };
        let results = v1::GetResultsResponse {
            experiment_id: "reco_ymal_v1".into(),
            alpha: 0.05,
            multiple_comparison_correction: "holm".into(),
            variants: vec![
                v1::VariantResult {
                    variant: "control".into(),
                    is_control: true,
                    exposed_units: 5_000,
                    metrics: vec![metric(0.1, false)],
                },
                v1::VariantResult {
                    variant: "treatment".into(),
                    is_control: false,
                    exposed_units: 5_100,
                    metrics: vec![metric(0.12, true)],
                },
            ],
            ..Default::default()
        };
        let table = render(&results);
        assert!(table.contains("5,100 units"), "{table}");
        assert!(table.contains("[+0.0100, +0.0300]"), "{table}");
        assert!(table.contains("[+10.0%, +30.0%]"), "{table}");
        assert!(table.contains("<0.001 *"), "{table}");
        assert!(table.contains("fixed-horizon intervals"), "{table}");
        assert!(
            table.contains("adjusted by Holm across treatments"),
            "{table}"
        );
        assert!(table.contains("95% interval"), "{table}");
        let sequential = render(&v1::GetResultsResponse {
            interval_kind: v1::IntervalKind::Sequential as i32,
            sequential_tuning_parameter: 20_000,
            multiple_comparison_correction: "benjamini_hochberg".into(),
            ..results
        });
        assert!(
            sequential.contains("always-valid (sequential, N* 20,000) intervals"),
            "{sequential}"
        );
        assert!(sequential.contains("95% always-valid"), "{sequential}");
        assert!(
            sequential.contains("Benjamini-Hochberg across secondary metrics"),
            "{sequential}"
        );
    }

    #[test]
    fn an_adjusted_row_is_followed_by_the_variance_cuped_removed_and_the_unadjusted_estimate() {
        let cuped = v1::CupedResult {
            applied: true,
            pre_period_days: 14,
            theta: 0.4,
            variance_reduction: 0.372,
            unadjusted_status: v1::ComparisonStatus::Computed as i32,
            unadjusted_absolute_difference: 0.025,
            unadjusted_absolute_interval: Some(v1::ConfidenceInterval {
                lower: 0.005,
                upper: 0.045,
                level: 0.95,
            }),
            unadjusted_p_value: 0.014,
            ..Default::default()
        };
        let metric = |cuped: Option<v1::CupedResult>| v1::MetricResult {
            metric: "add_to_cart_rate".into(),
            absolute_difference: 0.02,
            absolute_interval: Some(v1::ConfidenceInterval {
                lower: 0.01,
                upper: 0.03,
                level: 0.95,
            }),
            comparison_status: v1::ComparisonStatus::Computed as i32,
            cuped,
            ..Default::default()
        };
        let results = |cuped| v1::GetResultsResponse {
            alpha: 0.05,
            variants: vec![v1::VariantResult {
                variant: "treatment".into(),
                metrics: vec![metric(cuped)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let table = render(&results(Some(cuped)));
        assert!(
            table.contains(
                "CUPED: variance removed 37.2%; unadjusted +0.0250 [+0.0050, +0.0450], p 0.014"
            ),
            "{table}"
        );
        assert!(table.contains("the 14 whole UTC days before"), "{table}");
        // Not applied (no pre-period yet), or off: no CUPED line.
        let not_applied = render(&results(Some(v1::CupedResult {
            applied: false,
            ..cuped
        })));
        assert!(!not_applied.contains("CUPED"), "{not_applied}");
        assert!(!render(&results(None)).contains("CUPED"));
    }

    #[test]
    fn a_comparison_not_computed_says_why_and_an_undefined_relative_difference_shows_no_zero() {
        let metric = |status: v1::ComparisonStatus, relative_undefined| v1::MetricResult {
            metric: "add_to_cart_rate".into(),
            role: v1::MetricRole::Primary as i32,
            value: 0.05,
            absolute_difference: 0.05,
            absolute_interval: Some(v1::ConfidenceInterval {
                lower: 0.0198,
                upper: 0.0802,
                level: 0.95,
            }),
            relative_undefined,
            p_value: 0.00118,
            adjusted_p_value: 0.00118,
            significant: true,
            comparison_status: status as i32,
            ..Default::default()
        };
        let results = |status, relative_undefined| v1::GetResultsResponse {
            experiment_id: "reco_ymal_v1".into(),
            alpha: 0.05,
            variants: vec![v1::VariantResult {
                variant: "treatment".into(),
                exposed_units: 200,
                metrics: vec![metric(status, relative_undefined)],
                ..Default::default()
            }],
            ..Default::default()
        };
        let zero_control = render(&results(v1::ComparisonStatus::Computed, true));
        assert!(
            zero_control.contains("[+0.0198, +0.0802]"),
            "{zero_control}"
        );
        assert!(zero_control.contains("n/a"), "{zero_control}");
        assert!(zero_control.contains("(control is 0)"), "{zero_control}");
        assert!(!zero_control.contains("+0.0%"), "{zero_control}");
        let few = render(&results(v1::ComparisonStatus::TooFewUnits, false));
        assert!(few.contains("not compared: too few units"), "{few}");
        assert!(!few.contains("+0.0500"), "{few}");
    }
}
