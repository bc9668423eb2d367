//! `cdwqc slurm submit infer` and `cdwqc slurm status`: a run's inference split into
//! shards on a Slurm cluster (or here, as child processes, with `--local`), merged back
//! into the store by a job that waits for them all; and the worker side,
//! `cdwqc infer --shard K/N --work-list FILE`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::cluster::import::{IMPORT_LIST, ImportWorkList, run_import_shard};
use crate::cluster::slurm::{
    JobFolder, SUBMISSION, SlurmOptions, Submission, Worker, job_states, plain_name, sbatch,
    write_scripts,
};
use crate::cluster::{ARRAY_TASK_ENV, Shard, WORK_LIST, WorkList, parts_present, run_shard};
use crate::import::{self, ImportOptions};
use crate::jobs::plan::{InferRequest, ModelInferRequest, plan_inference, plan_model_inference};
use crate::jobs::{InferPlan, JobEvent, ModelSource, cache_dir, models_dir, runs_dir};
use crate::report::agreement::Task;
use crate::store::{Access, Store};

#[derive(Debug, clap::Args)]
pub struct SlurmArgs {
    #[command(subcommand)]
    pub command: SlurmCommand,
}

// Parsed once per process: the size of the arguments costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum SlurmCommand {
    /// Export a frozen work list, write the sbatch scripts beside it and submit an array
    /// of shards plus a merge job that waits for them (or run them here with --local).
    Submit(SubmitArgs),
    /// What Slurm says of submitted jobs, and which parts are written.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(subcommand)]
    pub job: SubmitJob,
}

#[derive(Debug, Subcommand)]
pub enum SubmitJob {
    /// Predict with a training run's best weights or an exported model, in shards.
    Infer(SubmitInferArgs),
    /// Index a warehouse folder in shards: each analyses its share of the new and
    /// changed files (header, previews, quality metrics) without opening the store.
    Import(SubmitImportArgs),
}

/// Where and how the shards run: the same for every kind of job.
#[derive(Debug, clap::Args)]
pub struct ClusterOptions {
    /// Slurm partition.
    #[arg(long)]
    pub partition: Option<String>,
    /// Time limit of each array task (sbatch --time).
    #[arg(long)]
    pub time: Option<String>,
    /// Memory of each array task (sbatch --mem).
    #[arg(long)]
    pub mem: Option<String>,
    /// Generic resources of each array task, e.g. gpu:1 (sbatch --gres).
    #[arg(long)]
    pub gres: Option<String>,
    /// CPU cores of each array task, its threads (default 4; with --local, the cores
    /// shared among the shards running at once).
    #[arg(long)]
    pub cpus_per_task: Option<usize>,
    /// Run the shards here as child processes, then merge; no Slurm needed.
    #[arg(long)]
    pub local: bool,
    /// With --local: shards running at once (default: all).
    #[arg(long, requires = "local")]
    pub jobs: Option<usize>,
}

