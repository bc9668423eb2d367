//! `cdwqc queue`: blinded work queues — create one, see progress per rater.

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::rate::triage::deal;
use crate::store::queues::{ItemReason, QueueOrigin};
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub action: QueueAction,
}

/// Which images a queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Strategy {
    All,
    Uncertainty,
    /// The unrated images between the run's triage thresholds (see --triage).
    Triage,
}

#[derive(Debug, Subcommand)]
pub enum QueueAction {
    /// Assign images to raters: a share to every rater (for agreement), the rest to one.
    Create {
        /// Raters (comma-separated); new names are added as raters.
        #[arg(long, value_delimiter = ',', required = true)]
        raters: Vec<String>,
        /// Only images of this sequence (BIDS suffix, e.g. FLAIR).
        #[arg(long)]
        sequence: Option<String>,
        /// Share of images rated by every rater (0 to 1).
        #[arg(long, default_value_t = 0.2)]
        overlap: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Queue name (default: the sequence and the date).
        #[arg(long)]
        name: Option<String>,
        /// `all` queues every readable image; `uncertainty` the --size unrated images
        /// that --run's predictions are least sure of (entropy), one per subject, with
        /// a --random-share drawn at random; `triage` every unrated image the model
        /// neither accepts nor rejects at --triage (cdwqc report model --triage).
        #[arg(long, value_enum, default_value = "all")]
        strategy: Strategy,
        /// The run whose stored predictions rank the images (`cdwqc infer --run RUN`
        /// first, so that unrated images have predictions).
        #[arg(
            long,
            required_if_eq("strategy", "uncertainty"),
            required_if_eq("strategy", "triage")
        )]
        run: Option<String>,
        /// The triage rate: the share of the last class (reject, bad) kept from
        /// automatic acceptance, and of the others from automatic rejection, on the
        /// run's validation images.
        #[arg(long, default_value_t = 0.95)]
        triage: f64,
        /// Images in an uncertainty queue.
        #[arg(long, default_value_t = 50)]
        size: usize,
        /// Share of an uncertainty queue drawn at random (keeps accuracy estimates
        /// unbiased).
        #[arg(long, default_value_t = 0.2)]
        random_share: f64,
        /// For an SSDA run's predictions, which carry its domain head's output: weight
        /// of an image's distance from the target domain (-log2 P(target), in bits)
        /// added to its entropy in the ranking; 0 ranks by entropy alone.
        #[arg(long, default_value_t = 1.0)]
        domain_weight: f64,
    },
    /// Progress of every rater in every queue.
    Status {
        #[arg(long)]
        json: bool,
    },
}

/// Images to queue, each with why (none for every-image queues), and how the queue
/// was filled.
type Picked = (Vec<(i64, Option<ItemReason>)>, QueueOrigin);

/// The images of an uncertainty queue, printed with why each was picked.
fn uncertain_images(
    store: &Store,
    run: &str,
    sequence: Option<&str>,
    (size, random_share, domain_weight): (usize, f64, f64),
    seed: u64,
) -> anyhow::Result<Picked> {
    use crate::rate::active::{Candidate, Reason, select_uncertain};
    if size == 0 {
        bail!("--size 0: an uncertainty queue needs at least one image");
    }
    if !(0.0..=1.0).contains(&random_share) {
        bail!("--random-share {random_share} is not a fraction between 0 and 1");
    }
    if !(domain_weight.is_finite() && domain_weight >= 0.0) {
        bail!("--domain-weight {domain_weight} is not a number of 0 or more");
    }
    let Some(row) = store.run_row(run)? else {
        bail!("no run {run} in the store (cdwqc sql \"select run_id, task from runs\")");
    };
    let task = row
        .task
        .with_context(|| format!("run {run} records no task"))?;
    let rated = crate::rate::labels::image_labels(store)?;
    let candidates: Vec<Candidate> = store
        .queue_candidates(run, &task, sequence)?
        .into_iter()
        // A reject for want of a registration has no uncertainty: triage counts it,
        // an uncertainty queue has nothing to learn from it.
        .filter(|row| !rated.contains_key(&row.image_id) && !row.not_registered)
        .collect();
    let with_domain = candidates
        .iter()
        .filter(|c| c.domain_target.is_some())
        .count();
    if candidates.is_empty() {
        bail!(
            "run {run} has no prediction of an unrated image{}: predict them first (cdwqc infer --run {run} --unrated)",
            sequence
                .map(|s| format!(" of sequence {s}"))
                .unwrap_or_default()
        );
    }
    let picked = select_uncertain(&candidates, size, random_share, domain_weight, seed);
    println!(
        "{} of {} unrated images with {task} predictions of run {run}{}:",
        picked.len(),
        candidates.len(),
        match (with_domain, domain_weight > 0.0) {
            (0, _) => String::new(),
            (n, true) => format!(
                " (ranked by entropy + {domain_weight} x distance from the target domain, measured for {n})"
            ),
            (n, false) => format!(
                " (ranked by entropy; distance from the target domain measured for {n}, weight 0)"
            ),
        }
    );
    for s in &picked {
        match s.reason {
            Reason::Uncertain {
                entropy,
                domain_distance,
            } => {
                println!(
                    "  image {:>6}  {:20} uncertain (entropy {entropy:.3} bits{})",
                    s.image_id,
                    s.subject,
                    domain_distance
                        .map(|d| format!(", {d:.3} bits from the target domain"))
                        .unwrap_or_default()
                )
            }
            Reason::Random => println!("  image {:>6}  {:20} random", s.image_id, s.subject),
        }
    }
    let images = picked
        .iter()
        .map(|s| {
            let (reason, score, domain_distance) = match s.reason {
                Reason::Uncertain {
                    entropy,
                    domain_distance,
                } => ("uncertain", Some(entropy), domain_distance),
                Reason::Random => ("random", None, None),
            };
            let why = ItemReason {
                reason: reason.to_string(),
                score,
                domain_distance,
            };
            (s.image_id, Some(why))
        })
        .collect();
    let origin = QueueOrigin {
        strategy: "uncertainty".into(),
        run_id: Some(run.to_string()),
        ..QueueOrigin::default()
    };
    Ok((images, origin))
}

