//! `cdwqc iqm`: MRIQC's image quality metrics for a stored warehouse, for files, and
//! their export as MRIQC group tables.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use rayon::prelude::*;
use serde::Serialize;

use crate::imaging::iqm::{self, COLUMNS, Contrast, IQM_VERSION, MRIQC_ONLY_COLUMNS, Masks};
use crate::imaging::{Volume, bids, load_volume, nifti, stats};
use crate::import::analyse::iqm_row;
use crate::store::iqms::{IqmRow, PendingIqm};
use crate::store::{Access, Store};
use crate::synth::nifti_writer::{NiftiImage, StoredType, write_nifti_gz};

#[derive(Debug, clap::Args)]
pub struct IqmArgs {
    /// Measure these files instead of the store (one JSON object per line).
    #[arg(long = "file", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// With --file: also write each image's masks (NIfTI) and metrics (JSON) into a
    /// folder of its own under this one.
    #[arg(long)]
    pub masks: Option<PathBuf>,
    /// With --file: the contrast (T1w, T2w or FLAIR) instead of the one the file name
    /// says.
    #[arg(long)]
    pub contrast: Option<String>,
    /// Write MRIQC group tables (group_T1w.tsv, group_FLAIR.tsv, ...) of the stored
    /// metrics into this folder instead of computing any.
    #[arg(long)]
    pub export: Option<PathBuf>,
    /// Recompute every stored image, not only those without current metrics.
    #[arg(long)]
    pub force: bool,
    /// Synthetic heads of the reference test, by name (`all` for every one).
    #[arg(long, hide = true)]
    pub phantom: Vec<String>,
}

pub fn run(db: &Path, args: IqmArgs) -> anyhow::Result<ExitCode> {
    crate::memory::retain_freed_memory();
    if !args.files.is_empty() || !args.phantom.is_empty() {
        return measure_files(&args);
    }
    if let Some(dir) = &args.export {
        return export(db, dir);
    }
    measure_store(db, args.force)
}

#[derive(Serialize)]
struct FileResult {
    name: String,
    source: String,
    contrast: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wm_median: Option<f64>,
    /// Time spent on masks, tissue split and metrics (reading the file excluded).
    #[serde(skip_serializing_if = "Option::is_none")]
    seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iqms: Option<BTreeMap<&'static str, Option<f64>>>,
}

fn parse_contrast(text: &str) -> anyhow::Result<Contrast> {
    match text.to_ascii_lowercase().as_str() {
        "t1w" => Ok(Contrast::T1w),
        "t2w" => Ok(Contrast::T2w),
        "flair" => Ok(Contrast::Flair),
        other => anyhow::bail!("unknown contrast {other:?}: use T1w, T2w or FLAIR"),
    }
}

/// A file given on the command line: its name, path, and the volume with its contrast.
type MeasuredFile = (String, String, anyhow::Result<(Volume, Contrast)>);

