//! `cdwqc init`: create the store or migrate it to this build's schema.

use std::path::Path;
use std::process::ExitCode;

use crate::store::{Access, Store, migrations};

#[derive(Debug, clap::Args)]
pub struct InitArgs {}

pub fn run(db: &Path, _args: InitArgs) -> anyhow::Result<ExitCode> {
    let (store, verb) = if db.exists() {
        (Store::open(db, Access::ReadWrite)?, "opened")
    } else {
        (Store::create(db)?, "created")
    };
    let version = migrations::current_version(&store)?;
    println!("{verb} {} (schema version {version})", db.display());
    Ok(ExitCode::SUCCESS)
}
