//! Results over time: a point at every UTC hour boundary the event time
//! crosses, with what a reader saw then, the same whether the events
//! arrive live or are replayed by a rebuild, and a bounded history.

mod common;

use common::{START_MICROS, analyzer_for, running_experiment, user_exposure, user_outcome};
use exp_analysis::{
    Analyzer,
    timeline::{DAY_MICROS, Granularity, HOUR_MICROS, PointTime, Timeline},
};
use exp_core::{
    Experiment,
    event::{Event, EventKind, unix_micros},
    metrics::OutcomeType,
};

const MINUTE_MICROS: i64 = 60_000_000;

/// A unit exposed every minute, half a minute past, for 3 h 20 min from
/// 08:00 UTC, each third one adding to its cart ten seconds later; in
/// time order.
fn three_hours(experiment: &Experiment) -> Vec<Event> {
    let mut events = Vec::new();
    for minute in 0..200 {
        let user = format!("t-{minute}");
        let variant = &experiment.variants[minute % 2].name;
        let time = START_MICROS + minute as i64 * MINUTE_MICROS + 30_000_000;
        events.push(user_exposure(&experiment.id, variant, &user, time).into());
        if minute % 3 == 0 {
            events.push(
                user_outcome(&user, time + 10_000_000, OutcomeType::AddToCart, &[], 0.0).into(),
            );
        }
    }
    events
}

fn fed(experiment: &Experiment, events: &[Event]) -> Analyzer {
    let mut analyzer = analyzer_for(experiment.clone());
    for event in events {
        analyzer.apply(event);
    }
    analyzer
}

fn units(point: &exp_analysis::timeline::TimelinePoint) -> u64 {
    point
        .variants
        .iter()
        .map(|variant| variant.exposed_units)
        .sum()
}

#[test]
fn a_timeline_has_a_point_per_hour_boundary_with_the_units_exposed_before_it() {
    let experiment = running_experiment();
    let events = three_hours(&experiment);
    let analyzer = fed(&experiment, &events);
    let timeline = analyzer
        .timeline(&experiment.id, Granularity::Hour, 0.05)
        .expect("the experiment has exposures");
    let boundaries: Vec<(PointTime, u64)> = timeline
        .points
        .iter()
        .map(|point| (point.time, units(point)))
        .collect();
    let exposed_before = |boundary: i64| {
        events
            .iter()
            .filter(|event| {
                event.kind() == EventKind::Exposure && unix_micros(event.timestamp()) < boundary
            })
            .count() as u64
    };
    let last_event = events
        .iter()
        .map(|event| unix_micros(event.timestamp()))
        .max();
    let expected: Vec<(PointTime, u64)> = (1..=3)
        .map(|hour| {
            let boundary = START_MICROS + hour * HOUR_MICROS;
            (PointTime::Boundary(boundary), exposed_before(boundary))
        })
        .chain([(PointTime::Now(last_event), 200)])
        .collect();
    assert_eq!(boundaries, expected);
    assert_eq!(
        expected[..3]
            .iter()
            .map(|(_, units)| *units)
            .collect::<Vec<_>>(),
        [60, 120, 180]
    );

    // 08:00 to 11:20 crosses no midnight: only the current state.
    let days = analyzer
        .timeline(&experiment.id, Granularity::Day, 0.05)
        .expect("the experiment has exposures");
    assert_eq!(days.points.len(), 1);
    assert_eq!(days.points[0].time, PointTime::Now(last_event));
}

#[test]
fn a_boundary_point_shows_what_a_report_showed_at_that_boundary() {
    let experiment = running_experiment();
    let events = three_hours(&experiment);
    let second_boundary = START_MICROS + 2 * HOUR_MICROS;
    let (before, after): (Vec<Event>, Vec<Event>) = events
        .iter()
        .cloned()
        .partition(|event| unix_micros(event.timestamp()) < second_boundary);
    let mut analyzer = fed(&experiment, &before);
    let then = analyzer
        .report(&experiment.id, 0.01)
        .expect("the experiment has exposures");
    for event in &after {
        analyzer.apply(event);
    }
    let timeline = analyzer
        .timeline(&experiment.id, Granularity::Hour, 0.01)
        .expect("the experiment has exposures");
    let point = &timeline.points[1];
    assert_eq!(point.time, PointTime::Boundary(second_boundary));
    assert_eq!(point.variants, then.variants);
    // And the last point is the report of now.
    let now = analyzer
        .report(&experiment.id, 0.01)
        .expect("the experiment has exposures");
    assert_eq!(
        timeline.points.last().map(|point| &point.variants),
        Some(&now.variants)
    );
}

