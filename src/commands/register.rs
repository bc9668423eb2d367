//! `cdwqc register`: bias-correct and register one image to the MNI template as a preset
//! would, print the transform, similarity and times, write the image on the template grid.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use crate::imaging::bias::{self, BiasCorrection};
use crate::imaging::load_volume;
use crate::imaging::preprocess::{grid_affine, resample_mapped};
use crate::imaging::registration::{
    self, Registration, RegistrationMode, RegistrationOptions, Template,
};
use crate::jobs::plan::load_preset;
use crate::synth::nifti_writer::{NiftiImage, StoredType, write_nifti_gz};

#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// The image to register (NIfTI-1/2, .nii or .nii.gz).
    pub input: PathBuf,
    /// Where to write the image resampled on the preset's grid in template space (.nii.gz).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The preset whose grid, bias correction and registration to use (a builtin name or
    /// a TOML file); its `registration = "none"` is taken as `affine` here.
    #[arg(long, default_value = "paper")]
    pub preset: String,
    /// Override the preset's registration: rigid or affine.
    #[arg(long)]
    pub mode: Option<RegistrationMode>,
    /// Override the preset's bias correction of the image written with --out: none or
    /// polynomial (the registration itself always sees a corrected copy).
    #[arg(long)]
    pub bias: Option<BiasCorrection>,
    /// Also write the bias-corrected input the registration saw, on its own grid (.nii.gz).
    #[arg(long)]
    pub corrected: Option<PathBuf>,
    /// Threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Folder of the template files (default: $CDWQC_TEMPLATE_DIR, else the test data).
    #[arg(long)]
    pub template_dir: Option<PathBuf>,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Outcome {
    input: String,
    preset: String,
    bias_correction: BiasCorrection,
    #[serde(flatten)]
    registration: Registration,
    ok: bool,
    bias_seconds: f64,
    resample_seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    out: Option<String>,
}

pub fn run(db: &std::path::Path, args: RegisterArgs) -> anyhow::Result<ExitCode> {
    let threads = args.threads.unwrap_or(0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting the thread pool")?;
    pool.install(|| register(db, args))
}

fn register(db: &std::path::Path, args: RegisterArgs) -> anyhow::Result<ExitCode> {
    let out_path = checked_output(args.out.as_deref(), &args.input, db)?;
    let corrected_path = checked_output(args.corrected.as_deref(), &args.input, db)?;
    if let (Some(a), Some(b)) = (&out_path, &corrected_path)
        && a == b
    {
        anyhow::bail!("--out and --corrected name the same file {}", a.display());
    }
    let preset = load_preset(&args.preset)?;
    let spec = preset.preprocess.clone();
    let mode = args.mode.unwrap_or(match spec.registration {
        RegistrationMode::None => RegistrationMode::Affine,
        mode => mode,
    });
    if mode == RegistrationMode::None {
        anyhow::bail!("--mode none registers nothing; use rigid or affine");
    }
    let bias_correction = args.bias.unwrap_or(spec.bias_correction);
    let template_dir = args
        .template_dir
        .clone()
        .unwrap_or_else(registration::default_template_dir);
    let template = Template::shared(&spec.template, &template_dir)?;
    let volume =
        load_volume(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    // The registration always sees a corrected copy, as preprocessing's does; the bias
    // correction chosen says whether the image written on the grid is corrected too.
    let started = Instant::now();
    let corrected = bias::correct(&volume);
    let bias_seconds = started.elapsed().as_secs_f64();
    if let Some(path) = &corrected_path {
        write_float(path, corrected.dims, &corrected.data, corrected.affine)?;
    }
    let output = match bias_correction {
        BiasCorrection::None => &volume,
        BiasCorrection::Polynomial => &corrected,
    };
    let result = registration::register(
        &corrected,
        &template,
        RegistrationOptions::for_spacing(mode, spec.spacing_mm),
    )
    .with_context(|| format!("registering {}", args.input.display()))?;
    let started = Instant::now();
    let mut out = None;
    if let Some(path) = &out_path {
        let centre = template.brain_box_centre;
        let values = resample_mapped(output, &spec, centre, Some(&result.template_to_image), 0.0)?;
        // The grid's layout is x slowest; NIfTI wants x fastest.
        let [nx, ny, nz] = spec.shape;
        let mut nifti_order = vec![0f32; values.len()];
        for x in 0..nx {
            for y in 0..ny {
                for z in 0..nz {
                    nifti_order[x + nx * (y + ny * z)] = values[z + nz * (y + ny * x)];
                }
            }
        }
        write_float(path, spec.shape, &nifti_order, grid_affine(&spec, centre))?;
        out = args.out.as_ref().map(|p| p.display().to_string());
    }
    let outcome = Outcome {
        input: args.input.display().to_string(),
        preset: preset.name.clone(),
        bias_correction,
        ok: result.quality.passed(),
        registration: result,
        bias_seconds,
        resample_seconds: started.elapsed().as_secs_f64(),
        out,
    };
    if args.json {
        println!("{}", serde_json::to_string(&outcome)?);
    } else {
        print_text(&outcome);
    }
    Ok(if outcome.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// An output file the user named, resolved and refused before any work when it is the
/// store, its WAL or another DuckDB file, a device, a FIFO or a folder (the checks of
/// every report and export), or the input image itself.
fn checked_output(
    path: Option<&std::path::Path>,
    input: &std::path::Path,
    db: &std::path::Path,
) -> anyhow::Result<Option<PathBuf>> {
    let Some(path) = path else {
        return Ok(None);
    };
    let resolved = crate::query::resolve_output(path, db)?;
    if input.canonicalize().is_ok_and(|input| input == resolved) {
        anyhow::bail!(
            "output {}: is the input image; give another name",
            path.display()
        );
    }
    Ok(Some(resolved))
}

fn write_float(
    path: &std::path::Path,
    dims: [usize; 3],
    data: &[f32],
    affine: [[f64; 4]; 4],
) -> anyhow::Result<()> {
    write_nifti_gz(
        path,
        &NiftiImage {
            dims,
            data,
            affine,
            stored: StoredType::Float32,
            scl_slope: 1.0,
            scl_inter: 0.0,
            intent_code: 0,
            description: "cdwqc register",
        },
    )
    .with_context(|| format!("writing {}", path.display()))
}

fn print_text(outcome: &Outcome) {
    let r = &outcome.registration;
    println!(
        "{}: {} registration to the template, bias correction {}",
        outcome.input, r.mode, outcome.bias_correction
    );
    println!("image -> template (mm):");
    for row in &r.image_to_template[..3] {
        println!(
            "  {:>10.5} {:>10.5} {:>10.5} {:>10.3}",
            row[0], row[1], row[2], row[3]
        );
    }
    let q = &r.quality;
    println!(
        "correlation ratio {:.3}, overlap {:.1}%, scales {:.3}/{:.3}/{:.3}",
        q.similarity,
        100.0 * q.overlap,
        q.scales[0],
        q.scales[1],
        q.scales[2]
    );
    println!(
        "time: bias {:.2} s, registration {:.2} s ({} evaluations), resampling {:.2} s",
        outcome.bias_seconds, r.seconds, r.evaluations, outcome.resample_seconds
    );
    match &q.failure {
        None => println!("ok"),
        Some(reason) => println!("FAILED: {reason}"),
    }
    if let Some(out) = &outcome.out {
        println!("wrote {out}");
    }
}
