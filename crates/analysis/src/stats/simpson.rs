//! The concentration of item impressions between units, and the grouped
//! jackknife that gives its variance.

use super::{Estimate, NotComputed};

/// Pair counts of an item × group table: the pairs of impressions from
/// different groups, and among them those of the same item.
#[derive(Debug, Clone, Copy, Default)]
struct Pairs {
    same_item: f64,
    all: f64,
}

impl Pairs {
    fn share(self) -> Option<f64> {
        (self.all > 0.0).then(|| self.same_item / self.all)
    }
}

/// The Simpson concentration of item impressions between units, from an
/// item × group table of impression counts (one row per item, one column
/// per hash group of units): among pairs of impressions from different
/// groups, the share that show the same item,
///
/// (Σᵢ Tᵢ² − Σᵢ Σ_g c_ig²) / (N² − Σ_g N_g²),
///
/// with c_ig the impressions of item i in group g, Tᵢ = Σ_g c_ig,
/// N_g = Σᵢ c_ig and N = Σ_g N_g.
///
/// Why pairs across groups: a unit's impressions all fall in its group,
/// so such a pair always comes from two different units, which are
/// independent draws from the population; E(c_ig·c_ih) = E(N_g)·E(N_h)·p̄ᵢ²
/// for g ≠ h, so the estimate is unbiased for Σᵢ p̄ᵢ² (the Herfindahl
/// index of the population's impressions) whatever the number of units or
/// impressions. Neither an arm with fewer units nor a unit shown the same
/// list again looks more concentrated: a Gini of counts does (the items a
/// small sample never shows count as zeros), and so does Σc(c−1)/(N(N−1))
/// over all pairs when a unit's impressions repeat items (a term in
/// 1/units). The value is the chance that two different units are shown
/// the same item; its inverse, the effective number of items shown.
///
/// The grouped jackknife (leave one group out) gives its variance. The
/// value is `None` without impressions in two groups; the estimate says
/// why it is missing (no impressions, or too few groups with data).
pub fn concentration<'a>(
    rows: impl IntoIterator<Item = &'a [u32]>,
) -> (Option<f64>, Result<Estimate, NotComputed>) {
    // Σᵢ Tᵢ², and per group: N_g, Σᵢ c_ig², Σᵢ c_ig·Tᵢ.
    let mut item_squares = 0.0;
    let mut group_totals: Vec<f64> = Vec::new();
    let mut group_squares: Vec<f64> = Vec::new();
    let mut group_cross: Vec<f64> = Vec::new();
    for row in rows {
        if group_totals.is_empty() {
            group_totals = vec![0.0; row.len()];
            group_squares = vec![0.0; row.len()];
            group_cross = vec![0.0; row.len()];
        }
        let item_total: f64 = row.iter().map(|count| f64::from(*count)).sum();
        if item_total == 0.0 {
            continue;
        }
        item_squares += item_total * item_total;
        for (group, count) in row.iter().enumerate() {
            let count = f64::from(*count);
            group_totals[group] += count;
            group_squares[group] += count * count;
            group_cross[group] += count * item_total;
        }
    }
    let total: f64 = group_totals.iter().sum();
    let full = Pairs {
        same_item: item_squares - group_squares.iter().sum::<f64>(),
        all: total * total - group_totals.iter().map(|n| n * n).sum::<f64>(),
    };
    let Some(value) = full.share() else {
        return (None, Err(NotComputed::NoData));
    };
    // Without group k: its pairs with every other group leave, twice
    // (ordered pairs).
    let leave_one_out: Option<Vec<f64>> = (0..group_totals.len())
        .map(|k| {
            Pairs {
                same_item: full.same_item - 2.0 * (group_cross[k] - group_squares[k]),
                all: full.all - 2.0 * group_totals[k] * (total - group_totals[k]),
            }
            .share()
        })
        .collect();
    let estimate = leave_one_out
        .and_then(|rest| jackknife(value, &rest))
        .ok_or(NotComputed::TooFewUnits);
    (Some(value), estimate)
}

