//! `cargo run --release -p exp-benches --bin pool-logging-pairs -- LOG...`
//! pools the logging-on / logging-off pairs that several runs of
//! `cargo bench -p exp-benches --bench assign` printed into their logs,
//! placement by placement: the geometric mean of the p99 ratios (of all
//! requests, and of those clear of machine stalls) and the mean of the
//! CPU differences, with 90% intervals, computed the same way the bench
//! computes them for one run.
//!
//! One run's interval understates the drift between runs on a shared
//! machine, so a 10% question is settled on two or more runs pooled.

use std::collections::BTreeMap;

use exp_benches::Interval;

/// The pairs of one placement, from every log.
#[derive(Default)]
struct Pooled {
    p99_ratios: Vec<f64>,
    cpu_differences_us: Vec<f64>,
    /// Pairs whose run with logging on had more requests over 2 ms, by
    /// the shares as printed (one decimal: a tie there is not counted,
    /// where the bench, with the exact shares, may count it).
    on_worse: usize,
    runs: usize,
    clear: Vec<ClearPair>,
}

fn main() {
    let logs: Vec<String> = std::env::args().skip(1).collect();
    if logs.is_empty() {
        eprintln!("usage: pool-logging-pairs LOG... (logs of `cargo bench --bench assign`)");
        std::process::exit(2);
    }
    let mut placements: BTreeMap<&'static str, Pooled> = BTreeMap::new();
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_else(|error| {
            eprintln!("{log}: cannot read: {error}");
            std::process::exit(2);
        });
        if let Err(reason) = pool_log(&text, &mut placements) {
            eprintln!("{log}: {reason}");
            std::process::exit(2);
        }
    }
    if placements.is_empty() {
        eprintln!(
            "no `p99 ratio` lines in any log: were they logs of the assign bench's processes placements?"
        );
        std::process::exit(2);
    }
    for (placement, pooled) in &placements {
        let pairs = pooled.p99_ratios.len();
        let p99 = Interval::geometric(&pooled.p99_ratios, 0.90);
        let cpu = Interval::arithmetic(&pooled.cpu_differences_us, 0.90);
        println!(
            "{placement}: {pairs} pairs from {} runs; p99 on / off {:.3} (90% CI {:.3} to {:.3}); \
             on has more requests over 2 ms in {} of {pairs}; \
             expd CPU per request on - off {:+.1} us (90% CI {:+.1} to {:+.1})",
            pooled.runs,
            p99.estimate,
            p99.low,
            p99.high,
            pooled.on_worse,
            cpu.estimate,
            cpu.low,
            cpu.high,
        );
        if pooled.clear.len() < 2 {
            continue;
        }
        let ratios: Vec<f64> = pooled.clear.iter().map(|pair| pair.p99_ratio).collect();
        let clear = Interval::geometric(&ratios, 0.90);
        let count = pooled.clear.len() as f64;
        let mean = |side: fn(&ClearPair) -> f64| pooled.clear.iter().map(side).sum::<f64>() / count;
        let more_stalls_on = pooled
            .clear
            .iter()
            .filter(|pair| pair.stall_ms_on > pair.stall_ms_off)
            .count();
        println!(
            "{placement}: {} pairs clear of stalls; p99 on / off {:.3} (90% CI {:.3} to {:.3}); \
             requests clear of stalls off / on {:.1}% / {:.1}%; machine stall time per run off / on {:.1} / {:.1} ms, \
             more with logging on in {more_stalls_on} of {}",
            ratios.len(),
            clear.estimate,
            clear.low,
            clear.high,
            mean(|pair| pair.share_off),
            mean(|pair| pair.share_on),
            mean(|pair| pair.stall_ms_off),
            mean(|pair| pair.stall_ms_on),
            ratios.len(),
        );
    }
}