#[test]
fn the_same_events_replayed_by_a_rebuild_give_the_same_timeline() {
    let experiment = running_experiment();
    let events = three_hours(&experiment);
    let live = fed(&experiment, &events);
    // A rebuild reads hour partition by hour partition, the exposures of
    // an hour before its outcomes.
    let mut partitions = events.clone();
    partitions.sort_by_key(|event| {
        (
            unix_micros(event.timestamp()).div_euclid(HOUR_MICROS),
            event.kind(),
        )
    });
    assert_ne!(partitions, events, "the rebuild's order differs");
    let rebuilt = fed(&experiment, &partitions);
    let again = fed(&experiment, &events);
    for granularity in [Granularity::Hour, Granularity::Day] {
        let timeline = |analyzer: &Analyzer| -> Timeline {
            analyzer
                .timeline(&experiment.id, granularity, 0.05)
                .expect("the experiment has exposures")
        };
        assert_eq!(timeline(&rebuilt), timeline(&live), "{granularity:?}");
        assert_eq!(timeline(&again), timeline(&live), "{granularity:?}");
    }
}

#[test]
fn hourly_points_are_kept_for_90_days_and_midnight_points_for_two_years() {
    let experiment = running_experiment();
    let mut analyzer = analyzer_for(experiment.clone());
    let control = &experiment.variants[0].name;
    // One unit an hour, half past, for 100 days from 08:00.
    let hours = 100 * 24;
    for hour in 0..hours {
        analyzer.exposure(&user_exposure(
            &experiment.id,
            control,
            &format!("h-{hour}"),
            START_MICROS + hour * HOUR_MICROS + 30 * MINUTE_MICROS,
        ));
    }
    let boundaries = |analyzer: &Analyzer, granularity| -> Vec<i64> {
        analyzer
            .timeline(&experiment.id, granularity, 0.05)
            .expect("the experiment has exposures")
            .points
            .iter()
            .filter_map(|point| match point.time {
                PointTime::Boundary(micros) => Some(micros),
                PointTime::Now(_) => None,
            })
            .collect()
    };
    let hourly = boundaries(&analyzer, Granularity::Hour);
    let newest = START_MICROS + (hours - 1) * HOUR_MICROS + 30 * MINUTE_MICROS;
    let recent = hourly
        .iter()
        .filter(|boundary| **boundary >= newest - 90 * DAY_MICROS)
        .count();
    assert_eq!(recent, 90 * 24, "every hour of the last 90 days");
    assert!(
        hourly
            .iter()
            .filter(|boundary| **boundary < newest - 90 * DAY_MICROS)
            .all(|boundary| boundary % DAY_MICROS == 0),
        "only midnights before that"
    );
    // 08:00 on day 0 to 07:30 on day 100: 100 midnights, each kept.
    let daily = boundaries(&analyzer, Granularity::Day);
    assert_eq!(daily.len(), 100);
    assert!(daily.iter().all(|boundary| boundary % DAY_MICROS == 0));
    assert_eq!(hourly.len(), 90 * 24 + 10);

    // An event three years on crosses 26,000 boundaries: what is kept
    // stays within the bounds.
    analyzer.exposure(&user_exposure(
        &experiment.id,
        control,
        "much-later",
        newest + 3 * 365 * DAY_MICROS,
    ));
    let hourly = boundaries(&analyzer, Granularity::Hour);
    assert!(hourly.len() <= 90 * 24 + 730, "{} points", hourly.len());
    let units: Vec<u64> = analyzer
        .timeline(&experiment.id, Granularity::Day, 0.05)
        .expect("the experiment has exposures")
        .points
        .iter()
        .map(units)
        .collect();
    assert_eq!(units.last(), Some(&(hours as u64 + 1)));
    assert!(
        units[..units.len() - 1]
            .iter()
            .all(|units| *units == hours as u64)
    );
}