fn measure_files(args: &IqmArgs) -> anyhow::Result<ExitCode> {
    let forced = args.contrast.as_deref().map(parse_contrast).transpose()?;
    let mut cases: Vec<MeasuredFile> = Vec::new();
    for path in &args.files {
        let name = bids::stem(path);
        let loaded = load_volume(path).map_err(anyhow::Error::from).map(|v| {
            let contrast = forced
                .unwrap_or_else(|| Contrast::from_suffix(bids::parse(path).suffix.as_deref()));
            (v, contrast)
        });
        cases.push((name, path.display().to_string(), loaded));
    }
    let wanted: Vec<&str> = if args.phantom.iter().any(|p| p == "all") {
        iqm::PHANTOMS.to_vec()
    } else {
        args.phantom.iter().map(String::as_str).collect()
    };
    for name in wanted {
        let made = iqm::phantom(name)
            .with_context(|| format!("no phantom {name:?}; known: {:?}", iqm::PHANTOMS));
        cases.push((format!("phantom_{name}"), format!("phantom:{name}"), made));
    }
    let folders = case_folders(cases.iter().map(|(name, _, _)| name.as_str()));
    let mut failed = false;
    let stdout = std::io::stdout();
    for ((_, source, loaded), name) in cases.into_iter().zip(folders) {
        let mut result = FileResult {
            name: name.clone(),
            source,
            contrast: None,
            error: None,
            wm_median: None,
            seconds: None,
            iqms: None,
        };
        match loaded {
            Err(e) => {
                result.error = Some(format!("{e:#}"));
                failed = true;
            }
            Ok((volume, contrast)) => {
                result.contrast = Some(contrast.name());
                let started = std::time::Instant::now();
                // The masks at full resolution only when they are to be written; else
                // import's step, which gives the same values without them.
                let outcome = match &args.masks {
                    Some(_) => {
                        let image = iqm::sanitised(&volume.data);
                        iqm::masks(&image, volume.dims, volume.voxel_size, contrast).and_then(|m| {
                            let q = iqm::measure(&image, volume.voxel_size, &m)?;
                            Ok((Some((m, image)), q))
                        })
                    }
                    None => iqm::compute(&volume, contrast).map(|q| (None, q)),
                };
                match outcome {
                    Err(e) => {
                        result.error = Some(e.to_string());
                        failed = true;
                    }
                    Ok((masks, metrics)) => {
                        result.seconds = Some(started.elapsed().as_secs_f64());
                        result.wm_median = Some(metrics.wm_median);
                        result.iqms = Some(
                            metrics
                                .named()
                                .map(|(k, v)| (k, v.is_finite().then_some(v)))
                                .collect(),
                        );
                        if let (Some(root), Some((masks, image))) = (&args.masks, &masks) {
                            let dir = root.join(&name);
                            write_case(&dir, &volume, image, masks)?;
                            let json = serde_json::to_string_pretty(&result)?;
                            crate::replace::replace(
                                &dir.join("iqms.json"),
                                json.as_bytes(),
                                crate::replace::Durability::None,
                            )?;
                        }
                    }
                }
            }
        }
        let mut out = stdout.lock();
        writeln!(out, "{}", serde_json::to_string(&result)?)?;
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Each case's name, used as its folder under `--masks`: a file's stem, unless that
/// would leave the folder (`..`, `.`, an empty stem: files named `...nii` or `.nii`) or
/// share another case's folder (`a/x.nii` and `b/x.nii`), when it is numbered.
fn case_folders<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut taken = std::collections::HashSet::new();
    names
        .enumerate()
        .map(|(index, name)| {
            let safe = !matches!(name, "" | "." | "..") && !name.contains('/');
            let base = if safe {
                name.to_string()
            } else {
                format!("file-{}", index + 1)
            };
            let mut folder = base.clone();
            let mut n = 1;
            while !taken.insert(folder.clone()) {
                n += 1;
                folder = format!("{base}-{n}");
            }
            folder
        })
        .collect()
}

/// The measured image and its masks, as NIfTI files MRIQC's functions can read.
fn write_case(dir: &Path, volume: &Volume, image: &[f32], masks: &Masks) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let write = |file: &str, data: &[f32], stored: StoredType| -> anyhow::Result<()> {
        let nifti = NiftiImage {
            dims: volume.dims,
            data,
            affine: volume.affine,
            stored,
            scl_slope: 1.0,
            scl_inter: 0.0,
            intent_code: 0,
            description: "cdwqc iqm",
        };
        let path = dir.join(file);
        write_nifti_gz(&path, &nifti).with_context(|| format!("writing {}", path.display()))
    };
    let as_f32 = |m: &[u8]| m.iter().map(|&v| f32::from(v)).collect::<Vec<f32>>();
    write("image.nii.gz", image, StoredType::Float32)?;
    write("head.nii.gz", &as_f32(&masks.head), StoredType::Uint16)?;
    write("air.nii.gz", &as_f32(&masks.air), StoredType::Uint16)?;
    write(
        "artefact.nii.gz",
        &as_f32(&masks.artefact),
        StoredType::Uint16,
    )?;
    write(
        "rotation.nii.gz",
        &as_f32(&masks.rotation),
        StoredType::Uint16,
    )?;
    write("tissue.nii.gz", &as_f32(&masks.tissue), StoredType::Uint16)?;
    write("bias.nii.gz", &masks.bias, StoredType::Float32)?;
    Ok(())
}

#[derive(Serialize)]
struct StoreSummary {
    measured: usize,
    failed: usize,
    interrupted: bool,
    seconds: f64,
    failures: Vec<(String, String)>,
}

