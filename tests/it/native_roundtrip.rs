//! Native export -> import round trip for arbitrary rows.

use cdwqc::protocol::{Grade, Quality, Rating, RejectReason};
use cdwqc::rate::formats::{
    BidsKey, Delimiter, ImageKey, ParseOptions, ParsedRow, parse_ratings, quality_only,
    write_native,
};
use proptest::prelude::*;

fn grade() -> impl Strategy<Value = Grade> {
    prop::sample::select(Grade::ALL.to_vec())
}

/// A rating with whether its grades are known (quality-only ratings are not).
fn rating() -> impl Strategy<Value = (Rating, bool)> {
    prop_oneof![
        (any::<bool>(), grade(), grade(), grade())
            .prop_map(|(gado, m, c, n)| (Rating::usable(gado, m, c, n), true)),
        prop::sample::select(RejectReason::ALL.to_vec()).prop_map(|r| (Rating::reject(r), true)),
        prop::sample::select(Quality::ALL.to_vec()).prop_map(|q| (quality_only(q), false)),
    ]
}

fn entity() -> impl Strategy<Value = Option<String>> {
    prop::option::of("[A-Za-z0-9]{1,6}")
}

fn key() -> impl Strategy<Value = ImageKey> {
    prop_oneof![
        ("[A-Za-z0-9]{1,8}", entity(), entity(), entity(), entity()).prop_map(
            |(subject, session, acq, run, suffix)| {
                ImageKey::Bids(BidsKey {
                    subject,
                    session,
                    acq,
                    run,
                    suffix,
                })
            }
        ),
        "[a-z0-9/][a-z0-9/._,\t\"]{0,20}[a-z0-9]".prop_map(ImageKey::Path),
    ]
}

fn row() -> impl Strategy<Value = ParsedRow> {
    (
        key(),
        rating(),
        prop::option::of("[a-z \t\n\",;é]{0,10}[a-z]"),
        prop::option::of(1u8..=5),
        prop::option::of(0..=i64::MAX as u64),
        prop::option::of(prop::sample::select(vec![
            "2024-05-01T14:03:00Z".to_string(),
            "2025-12-31T23:59:59.5+01:00".to_string(),
        ])),
        prop::option::of("[a-z_]{1,8}"),
    )
        .prop_map(
            |(key, (rating, grades_known), comment, confidence, time_ms, rated_at, rater)| {
                ParsedRow {
                    line: 0,
                    key,
                    rating,
                    grades_known,
                    comment,
                    confidence,
                    time_ms,
                    rated_at,
                    rater,
                }
            },
        )
        // A subject, path, rater or comment spelled like a missing value (`NA`, `n/a`)
        // cannot be written; the writer refuses such rows (tested in formats.rs).
        .prop_filter("no value spelled like a missing value", |row| {
            write_native(std::slice::from_ref(row), Delimiter::Tab).is_ok()
        })
}

proptest! {
    #[test]
    fn native_write_then_parse_gives_the_same_rows(
        rows in prop::collection::vec(row(), 0..20),
        comma in any::<bool>(),
    ) {
        let delimiter = if comma { Delimiter::Comma } else { Delimiter::Tab };
        let text = write_native(&rows, delimiter).unwrap();
        let parsed = parse_ratings(&text, "export", &ParseOptions::default()).unwrap();
        prop_assert!(parsed.invalid.is_empty(), "{:?}", parsed.invalid);
        let read: Vec<ParsedRow> =
            parsed.rows.into_iter().map(|row| ParsedRow { line: 0, ..row }).collect();
        prop_assert_eq!(read, rows);
    }
}
