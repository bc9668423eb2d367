//! `cdwqc queue`: blinded work queues — create one, see progress per rater.

use std::collections::HashSet;
use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::Subcommand;

use crate::rate::queue::assign;
use crate::store::queues::QueueAssignment;
use crate::store::raters::Role;
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub action: QueueAction,
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
    },
    /// Progress of every rater in every queue.
    Status {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(db: &Path, args: QueueArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        QueueAction::Create {
            raters,
            sequence,
            overlap,
            seed,
            name,
        } => {
            let mut store = Store::open(db, Access::ReadWrite)?;
            let images = store.rateable_images(sequence.as_deref())?;
            if images.is_empty() {
                bail!(
                    "no readable image{} to queue: import images first (cdwqc import DIR)",
                    sequence
                        .as_ref()
                        .map(|s| format!(" of sequence {s}"))
                        .unwrap_or_default()
                );
            }
            let ids: Vec<String> = images.iter().map(i64::to_string).collect();
            let assignment = assign(&ids, &raters, overlap, seed)?;
            let shared: HashSet<&String> = assignment.shared.iter().collect();
            let mut rows = Vec::new();
            for q in &assignment.queues {
                let images = q
                    .images
                    .iter()
                    .map(|id| Ok((id.parse::<i64>()?, shared.contains(id))))
                    .collect::<Result<Vec<_>, std::num::ParseIntError>>()?;
                rows.push(QueueAssignment {
                    rater: q.rater.clone(),
                    images,
                });
            }
            let known: HashSet<String> = store.raters()?.into_iter().map(|r| r.name).collect();
            for r in &raters {
                if !known.contains(r) {
                    store.add_rater(r, Role::Rater)?;
                    println!("added rater {r}");
                }
            }
            let name = name
                .unwrap_or_else(|| format!("{}-seed{seed}", sequence.as_deref().unwrap_or("all")));
            store.create_queue(&name, sequence.as_deref(), overlap, seed, &rows)?;
            println!(
                "queue {name}: {} images, {} shared by all {} raters",
                images.len(),
                assignment.shared.len(),
                raters.len()
            );
            for q in &rows {
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
