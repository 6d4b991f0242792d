//! What the scenarios' tests share: the determinism check, and a failed seed reported with
//! the command that reproduces it.

use std::fmt::Debug;
use std::ops::Range;

use keel_sim::{trace_hash, Phase, SimReport};

/// Seed 7 gives one trace and the same counts run after run, whether its trace is recorded or
/// not, and seed 8 another trace. `run(seed, record_trace)` runs one seed of the scenario.
pub fn assert_one_seed_gives_one_trace<S: PartialEq + Debug>(run: impl Fn(u64, bool) -> SimReport<S>) {
    let first = run(7, true);
    let second = run(7, true);
    assert!(first.outcome.is_ok(), "{:?}", first.outcome);
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.stats, second.stats);
    // The hash covers exactly the recorded lines, and recording does not change the run.
    assert_eq!(trace_hash(&first.trace), first.trace_hash);
    let unrecorded = run(7, false);
    assert_eq!(unrecorded.trace_hash, first.trace_hash);
    assert!(unrecorded.trace.is_empty());
    let other = run(8, true);
    assert_ne!(other.trace_hash, first.trace_hash);
}

/// Panics if the run of `keel sim <scenario>` in `report` failed, saying how to reproduce it.
pub fn assert_passed<S>(scenario: &str, report: &SimReport<S>) {
    if let Err(failure) = &report.outcome {
        let seed = report.seed;
        panic!("seed {seed} failed {failure}\nreproduce with: keel sim {scenario} --seed {seed} --trace");
    }
}

/// Runs `seeds` with `run`; returns the failures (seed, message), none of them a refusal in
/// setup.
pub fn failures<S>(seeds: Range<u64>, run: impl Fn(u64) -> SimReport<S>) -> Vec<(u64, String)> {
    let mut caught = Vec::new();
    for seed in seeds {
        if let Err(failure) = run(seed).outcome {
            assert_ne!(failure.phase, Phase::Setup);
            caught.push((seed, failure.message));
        }
    }
    caught
}
