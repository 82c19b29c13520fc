//! Units exposed on each placement over the last 24 hours of event time,
//! across every experiment: the daily traffic a plan before launch
//! divides by ([`crate::plan`]).
//!
//! A unit counts once per placement however many experiments exposed it
//! there. Counting exactly would keep every unit id of the day, so each
//! placement keeps one distinct-count sketch per UTC hour of event time,
//! for the 24 hours up to the newest hour an exposure was counted in (the
//! window's watermark), and the day's count is their union:
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
//!
//! # Memory
//!
//! Placement names come from clients, so both factors are bounded:
//!
//! - when the watermark moves to a new hour, every placement's hours
//!   before the window are dropped, and placements with none left are
//!   forgotten: a placement without exposures for 24 hours of the others'
//!   event time costs nothing;
//! - at most [`MAX_PLACEMENTS`] (1,024) placements are tracked at once; an
//!   exposure on another one is not counted (its plan is refused as a
//!   placement without exposures) until one is forgotten.
//!
//! In all at most 1,024 × 96 KiB = 96 MiB.
//!
//! # Event time far ahead
//!
//! An exposure whose hour is more than [`MAX_HOURS_AHEAD`] (2) hours after
//! the watermark's is not counted and does not move the watermark, so one
//! event from a clock far off cannot end every placement's window. When
//! [`AHEAD_IN_A_ROW`] (16) exposures in a row are that far ahead, event
//! time has moved on (traffic resumed after a pause), and the 16th moves
//! the watermark; one exposure within the 2 hours in between starts the
//! count again. The watermark is the window's own: the analyzer's, which
//! every event moves and the timelines follow, is not changed.

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
/// Placements tracked at once; an exposure on another is not counted.
pub const MAX_PLACEMENTS: usize = 1024;
/// Hours after the watermark's an exposure may be and still be counted
/// (and move it).
pub const MAX_HOURS_AHEAD: i64 = 2;
/// Exposures in a row further ahead than [`MAX_HOURS_AHEAD`] after which
/// the last of them moves the watermark anyway.
pub const AHEAD_IN_A_ROW: u32 = 16;

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
    /// The window's watermark: the newest hour an exposure was counted in.
    newest_hour: Option<i64>,
    /// Exposures in a row more than [`MAX_HOURS_AHEAD`] hours after it.
    ahead_in_a_row: u32,
}

impl PlacementTraffic {
    /// Counts the unit `key` exposed on `placement` at `time_micros`. Not
    /// counted: an exposure older than the window, one far ahead of it
    /// (see the module), and one on a placement beyond
    /// [`MAX_PLACEMENTS`].
    pub fn record(&mut self, placement: &str, key: u128, time_micros: i64) {
        if placement.is_empty() {
            return;
        }
        let hour = time_micros.div_euclid(HOUR_MICROS);
        match self.newest_hour {
            Some(newest) if hour > newest.saturating_add(MAX_HOURS_AHEAD) => {
                self.ahead_in_a_row += 1;
                if self.ahead_in_a_row < AHEAD_IN_A_ROW {
                    return;
                }
                self.advance(hour);
            }
            Some(newest) if hour <= newest => {}
            _ => self.advance(hour),
        }
        self.ahead_in_a_row = 0;
        let Some(newest) = self.newest_hour else {
            return;
        };
        if hour < newest - (WINDOW_HOURS - 1) {
            return;
        }
        if !self.hours.contains_key(placement) && self.hours.len() >= MAX_PLACEMENTS {
            return;
        }
        self.hours
            .entry(placement.to_owned())
            .or_default()
            .entry(hour)
            .or_default()
            .insert((key as u64) ^ ((key >> 64) as u64));
    }

    /// Moves the watermark to `hour`: drops every placement's hours before
    /// the window, and the placements with none left.
    fn advance(&mut self, hour: i64) {
        self.newest_hour = Some(hour);
        let oldest = hour - (WINDOW_HOURS - 1);
        self.hours.retain(|_, hours| {
            if hours
                .first_key_value()
                .is_some_and(|(&first, _)| first < oldest)
            {
                *hours = hours.split_off(&oldest);
            }
            !hours.is_empty()
        });
    }

