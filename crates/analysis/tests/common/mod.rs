//! What the analysis tests share: a seeded generator, a running
//! experiment, domain events built in one line, and simulated users.

// Each test file uses its own part of these helpers.
#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use exp_analysis::{Analyzer, Report, report::MetricReport};
use exp_core::{
    Experiment, Guardrail, GuardrailAction, Status, UnitType, bucketing,
    event::{Exposure, Outcome, from_unix_micros},
    examples, lifecycle,
    metrics::OutcomeType,
};

/// SplitMix64: small, seeded, good enough for simulation.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    pub fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }

    /// A standard normal draw (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let radius = (-2.0 * (1.0 - self.uniform()).ln()).sqrt();
        radius * (std::f64::consts::TAU * self.uniform()).cos()
    }
}

/// 2027-01-15T08:00:00Z, on an hour boundary.
pub const START_MICROS: i64 = 1_800_000_000_000_000;

/// The seed experiment, running at revision 2 with a bounce-rate guardrail.
pub fn running_experiment() -> Experiment {
    let mut experiment = examples::seed_experiment();
    experiment.status = Status::Running;
    experiment.revision = 2;
    experiment.randomization = Some(lifecycle::randomization(&experiment, 2));
    experiment.metrics.guardrails = vec![Guardrail {
        metric: "bounce_rate".into(),
        threshold: 0.05,
        action: Some(GuardrailAction::Stop),
    }];
    experiment
}

/// An analyzer whose catalog holds `experiment` only.
pub fn analyzer_for(experiment: Experiment) -> Analyzer {
    let shared = Arc::new(Mutex::new(experiment));
    Analyzer::new(Box::new(move |id| {
        let experiment = shared.lock().expect("catalog lock").clone();
        (experiment.id == id).then_some(experiment)
    }))
}

/// The variant the salts give `unit` (so the bucketing check passes).
pub fn variant_of(experiment: &Experiment, unit: &str) -> usize {
    let salt = &experiment
        .randomization
        .as_ref()
        .expect("present in the simulation")
        .variant_salt;
    bucketing::variant_index(&experiment.variants, bucketing::bucket(salt, unit))
        .expect("present in the simulation")
}

/// A user exposure at revision 2.
pub fn user_exposure(experiment_id: &str, variant: &str, user: &str, time_micros: i64) -> Exposure {
    Exposure {
        event_id: String::new(),
        experiment_id: experiment_id.into(),
        variant: variant.into(),
        user_id: user.into(),
        session_id: String::new(),
        unit_type: UnitType::User,
        placement: "you_may_also_like".into(),
        page_type: String::new(),
        revision: 2,
        timestamp: from_unix_micros(time_micros),
    }
}

/// An outcome of `user` on the experiment's placement, of a recommended
/// item (`sku-1`, or `item_ids` for an impression); a purchase's `value`
/// is in USD.
pub fn user_outcome(
    user: &str,
    time_micros: i64,
    outcome_type: OutcomeType,
    item_ids: &[String],
    value: f64,
) -> Outcome {
    Outcome {
        event_id: String::new(),
        outcome_type,
        user_id: user.into(),
        session_id: String::new(),
        placement: "you_may_also_like".into(),
        page_type: String::new(),
        item_id: "sku-1".into(),
        item_ids: item_ids.to_vec(),
        from_recommendation: true,
        source_placement: "you_may_also_like".into(),
        value,
        currency: if outcome_type == OutcomeType::Purchase {
            "USD".into()
        } else {
            String::new()
        },
        quantity: 1,
        latency_ms: 0.0,
        timestamp: from_unix_micros(time_micros),
        attributes: BTreeMap::new(),
    }
}

/// True per-arm behaviour of a simulated unit.
#[derive(Clone, Copy)]
pub struct Arm {
    pub add_to_cart: f64,
    pub purchase: f64,
    pub mean_order_value: f64,
    pub click: f64,
    pub bounce: f64,
}

pub const CONTROL: Arm = Arm {
    add_to_cart: 0.10,
    purchase: 0.05,
    mean_order_value: 50.0,
    click: 0.06,
    bounce: 0.40,
};

/// Feeds `units` simulated users to `analyzer`; `arms[v]` is how variant
/// `v` behaves.
pub fn simulate(
    analyzer: &mut Analyzer,
    experiment: &Experiment,
    rng: &mut Rng,
    units: usize,
    arms: [Arm; 2],
    tag: &str,
) {
    let items: Vec<String> = (0..8).map(|item| format!("sku-{item}")).collect();
    for index in 0..units {
        let user = format!("{tag}-u{index}");
        let variant = variant_of(experiment, &user);
        let arm = arms[variant];
        let time = START_MICROS + index as i64;
        analyzer.exposure(&user_exposure(
            &experiment.id,
            &experiment.variants[variant].name,
            &user,
            time,
        ));
        // One outcome, changed in place for each event of the unit.
        let mut outcome = user_outcome(&user, time + 1, OutcomeType::Impression, &[], 0.0);
        let shown = 1 + (rng.next_u64() % 8) as usize;
        outcome.item_ids.extend_from_slice(&items[..shown]);
        analyzer.outcome(&outcome);
        outcome.item_ids.clear();
        outcome.outcome_type = OutcomeType::Click;
        for _ in 0..shown {
            if rng.bernoulli(arm.click) {
                analyzer.outcome(&outcome);
            }
        }
        if rng.bernoulli(arm.add_to_cart) {
            outcome.outcome_type = OutcomeType::AddToCart;
            analyzer.outcome(&outcome);
        }
        if rng.bernoulli(arm.purchase) {
            outcome.outcome_type = OutcomeType::Purchase;
            outcome.value = rng.exponential(arm.mean_order_value);
            outcome.currency = "USD".into();
            analyzer.outcome(&outcome);
            outcome.value = 0.0;
            outcome.currency.clear();
        }
        let pages = if rng.bernoulli(arm.bounce) {
            1
        } else {
            2 + rng.next_u64() % 3
        };
        outcome.outcome_type = OutcomeType::PageView;
        for _ in 0..pages {
            analyzer.outcome(&outcome);
        }
    }
}

pub const REPETITIONS: usize = 1000;
pub const UNITS: usize = 2000;

/// A fresh analyzer fed `UNITS` simulated users, and its report.
pub fn simulated_report(
    experiment: &Experiment,
    rng: &mut Rng,
    arms: [Arm; 2],
    tag: &str,
) -> Report {
    let mut analyzer = analyzer_for(experiment.clone());
    simulate(&mut analyzer, experiment, rng, UNITS, arms, tag);
    analyzer
        .report(&experiment.id, 0.05)
        .expect("the experiment has exposures")
}

/// The treatment's result for metric `name`.
pub fn treatment_metric<'a>(report: &'a Report, name: &str) -> &'a MetricReport {
    metric(report, 1, name)
}

/// Variant `variant`'s result for metric `name`.
pub fn metric<'a>(report: &'a Report, variant: usize, name: &str) -> &'a MetricReport {
    report.variants[variant]
        .metrics
        .iter()
        .find(|metric| metric.metric == name)
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// The sanity check called `name`.
pub fn check<'a>(report: &'a Report, name: &str) -> &'a exp_analysis::report::SanityCheck {
    report
        .sanity_checks
        .iter()
        .find(|check| check.name == name)
        .unwrap_or_else(|| panic!("no sanity check {name}"))
}
