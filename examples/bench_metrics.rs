//! Times the agreement metrics on 1,000,000 ratings (200,000 subjects x 5 raters, about 20% missing).

use std::time::Instant;

use cdwqc::metrics::{
    AgreementWeights, Level, Ratings, Weighting, all_raters_agree, cohen_kappa, fleiss_kappa,
    fleiss_kappa_generalized, gwet_ac1, gwet_ac2, krippendorff_alpha, krippendorff_alpha_inference,
    pairwise_agreement,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), Box<dyn std::error::Error>> {
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
    let values: Vec<f64> = (0..CATEGORIES).map(|c| c as f64).collect();

    let start = Instant::now();
    let ratings = Ratings::new(cells, RATERS, CATEGORIES)?;
    let counts = ratings.subject_counts();
    let counting = start.elapsed();

    let timed = |name: &str, f: &dyn Fn() -> String| {
        let start = Instant::now();
        let result = f();
        println!(
            "{name:<34} {:>9.2} ms  {result}",
            start.elapsed().as_secs_f64() * 1e3
        );
    };
    println!(
        "{} ratings ({} subjects x {} raters), count table built in {:.2} ms",
        SUBJECTS * RATERS,
        SUBJECTS,
        RATERS,
        counting.as_secs_f64() * 1e3
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
    let start = Instant::now();
    let _ = ratings.subject_counts();
    let _ = krippendorff_alpha(&ratings.subject_counts(), Level::Ordinal);
    let _ = gwet_ac1(&ratings.subject_counts());
    println!(
        "full pass (counts + alpha + AC1)    {:>9.2} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}
