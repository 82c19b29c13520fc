//! `cargo run --release -p exp-benches --bin sched-delays -- TIMEHIST`
//! tells how long `expd`'s request handler waited for its CPU, run by run
//! of the assign bench, and which task last held that CPU before each wait.
//!
//! TIMEHIST is the output of `perf sched timehist` (with or without
//! `--state`) of a `perf sched record -a` taken while the bench ran; see
//! `RESULTS.md` for the commands. The request handler is `expd`'s busiest
//! `tokio-rt-worker` thread (with `expd` pinned to one CPU its runtime has
//! one worker). A run is a stretch of seconds in which the handler ran for
//! more than 100 ms a second. A wait is perf's "sch delay" of a switch-in
//! of the handler: the time from its wakeup (or preemption) to running.
//! The bench's stall meter, which wakes every millisecond at real-time
//! priority on each CPU, is passed over when naming the last holder.

use std::collections::BTreeMap;

/// Waits at least this long are counted, in ms.
const WAIT_MS: f64 = 0.1;
/// And these separately, in ms.
const LONG_WAIT_MS: f64 = 0.5;
/// A second in which the handler ran this long, in ms, is in a run.
const BUSY_MS_PER_SECOND: f64 = 100.0;
/// Threads of the bench's own process are named after its binary.
const BENCH_TASK_PREFIX: &str = "assign-";
const HANDLER_PREFIX: &str = "tokio-rt-worker";

/// One line of `perf sched timehist`: a task switched out of a CPU.
#[derive(Debug, Clone, PartialEq)]
struct Switch {
    /// When it switched out, in seconds.
    time: f64,
    cpu: String,
    /// `name[tid/pid]`, as perf prints it.
    task: String,
    /// perf's "sch delay": how long it waited for the CPU before this
    /// stretch (from its wakeup or preemption), in ms.
    delay_ms: f64,
    /// How long it then ran, in ms.
    run_ms: f64,
}

/// The waits of the handler over one run.
#[derive(Debug, Default, PartialEq)]
struct RunWaits {
    /// First and last second (exclusive).
    seconds: (u64, u64),
    waits: usize,
    long_waits: usize,
    waited_ms: f64,
    /// The task that last held the CPU before each wait, by name (without
    /// its ids), with how often.
    last_holders: BTreeMap<String, usize>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: sched-delays TIMEHIST (the output of `perf sched timehist`)");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| {
        eprintln!("{path}: cannot read: {error}");
        std::process::exit(2);
    });
    let switches: Vec<Switch> = text.lines().filter_map(parse_line).collect();
    let Some(handler) = busiest_handler(&switches) else {
        eprintln!("{path}: no {HANDLER_PREFIX} thread in the trace");
        std::process::exit(2);
    };
    println!("request handler: {handler}");
    let by_cpu = by_cpu(&switches);
    for seconds in runs(&switches, &handler) {
        let run = waits_in(&by_cpu, &handler, seconds);
        let mut holders: Vec<(&String, &usize)> = run.last_holders.iter().collect();
        holders.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let holders: Vec<String> = holders
            .iter()
            .take(6)
            .map(|(task, count)| format!("{task} {count}"))
            .collect();
        println!(
            "seconds {}-{}: waits >= {WAIT_MS} ms: {} (>= {LONG_WAIT_MS} ms: {}), {:.1} ms in all; the CPU was last held by: {}",
            run.seconds.0,
            run.seconds.1,
            run.waits,
            run.long_waits,
            run.waited_ms,
            if holders.is_empty() {
                "-".to_owned()
            } else {
                holders.join(", ")
            }
        );
    }
}

/// A switch line: `time [cpu] task wait delay run [state]`; headers and
/// anything else give `None`.
fn parse_line(line: &str) -> Option<Switch> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 6 || !fields[1].starts_with('[') {
        return None;
    }
    let with_state = !fields[fields.len() - 1].starts_with(|c: char| c.is_ascii_digit());
    let numbers = if with_state {
        &fields[fields.len() - 4..fields.len() - 1]
    } else {
        &fields[fields.len() - 3..]
    };
    Some(Switch {
        time: fields[0].parse().ok()?,
        cpu: fields[1].to_owned(),
        task: fields[2].to_owned(),
        delay_ms: numbers[1].parse().ok()?,
        run_ms: numbers[2].parse().ok()?,
    })
}

/// The handler thread that switched most often.
fn busiest_handler(switches: &[Switch]) -> Option<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for switch in switches {
        if switch.task.starts_with(HANDLER_PREFIX) {
            *counts.entry(&switch.task).or_default() += 1;
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(_, count)| count)
        .map(|(task, _)| task.to_owned())
}

/// The runs: stretches of consecutive seconds in which `handler` was busy.
fn runs(switches: &[Switch], handler: &str) -> Vec<(u64, u64)> {
    let mut busy: BTreeMap<u64, f64> = BTreeMap::new();
    for switch in switches.iter().filter(|switch| switch.task == handler) {
        *busy.entry(switch.time as u64).or_default() += switch.run_ms;
    }
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for (&second, _) in busy.iter().filter(|&(_, &ms)| ms > BUSY_MS_PER_SECOND) {
        match runs.last_mut() {
            Some(run) if run.1 == second => run.1 = second + 1,
            _ => runs.push((second, second + 1)),
        }
    }
    runs
}

