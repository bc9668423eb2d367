//! The JSON sidecar a DICOM converter writes beside each image (dcm2niix style).

use std::path::{Path, PathBuf};

use serde::Serialize;

/// The sidecar fields cdwqc keeps in columns; the whole JSON is kept as text too.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sidecar {
    pub path: PathBuf,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub field_strength: Option<f64>,
    pub acquisition_type: Option<String>,
    pub series_description: Option<String>,
    pub protocol_name: Option<String>,
    pub institution: Option<String>,
    pub station: Option<String>,
    /// The sidecar as written, compacted.
    pub raw: String,
}

/// Sidecars are a few kilobytes; a larger file is not read (a FIFO or a huge file
/// would stall or exhaust an import).
pub const MAX_SIDECAR_BYTES: u64 = 1 << 20;

/// The sidecar path for an image: same name with `.json` instead of `.nii[.gz]`.
pub fn sidecar_path(image: &Path) -> PathBuf {
    image.with_file_name(format!("{}.json", super::bids::stem(image)))
}

/// Reads the sidecar beside `image`. `Ok(None)` when there is none; `Err` carries a
/// one-line reason for a sidecar that exists but cannot be used (recorded as a warning
/// on the image, never a failure).
pub fn read(image: &Path) -> Result<Option<Sidecar>, String> {
    let path = sidecar_path(image);
    match std::fs::metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Ok(meta) if !meta.is_file() => {
            return Err(format!("sidecar {} is not a regular file", path.display()));
        }
        Ok(meta) if meta.len() > MAX_SIDECAR_BYTES => {
            return Err(format!(
                "sidecar {} is {} bytes, more than the {MAX_SIDECAR_BYTES} a sidecar may hold",
                path.display(),
                meta.len()
            ));
        }
        _ => {}
    }
    // Opened as an image is: a regular file on the handle too, never blocking, never
    // read past its size (a link to /proc or a trace pipe says 0 bytes, then reads on
    // without end).
    let mut file = match super::nifti::open_regular(&path) {
        Ok((_, len)) if len > MAX_SIDECAR_BYTES => {
            return Err(format!(
                "sidecar {} is {len} bytes, more than the {MAX_SIDECAR_BYTES} a sidecar may hold",
                path.display()
            ));
        }
        Ok((file, _)) => file,
        Err(super::ImagingError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            return Ok(None);
        }
        Err(e) => return Err(format!("sidecar {}: {}", path.display(), e.reason())),
    };
    let mut text = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut file, &mut text) {
        return Err(format!("sidecar {}: {e}", path.display()));
    }
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("sidecar {} is not valid JSON: {e}", path.display()))?;
    let obj = value
        .as_object()
        .ok_or_else(|| format!("sidecar {} is not a JSON object", path.display()))?;
    let text_field = |key: &str| {
        obj.get(key).and_then(|v| match v {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    // A field strength is positive and finite: "-inf" or "NaN" (which Rust's parser
    // reads) would make a scanner group of their own.
    let field_strength = obj
        .get("MagneticFieldStrength")
        .and_then(|v| match v {
            serde_json::Value::Number(n) => n.as_f64(),
            serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        })
        .filter(|t| t.is_finite() && *t > 0.0);
    Ok(Some(Sidecar {
        manufacturer: text_field("Manufacturer"),
        model: text_field("ManufacturersModelName"),
        field_strength,
        acquisition_type: text_field("MRAcquisitionType"),
        series_description: text_field("SeriesDescription"),
        protocol_name: text_field("ProtocolName"),
        institution: text_field("InstitutionName"),
        station: text_field("StationName"),
        raw: value.to_string(),
        path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_reports_bad_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("sub-1_FLAIR.nii.gz");
        assert_eq!(read(&image), Ok(None));
        std::fs::write(
            dir.path().join("sub-1_FLAIR.json"),
            r#"{"Manufacturer":"Siemens","MagneticFieldStrength":3,"MRAcquisitionType":"3D"}"#,
        )
        .expect("write");
        let s = read(&image).expect("valid").expect("present");
        assert_eq!(s.manufacturer.as_deref(), Some("Siemens"));
        assert_eq!(s.field_strength, Some(3.0));
        assert_eq!(s.acquisition_type.as_deref(), Some("3D"));
        for strength in [r#""-inf""#, r#""NaN""#, r#""inf""#, "-3", "0", r#""1.5""#] {
            std::fs::write(
                dir.path().join("sub-1_FLAIR.json"),
                format!(r#"{{"MagneticFieldStrength":{strength}}}"#),
            )
            .expect("write");
            let s = read(&image).expect("valid").expect("present");
            let kept = (strength == r#""1.5""#).then_some(1.5);
            assert_eq!(s.field_strength, kept, "{strength}");
        }
        std::fs::write(dir.path().join("sub-1_FLAIR.json"), "{oops").expect("write");
        let err = read(&image).unwrap_err();
        assert!(
            err.contains("sub-1_FLAIR.json") && err.contains("not valid JSON"),
            "{err}"
        );
    }
}
