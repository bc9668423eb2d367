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
    pub dir: PathBuf,
    pub exe: PathBuf,
    pub workdir: PathBuf,
    pub db: PathBuf,
    pub run_id: String,
    pub shards: usize,
}

/// The array script's and the merge script's file names in the job folder.
pub const ARRAY_SCRIPT: &str = "infer.sbatch";
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

/// The array job: task K predicts shard K/N and publishes its part in the folder.
pub fn array_script(job: &JobFolder, options: &SlurmOptions) -> String {
    let last = job.shards.saturating_sub(1);
    let example = Shard {
        index: 0,
        count: job.shards,
    };
    format!(
        "#!/bin/bash\n\
         # cdwqc: predict run {run} in {n} shards. Array task K writes {part}\n\
         # (shard K of {n}) and its manifest line into this folder, then the merge job\n\
         # loads every part into the store. A failed task: `sbatch --array=K {array}`\n\
         # here, then `cdwqc --db {db} merge {dir}`.\n\
         #SBATCH --job-name=cdwqc-infer-{run}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --chdir={workdir}\n\
         #SBATCH --output={dir}/logs/infer-%A_%a.log\n\
         {resources}\
         set -euo pipefail\n\
         exec {exe} infer \\\n    --shard \"${{SLURM_ARRAY_TASK_ID}}/{n}\" \\\n    --work-list {list} \\\n    --threads \"${{SLURM_CPUS_PER_TASK:-1}}\"\n",
        run = job.run_id,
        n = job.shards,
        part = example.part_name().replace("00000", "K"),
        array = ARRAY_SCRIPT,
        db = shown(&job.db),
        dir = job.dir.display(),
        workdir = job.workdir.display(),
        resources = resources(options),
        exe = shown(&job.exe),
        list = shown(&job.dir.join(WORK_LIST)),
    )
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
         # cdwqc: check the {n} parts of run {run} here and load them into the store,\n\
         # all in one transaction or nothing. Submitted to start after every array task\n\
         # succeeded (--dependency=afterok).\n\
         #SBATCH --job-name=cdwqc-merge-{run}\n\
         #SBATCH --chdir={workdir}\n\
         #SBATCH --output={dir}/logs/merge-%j.log\n\
         {resources}\
         set -euo pipefail\n\
         exec {exe} --db {db} merge {dir_quoted}\n",
        run = job.run_id,
        n = job.shards,
        workdir = job.workdir.display(),
        dir = job.dir.display(),
        resources = resources(&merge),
        exe = shown(&job.exe),
        db = shown(&job.db),
        dir_quoted = shown(&job.dir),
    )
}

/// Writes both scripts (readable, executable) into the job folder; returns their paths.
pub fn write_scripts(
    job: &JobFolder,
    options: &SlurmOptions,
) -> Result<(PathBuf, PathBuf), ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    let logs = job.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(io(&logs))?;
    let mut paths = Vec::new();
    for (name, text) in [
        (ARRAY_SCRIPT, array_script(job, options)),
        (MERGE_SCRIPT, merge_script(job, options)),
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
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
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