/// Adds the pairs of one log to `placements`: each placement's section
/// starts with the line the bench prints before it, and its pairs are on
/// the `p99 ratio` line that follows.
fn pool_log(text: &str, placements: &mut BTreeMap<&'static str, Pooled>) -> Result<(), String> {
    let mut placement = None;
    for (number, line) in text.lines().enumerate() {
        if line.starts_with("release expd in its own process") {
            placement = Some("shared");
        } else if line.starts_with("pinned: expd alone") {
            placement = Some("pinned");
        } else if let Some(rest) = line.trim_start().strip_prefix("p99 ratio ") {
            let at = |reason: String| format!("line {}: {reason}", number + 1);
            let placement = placement
                .ok_or_else(|| at("a `p99 ratio` line before any placement's header".into()))?;
            let pairs = parse_pairs(rest).map_err(at)?;
            let pooled = placements.entry(placement).or_default();
            pooled.runs += 1;
            pooled.on_worse += pairs.on_worse;
            pooled.p99_ratios.extend(pairs.p99_ratios);
            pooled.cpu_differences_us.extend(pairs.cpu_differences_us);
        } else if let Some(rest) = line.trim_start().strip_prefix("p99 clear of stalls ratio ") {
            let at = |reason: String| format!("line {}: {reason}", number + 1);
            let placement = placement.ok_or_else(|| {
                at("a `p99 clear of stalls` line before any placement's header".into())
            })?;
            let pairs = parse_clear_pairs(rest).map_err(at)?;
            placements.entry(placement).or_default().clear.extend(pairs);
        }
    }
    Ok(())
}

/// One pair of a `p99 clear of stalls` line.
#[derive(Debug, PartialEq)]
struct ClearPair {
    p99_ratio: f64,
    share_off: f64,
    share_on: f64,
    stall_ms_off: f64,
    stall_ms_on: f64,
}

/// Parses what follows `p99 clear of stalls ratio ` on the bench's line:
/// `R, ... (median M); requests clear of stalls off / on: A% / B%, ...;
/// machine stall time off / on: C / D, ... ms`.
fn parse_clear_pairs(rest: &str) -> Result<Vec<ClearPair>, String> {
    let (ratios, rest) = rest
        .split_once(" (median")
        .ok_or("p99 clear of stalls ratios: no `(median` after them")?;
    let ratios = positive_ratios(ratios, "p99 clear of stalls ratios")?;
    let (_, rest) = rest
        .split_once("requests clear of stalls off / on: ")
        .ok_or("requests clear of stalls: missing")?;
    let (shares, rest) = rest
        .split_once("; machine stall time off / on: ")
        .ok_or("machine stall time: missing")?;
    let shares = off_on_pairs(shares, "requests clear of stalls")?;
    let stalls = off_on_pairs(
        rest.trim_end()
            .strip_suffix(" ms")
            .ok_or("machine stall time: no ` ms` unit")?,
        "machine stall time",
    )?;
    if shares.len() != ratios.len() || stalls.len() != ratios.len() {
        return Err(format!(
            "{} ratios, {} shares and {} stall times: one of each per pair",
            ratios.len(),
            shares.len(),
            stalls.len()
        ));
    }
    Ok(ratios
        .into_iter()
        .zip(shares)
        .zip(stalls)
        .map(
            |((p99_ratio, (share_off, share_on)), (stall_ms_off, stall_ms_on))| ClearPair {
                p99_ratio,
                share_off,
                share_on,
                stall_ms_off,
                stall_ms_on,
            },
        )
        .collect())
}

/// `list`'s comma-separated numbers (a trailing `%` allowed).
fn numbers(list: &str, field: &str) -> Result<Vec<f64>, String> {
    list.split(',')
        .map(|value| {
            let value = value.trim().trim_end_matches('%');
            value
                .parse::<f64>()
                .map_err(|_| format!("{field}: `{value}` is not a number"))
        })
        .collect()
}

/// `list`'s comma-separated ratios, each a positive number.
fn positive_ratios(list: &str, field: &str) -> Result<Vec<f64>, String> {
    let ratios = numbers(list, field)?;
    match ratios
        .iter()
        .find(|ratio| !ratio.is_finite() || **ratio <= 0.0)
    {
        Some(bad) => Err(format!("{field}: {bad} is not a positive ratio")),
        None => Ok(ratios),
    }
}

/// `list`'s comma-separated `off / on` pairs of numbers.
fn off_on_pairs(list: &str, field: &str) -> Result<Vec<(f64, f64)>, String> {
    list.split(", ")
        .map(|pair| {
            let (off, on) = pair
                .split_once(" / ")
                .ok_or_else(|| format!("{field}: `{pair}` is not `off / on`"))?;
            Ok((numbers(off, field)?[0], numbers(on, field)?[0]))
        })
        .collect()
}

/// The pairs of one `p99 ratio` line.
#[derive(Debug, PartialEq)]
struct Pairs {
    p99_ratios: Vec<f64>,
    cpu_differences_us: Vec<f64>,
    on_worse: usize,
}