#[derive(Debug, clap::Args)]
pub struct SubmitImportArgs {
    /// The folder to index (a BIDS dataset or any folder of .nii / .nii.gz files), on a
    /// file system every node sees.
    pub folder: PathBuf,
    /// How many shards (array tasks) share the new and changed files, balanced by size.
    #[arg(long)]
    pub shards: usize,
    /// Also index derivatives/ and sourcedata/ folders.
    #[arg(long)]
    pub include_derivatives: bool,
    /// Re-analyse every file, even those whose size and time are unchanged.
    #[arg(long)]
    pub force: bool,
    /// Skip the image quality metrics (`cdwqc iqm` computes them later).
    #[arg(long)]
    pub no_iqm: bool,
    /// The job folder (import list, scripts, parts, logs), on a file system every node
    /// sees. Default models/cluster/import-<folder name>.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterOptions,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("predictor").required(true).args(["run", "model"])))]
pub struct SubmitInferArgs {
    /// The training run whose best weights predict.
    #[arg(long)]
    pub run: Option<String>,
    /// Or an exported model (a name under models/, such as a shipped model, or a model
    /// folder): its weights predict in the shards, and the merge records its run
    /// (`model:<name>`) and mixes in its IQM forest from the store's metrics, as
    /// `cdwqc infer --model` does in one process.
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// With --model: store the network's probabilities alone (no IQM forest).
    #[arg(long, requires = "model")]
    pub network_only: bool,
    /// With --model: the run the predictions are stored under (default model:<name>).
    #[arg(long = "as", value_name = "RUN", requires = "model")]
    pub store_as: Option<String>,
    /// How many shards (array tasks) share the images, balanced by file size.
    #[arg(long)]
    pub shards: usize,
    /// Sequence to predict (BIDS suffix; default FLAIR, or the model's target sequence).
    #[arg(long)]
    pub sequence: Option<String>,
    /// Only images without a consensus label.
    #[arg(long)]
    pub unrated: bool,
    /// Device of each worker (auto: CUDA where the node has it).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// The job folder (work list, scripts, parts, logs), on a file system every node
    /// sees. Default models/cluster/<run> (model-<name> for --model).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub cluster: ClusterOptions,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Job folders (default: every folder under models/cluster with a submission).
    pub dirs: Vec<PathBuf>,
}

pub fn run(db: &Path, args: SlurmArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        SlurmCommand::Submit(SubmitArgs {
            job: SubmitJob::Infer(args),
        }) => submit_infer(db, args),
        SlurmCommand::Submit(SubmitArgs {
            job: SubmitJob::Import(args),
        }) => submit_import(db, args),
        SlurmCommand::Status(args) => status(args),
    }
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("{}: no absolute path", path.display()))
}

/// Plans the inference (reading the store only), with every path absolute so that any
/// node, in any folder, finds the weights and the cache.
fn freeze(db: &Path, args: &SubmitInferArgs) -> anyhow::Result<WorkList> {
    if args.shards == 0 {
        bail!("--shards 0: give at least one shard");
    }
    let store = Store::open(db, Access::ReadOnly)?;
    let mut plan = match &args.model {
        Some(model) => {
            let request = ModelInferRequest {
                model: model.clone(),
                run: args.store_as.clone(),
                sequence: args.sequence.clone(),
                unrated: args.unrated,
                device: args.device.clone(),
                adapt_batchnorm: None,
                network_only: args.network_only,
            };
            let planned = plan_model_inference(&store, &request, &models_dir(), Some(cache_dir()))?;
            // A changed or truncated forest file is refused now, not at the merge.
            planned.model.verified_forest()?;
            InferPlan {
                model_run: Some(planned.run),
                ..planned.plan
            }
        }
        None => {
            let request = InferRequest {
                run: args.run.clone(),
                torchscript: None,
                preset: None,
                task: Task::Usable,
                sequence: args.sequence.clone().unwrap_or_else(|| "FLAIR".into()),
                unrated: args.unrated,
                device: args.device.clone(),
            };
            plan_inference(&store, &request, &runs_dir(), Some(cache_dir()))?
        }
    };
    drop(store);
    plan.model = match &plan.model {
        ModelSource::Run { dir } => ModelSource::Run {
            dir: absolute(dir)?,
        },
        ModelSource::Exported { dir } => ModelSource::Exported {
            dir: absolute(dir)?,
        },
        other => other.clone(),
    };
    plan.cache_dir = plan.cache_dir.as_deref().map(absolute).transpose()?;
    Ok(WorkList::new(plan, args.shards, &absolute(db)?))
}