/// Jackknife estimate from the full-sample value and the leave-one-group-
/// out values: variance (G − 1)/G · Σ (θ₍₋ₖ₎ − θ̄)².
pub fn jackknife(full: f64, leave_one_out: &[f64]) -> Option<Estimate> {
    let groups = leave_one_out.len() as f64;
    if leave_one_out.len() < 2 {
        return None;
    }
    let mean = leave_one_out.iter().sum::<f64>() / groups;
    let spread: f64 = leave_one_out
        .iter()
        .map(|value| (value - mean).powi(2))
        .sum();
    Some(Estimate {
        value: full,
        variance: (groups - 1.0) / groups * spread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `concentration` of a table given as rows.
    fn concentration_of(rows: &[Vec<u32>]) -> Option<f64> {
        concentration(rows.iter().map(Vec::as_slice)).0
    }

    #[test]
    fn concentration_is_the_chance_two_units_are_shown_the_same_item() {
        // Two items, one impression each, in two groups: the only pair
        // across groups differs.
        assert_eq!(concentration_of(&[vec![1, 0], vec![0, 1]]), Some(0.0));
        assert_eq!(concentration_of(&[vec![3, 5], vec![0, 0]]), Some(1.0));
        // Four items evenly in two groups: (16·4 − 2·4·4)/(16² − 2·8²) = 1/4.
        let even = concentration_of(&[vec![2, 2], vec![2, 2], vec![2, 2], vec![2, 2]]);
        assert_eq!(even, Some(0.25));
        // Everything in one group: no pair of different units.
        assert_eq!(concentration_of(&[vec![4, 0], vec![2, 0]]), None);
    }

    #[test]
    fn concentration_is_unbiased_however_many_units_and_however_often_a_unit_repeats_an_item() {
        // Each unit is in a group of its own, is shown one item, drawn by
        // popularity, `shown` times: as correlated as a unit's impressions
        // get. The exact expectation over every draw is Σp².
        let p = [0.6, 0.25, 0.1, 0.05];
        let herfindahl: f64 = p.iter().map(|p| p * p).sum();
        for shown in [vec![1, 1], vec![1, 5, 20], vec![3, 1, 1, 7]] {
            let units = shown.len();
            let mut expected = 0.0;
            for draw in 0..p.len().pow(units as u32) {
                let items: Vec<usize> = (0..units)
                    .map(|unit| draw / p.len().pow(unit as u32) % p.len())
                    .collect();
                let probability: f64 = items.iter().map(|item| p[*item]).product();
                let rows: Vec<Vec<u32>> = (0..p.len())
                    .map(|item| {
                        (0..units)
                            .map(|unit| if items[unit] == item { shown[unit] } else { 0 })
                            .collect()
                    })
                    .collect();
                expected += probability * concentration_of(&rows).expect("two groups");
            }
            assert!(
                (expected - herfindahl).abs() < 1e-12,
                "shown {shown:?}: E = {expected}, Σp² = {herfindahl}"
            );
        }
    }

    #[test]
    fn leaving_a_group_out_of_the_concentration_is_computing_it_without_that_group() {
        let rows = [vec![3, 0, 2, 1], vec![1, 4, 0, 2], vec![0, 1, 1, 5]];
        let (value, estimate) = concentration(rows.iter().map(Vec::as_slice));
        let without: Vec<f64> = (0..4)
            .map(|k| {
                let rest: Vec<Vec<u32>> = rows
                    .iter()
                    .map(|row| {
                        row.iter()
                            .enumerate()
                            .filter(|(group, _)| *group != k)
                            .map(|(_, count)| *count)
                            .collect()
                    })
                    .collect();
                concentration_of(&rest).expect("three groups left")
            })
            .collect();
        let expected = jackknife(value.expect("data"), &without).expect("four groups");
        let estimate = estimate.expect("four groups");
        assert!((estimate.variance - expected.variance).abs() < 1e-15);
        assert_eq!(estimate.value, expected.value);
    }
}
