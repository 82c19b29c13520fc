//! Units exposed on each placement over the last 24 hours of event time,
//! across every experiment: the daily traffic a plan before launch
//! divides by ([`crate::plan`]).
//!
//! A unit counts once per placement however many experiments exposed it
//! there. Counting exactly would keep every unit id of the day, so each
//! placement keeps one distinct-count sketch per UTC hour of event time,
//! for the 24 hours up to the watermark (older hours are dropped as the
//! watermark moves on), and the day's count is their union:
//!
//! - up to [`SPARSE_LIMIT`] units an hour the sketch is the sorted list
//!   of the units' 64-bit hashes: exact (up to hash collisions);
//! - beyond, a HyperLogLog of 2^[`PRECISION`] one-byte registers
//!   (standard error 1.04 / √4096, about 1.6%), with linear counting
//!   while the estimate is small.
//!
//! Either form holds at most 4 KiB, so a placement costs at most 24 ×
//! 4 KiB = 96 KiB whatever its traffic. The union of sparse hours is
//! exact; with any dense hour it is the registers' maximum.

use std::collections::{BTreeMap, HashMap};

/// Bits of the hash that choose a register.
pub const PRECISION: u32 = 12;
/// Registers of a dense sketch.
const REGISTERS: usize = 1 << PRECISION;
/// Units an hour kept exactly before the sketch turns dense: as many
/// bytes (8 a hash) as the dense registers.
pub const SPARSE_LIMIT: usize = REGISTERS / 8;
/// An hour of event time, in microseconds.
const HOUR_MICROS: i64 = 3_600_000_000;
/// The hours a day's count covers: the watermark's and the 23 before.
pub const WINDOW_HOURS: i64 = 24;

/// The distinct units of one placement and hour.
#[derive(Debug, Clone)]
enum Sketch {
    /// Sorted, distinct hashes.
    Sparse(Vec<u64>),
    /// HyperLogLog registers.
    Dense(Box<[u8; REGISTERS]>),
}

impl Default for Sketch {
    fn default() -> Self {
        Self::Sparse(Vec::new())
    }
}

/// Sets the register of `hash` in `registers`.
fn raise(registers: &mut [u8; REGISTERS], hash: u64) {
    let index = (hash >> (64 - PRECISION)) as usize;
    let rest = hash << PRECISION;
    // The first set bit's position in the remaining 52 bits, from 1.
    let rank = (rest.leading_zeros().min(64 - PRECISION) + 1) as u8;
    registers[index] = registers[index].max(rank);
}

impl Sketch {
    fn insert(&mut self, hash: u64) {
        match self {
            Self::Sparse(hashes) => {
                let Err(at) = hashes.binary_search(&hash) else {
                    return;
                };
                if hashes.len() < SPARSE_LIMIT {
                    hashes.insert(at, hash);
                    return;
                }
                let mut registers = Box::new([0; REGISTERS]);
                for &known in hashes.iter() {
                    raise(&mut registers, known);
                }
                raise(&mut registers, hash);
                *self = Self::Dense(registers);
            }
            Self::Dense(registers) => raise(registers, hash),
        }
    }
}

/// The distinct units in the union of `sketches`: exact when every one is
/// sparse, else the HyperLogLog estimate of the registers' maximum.
fn union_count<'a>(sketches: impl Iterator<Item = &'a Sketch> + Clone) -> u64 {
    if sketches
        .clone()
        .all(|sketch| matches!(sketch, Sketch::Sparse(_)))
    {
        let mut hashes: Vec<u64> = sketches
            .flat_map(|sketch| match sketch {
                Sketch::Sparse(hashes) => hashes.as_slice(),
                Sketch::Dense(_) => &[],
            })
            .copied()
            .collect();
        hashes.sort_unstable();
        hashes.dedup();
        return hashes.len() as u64;
    }
    let mut registers = [0_u8; REGISTERS];
    for sketch in sketches {
        match sketch {
            Sketch::Sparse(hashes) => {
                for &hash in hashes {
                    raise(&mut registers, hash);
                }
            }
            Sketch::Dense(dense) => {
                for (register, &value) in registers.iter_mut().zip(dense.iter()) {
                    *register = (*register).max(value);
                }
            }
        }
    }
    estimate(&registers)
}

