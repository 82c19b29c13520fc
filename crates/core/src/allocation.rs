//! Which allocation buckets of its layer an experiment holds.
//!
//! Every experiment of a layer hashes units with the layer's allocation
//! salt into the same 10,000 buckets and holds a disjoint set of them, so
//! a unit is in at most one experiment of a layer. An experiment at
//! `traffic_percent` T holds T × 100 buckets:
//!
//! - growing (a ramp up) appends the lowest free buckets, keeping every
//!   bucket it had: no unit already in leaves or changes arm;
//! - shrinking (a ramp down) gives back the buckets taken last: the units
//!   in the remaining buckets stay where they are;
//! - stopping or completing gives every bucket back to the layer.

use crate::{
    Error,
    lifecycle::check_layer_capacity,
    model::{BUCKETS, BucketRange, Experiment},
};

/// Buckets per traffic percent.
pub const BUCKETS_PER_PERCENT: u32 = BUCKETS / 100;

/// Total buckets in `ranges`.
pub fn size(ranges: &[BucketRange]) -> u32 {
    ranges.iter().map(|range| range.len()).sum()
}

/// Whether `bucket` is in one of `ranges`.
pub fn contains(ranges: &[BucketRange], bucket: u32) -> bool {
    ranges.iter().any(|range| range.contains(bucket))
}

/// Gives `next` the allocation its status and traffic call for, next to
/// the other experiments of its layer. `previous` is the state `next`
/// replaces, whose buckets it keeps as far as it still needs them.
pub fn allocate<'a>(
    next: &mut Experiment,
    previous: Option<&Experiment>,
    others: impl IntoIterator<Item = &'a Experiment> + Clone,
) -> Result<(), Error> {
    if !next.status.holds_traffic() {
        next.allocation.clear();
        return Ok(());
    }
    check_layer_capacity(next, others.clone())?;
    let layer = next.effective_layer().to_owned();
    let kept = previous
        .filter(|previous| previous.effective_layer() == layer)
        .map(|previous| previous.allocation.clone())
        .unwrap_or_default();
    let mut taken = vec![false; BUCKETS as usize];
    for other in others {
        if other.id != next.id && other.status.holds_traffic() && other.effective_layer() == layer {
            // One layer hashes one kind of id: a user-bucketed and a
            // session-bucketed experiment could otherwise both take the
            // same logged-in request.
            if other.bucketing_unit != next.bucketing_unit {
                return Err(Error::invalid(
                    "bucketing_unit",
                    format!(
                        "experiment {:?} of layer {layer:?} buckets by {:?}; every experiment of a layer must bucket by the same unit",
                        other.id, other.bucketing_unit
                    ),
                ));
            }
            for range in &other.allocation {
                let (start, end) = (
                    range.start.min(BUCKETS) as usize,
                    range.end.min(BUCKETS) as usize,
                );
                taken[start..end.max(start)].fill(true);
            }
        }
    }
    next.allocation = resize(&kept, next.traffic_percent * BUCKETS_PER_PERCENT, &taken)?;
    Ok(())
}

/// `current` grown or shrunk to `target` buckets; `taken` marks buckets
/// held by others.
fn resize(current: &[BucketRange], target: u32, taken: &[bool]) -> Result<Vec<BucketRange>, Error> {
    // Keep, in order, the buckets held before that nobody else holds now.
    let mut ranges: Vec<BucketRange> = Vec::new();
    for bucket in current
        .iter()
        .flat_map(|range| range.start..range.end.min(BUCKETS))
    {
        if taken[bucket as usize] {
            continue;
        }
        match ranges.last_mut() {
            Some(last) if last.end == bucket => last.end += 1,
            _ => ranges.push(BucketRange {
                start: bucket,
                end: bucket + 1,
            }),
        }
    }
    let mut held = size(&ranges);
    while held > target {
        let Some(last) = ranges.last_mut() else { break };
        let drop = (held - target).min(last.len());
        last.end -= drop;
        held -= drop;
        if last.is_empty() {
            ranges.pop();
        }
    }
    if held < target {
        let mut own = vec![false; BUCKETS as usize];
        for range in &ranges {
            own[range.start as usize..range.end as usize].fill(true);
        }
        for bucket in 0..BUCKETS {
            if held == target {
                break;
            }
            if taken[bucket as usize] || own[bucket as usize] {
                continue;
            }
            match ranges.last_mut() {
                Some(last) if last.end == bucket => last.end += 1,
                _ => ranges.push(BucketRange {
                    start: bucket,
                    end: bucket + 1,
                }),
            }
            held += 1;
        }
        if held < target {
            return Err(Error::invalid(
                "traffic_percent",
                format!("the layer has only {held} free buckets of the {target} asked"),
            ));
        }
    }
    Ok(ranges)
}
