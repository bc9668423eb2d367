//! Times the agreement metrics on 1,000,000 ratings (200,000 subjects x 5 raters, about 20% missing).
//!
//! ```sh
//! cargo run --release --example bench_metrics                      # generated ratings, table
//! cargo run --release --example bench_metrics -- --input FILE --json
//! ```
//!
//! `--input FILE` reads the ratings instead of generating them: the 8 bytes `CDWQCRT1`,
//! then the numbers of subjects, raters and categories as little-endian u64, then the
//! subjects x raters cells row by row, one signed byte each (the category index, -1 when
//! missing). `scripts/bench_metrics.py` writes such a file so that cdwqc and the Python
//! libraries compute on the same data.
//!
//! `--json` prints, instead of the table, the statistics that `scripts/bench_metrics.py`
//! compares with scikit-learn, statsmodels and krippendorff, each with its value and the
//! milliseconds it took from the ratings matrix in memory (reading the file and building
//! the matrix are excluded and reported apart).

use std::time::Instant;

use cdwqc::metrics::{
    AgreementWeights, ConfusionMatrix, Estimate, Level, Ratings, Weighting, all_raters_agree,
    cohen_kappa, fleiss_kappa, fleiss_kappa_generalized, gwet_ac1, gwet_ac2, krippendorff_alpha,
    krippendorff_alpha_inference, pairwise_agreement,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

const MAGIC: &[u8; 8] = b"CDWQCRT1";

struct Input {
    cells: Vec<Option<usize>>,
    n_raters: usize,
    n_categories: usize,
}

fn generate() -> Input {
    const SUBJECTS: usize = 200_000;
    const RATERS: usize = 5;
    const CATEGORIES: usize = 5;
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let mut cells = Vec::with_capacity(SUBJECTS * RATERS);
    for _ in 0..SUBJECTS {
        let truth = rng.random_range(0..CATEGORIES);
        for _ in 0..RATERS {
            let cell = if rng.random_bool(0.2) {
                None
            } else if rng.random_bool(0.7) {
                Some(truth)
            } else {
                Some(rng.random_range(0..CATEGORIES))
            };
            cells.push(cell);
        }
    }
    Input {
        cells,
        n_raters: RATERS,
        n_categories: CATEGORIES,
    }
}

fn read(path: &str) -> Result<Input, Box<dyn std::error::Error>> {
    let bytes = std::fs::read(path)?;
    if bytes.len() < 32 || &bytes[..8] != MAGIC {
        return Err(format!("{path}: not a ratings file (no {MAGIC:?} header)").into());
    }
    let field = |i: usize| -> Result<usize, Box<dyn std::error::Error>> {
        let raw: [u8; 8] = bytes[8 + 8 * i..16 + 8 * i].try_into()?;
        Ok(usize::try_from(u64::from_le_bytes(raw))?)
    };
    let (n_subjects, n_raters, n_categories) = (field(0)?, field(1)?, field(2)?);
    let body = &bytes[32..];
    if Some(body.len()) != n_subjects.checked_mul(n_raters) {
        return Err(format!(
            "{path}: {} cells for {n_subjects} subjects x {n_raters} raters",
            body.len()
        )
        .into());
    }
    let cells = body
        .iter()
        .map(|&b| usize::try_from(b as i8).ok())
        .collect();
    Ok(Input {
        cells,
        n_raters,
        n_categories,
    })
}

fn pair_confusion(ratings: &Ratings) -> Result<ConfusionMatrix, cdwqc::metrics::MetricError> {
    let table = ratings.pair_table(0, 1)?;
    let k = table.n_categories();
    let rows: Vec<Vec<u64>> = (0..k)
        .map(|i| (0..k).map(|j| table.get(i, j)).collect())
        .collect();
    ConfusionMatrix::from_rows(&rows)
}

/// The statistics `scripts/bench_metrics.py` compares, each timed from the matrix in
/// memory, including the count or pair table it needs.
fn compared(ratings: &Ratings) -> Vec<serde_json::Value> {
    let complete_counts = ratings.complete_subjects().subject_counts();
    let mut rows = Vec::new();
    let mut timed = |name: &str, f: &dyn Fn() -> Estimate| {
        let start = Instant::now();
        let value = f();
        let ms = start.elapsed().as_secs_f64() * 1e3;
        rows.push(json!({
            "name": name,
            "ms": ms,
            "value": value.as_ref().ok(),
            "error": value.as_ref().err().map(ToString::to_string),
        }));
    };
    timed("cohen_kappa", &|| {
        ratings
            .pair_table(0, 1)
            .and_then(|t| cohen_kappa(&t, Weighting::Unweighted))
            .map(|k| k.kappa)
    });
    timed("cohen_kappa_quadratic", &|| {
        ratings
            .pair_table(0, 1)
            .and_then(|t| cohen_kappa(&t, Weighting::Quadratic))
            .map(|k| k.kappa)
    });
    timed("balanced_accuracy", &|| {
        pair_confusion(ratings).and_then(|m| m.balanced_accuracy())
    });
    timed("fleiss_kappa", &|| {
        fleiss_kappa(&ratings.complete_subjects().subject_counts()).map(|f| f.kappa)
    });
    timed("fleiss_kappa_from_counts", &|| {
        fleiss_kappa(&complete_counts).map(|f| f.kappa)
    });
    timed("krippendorff_alpha_nominal", &|| {
        krippendorff_alpha(&ratings.subject_counts(), Level::Nominal)
    });
    timed("krippendorff_alpha_ordinal", &|| {
        krippendorff_alpha(&ratings.subject_counts(), Level::Ordinal)
    });
    rows
}

fn table(ratings: &Ratings, building: f64) {
    let values: Vec<f64> = (0..ratings.n_categories()).map(|c| c as f64).collect();
    let start = Instant::now();
    let counts = ratings.subject_counts();
    let counting = start.elapsed().as_secs_f64() * 1e3;

    let timed = |name: &str, f: &dyn Fn() -> String| {
        let start = Instant::now();
        let result = f();
        println!(
            "{name:<34} {:>9.2} ms  {result}",
            start.elapsed().as_secs_f64() * 1e3
        );
    };
    println!(
        "{} cells ({} subjects x {} raters), matrix checked in {building:.2} ms, count table built in {counting:.2} ms",
        ratings.n_subjects() * ratings.n_raters(),
        ratings.n_subjects(),
        ratings.n_raters(),
    );
    timed("pairwise percent agreement", &|| {
        format!("{:?}", pairwise_agreement(&counts))
    });
    timed("all raters agree", &|| {
        format!("{:?}", all_raters_agree(&counts))
    });
    timed("Krippendorff alpha nominal", &|| {
        format!("{:?}", krippendorff_alpha(&counts, Level::Nominal))
    });
    timed("Krippendorff alpha ordinal", &|| {
        format!("{:?}", krippendorff_alpha(&counts, Level::Ordinal))
    });
    timed("Krippendorff alpha interval", &|| {
        format!(
            "{:?}",
            krippendorff_alpha(&counts, Level::Interval(&values))
        )
    });
    timed("Gwet AC1 with SE", &|| {
        format!("{:?}", gwet_ac1(&counts).map(|g| (g.coefficient, g.se)))
    });
    timed("Krippendorff alpha with SE (Gwet)", &|| {
        format!(
            "{:?}",
            krippendorff_alpha_inference(&counts, AgreementWeights::Identity)
                .map(|a| (a.coefficient, a.se))
        )
    });
    timed("Gwet AC2 quadratic with SE", &|| {
        format!(
            "{:?}",
            gwet_ac2(&counts, AgreementWeights::Quadratic(&values)).map(|g| (g.coefficient, g.se))
        )
    });
    timed("generalised Fleiss with SE", &|| {
        format!(
            "{:?}",
            fleiss_kappa_generalized(&counts, AgreementWeights::Identity)
                .map(|g| (g.coefficient, g.se))
        )
    });
    timed("Fleiss kappa (complete subjects)", &|| {
        format!(
            "{:?}",
            fleiss_kappa(&ratings.complete_subjects().subject_counts()).map(|f| f.kappa)
        )
    });
    timed("Cohen kappa quadratic, raters 1-2", &|| {
        format!(
            "{:?}",
            ratings
                .pair_table(0, 1)
                .and_then(|t| cohen_kappa(&t, Weighting::Quadratic))
                .map(|k| (k.kappa, k.std_kappa))
        )
    });
    timed("balanced accuracy, raters 1-2", &|| {
        format!(
            "{:?}",
            pair_confusion(ratings).and_then(|m| m.balanced_accuracy())
        )
    });
    let start = Instant::now();
    let _ = ratings.subject_counts();
    let _ = krippendorff_alpha(&ratings.subject_counts(), Level::Ordinal);
    let _ = gwet_ac1(&ratings.subject_counts());
    println!(
        "full pass (counts + alpha + AC1)    {:>9.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut input_path = None;
    let mut as_json = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--input" => input_path = Some(args.next().ok_or("--input needs a FILE")?),
            "--json" => as_json = true,
            other => {
                return Err(
                    format!("unknown argument {other:?} (usage: [--input FILE] [--json])").into(),
                );
            }
        }
    }
    let start = Instant::now();
    let input = match &input_path {
        Some(path) => read(path)?,
        None => generate(),
    };
    let reading = start.elapsed().as_secs_f64() * 1e3;

    let start = Instant::now();
    let ratings = Ratings::new(input.cells, input.n_raters, input.n_categories)?;
    let building = start.elapsed().as_secs_f64() * 1e3;

    if as_json {
        let rated = (0..ratings.n_subjects())
            .map(|s| ratings.subject(s).iter().flatten().count())
            .sum::<usize>();
        let out = json!({
            "subjects": ratings.n_subjects(),
            "raters": ratings.n_raters(),
            "categories": ratings.n_categories(),
            "ratings": rated,
            "read_ms": reading,
            "matrix_ms": building,
            "statistics": compared(&ratings),
        });
        println!("{out}");
    } else {
        table(&ratings, building);
    }
    Ok(())
}
