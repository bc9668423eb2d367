//! `cdwqc synth`: write a synthetic clinical warehouse (BIDS) from a real brain, with
//! graded artefacts, reject cases, simulated raters and the ground truth.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::synth::{self, Grid, SynthConfig};

#[derive(Debug, clap::Args)]
pub struct SynthArgs {
    /// Dataset folder to write (created if missing).
    #[arg(long, required_unless_present = "montage")]
    pub out: Option<PathBuf>,
    /// T1-weighted images (the labelled source domain).
    #[arg(long = "t1", default_value_t = 300)]
    pub n_t1: usize,
    /// Images labelled FLAIR (the target domain), rejects and wrong sequences included.
    #[arg(long = "flair", default_value_t = 250)]
    pub n_flair: usize,
    /// Correctly labelled images of other sequences (T2w, DWI b0).
    #[arg(long = "other", default_value_t = 50)]
    pub n_other: usize,
    /// Simulated raters.
    #[arg(long, default_value_t = 3)]
    pub raters: usize,
    /// Resolution: tiny (4 mm), small (2 mm) or clinical (1 mm).
    #[arg(long, default_value = "small")]
    pub grid: String,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Folder with the MNI ICBM152 2009 T1 / GM / WM files (default: the test data
    /// folder that scripts/setup.sh fills); a procedural phantom when absent.
    #[arg(long)]
    pub template_dir: Option<PathBuf>,
    /// Write a PNG montage of previews per class and grade of the dataset at --from.
    #[arg(long)]
    pub montage: Option<PathBuf>,
    /// The dataset the montage shows (default: --out).
    #[arg(long)]
    pub from: Option<PathBuf>,
}

fn default_template_dir() -> Option<PathBuf> {
    let candidate = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/external");
    candidate
        .join("mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
        .is_file()
        .then_some(candidate)
}

pub fn run(db: &Path, args: SynthArgs) -> anyhow::Result<ExitCode> {
    let grid: Grid = args.grid.parse()?;
    // Checked before any work: never the store, its WAL, another DuckDB file, a device
    // or a folder.
    let montage = args
        .montage
        .as_deref()
        .map(|png| {
            // A PNG by its name too: never an image of the dataset it shows.
            if !png
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("png"))
            {
                anyhow::bail!("--montage {}: give a name ending in .png", png.display());
            }
            Ok(crate::query::resolve_output(png, db)?)
        })
        .transpose()?;
    if let Some(out) = &args.out {
        let template_dir = args.template_dir.clone().or_else(default_template_dir);
        let cfg = SynthConfig {
            out: out.clone(),
            n_t1: args.n_t1,
            n_flair: args.n_flair,
            n_other: args.n_other,
            n_raters: args.raters,
            grid,
            seed: args.seed,
            template_dir,
        };
        let total = args.n_t1 + args.n_flair + args.n_other;
        let bar = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} synthesising [{bar:40}] {pos}/{len} images eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        } else {
            ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden())
        };
        let summary = synth::generate(&cfg, &|done, _total| bar.set_position(done as u64))?;
        bar.finish_and_clear();
        println!(
            "{}: {} images of {} subjects ({} anatomy, {} grid), {} simulated raters, {:.1} MB in {:.1} s",
            out.display(),
            summary.images,
            summary.subjects,
            summary.anatomy,
            grid.name(),
            summary.raters,
            summary.bytes_written as f64 / 1e6,
            summary.seconds
        );
        for (suffix, n) in &summary.per_suffix {
            println!("  {suffix:8} {n}");
        }
        println!(
            "ratings: {0}/derivatives/cdwqc-synth/ratings/, truth: {0}/derivatives/cdwqc-synth/ground_truth.tsv",
            out.display()
        );
    }
    if let Some(png) = &montage {
        let Some(dataset) = args.from.as_ref().or(args.out.as_ref()) else {
            anyhow::bail!("--montage needs the dataset: --from DIR (or --out)");
        };
        synth::write_montage(dataset, png)?;
        println!(
            "montage: {}",
            args.montage.as_deref().unwrap_or(png).display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
