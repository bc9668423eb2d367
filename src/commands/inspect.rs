//! `cdwqc inspect`: header facts of NIfTI files (header bytes only, no voxel data).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rayon::prelude::*;
use serde::Serialize;

use crate::imaging::{nifti, orientation};
use crate::import::walk;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Files, or folders searched for .nii / .nii.gz files.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Facts {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nifti_version: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shape: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    voxel_size: Option<[f64; 3]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    datatype: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    orientation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    affine_source: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    qform_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sform_code: Option<i32>,
}

fn facts(path: &Path) -> Facts {
    let mut f = Facts {
        path: path.display().to_string(),
        error: None,
        nifti_version: None,
        shape: None,
        voxel_size: None,
        datatype: None,
        orientation: None,
        affine_source: None,
        qform_code: None,
        sform_code: None,
    };
    match nifti::read_header_file(path) {
        Ok(h) => {
            let (affine, source) = orientation::best_affine(&h);
            f.nifti_version = Some(h.version);
            f.shape = Some(h.dim[1..=h.dim[0] as usize].to_vec());
            f.voxel_size = Some(h.voxel_size_mm());
            f.datatype = Some(h.datatype.name());
            f.orientation = Some(orientation::axis_codes(&affine));
            f.affine_source = Some(source.name());
            f.qform_code = Some(h.qform_code);
            f.sform_code = Some(h.sform_code);
        }
        Err(e) => f.error = Some(e.reason()),
    }
    f
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for p in &args.paths {
        if p.is_dir() {
            files.extend(walk::candidates(p, true).files);
        } else {
            files.push(p.clone());
        }
    }
    let all: Vec<Facts> = files.par_iter().map(|p| facts(p)).collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let table = !args.json;
    for f in &all {
        let line = if table {
            match &f.error {
                Some(e) => format!("{}  error: {e}", f.path),
                None => format!(
                    "{}  NIfTI-{}  {}  {} mm  {}  {} ({})",
                    f.path,
                    f.nifti_version.unwrap_or(0),
                    crate::display::shape(f.shape.as_deref().unwrap_or(&[])),
                    crate::display::sizes(&f.voxel_size.unwrap_or_default(), 3),
                    f.datatype.unwrap_or("?"),
                    f.orientation.as_deref().unwrap_or("?"),
                    f.affine_source.unwrap_or("?"),
                ),
            }
        } else {
            serde_json::to_string(f)?
        };
        if let Err(e) = writeln!(out, "{line}") {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                break;
            }
            return Err(e.into());
        }
    }
    let failed = all.iter().any(|f| f.error.is_some());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
