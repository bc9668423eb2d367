//! BIDS entities (sub, ses, acq, rec, run, suffix...) parsed from file and folder names.

use std::path::Path;

use serde::Serialize;

/// The entities cdwqc keys images by. Values are stored without their `key-` prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BidsEntities {
    pub subject: Option<String>,
    pub session: Option<String>,
    pub acq: Option<String>,
    pub rec: Option<String>,
    pub run: Option<String>,
    /// The last name part without a `key-` form: `T1w`, `FLAIR`, `T2w`, `dwi`...
    pub suffix: Option<String>,
    /// The BIDS datatype folder (`anat`, `dwi`, `func`...) when the file sits in one.
    pub datatype: Option<String>,
    /// Other `key-value` pairs, in file-name order, as `key-value` joined by `_`.
    pub other: Option<String>,
}

const DATATYPE_FOLDERS: [&str; 8] = ["anat", "func", "dwi", "fmap", "perf", "pet", "meg", "eeg"];

/// File name without `.nii` / `.nii.gz` (any case).
pub fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower = name.to_ascii_lowercase();
    for ext in [".nii.gz", ".nii"] {
        if lower.ends_with(ext) {
            return name[..name.len() - ext.len()].to_string();
        }
    }
    name
}

/// Parses entities from the file name, then fills subject and session from parent
/// folders (`sub-XX/ses-YY/anat/`) when the name lacks them. A name that is not BIDS
/// (no `key-value` part and no subject folder) yields no entities at all, so plain
/// folders of images are indexed by path alone.
pub fn parse(path: &Path) -> BidsEntities {
    let stem = stem(path);
    let mut e = BidsEntities::default();
    let mut other = Vec::new();
    let parts: Vec<&str> = stem.split('_').collect();
    let mut saw_pair = false;
    for (i, part) in parts.iter().enumerate() {
        match part.split_once('-') {
            Some((key, value)) if !key.is_empty() && !value.is_empty() && !key.contains('.') => {
                saw_pair = true;
                let value = value.to_string();
                match key {
                    "sub" => e.subject = Some(value),
                    "ses" => e.session = Some(value),
                    "acq" => e.acq = Some(value),
                    "rec" => e.rec = Some(value),
                    "run" => e.run = Some(value),
                    _ => other.push(format!("{key}-{value}")),
                }
            }
            _ if i == parts.len() - 1 && saw_pair && !part.is_empty() => {
                e.suffix = Some(part.to_string());
            }
            _ => {}
        }
    }
    if !other.is_empty() {
        e.other = Some(other.join("_"));
    }
    for folder in path.ancestors().skip(1).filter_map(|p| p.file_name()) {
        let folder = folder.to_string_lossy();
        if let Some(sub) = folder.strip_prefix("sub-") {
            e.subject.get_or_insert_with(|| sub.to_string());
        } else if let Some(ses) = folder.strip_prefix("ses-") {
            e.session.get_or_insert_with(|| ses.to_string());
        } else if e.datatype.is_none() && DATATYPE_FOLDERS.contains(&folder.as_ref()) {
            e.datatype = Some(folder.to_string());
        }
    }
    if e.subject.is_none() {
        // Not a BIDS file: a datatype folder or a stray pair alone means nothing.
        return BidsEntities::default();
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_bids_name() {
        let e = parse(Path::new(
            "/w/sub-01/ses-M00/anat/sub-01_ses-M00_acq-3D_rec-norm_run-02_echo-1_FLAIR.nii.gz",
        ));
        assert_eq!(e.subject.as_deref(), Some("01"));
        assert_eq!(e.session.as_deref(), Some("M00"));
        assert_eq!(e.acq.as_deref(), Some("3D"));
        assert_eq!(e.rec.as_deref(), Some("norm"));
        assert_eq!(e.run.as_deref(), Some("02"));
        assert_eq!(e.suffix.as_deref(), Some("FLAIR"));
        assert_eq!(e.datatype.as_deref(), Some("anat"));
        assert_eq!(e.other.as_deref(), Some("echo-1"));
    }

    #[test]
    fn fills_subject_and_session_from_folders() {
        let e = parse(Path::new("/w/sub-7/ses-2/anat/T1w.nii"));
        assert_eq!(e.subject.as_deref(), Some("7"));
        assert_eq!(e.session.as_deref(), Some("2"));
        assert_eq!(e.suffix, None);
    }

    #[test]
    fn plain_names_have_no_entities() {
        assert_eq!(
            parse(Path::new("/data/scans/brain_scan.nii.gz")),
            BidsEntities::default()
        );
        assert_eq!(stem(Path::new("a/b/x.NII.GZ")), "x");
    }
}
