//! Notebook export -> import round trip at scale, and line numbers of invalid rows.

use cdwqc::protocol::{Grade, Rating, RejectReason};
use cdwqc::rate::formats::{
    BidsKey, Delimiter, FileFormat, ImageKey, ParseOptions, ParsedRow, parse_ratings,
    read_ratings_file, write_notebook,
};

fn all_codes() -> Vec<Rating> {
    let mut ratings = vec![Rating::reject(RejectReason::Other)];
    for gado in [false, true] {
        for motion in Grade::ALL {
            for contrast in Grade::ALL {
                for noise in Grade::ALL {
                    ratings.push(Rating::usable(gado, motion, contrast, noise));
                }
            }
        }
    }
    ratings
}

fn thousand_rows() -> Vec<ParsedRow> {
    let ratings = all_codes();
    (0..1000)
        .map(|i| {
            let key = if i % 7 == 0 {
                ImageKey::Path(format!("image_{i}"))
            } else {
                ImageKey::Bids(BidsKey {
                    subject: format!("{i:04}"),
                    session: Some(format!("M{:03}", i % 5)),
                    acq: None,
                    run: None,
                    suffix: None,
                })
            };
            ParsedRow::new(i + 2, key, ratings[i * 13 % ratings.len()])
        })
        .collect()
}

#[test]
fn thousand_notebook_rows_round_trip() {
    let rows = thousand_rows();
    for (delimiter, name) in [
        (Delimiter::Tab, "export.tsv"),
        (Delimiter::Comma, "export.csv"),
    ] {
        let text = write_notebook(&rows, delimiter).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, &text).unwrap();
        let parsed = read_ratings_file(&path, &ParseOptions::default()).unwrap();
        assert_eq!(parsed.format, FileFormat::Notebook);
        assert!(parsed.invalid.is_empty(), "{:?}", parsed.invalid);
        assert_eq!(parsed.rows.len(), 1000);
        for (written, read) in rows.iter().zip(&parsed.rows) {
            assert_eq!(read.rating.code(), written.rating.code());
            assert_eq!(read.rating, written.rating);
            assert_eq!(read.key, written.key);
            assert_eq!(read.line, written.line);
        }
    }
}

#[test]
fn invalid_line_is_reported_with_its_number() {
    let rows = thousand_rows();
    let text = write_notebook(&rows[..50], Delimiter::Tab).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    // Line 31 of the file holds row index 29.
    lines[30] = "29\tsub-bad\trr\t4".to_string();
    let parsed = parse_ratings(&lines.join("\n"), "edited.tsv", &ParseOptions::default()).unwrap();
    assert_eq!(parsed.rows.len(), 49);
    assert_eq!(parsed.invalid.len(), 1);
    assert_eq!(parsed.invalid[0].line, 31);
    assert_eq!(
        parsed.invalid[0].message,
        "invalid code 'rr': reject 'r' given 2 times"
    );
}

#[test]
fn missing_file_names_the_path() {
    let error = read_ratings_file(
        std::path::Path::new("/nonexistent/ratings.tsv"),
        &ParseOptions::default(),
    )
    .unwrap_err();
    assert!(error.to_string().contains("/nonexistent/ratings.tsv"));
}