fn measure_store(db: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let started = std::time::Instant::now();
    let mut store = Store::open(db, Access::ReadWrite)?;
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: committing what is done (Ctrl-C again to quit at once)");
    })
    .context("installing the Ctrl-C handler")?;
    let pending = store.pending_iqms(force)?;
    let mut summary = StoreSummary {
        measured: 0,
        failed: 0,
        interrupted: false,
        seconds: 0.0,
        failures: Vec::new(),
    };
    // Batches small enough that an interruption loses little, large enough to use
    // every core.
    for chunk in pending.chunks(32) {
        if cancel.load(Ordering::Relaxed) {
            summary.interrupted = true;
            break;
        }
        // Metrics are stored under the content the store describes: a file changed
        // since import would put another image's metrics there. It is left as stored
        // (its metrics, if any, kept) and named, until `cdwqc import` reads it again.
        let mut current = Vec::with_capacity(chunk.len());
        for image in chunk {
            // A file that cannot be read gets its row saying so, as before.
            let path = Path::new(&image.path);
            match image.stamp.changed(path).filter(|_| path.exists()) {
                Some(why) => {
                    summary.failed += 1;
                    summary.failures.push((image.path.clone(), why));
                }
                None => current.push(image),
            }
        }
        let rows: Vec<(PendingIqm, IqmRow)> = current
            .par_iter()
            .map(|image| (PendingIqm::clone(image), measure_stored(image)))
            .collect();
        for (image, row) in &rows {
            match &row.error {
                Some(e) => {
                    summary.failed += 1;
                    summary.failures.push((image.path.clone(), e.clone()));
                }
                None => summary.measured += 1,
            }
        }
        store.write_iqms(&rows)?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    println!(
        "{} images measured, {} without metrics ({:.1} s){}",
        summary.measured,
        summary.failed,
        summary.seconds,
        if summary.interrupted {
            "; interrupted: run again to finish"
        } else {
            ""
        }
    );
    for (path, reason) in &summary.failures {
        println!("  {path}: {reason}");
    }
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// Metrics of a stored image, read again from its file; a file that cannot be read
/// (or changed since import) gets a row that says so rather than stopping the run.
fn measure_stored(image: &PendingIqm) -> IqmRow {
    let contrast = Contrast::from_suffix(image.suffix.as_deref());
    let outcome = std::panic::catch_unwind(|| match nifti::decode_file(Path::new(&image.path)) {
        Ok(decoded) => {
            // One pass for what the header and the values establish spares the step
            // its own tests of the values, as at import.
            let (nonfinite, range) = stats::finite_range(&decoded.data);
            let known = iqm::Known::of_header(&decoded.header, nonfinite, range);
            let volume = Volume::from_decoded(decoded);
            iqm_row(&volume, image.suffix.as_deref(), known)
        }
        Err(e) => IqmRow {
            contrast: contrast.name().to_string(),
            values: None,
            error: Some(format!("cannot read: {}", e.reason())),
            seconds: 0.0,
        },
    });
    outcome.unwrap_or_else(|payload| IqmRow {
        contrast: contrast.name().to_string(),
        values: None,
        error: Some(format!(
            "internal error while measuring ({})",
            crate::import::analyse::panic_message(payload.as_ref())
        )),
        seconds: 0.0,
    })
}

/// One MRIQC group table per sequence: `bids_name`, then every IQM column in name
/// order, as MRIQC writes them; what cdwqc does not compute is `n/a`.
fn export(db: &Path, dir: &Path) -> anyhow::Result<ExitCode> {
    let store = Store::open(db, Access::ReadOnly)?;
    let rows = store.iqm_export_rows()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut header: Vec<&str> = COLUMNS.iter().chain(MRIQC_ONLY_COLUMNS).copied().collect();
    header.sort_unstable();
    let mut by_suffix: BTreeMap<String, Vec<&crate::store::iqms::IqmExportRow>> = BTreeMap::new();
    for row in &rows {
        by_suffix.entry(row.suffix.clone()).or_default().push(row);
    }
    for (suffix, rows) in &by_suffix {
        let safe: String = suffix
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let path = dir.join(format!("group_{safe}.tsv"));
        let mut text = String::from("bids_name");
        for h in &header {
            text.push('\t');
            text.push_str(h);
        }
        text.push('\n');
        let mut named: Vec<(String, &crate::store::iqms::IqmExportRow)> = rows
            .iter()
            .map(|r| (bids::stem(Path::new(&r.path)), *r))
            .collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, row) in named {
            text.push_str(&name);
            for h in &header {
                text.push('\t');
                match COLUMNS.iter().position(|c| c == h) {
                    Some(i) => match row.values[i] {
                        Some(v) => text.push_str(&format_value(h, v)),
                        None => text.push_str("n/a"),
                    },
                    None => text.push_str("n/a"),
                }
            }
            text.push('\n');
        }
        crate::query::write_file(&path, db, text.as_bytes())?;
        println!("{}: {} images", path.display(), rows.len());
    }
    if by_suffix.is_empty() {
        println!("no metrics of version {IQM_VERSION} stored: run `cdwqc iqm` first");
    }
    Ok(ExitCode::SUCCESS)
}

/// Counts and sizes print as integers, the rest as the shortest exact decimal.
fn format_value(column: &str, v: f64) -> String {
    if column.starts_with("size_") && v.fract() == 0.0 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::case_folders;

    #[test]
    fn case_folders_stay_inside_and_apart() {
        let names = ["..", "x", ".", "", "x", "x-2", "phantom_ball"];
        assert_eq!(
            case_folders(names.into_iter()),
            [
                "file-1",
                "x",
                "file-3",
                "file-4",
                "x-2",
                "x-2-2",
                "phantom_ball"
            ]
        );
    }
}
