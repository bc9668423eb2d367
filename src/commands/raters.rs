//! `cdwqc raters`: add raters and list them with their progress.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::store::raters::Role;
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct RatersArgs {
    #[command(subcommand)]
    pub action: RatersAction,
}

#[derive(Debug, Subcommand)]
pub enum RatersAction {
    /// Add a rater (or change an existing rater's role).
    Add {
        name: String,
        #[arg(long, value_enum, default_value = "rater")]
        role: Role,
    },
    /// List raters with the number of images each has rated.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(db: &Path, args: RatersArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        RatersAction::Add { name, role } => {
            let store = Store::open(db, Access::ReadWrite)?;
            if store.add_rater(&name, role)? {
                println!("added {} {name}", role.as_str());
            } else {
                println!("{name} is now {}", role.as_str());
            }
        }
        RatersAction::List { json } => {
            let store = Store::open(db, Access::ReadOnly)?;
            let raters = store.raters()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&raters)?);
            } else if raters.is_empty() {
                println!("no raters yet: cdwqc raters add NAME [--role adjudicator]");
            } else {
                let width = raters
                    .iter()
                    .map(|r| r.name.len())
                    .max()
                    .unwrap_or(4)
                    .max(5);
                println!(
                    "{:width$}  {:11}  {:>6}  last saved",
                    "rater", "role", "rated"
                );
                for r in &raters {
                    println!(
                        "{:width$}  {:11}  {:>6}  {}",
                        r.name,
                        r.role,
                        r.images_rated,
                        r.last_saved.as_deref().unwrap_or("-")
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