fn submit_infer(db: &Path, args: SubmitInferArgs) -> anyhow::Result<ExitCode> {
    let list = freeze(db, &args)?;
    let dir = absolute(&args.dir.clone().unwrap_or_else(|| {
        PathBuf::from("models/cluster").join(plain_name(&list.plan.run_id.replace(':', "-")))
    }))?;
    let job = JobFolder {
        worker: Worker::Infer,
        dir: dir.clone(),
        exe: super::cdwqc_binary().context("locating the cdwqc binary")?,
        workdir: std::env::current_dir().context("reading the working folder")?,
        db: absolute(db)?,
        run_id: list.plan.run_id.clone(),
        shards: list.shards,
    };
    check_before_writing(&job, &args.cluster)?;
    let list_path = dir.join(WORK_LIST);
    match WorkList::read(&list_path) {
        Ok(old) if old.plan_hash == list.plan_hash && old.shards == list.shards => {
            println!(
                "{}: the same work list is there already; its parts are kept",
                dir.display()
            );
        }
        Ok(old) => bail!(
            "{} holds the work list of another plan ({} images in {} shards, plan {}): \
             give another --dir or delete that folder",
            dir.display(),
            old.plan.items.len(),
            old.shards,
            &old.plan_hash[..12.min(old.plan_hash.len())]
        ),
        Err(_) => list.write(&list_path)?,
    }
    let bytes: u64 = list.sizes.iter().sum();
    println!(
        "work list {}: {} {} images ({:.1} MB) of run {} in {} shards, plan {}",
        list_path.display(),
        list.plan.items.len(),
        list.plan.sequence,
        bytes as f64 / 1e6,
        list.plan.run_id,
        list.shards,
        &list.plan_hash[..12]
    );
    launch(job, &list.plan_hash, args.cluster)
}

fn submit_import(db: &Path, args: SubmitImportArgs) -> anyhow::Result<ExitCode> {
    if args.shards == 0 {
        bail!("--shards 0: give at least one shard");
    }
    let opts = ImportOptions {
        root: args.folder.clone(),
        include_derivatives: args.include_derivatives,
        force: args.force,
        progress: false,
        iqm: !args.no_iqm,
    };
    let store = Store::open(db, Access::ReadOnly)?;
    let (plan, known) = import::plan(&opts, |root| store.known_files(root))?;
    drop(store);
    let list = ImportWorkList::new(&plan, &known, &opts, args.shards, &absolute(db)?);
    for note in &plan.warnings {
        eprintln!("warning: {}: {}", note.path, note.message);
    }
    let name = plan
        .root
        .file_name()
        .map_or_else(|| "root".to_string(), |n| n.to_string_lossy().into_owned());
    let dir = absolute(&args.dir.clone().unwrap_or_else(|| {
        PathBuf::from("models/cluster").join(format!("import-{}", plain_name(&name)))
    }))?;
    let job = JobFolder {
        worker: Worker::Import,
        dir: dir.clone(),
        exe: super::cdwqc_binary().context("locating the cdwqc binary")?,
        workdir: std::env::current_dir().context("reading the working folder")?,
        db: absolute(db)?,
        run_id: list.root.clone(),
        shards: list.shards,
    };
    check_before_writing(&job, &args.cluster)?;
    let list_path = dir.join(IMPORT_LIST);
    match ImportWorkList::read(&list_path) {
        Ok(old) if old.plan_hash == list.plan_hash && old.shards == list.shards => {
            println!(
                "{}: the same import list is there already; its parts are kept",
                dir.display()
            );
        }
        Ok(old) => bail!(
            "{} holds the import list of another plan ({} files of {} in {} shards, list {}): \
             give another --dir or delete that folder",
            dir.display(),
            old.files.len(),
            old.root,
            old.shards,
            &old.plan_hash[..12.min(old.plan_hash.len())]
        ),
        Err(_) => list.write(&list_path)?,
    }
    let todo: Vec<_> = list
        .files
        .iter()
        .filter(|f| f.state == crate::cluster::import::FileState::Todo)
        .collect();
    let bytes: u64 = todo.iter().map(|f| f.size).sum();
    println!(
        "import list {}: {} of {} files under {} to analyse ({:.1} MB) in {} shards, list {}",
        list_path.display(),
        todo.len(),
        plan.walked.len(),
        list.root,
        bytes as f64 / 1e6,
        list.shards,
        &list.plan_hash[..12]
    );
    launch(job, &list.plan_hash, args.cluster)
}