/// Parses what follows `p99 ratio ` on the bench's line:
/// `R, R, ... (median M); requests over 2 ms off / on: A% / B%, ...;
/// expd CPU per request on - off: +C, ... us`.
fn parse_pairs(rest: &str) -> Result<Pairs, String> {
    let (ratios, rest) = rest
        .split_once(" (median")
        .ok_or("p99 ratios: no `(median` after them")?;
    let p99_ratios = positive_ratios(ratios, "p99 ratios")?;
    let (_, rest) = rest
        .split_once("requests over 2 ms off / on: ")
        .ok_or("requests over 2 ms: missing")?;
    let (shares, rest) = rest
        .split_once("; expd CPU per request on - off: ")
        .ok_or("expd CPU per request: missing")?;
    let on_worse = off_on_pairs(shares, "requests over 2 ms")?
        .iter()
        .filter(|(off, on)| on > off)
        .count();
    let cpu_differences_us = numbers(
        rest.trim_end()
            .strip_suffix(" us")
            .ok_or("expd CPU per request: no ` us` unit")?,
        "expd CPU per request",
    )?;
    if cpu_differences_us.len() != p99_ratios.len() {
        return Err(format!(
            "{} p99 ratios but {} CPU differences",
            p99_ratios.len(),
            cpu_differences_us.len()
        ));
    }
    Ok(Pairs {
        p99_ratios,
        cpu_differences_us,
        on_worse,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::{ClearPair, Pairs, parse_clear_pairs, parse_pairs, pool_log};

    const LINE: &str = "1.02, 0.95, 1.20 (median 1.02); requests over 2 ms off / on: 8.4% / 9.0%, 7.0% / 6.5%, 1.0% / 1.0%; expd CPU per request on - off: +12.5, -1.0, +3.0 us";

    #[test]
    fn a_ratio_line_gives_each_pair_its_ratio_cpu_difference_and_whether_on_was_worse() {
        assert_eq!(
            parse_pairs(LINE),
            Ok(Pairs {
                p99_ratios: vec![1.02, 0.95, 1.20],
                cpu_differences_us: vec![12.5, -1.0, 3.0],
                on_worse: 1,
            })
        );
    }

    #[test]
    fn a_clear_of_stalls_line_gives_each_pair_its_ratio_shares_and_stall_times() {
        let pairs = parse_clear_pairs(
            "1.050, 0.900 (median 1.05); requests clear of stalls off / on: 94.0% / 93.5%, 99.0% / 98.0%; machine stall time off / on: 42.3 / 37.1, 0.0 / 5.5 ms",
        );
        assert_eq!(
            pairs,
            Ok(vec![
                ClearPair {
                    p99_ratio: 1.05,
                    share_off: 94.0,
                    share_on: 93.5,
                    stall_ms_off: 42.3,
                    stall_ms_on: 37.1,
                },
                ClearPair {
                    p99_ratio: 0.9,
                    share_off: 99.0,
                    share_on: 98.0,
                    stall_ms_off: 0.0,
                    stall_ms_on: 5.5,
                },
            ])
        );
    }

    #[test]
    fn a_clear_of_stalls_line_with_a_pair_missing_is_refused() {
        let error = parse_clear_pairs(
            "1.050, 0.900 (median 1.05); requests clear of stalls off / on: 94.0% / 93.5%; machine stall time off / on: 42.3 / 37.1, 0.0 / 5.5 ms",
        )
        .expect_err("refused");
        assert!(error.contains("one of each per pair"), "{error}");
    }

    #[test]
    fn pairs_are_pooled_under_the_placement_whose_header_came_before_them() {
        let log = format!(
            "release expd in its own process, load generators in others, all sharing both cores\n  \
             p99 ratio {LINE}\npinned: expd alone on CPU 0, the load generators on CPU 1\n  p99 ratio {LINE}\n"
        );
        let mut placements = BTreeMap::new();
        pool_log(&log, &mut placements).expect("parses");
        pool_log(&log, &mut placements).expect("parses");
        assert_eq!(placements["shared"].p99_ratios.len(), 6);
        assert_eq!(placements["shared"].runs, 2);
        assert_eq!(placements["pinned"].on_worse, 2);
    }

    #[test]
    fn a_ratio_that_is_not_a_number_is_refused_with_its_field() {
        let error = parse_pairs(&LINE.replacen("0.95", "n/a", 1)).expect_err("refused");
        assert!(
            error.contains("p99 ratios") && error.contains("n/a"),
            "{error}"
        );
    }

    #[test]
    fn a_ratio_line_before_any_placement_is_refused_with_its_line_number() {
        let error = pool_log(&format!("\n  p99 ratio {LINE}\n"), &mut BTreeMap::new())
            .expect_err("refused");
        assert!(error.starts_with("line 2:"), "{error}");
    }
}