/// The switches of each CPU, in the trace's order.
type ByCpu<'a> = BTreeMap<&'a str, Vec<&'a Switch>>;

fn by_cpu(switches: &[Switch]) -> ByCpu<'_> {
    let mut by_cpu = ByCpu::new();
    for switch in switches {
        by_cpu.entry(&switch.cpu).or_default().push(switch);
    }
    by_cpu
}

fn waits_in(by_cpu: &ByCpu<'_>, handler: &str, seconds: (u64, u64)) -> RunWaits {
    let mut run = RunWaits {
        seconds,
        ..RunWaits::default()
    };
    for on_cpu in by_cpu.values() {
        for (index, switch) in on_cpu.iter().enumerate() {
            let second = switch.time as u64;
            if switch.task != handler
                || !(seconds.0..seconds.1).contains(&second)
                || switch.delay_ms < WAIT_MS
            {
                continue;
            }
            run.waits += 1;
            run.long_waits += usize::from(switch.delay_ms >= LONG_WAIT_MS);
            run.waited_ms += switch.delay_ms;
            let holder = on_cpu[..index]
                .iter()
                .rev()
                .find(|before| !before.task.starts_with(BENCH_TASK_PREFIX));
            if let Some(holder) = holder {
                let name = holder.task.split('[').next().unwrap_or(&holder.task);
                *run.last_holders.entry(name.to_owned()).or_default() += 1;
            }
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::{RunWaits, Switch, busiest_handler, by_cpu, parse_line, runs, waits_in};

    /// Lines as `perf sched timehist --state` prints them, from a trace of
    /// the bench (times shifted).
    const TRACE: &str = "\
           time    cpu  task name                       wait time  sch delay   run time  state
                        [tid/pid]                          (msec)     (msec)     (msec)
--------------- ------  ------------------------------  ---------  ---------  ---------  -----
      10.000100 [0000]  tokio-rt-worker[9593/9592]          1.209      0.013    150.000      S
      10.377745 [0000]  event-writer[9609/9592]             0.048      0.000      0.475      W
      10.377761 [0000]  assign-76800f47[9626]               1.010      0.010      0.015      S
      10.378469 [0000]  tokio-rt-worker[9593/9592]          1.589      0.243      0.708      S
      10.379802 [0000]  event-writer[9609/9592]             0.015      0.000      1.014      W
      10.380829 [0000]  tokio-rt-worker[9593/9592]          1.347      1.311      1.013      R
      10.400000 [0001]  tokio-rt-worker[9601/9592]          0.000      0.900      0.010      S
      11.500000 [0000]  <idle>                              0.000      0.000      2.000      I
      11.600000 [0000]  tokio-rt-worker[9593/9592]          1.000      0.050    120.000      S
      13.000000 [0000]  tokio-rt-worker[9593/9592]          1.000      0.300    200.000      S
";

    fn switches() -> Vec<Switch> {
        TRACE.lines().filter_map(parse_line).collect()
    }

    #[test]
    fn switch_lines_are_read_with_or_without_the_state_column_and_headers_are_not() {
        let with_state =
            parse_line("  10.377745 [0000]  event-writer[9609/9592]   0.048   0.000   0.475   W ");
        let without =
            parse_line("  10.377745 [0000]  event-writer[9609/9592]   0.048   0.000   0.475");
        let expected = Switch {
            time: 10.377745,
            cpu: "[0000]".into(),
            task: "event-writer[9609/9592]".into(),
            delay_ms: 0.0,
            run_ms: 0.475,
        };
        assert_eq!(with_state, Some(expected.clone()));
        assert_eq!(without, Some(expected));
        assert_eq!(
            switches().len(),
            10,
            "the three header lines are not switches"
        );
    }

    #[test]
    fn the_handler_is_the_worker_that_switched_most_and_runs_are_its_busy_seconds() {
        let switches = switches();
        let handler = busiest_handler(&switches).expect("handler");
        assert_eq!(handler, "tokio-rt-worker[9593/9592]");
        // Busy in seconds 10 and 11, idle in 12, busy in 13.
        assert_eq!(runs(&switches, &handler), [(10, 12), (13, 14)]);
    }

    #[test]
    fn a_wait_is_counted_and_put_down_to_the_task_before_it_on_its_cpu_passing_over_the_bench() {
        let switches = switches();
        let run = waits_in(&by_cpu(&switches), "tokio-rt-worker[9593/9592]", (10, 12));
        assert_eq!(
            run,
            RunWaits {
                seconds: (10, 12),
                // 0.243 and 1.311 ms; not 0.013 and 0.050 (short), nor the
                // other worker's 0.900 ms.
                waits: 2,
                long_waits: 1,
                waited_ms: 0.243 + 1.311,
                last_holders: [("event-writer".to_owned(), 2)].into(),
            }
        );
    }
}