/// The unrated images in the run's triage band, with the counts the model decides.
fn triage_images(
    store: &Store,
    run: &str,
    sequence: Option<&str>,
    rate: f64,
) -> anyhow::Result<Picked> {
    let picked = crate::rate::triage::pick(store, run, sequence, rate)?;
    println!("{}", picked.summary());
    if picked.review.is_empty() {
        bail!("the model decides every unrated image at {rate}: no image to queue");
    }
    let origin = picked.origin();
    let images = picked
        .review
        .into_iter()
        .map(|(id, why)| (id, Some(why)))
        .collect();
    Ok((images, origin))
}

pub fn run(db: &Path, args: QueueArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        QueueAction::Create {
            raters,
            sequence,
            overlap,
            seed,
            name,
            strategy,
            run,
            triage,
            size,
            random_share,
            domain_weight,
        } => {
            let mut store = Store::open(db, Access::ReadWrite)?;
            let (picked, origin) = match (strategy, run) {
                (Strategy::Uncertainty, Some(run)) => {
                    let shape = (size, random_share, domain_weight);
                    uncertain_images(&store, &run, sequence.as_deref(), shape, seed)?
                }
                (Strategy::Triage, Some(run)) => {
                    triage_images(&store, &run, sequence.as_deref(), triage)?
                }
                _ => (
                    store
                        .rateable_images(sequence.as_deref())?
                        .into_iter()
                        .map(|id| (id, None))
                        .collect(),
                    QueueOrigin {
                        strategy: "all".into(),
                        ..QueueOrigin::default()
                    },
                ),
            };
            if picked.is_empty() {
                bail!(
                    "no readable image{} to queue: import images first (cdwqc import DIR)",
                    sequence
                        .as_ref()
                        .map(|s| format!(" of sequence {s}"))
                        .unwrap_or_default()
                );
            }
            let dealt = deal(&picked, &raters, overlap, seed)?;
            let known: HashSet<String> = store.raters()?.into_iter().map(|r| r.name).collect();
            let new_raters: Vec<String> = raters
                .iter()
                .filter(|r| !known.contains(*r))
                .cloned()
                .collect();
            let name = name
                .unwrap_or_else(|| format!("{}-seed{seed}", sequence.as_deref().unwrap_or("all")));
            store.create_queue(
                &name,
                sequence.as_deref(),
                overlap,
                seed,
                &origin,
                &dealt.reasons,
                &dealt.rows,
                &new_raters,
            )?;
            for r in &new_raters {
                println!("added rater {r}");
            }
            println!(
                "queue {name}: {} images, {} shared by all {} raters",
                picked.len(),
                dealt.shared,
                raters.len()
            );
            for q in &dealt.rows {
                println!("  {:12} {} images", q.rater, q.images.len());
            }
        }
        QueueAction::Status { json } => {
            let store = Store::open(db, Access::ReadOnly)?;
            let progress = store.queue_progress()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&progress)?);
            } else if progress.is_empty() {
                println!("no queues yet: cdwqc queue create --raters a,b,c --sequence FLAIR");
            } else {
                println!(
                    "{:20} {:12} {:>8} {:>7} {:>6} {:>9}",
                    "queue", "rater", "assigned", "shared", "rated", "remaining"
                );
                for p in &progress {
                    println!(
                        "{:20} {:12} {:>8} {:>7} {:>6} {:>9}",
                        p.queue, p.rater, p.assigned, p.shared, p.rated, p.remaining
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
