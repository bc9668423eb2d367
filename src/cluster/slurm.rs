//! Slurm: the `sbatch` scripts of a sharded job (an array of workers and a merge that
//! waits for them all), their submission, and the jobs' states as Slurm reports them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{ClusterError, Shard, WORK_LIST, invalid, io, publish};

/// Resources each array task asks for; `None` leaves Slurm's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    pub time: Option<String>,
    pub mem: Option<String>,
    pub gres: Option<String>,
    pub cpus_per_task: usize,
}

/// Where a sharded job runs from: absolute paths, as the cluster's nodes see them
/// (the folder, the binary and the store must be on a shared file system).
#[derive(Debug, Clone, PartialEq)]
pub struct JobFolder {
    pub worker: Worker,
    pub dir: PathBuf,
    pub exe: PathBuf,
    pub workdir: PathBuf,
    pub db: PathBuf,
    /// What the job is about: a run's id, or the imported folder.
    pub run_id: String,
    pub shards: usize,
}

/// What the array's tasks do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// `cdwqc infer --shard`: predictions of a run.
    Infer,
    /// `cdwqc import --shard`: image rows, previews and quality metrics of a folder.
    Import,
}

impl Worker {
    /// The subcommand, and the stem of the array script's and logs' names.
    pub fn name(self) -> &'static str {
        match self {
            Self::Infer => "infer",
            Self::Import => "import",
        }
    }

    /// The work list's file name in the job folder.
    pub fn list_name(self) -> &'static str {
        match self {
            Self::Infer => WORK_LIST,
            Self::Import => super::import::IMPORT_LIST,
        }
    }

    /// The array script's file name in the job folder.
    pub fn script_name(self) -> String {
        format!("{}.sbatch", self.name())
    }

    fn what(self, job: &JobFolder) -> String {
        match self {
            Self::Infer => format!("predict run {}", job.run_id),
            Self::Import => format!("import {}", job.run_id),
        }
    }

    /// The task's command after the binary. Import threads are rayon's, inference
    /// threads libtorch's: both from the cores Slurm gave the task.
    fn command(self, list: &str, shards: usize) -> String {
        let shard =
            format!("    --shard \"${{SLURM_ARRAY_TASK_ID}}/{shards}\" \\\n    --work-list {list}");
        match self {
            Self::Infer => {
                format!("infer \\\n{shard} \\\n    --threads \"${{SLURM_CPUS_PER_TASK:-1}}\"\n")
            }
            Self::Import => format!("import \\\n{shard}\n"),
        }
    }
}

/// The merge script's file name in the job folder.
pub const MERGE_SCRIPT: &str = "merge.sbatch";
/// What `slurm submit` records of the jobs it submitted.
pub const SUBMISSION: &str = "submission.json";

/// Quotes a word for bash.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn shown(path: &Path) -> String {
    quote(&path.display().to_string())
}

fn resources(options: &SlurmOptions) -> String {
    let mut lines = format!("#SBATCH --cpus-per-task={}\n", options.cpus_per_task.max(1));
    for (flag, value) in [
        ("partition", &options.partition),
        ("time", &options.time),
        ("mem", &options.mem),
        ("gres", &options.gres),
    ] {
        if let Some(value) = value {
            lines.push_str(&format!("#SBATCH --{flag}={value}\n"));
        }
    }
    lines
}

/// The array job: task K works on shard K/N and publishes its part in the folder.
pub fn array_script(job: &JobFolder, options: &SlurmOptions) -> String {
    let last = job.shards.saturating_sub(1);
    let example = Shard {
        index: 0,
        count: job.shards,
    };
    let part = match job.worker {
        Worker::Infer => example.part_name(),
        Worker::Import => super::import::part_name(example),
    };
    let threads = match job.worker {
        Worker::Infer => "",
        Worker::Import => "export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n",
    };
    format!(
        "#!/bin/bash\n\
         # cdwqc: {what} in {n} shards. Array task K writes {part}\n\
         # (shard K of {n}) and its manifest line into this folder, then the merge job\n\
         # loads every part into the store. A failed task: `sbatch --array=K {array}`\n\
         # here, then `cdwqc --db {db} merge {dir}`.\n\
         #SBATCH --job-name=cdwqc-{worker}-{name}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --chdir={workdir}\n\
         #SBATCH --output={dir}/logs/{worker}-%A_%a.log\n\
         {resources}\
         set -euo pipefail\n\
         {threads}\
         exec {exe} {command}",
        what = job.worker.what(job),
        worker = job.worker.name(),
        name = job_name(&job.run_id),
        n = job.shards,
        part = part.replace("00000", "K"),
        array = job.worker.script_name(),
        db = shown(&job.db),
        dir = job.dir.display(),
        workdir = job.workdir.display(),
        resources = resources(options),
        exe = shown(&job.exe),
        command = job
            .worker
            .command(&shown(&job.dir.join(job.worker.list_name())), job.shards),
    )
}