    /// Distinct units exposed on `placement` in the 24 hours of event time
    /// up to the watermark (its hour and the 23 before); `None` when none
    /// were.
    pub fn daily_units(&self, placement: &str) -> Option<u64> {
        let oldest = self.newest_hour? - (WINDOW_HOURS - 1);
        let window = self.hours.get(placement)?.range(oldest..);
        let units = union_count(window.map(|(_, sketch)| sketch));
        (units > 0).then_some(units)
    }

    /// Placements tracked now.
    pub fn placements(&self) -> usize {
        self.hours.len()
    }

    /// Forgets every placement.
    pub fn clear(&mut self) {
        self.hours.clear();
        self.newest_hour = None;
        self.ahead_in_a_row = 0;
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

    const HOUR: i64 = HOUR_MICROS;

    #[test]
    fn a_quiet_placement_is_forgotten_after_24_hours_of_the_others_event_time() {
        let mut traffic = PlacementTraffic::default();
        traffic.record("quiet", key(0), 0);
        for hour in 0..24 {
            traffic.record("busy", key(1), hour * HOUR);
        }
        assert_eq!(traffic.daily_units("quiet"), Some(1), "23 hours later");
        assert_eq!(traffic.placements(), 2);
        traffic.record("busy", key(1), 24 * HOUR);
        assert_eq!(traffic.daily_units("quiet"), None);
        assert_eq!(traffic.placements(), 1, "its hours are gone, and it");
        assert_eq!(traffic.daily_units("busy"), Some(1));
    }

    #[test]
    fn an_exposure_more_than_two_hours_ahead_leaves_the_window_and_the_others_counts() {
        let mut traffic = PlacementTraffic::default();
        for unit in 0..40 {
            traffic.record("product_page", key(unit), 10 * HOUR);
            traffic.record("cart", key(unit), 10 * HOUR + unit as i64);
        }
        traffic.record("product_page", key(99), 13 * HOUR);
        traffic.record("elsewhere", key(99), 1_000 * HOUR);
        assert_eq!(traffic.daily_units("product_page"), Some(40));
        assert_eq!(traffic.daily_units("cart"), Some(40));
        assert_eq!(traffic.daily_units("elsewhere"), None, "not counted");
        // Two hours ahead is counted and moves the window.
        traffic.record("product_page", key(99), 12 * HOUR);
        assert_eq!(traffic.daily_units("product_page"), Some(41));
        traffic.record("product_page", key(98), 14 * HOUR);
        assert_eq!(traffic.daily_units("product_page"), Some(42));
    }

    #[test]
    fn exposures_far_ahead_sixteen_in_a_row_move_the_window_after_a_pause() {
        let mut traffic = PlacementTraffic::default();
        traffic.record("product_page", key(0), 0);
        for unit in 1..AHEAD_IN_A_ROW as u64 {
            traffic.record("product_page", key(unit), 30 * HOUR);
        }
        // One in between starts the count again.
        traffic.record("product_page", key(0), 0);
        for unit in 1..AHEAD_IN_A_ROW as u64 {
            traffic.record("product_page", key(unit), 30 * HOUR);
        }
        assert_eq!(traffic.daily_units("product_page"), Some(1));
        traffic.record("product_page", key(100), 30 * HOUR);
        assert_eq!(
            traffic.daily_units("product_page"),
            Some(1),
            "the 16th in a row moves the window, to it alone"
        );
        traffic.record("product_page", key(101), 30 * HOUR);
        assert_eq!(traffic.daily_units("product_page"), Some(2));
    }

    #[test]
    fn placements_beyond_the_cap_are_not_counted_until_others_are_forgotten() {
        let mut traffic = PlacementTraffic::default();
        for placement in 0..MAX_PLACEMENTS {
            traffic.record(&format!("p{placement}"), key(0), 0);
        }
        traffic.record("one_too_many", key(0), 0);
        assert_eq!(traffic.placements(), MAX_PLACEMENTS);
        assert_eq!(traffic.daily_units("one_too_many"), None);
        assert_eq!(traffic.daily_units("p1023"), Some(1));
        for hour in 1..=24 {
            traffic.record("p0", key(0), hour * HOUR);
        }
        assert_eq!(traffic.placements(), 1, "the quiet ones are forgotten");
        traffic.record("one_too_many", key(0), 24 * HOUR);
        assert_eq!(traffic.daily_units("one_too_many"), Some(1));
    }
}
