//! Background work that gives the CPU back to request handling.
//!
//! Linux's fair scheduler (EEVDF) lets a thread that has just woken run out
//! its time slice (about 1.5 ms on two CPUs) before a request handler woken
//! after it gets the CPU, unless the handler's deadline is the earlier one:
//! a nice value of 19 does not change that. So a background thread that
//! wakes to do a millisecond of work (the event writer committing a group
//! of 500 exposures, the results follower applying it) holds an `Assign`
//! handler on its CPU for as long, and that wait lands in `Assign`'s p99.
//! Two tools keep it out:
//!
//! - [`set_background_share`]: [`Share::Leftover`] puts a thread in the
//!   `SCHED_IDLE` class, which gets only CPU time no normal thread wants
//!   over any stretch of time. For work whose backlog is bounded and
//!   harmless when the machine is saturated: the exposure feed (its queue
//!   drops and counts what overflows), the roller (segments wait on disk).
//!   It is not always preempted at once: scheduler traces of a running
//!   `expd` on a two-CPU virtual machine caught the `SCHED_IDLE` roller
//!   and feed holding their CPU for up to a millisecond while a handler
//!   woken there waited. [`Share::Smallest`] is nice 19, for work that
//!   must keep up on a busy machine: the results follower that feeds the
//!   guardrails (`SCHED_IDLE` would give it a fifth of that share: weight
//!   3 against 15, where a normal thread has 1024).
//! - [`Yielder`], for threads that keep a share: after each [`YIELD_AFTER`]
//!   of work the thread calls `sched_yield`, which moves its own deadline
//!   back a slice, so a handler waiting on the same CPU runs first; when
//!   none waits, the call returns at once. The writer (at normal priority:
//!   `LogOutcomes` callers wait for it) and the results follower use it.
//!   Short sleeps in the background threads instead, which leave the run
//!   queue for certain, were measured too: about 10 µs of CPU per sleep
//!   and wake-up on a virtual machine, and `Assign`'s p99 with logging on
//!   was no better (`benches/RESULTS.md`).

use std::time::{Duration, Instant};

/// How much CPU a background thread may take from request handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    /// Only CPU time no normal thread wants (`SCHED_IDLE` on Linux, nice
    /// 19 elsewhere).
    Leftover,
    /// The smallest share a normal thread gets (nice 19).
    Smallest,
}

/// Sets the calling thread's share; `thread` names it in the debug log if
/// it cannot be set (the thread works either way, at normal priority).
pub fn set_background_share(thread: &str, share: Share) {
    let lowest =
        || thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min);
    let set = match share {
        #[cfg(target_os = "linux")]
        Share::Leftover => thread_priority::unix::set_thread_priority_and_policy(
            thread_priority::thread_native_id(),
            thread_priority::ThreadPriority::Min,
            thread_priority::unix::ThreadSchedulePolicy::Normal(
                thread_priority::unix::NormalThreadSchedulePolicy::Idle,
            ),
        )
        .or_else(|_| lowest()),
        _ => lowest(),
    };
    if let Err(error) = set {
        tracing::debug!(
            ?error,
            thread,
            ?share,
            "could not lower a background thread's share of the CPU"
        );
    }
}

/// Work done between two yields.
pub const YIELD_AFTER: Duration = Duration::from_micros(50);

/// Yields the CPU once per `budget` of work; see the module doc.
#[derive(Debug)]
pub struct Yielder {
    budget: Duration,
    since: Instant,
}

impl Default for Yielder {
    fn default() -> Self {
        Self::every(YIELD_AFTER)
    }
}

impl Yielder {
    /// Yields after each `budget` of work, counted from now.
    pub fn every(budget: Duration) -> Self {
        Self {
            budget,
            since: Instant::now(),
        }
    }

    /// Starts counting the budget again, for a thread that has just woken:
    /// its sleep was not work.
    pub fn restart(&mut self) {
        self.since = Instant::now();
    }

    /// Called between units of work: yields the CPU if the budget is spent
    /// since the last yield (or [`Yielder::restart`]), and says whether it
    /// did.
    pub fn tick(&mut self) -> bool {
        if self.since.elapsed() < self.budget {
            return false;
        }
        std::thread::yield_now();
        self.since = Instant::now();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_within_the_budget_does_not_yield() {
        let mut yielder = Yielder::every(Duration::from_secs(3600));
        assert!(!(0..1_000).any(|_| yielder.tick()));
    }

    #[test]
    fn a_long_run_of_work_yields_once_per_budget_and_never_more_often() {
        let budget = Duration::from_micros(200);
        let work = Duration::from_millis(5);
        let mut yielder = Yielder::every(budget);
        let started = Instant::now();
        let mut yields = 0;
        while started.elapsed() < work {
            yields += u32::from(yielder.tick());
        }
        let ran = started.elapsed();
        assert!(
            yields >= 1,
            "5 ms of work past a 200 us budget never yielded"
        );
        assert!(
            budget * yields <= ran,
            "{yields} yields in {ran:?}: more than one per 200 us of work"
        );
    }

    #[test]
    fn a_restart_forgets_the_time_before_it() {
        let mut yielder = Yielder::every(Duration::from_millis(200));
        std::thread::sleep(Duration::from_millis(250));
        yielder.restart();
        assert!(
            !yielder.tick(),
            "the sleep before the restart counted as work"
        );
    }

    /// The calling thread's scheduling policy and nice value, from
    /// `/proc/thread-self/stat` (fields 19 and 41).
    #[cfg(target_os = "linux")]
    fn policy_and_nice() -> (u32, i32) {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("stat");
        // Fields after the command name, which is in parentheses: the
        // state is field 3.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .expect("command")
            .1
            .split_whitespace()
            .collect();
        let field = |number: usize| fields[number - 3];
        (
            field(41).parse().expect("policy"),
            field(19).parse().expect("nice"),
        )
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn leftover_work_runs_in_the_idle_class_and_the_smallest_share_at_nice_19() {
        const SCHED_OTHER: u32 = 0;
        const SCHED_IDLE: u32 = 5;
        let in_thread = |share| {
            std::thread::spawn(move || {
                set_background_share("test", share);
                policy_and_nice()
            })
            .join()
            .expect("thread")
        };
        let before = policy_and_nice();
        assert_eq!(in_thread(Share::Leftover).0, SCHED_IDLE);
        assert_eq!(in_thread(Share::Smallest), (SCHED_OTHER, 19));
        assert_eq!(
            policy_and_nice(),
            before,
            "the share is the calling thread's, not the process's"
        );
    }
}
