//! `cdwqc info`: versions of the native libraries, the compute devices libtorch sees,
//! and the store's state — what a bug report needs.

use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use crate::store::{Access, Store, migrations};

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Info {
    cdwqc: &'static str,
    duckdb: String,
    libtorch_threads: i32,
    cuda_available: bool,
    cuda_library: String,
    cuda_devices: i64,
    cudnn_available: bool,
    store: String,
    store_schema: Option<i64>,
    schema_this_build: i64,
    store_error: Option<String>,
}

pub fn run(db: &Path, args: InfoArgs) -> anyhow::Result<ExitCode> {
    let mem = duckdb::Connection::open_in_memory()?;
    let duckdb: String = mem.query_row("SELECT version()", [], |r| r.get(0))?;
    let (store_schema, store_error) = if db.exists() {
        match Store::open(db, Access::ReadOnly) {
            Ok(s) => (Some(migrations::current_version(&s)?), None),
            Err(e) => (None, Some(e.to_string())),
        }
    } else {
        (None, Some("not created yet (cdwqc init)".into()))
    };
    let info = Info {
        cdwqc: env!("CARGO_PKG_VERSION"),
        duckdb,
        libtorch_threads: tch::get_num_threads(),
        cuda_available: crate::device::cuda_available(),
        cuda_library: match crate::device::load_cuda() {
            Ok(()) => "loaded".into(),
            Err(e) => e,
        },
        cuda_devices: tch::Cuda::device_count(),
        cudnn_available: tch::Cuda::cudnn_is_available(),
        store: db.display().to_string(),
        store_schema,
        schema_this_build: migrations::latest_version(),
        store_error,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("cdwqc      {}", info.cdwqc);
        println!("duckdb     {}", info.duckdb);
        println!("libtorch   {} CPU threads", info.libtorch_threads);
        if info.cuda_available {
            println!(
                "cuda       {} device(s), cuDNN {}",
                info.cuda_devices,
                if info.cudnn_available { "yes" } else { "no" }
            );
        } else {
            println!("cuda       not available: {}", info.cuda_library);
        }
        match (&info.store_schema, &info.store_error) {
            (Some(v), _) => println!(
                "store      {} (schema {v}, this build writes {})",
                info.store, info.schema_this_build
            ),
            (None, Some(e)) => println!("store      {}: {e}", info.store),
            (None, None) => println!("store      {}", info.store),
        }
    }
    Ok(ExitCode::SUCCESS)
}