/// HyperLogLog's estimate (Flajolet et al. 2007), with linear counting
/// up to 2.5 times the registers; a 64-bit hash needs no large-range
/// correction.
fn estimate(registers: &[u8; REGISTERS]) -> u64 {
    let m = REGISTERS as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let sum: f64 = registers
        .iter()
        .map(|&rank| (-f64::from(rank)).exp2())
        .sum();
    let raw = alpha * m * m / sum;
    let zeros = registers.iter().filter(|&&rank| rank == 0).count();
    let count = if raw <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        raw
    };
    count.round() as u64
}

/// Hourly sketches of the units exposed on every placement.
#[derive(Debug, Default)]
pub struct PlacementTraffic {
    /// Placement -> hour of event time (since the epoch) -> its units.
    hours: HashMap<String, BTreeMap<i64, Sketch>>,
}

impl PlacementTraffic {
    /// Counts the unit `key` exposed on `placement` at `time_micros`, the
    /// event time being `watermark_micros`; an exposure older than the
    /// window is not counted.
    pub fn record(&mut self, placement: &str, key: u128, time_micros: i64, watermark_micros: i64) {
        let oldest = watermark_micros.div_euclid(HOUR_MICROS) - (WINDOW_HOURS - 1);
        let hour = time_micros.div_euclid(HOUR_MICROS);
        if placement.is_empty() || hour < oldest {
            return;
        }
        let hours = match self.hours.get_mut(placement) {
            Some(hours) => hours,
            None => self.hours.entry(placement.to_owned()).or_default(),
        };
        // Hours before the window are dropped as the watermark moves on.
        if hours
            .first_key_value()
            .is_some_and(|(&first, _)| first < oldest)
        {
            *hours = hours.split_off(&oldest);
        }
        hours
            .entry(hour)
            .or_default()
            .insert((key as u64) ^ ((key >> 64) as u64));
    }

    /// Distinct units exposed on `placement` in the 24 hours of event time
    /// up to `watermark_micros` (its hour and the 23 before); `None` when
    /// none were.
    pub fn daily_units(&self, placement: &str, watermark_micros: i64) -> Option<u64> {
        let oldest = watermark_micros.div_euclid(HOUR_MICROS) - (WINDOW_HOURS - 1);
        let window = self.hours.get(placement)?.range(oldest..);
        let units = union_count(window.map(|(_, sketch)| sketch));
        (units > 0).then_some(units)
    }

    /// Forgets every placement.
    pub fn clear(&mut self) {
        self.hours.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(unit: u64) -> u128 {
        crate::experiment::unit_key(exp_core::UnitType::User, &format!("user-{unit}"))
    }

    #[test]
    fn a_sketch_counts_exactly_while_sparse_and_within_two_percent_when_dense() {
        let mut small = Sketch::default();
        for unit in 0..300 {
            small.insert((key(unit) as u64) ^ ((key(unit) >> 64) as u64));
            small.insert((key(unit) as u64) ^ ((key(unit) >> 64) as u64));
        }
        assert!(matches!(small, Sketch::Sparse(_)));
        assert_eq!(union_count([&small].into_iter()), 300);
        let mut large = Sketch::default();
        for unit in 0..100_000 {
            large.insert((key(unit) as u64) ^ ((key(unit) >> 64) as u64));
        }
        assert!(matches!(large, Sketch::Dense(_)));
        let counted = union_count([&large, &small].into_iter()) as f64;
        assert!(
            (counted - 100_000.0).abs() < 2_000.0,
            "{counted} for 100,000"
        );
    }
}
