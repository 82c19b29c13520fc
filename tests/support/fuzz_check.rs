//! The runner every `fuzz_*` property test shares (included with
//! `#[path]` by each, so proptest stays a dev-dependency of each crate):
//! it runs a property on `PROPTEST_CASES` cases and prints how they
//! ended, which `.ci/run` reports.

use std::{cell::RefCell, collections::BTreeMap};

use proptest::{
    strategy::Strategy,
    test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner},
};

/// Runs `property` on `PROPTEST_CASES` values of `strategy` and prints
/// how many cases ended each way (the outcome the property returns).
pub fn check<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(S::Value) -> Result<&'static str, TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        source_file: Some(file!()),
        // Beside this file: a tests/ file has no src/ to mirror.
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    });
    let outcomes = RefCell::new(BTreeMap::<&str, u32>::new());
    let result = runner.run(&strategy, |value| {
        let outcome = property(value)?;
        *outcomes.borrow_mut().entry(outcome).or_default() += 1;
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{name}: {failure}");
    }
    let outcomes = outcomes.into_inner();
    let described: Vec<String> = outcomes.iter().map(|(o, n)| format!("{n} {o}")).collect();
    println!(
        "property {name}: {} cases ({})",
        outcomes.values().sum::<u32>(),
        described.join(", ")
    );
}