/// The scripts' resources.
fn slurm_options(cluster: &ClusterOptions) -> SlurmOptions {
    SlurmOptions {
        partition: cluster.partition.clone(),
        time: cluster.time.clone(),
        mem: cluster.mem.clone(),
        gres: cluster.gres.clone(),
        cpus_per_task: cluster.cpus_per_task.unwrap_or(4),
    }
}

/// Refuses, before the job folder is made, what the Slurm scripts could not hold.
fn check_before_writing(job: &JobFolder, cluster: &ClusterOptions) -> anyhow::Result<()> {
    if !cluster.local {
        crate::cluster::slurm::check_script_values(job, &slurm_options(cluster))?;
    }
    Ok(())
}

/// Runs the job's shards here (`--local`) or submits them and their merge to Slurm.
fn launch(job: JobFolder, plan_hash: &str, cluster: ClusterOptions) -> anyhow::Result<ExitCode> {
    if cluster.local {
        return run_local(&job, cluster.jobs, cluster.cpus_per_task);
    }
    let options = slurm_options(&cluster);
    let (array_script, merge_script) = write_scripts(&job, &options)?;
    let array_job = sbatch(&array_script, &[])?;
    let merge_job = sbatch(
        &merge_script,
        &[format!("--dependency=afterok:{array_job}")],
    )?;
    let submitted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Submission {
        run_id: job.run_id.clone(),
        plan_hash: plan_hash.to_string(),
        shards: job.shards,
        array_job: array_job.clone(),
        merge_job: merge_job.clone(),
        store: job.db.display().to_string(),
        submitted_at,
    }
    .write(&job.dir)?;
    println!(
        "submitted array job {array_job} ({} tasks, {}) and merge job {merge_job} (after all succeed)\n\
         follow it: cdwqc slurm status {}",
        job.shards,
        array_script.display(),
        job.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs every shard as a child process (`jobs` at once), then merges. The store is not
/// held while they run.
fn run_local(
    job: &JobFolder,
    jobs: Option<usize>,
    cpus_per_task: Option<usize>,
) -> anyhow::Result<ExitCode> {
    let exe = &job.exe;
    let at_once = jobs.unwrap_or(job.shards).clamp(1, job.shards);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cpus_per_task.unwrap_or(cores / at_once).max(1);
    let logs = job.dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let shards: Vec<usize> = (0..job.shards).collect();
    let worker = job.worker.name();
    for wave in shards.chunks(at_once) {
        let mut children = Vec::new();
        for &index in wave {
            let shard = Shard {
                index,
                count: job.shards,
            };
            let log_path = logs.join(format!("{worker}-local-{index}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let err = log
                .try_clone()
                .with_context(|| format!("opening {}", log_path.display()))?;
            let mut command = Command::new(exe);
            command
                .arg(worker)
                .arg("--shard")
                .arg(shard.to_string())
                .arg("--work-list")
                .arg(job.dir.join(job.worker.list_name()));
            match job.worker {
                Worker::Infer => {
                    command.arg("--threads").arg(threads.to_string());
                }
                Worker::Import => {
                    command.env("RAYON_NUM_THREADS", threads.to_string());
                }
            }
            let child = command
                .env_remove(ARRAY_TASK_ENV)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(err)
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?;
            children.push((shard, child, log_path));
        }
        for (shard, mut child, log_path) in children {
            let status = child
                .wait()
                .with_context(|| format!("waiting for shard {shard}"))?;
            if !status.success() {
                failed.push(format!(
                    "shard {shard} ({status}; see {})",
                    log_path.display()
                ));
            }
        }
    }
    let shards_seconds = started.elapsed().as_secs_f64();
    println!(
        "{} shards ({} at once, {} threads each) in {:.2} s",
        job.shards, at_once, threads, shards_seconds
    );
    if !failed.is_empty() {
        bail!(
            "nothing merged: {} failed:\n  {}",
            if failed.len() == 1 {
                "a shard"
            } else {
                "shards"
            },
            failed.join("\n  ")
        );
    }
    let merging = std::time::Instant::now();
    let mut store = Store::open(&job.db, Access::ReadWrite)?;
    let line = super::merge::merge_folder(&mut store, &job.dir)?;
    println!("{line} in {:.2} s", merging.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let dirs = if args.dirs.is_empty() {
        let root = Path::new("models/cluster");
        let mut found: Vec<PathBuf> = std::fs::read_dir(root)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.join(SUBMISSION).is_file())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        if found.is_empty() {
            println!("no submitted job under {}", root.display());
        }
        found
    } else {
        args.dirs
    };
    for dir in dirs {
        let submission = Submission::read(&dir)?;
        let written = parts_present(&dir, submission.shards)
            .values()
            .filter(|&&w| w)
            .count();
        println!(
            "{} (run {}, plan {}): {written}/{} parts written",
            dir.display(),
            submission.run_id,
            &submission.plan_hash[..12.min(submission.plan_hash.len())],
            submission.shards
        );
        for (what, job) in [
            ("array", &submission.array_job),
            ("merge", &submission.merge_job),
        ] {
            let states = job_states(job);
            if states.is_empty() {
                println!("  {what} job {job}: no longer known to Slurm (finished)");
            }
            for state in states {
                println!("  {what} job {}: {}", state.job, state.state);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The worker: predicts one shard of a work list and publishes its part. Opens no store.
pub fn run_shard_command(
    work_list: &Path,
    shard: &str,
    threads: Option<i32>,
) -> anyhow::Result<ExitCode> {
    let threads = threads
        .or_else(|| {
            std::env::var("SLURM_CPUS_PER_TASK")
                .ok()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as i32));
    tch::set_num_threads(threads.max(1));
    let (shard, cancel) = worker_start(shard)?;
    let outcome = run_shard(work_list, shard, &cancel, &mut |event| match event {
        JobEvent::ItemFailed { id, error } => eprintln!("image {id}: {error}"),
        JobEvent::ItemNotRegistered { id, reason } => {
            eprintln!("image {id}: stored as reject: {reason}")
        }
        _ => {}
    })?;
    let m = &outcome.manifest;
    println!(
        "shard {shard} of run {}: {} images predicted ({} failed) in {:.1} s on {} -> {}",
        m.run_id,
        m.rows,
        m.failed,
        m.seconds,
        if m.host.is_empty() {
            "?"
        } else {
            m.host.as_str()
        },
        outcome.part.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The worker of a sharded import: analyses one shard of an import list and publishes
/// its part. Opens no store.
pub fn run_import_shard_command(work_list: &Path, shard: &str) -> anyhow::Result<ExitCode> {
    let (shard, cancel) = worker_start(shard)?;
    let outcome = run_import_shard(work_list, shard, &cancel)?;
    for failure in &outcome.failures {
        eprintln!("{failure}");
    }
    let m = &outcome.manifest;
    println!(
        "import shard {shard} of {}: {} files ({} imported, {} failed, {} unchanged) in {:.1} s on {} -> {}",
        m.root,
        m.rows,
        m.imported,
        m.failed,
        m.unchanged,
        m.seconds,
        if m.host.is_empty() {
            "?"
        } else {
            m.host.as_str()
        },
        outcome.part.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A worker's shard (K from `$SLURM_ARRAY_TASK_ID` when the flag gives only `/N`) and its
/// cancel flag: the first Ctrl-C stops it with no part published, the second at once.
fn worker_start(shard: &str) -> anyhow::Result<(Shard, Arc<AtomicBool>)> {
    let task = std::env::var(ARRAY_TASK_ENV).ok();
    let shard = Shard::parse(shard, task.as_deref()).map_err(anyhow::Error::msg)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: this shard publishes no part");
    })
    .context("installing the Ctrl-C handler")?;
    Ok((shard, cancel))
}