/// A job name Slurm shows whole: the last path component, plain characters only.
fn job_name(label: &str) -> String {
    let last = label.rsplit('/').find(|s| !s.is_empty()).unwrap_or(label);
    plain_name(last)
}

/// `label` with every character but ASCII letters, digits, `-`, `_` and `.` made `_`:
/// what Slurm shows whole, and what an `#SBATCH` line holds as one word.
pub fn plain_name(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The merge job: checks every part and loads them into the store in one transaction.
pub fn merge_script(job: &JobFolder, options: &SlurmOptions) -> String {
    let merge = SlurmOptions {
        cpus_per_task: 1,
        gres: None,
        ..options.clone()
    };
    format!(
        "#!/bin/bash\n\
         # cdwqc: check the {n} parts ({what}) here and load them into the store,\n\
         # all in one transaction or nothing. Submitted to start after every array task\n\
         # succeeded (--dependency=afterok).\n\
         #SBATCH --job-name=cdwqc-merge-{run}\n\
         #SBATCH --chdir={workdir}\n\
         #SBATCH --output={dir}/logs/merge-%j.log\n\
         {resources}\
         set -euo pipefail\n\
         exec {exe} --db {db} merge {dir_quoted}\n",
        what = job.worker.what(job),
        run = job_name(&job.run_id),
        n = job.shards,
        workdir = job.workdir.display(),
        dir = job.dir.display(),
        resources = resources(&merge),
        exe = shown(&job.exe),
        db = shown(&job.db),
        dir_quoted = shown(&job.dir),
    )
}

/// Refuses what the scripts cannot hold as given. A line break (or another control
/// character) in a run id, a path or an option would end a comment or an `#SBATCH` line
/// and start a shell command; `#SBATCH` lines are not shell words, so the paths and
/// options written there unquoted cannot hold white space either.
pub fn check_script_values(job: &JobFolder, options: &SlurmOptions) -> Result<(), ClusterError> {
    let refuse = |what: &str, value: &str, why: &str| {
        invalid(
            &job.dir,
            format!("{what} {value:?} {why}: the Slurm scripts cannot hold it"),
        )
    };
    let control = |what: &str, value: &str| {
        if value.chars().any(char::is_control) {
            return Err(refuse(
                what,
                value,
                "holds a line break or control character",
            ));
        }
        Ok(())
    };
    let word = |what: &str, value: &str| {
        control(what, value)?;
        if value.chars().any(char::is_whitespace) {
            return Err(refuse(what, value, "holds white space"));
        }
        Ok(())
    };
    control("the run", &job.run_id)?;
    control("the store's path", &job.db.display().to_string())?;
    control("the binary's path", &job.exe.display().to_string())?;
    word("the job folder", &job.dir.display().to_string())?;
    word("the working folder", &job.workdir.display().to_string())?;
    for (flag, value) in [
        ("--partition", &options.partition),
        ("--time", &options.time),
        ("--mem", &options.mem),
        ("--gres", &options.gres),
    ] {
        if let Some(value) = value {
            word(flag, value)?;
        }
    }
    Ok(())
}

/// Writes both scripts (readable, executable) into the job folder; returns their paths.
pub fn write_scripts(
    job: &JobFolder,
    options: &SlurmOptions,
) -> Result<(PathBuf, PathBuf), ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    check_script_values(job, options)?;
    let logs = job.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io(&logs))?;
    let mut paths = Vec::new();
    for (name, text) in [
        (job.worker.script_name(), array_script(job, options)),
        (MERGE_SCRIPT.to_string(), merge_script(job, options)),
    ] {
        let path = job.dir.join(name);
        publish(&path, |temp| {
            std::fs::write(temp, &text).map_err(io(temp))?;
            std::fs::set_permissions(temp, std::fs::Permissions::from_mode(0o755)).map_err(io(temp))
        })?;
        paths.push(path);
    }
    Ok((paths[0].clone(), paths[1].clone()))
}

/// Submits a script with `sbatch --parsable` (and `extra` options); returns the job id.
pub fn sbatch(script: &Path, extra: &[String]) -> Result<String, ClusterError> {
    let output = Command::new("sbatch")
        .arg("--parsable")
        .args(extra)
        .arg(script)
        .output()
        .map_err(|e| {
            invalid(
                script,
                format!("sbatch did not start ({e}): is this a Slurm login node?"),
            )
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    let id = text
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if !output.status.success() || id.is_empty() {
        return Err(invalid(
            script,
            format!(
                "sbatch refused it: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    Ok(id)
}

/// The jobs a submission made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub run_id: String,
    pub plan_hash: String,
    pub shards: usize,
    pub array_job: String,
    pub merge_job: String,
    pub store: String,
    /// Seconds since the Unix epoch.
    pub submitted_at: u64,
}

impl Submission {
    pub fn write(&self, dir: &Path) -> Result<(), ClusterError> {
        let path = dir.join(SUBMISSION);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| invalid(&path, format!("does not serialize: {e}")))?;
        publish(&path, |temp| std::fs::write(temp, text).map_err(io(temp)))
    }

    pub fn read(dir: &Path) -> Result<Self, ClusterError> {
        let path = dir.join(SUBMISSION);
        let text = crate::regular::read_text(&path, 1 << 20).map_err(io(&path))?;
        serde_json::from_str(&text).map_err(|e| invalid(&path, format!("not a submission: {e}")))
    }
}

/// One job's (or array task's) state: `PENDING`, `RUNNING`, `COMPLETED`, `FAILED`...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub job: String,
    pub state: String,
}

/// What Slurm says of a job and its array tasks: `sacct` where accounting is kept, else
/// `squeue` while it is queued or running, else `scontrol` while the controller still
/// remembers it. Empty when none knows it any more.
pub fn job_states(job: &str) -> Vec<JobState> {
    let sacct = run_lines("sacct", &["-n", "-P", "-X", "-j", job, "-o", "JobID,State"]);
    if let Some(lines) = sacct.filter(|l| !l.is_empty()) {
        return parse_pairs(&lines, '|');
    }
    if let Some(lines) =
        run_lines("squeue", &["-h", "-r", "-j", job, "-o", "%i|%T"]).filter(|l| !l.is_empty())
    {
        return parse_pairs(&lines, '|');
    }
    run_lines("scontrol", &["-o", "show", "job", job])
        .unwrap_or_default()
        .iter()
        .filter_map(|line| {
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .map(str::to_string)
            };
            let state = field("JobState=")?;
            let id = match (field("ArrayJobId="), field("ArrayTaskId=")) {
                (Some(a), Some(t)) => format!("{a}_{t}"),
                _ => field("JobId=")?,
            };
            Some(JobState { job: id, state })
        })
        .collect()
}

fn run_lines(program: &str, args: &[&str]) -> Option<Vec<String>> {
    let output = Command::new(program).args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect(),
    )
}

fn parse_pairs(lines: &[String], separator: char) -> Vec<JobState> {
    lines
        .iter()
        .filter_map(|l| {
            let (job, state) = l.split_once(separator)?;
            Some(JobState {
                job: job.to_string(),
                state: state.split_whitespace().next().unwrap_or(state).to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobFolder {
        JobFolder {
            worker: Worker::Infer,
            dir: PathBuf::from("/shared/cdwqc/models/cluster/u1"),
            exe: PathBuf::from("/shared/bin/cdwqc"),
            workdir: PathBuf::from("/shared/cdwqc"),
            db: PathBuf::from("/shared/cdwqc/it's.duckdb"),
            run_id: "u1".into(),
            shards: 4,
        }
    }

    #[test]
    fn scripts_ask_one_option_a_line_and_quote_paths() {
        let options = SlurmOptions {
            partition: Some("gpu".into()),
            time: Some("02:00:00".into()),
            mem: Some("16G".into()),
            gres: Some("gpu:1".into()),
            cpus_per_task: 8,
        };
        let array = array_script(&job(), &options);
        for line in [
            "#SBATCH --array=0-3\n",
            "#SBATCH --partition=gpu\n",
            "#SBATCH --time=02:00:00\n",
            "#SBATCH --mem=16G\n",
            "#SBATCH --gres=gpu:1\n",
            "#SBATCH --cpus-per-task=8\n",
            "--shard \"${SLURM_ARRAY_TASK_ID}/4\"",
            "--work-list '/shared/cdwqc/models/cluster/u1/work-list.parquet'",
        ] {
            assert!(array.contains(line), "{line:?} not in\n{array}");
        }
        let merge = merge_script(&job(), &options);
        assert!(
            merge.contains("--db '/shared/cdwqc/it'\\''s.duckdb' merge"),
            "{merge}"
        );
        assert!(
            !merge.contains("--gres"),
            "the merge needs no GPU:\n{merge}"
        );
        assert!(!merge.contains("--array"), "{merge}");
    }

    #[test]
    fn values_that_would_end_a_script_line_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = JobFolder {
            dir: dir.path().join("job"),
            ..job()
        };
        let injected = "x\ntouch PWNED";
        let options = SlurmOptions::default();
        let cases = [
            (
                JobFolder {
                    run_id: injected.into(),
                    ..base.clone()
                },
                options.clone(),
            ),
            (
                JobFolder {
                    db: PathBuf::from("/s/a\rb.duckdb"),
                    ..base.clone()
                },
                options.clone(),
            ),
            (
                JobFolder {
                    workdir: PathBuf::from("/shared/my work"),
                    ..base.clone()
                },
                options.clone(),
            ),
            (
                JobFolder {
                    dir: dir.path().join("job 2"),
                    ..base.clone()
                },
                options.clone(),
            ),
            (
                base.clone(),
                SlurmOptions {
                    partition: Some(format!("gpu\n{injected}")),
                    ..options.clone()
                },
            ),
            (
                base.clone(),
                SlurmOptions {
                    mem: Some("16G --wrap=x".into()),
                    ..options.clone()
                },
            ),
        ];
        for (job, options) in &cases {
            let e = write_scripts(job, options).expect_err("refused");
            assert!(e.to_string().contains("cannot hold it"), "{e}");
            assert!(!job.dir.exists(), "nothing written for {job:?}");
        }
        // A run named after a folder with spaces is fine: it only reaches comments.
        let spaced = JobFolder {
            run_id: "/data/warehouse one/".into(),
            ..base
        };
        write_scripts(&spaced, &options).expect("written");
    }

    #[test]
    fn an_import_array_runs_import_shards_on_the_cores_it_asked_for() {
        let job = JobFolder {
            worker: Worker::Import,
            run_id: "/data/warehouse one/".into(),
            ..job()
        };
        let options = SlurmOptions {
            cpus_per_task: 2,
            ..SlurmOptions::default()
        };
        let array = array_script(&job, &options);
        for line in [
            "#SBATCH --job-name=cdwqc-import-warehouse_one\n",
            "#SBATCH --output=/shared/cdwqc/models/cluster/u1/logs/import-%A_%a.log\n",
            "export RAYON_NUM_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"\n",
            "import \\\n    --shard \"${SLURM_ARRAY_TASK_ID}/4\"",
            "--work-list '/shared/cdwqc/models/cluster/u1/import-list.parquet'\n",
            "import-part-K-of-00004.parquet",
        ] {
            assert!(array.contains(line), "{line:?} not in\n{array}");
        }
        assert!(!array.contains("--threads"), "{array}");
        assert_eq!(job.worker.script_name(), "import.sbatch");
    }

    #[test]
    fn states_parse_from_sacct_and_squeue_lines() {
        let lines = vec![
            "12_0|COMPLETED".to_string(),
            "12_1|CANCELLED by 0".to_string(),
        ];
        assert_eq!(
            parse_pairs(&lines, '|'),
            [
                JobState {
                    job: "12_0".into(),
                    state: "COMPLETED".into()
                },
                JobState {
                    job: "12_1".into(),
                    state: "CANCELLED".into()
                }
            ]
        );
    }
}
