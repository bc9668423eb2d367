//! One file in, one `images` row (and its previews) out: identity, BIDS entities,
//! header facts, intensity summary, sidecar, previews, or a one-line failure reason.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::imaging::preprocess::finite_percentiles;
use crate::imaging::{self, ImagingError, bids, iqm, nifti, orientation, preview, sidecar, stats};
use crate::store::images::{HeaderFacts, ImageRow, ImageStatus, ImageWrite, KnownFile, PreviewRow};
use crate::store::iqms::IqmRow;

/// Size and modification time of a file as seen by the walker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileStamp {
    pub size: i64,
    pub mtime_ns: i64,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        // Signed: times before 1970 (archives restored with odd times) were all 0, so a
        // file changed under another such time kept its old hash, metrics and previews.
        let mtime_ns = meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec());
        Self {
            size: meta.len() as i64,
            mtime_ns,
        }
    }

    /// Why the file at `path` is no longer the one imported with this stamp, if it is
    /// not: the test import itself uses to find changed files. Anything computed from
    /// such a file (metrics, tensors, predictions) would be stored under the content the
    /// store describes, not the one read.
    pub fn changed(&self, path: &std::path::Path) -> Option<String> {
        match std::fs::metadata(path) {
            Ok(meta) if Self::of(&meta) == *self => None,
            Ok(_) => Some(
                "the file changed since it was imported (its size or modification time \
                 differ): run `cdwqc import` again"
                    .into(),
            ),
            Err(e) => Some(format!("cannot read: {e}")),
        }
    }
}

/// What importing one file amounts to.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A new or changed file, readable.
    Imported {
        write: ImageWrite,
        new: bool,
        warnings: Vec<String>,
    },
    /// A new or changed file that cannot be indexed.
    Failed { write: ImageWrite, reason: String },
    /// Content unchanged (same hash); possibly a new modification time to remember.
    Unchanged { write: Option<ImageWrite> },
}

/// Base row: identity and entities, no facts yet.
fn base_row(path: &Path, root: &Path, stamp: Option<FileStamp>) -> ImageRow {
    let entities = bids::parse(path);
    let rel_path = super::path_text(path.strip_prefix(root).unwrap_or(path));
    let stamp = stamp.unwrap_or(FileStamp {
        size: 0,
        mtime_ns: 0,
    });
    ImageRow {
        path: super::path_text(path),
        root: super::path_text(root),
        rel_path,
        subject: entities.subject,
        session: entities.session,
        acq: entities.acq,
        rec: entities.rec,
        run: entities.run,
        suffix: entities.suffix,
        bids_datatype: entities.datatype,
        other_entities: entities.other,
        file_size: stamp.size,
        mtime_ns: stamp.mtime_ns,
        ..ImageRow::default()
    }
}

fn failed(mut row: ImageRow, reason: String) -> Outcome {
    row.status = ImageStatus::Failed;
    row.error = Some(reason.clone());
    Outcome::Failed {
        write: ImageWrite::Upsert {
            row: Box::new(row),
            previews: Vec::new(),
            iqm: None,
        },
        reason,
    }
}

/// Analyses one candidate file. `known` is the store's row for the same path, if any.
/// Never fails and never panics: every problem becomes a `Failed` outcome with a
/// one-line reason, and a panic in the analysis (a bug) is caught and recorded as one,
/// so a single file can never end an import.
pub fn analyse(path: &Path, root: &Path, known: Option<&KnownFile>) -> Outcome {
    analyse_with(path, root, known, true)
}

/// [`analyse`], with the image quality metrics of 3D images (`iqm`) or without.
pub fn analyse_with(path: &Path, root: &Path, known: Option<&KnownFile>, iqm: bool) -> Outcome {
    guarded(path, root, || analyse_file(path, root, known, iqm))
}

/// The same analysis on a file's bytes already in memory (as stored on disk, gzip or
/// not): what the fuzzer drives. `path` names the file in rows and reasons, and is
/// where a sidecar is looked for.
pub fn analyse_bytes(path: &Path, root: &Path, raw: &[u8], known: Option<&KnownFile>) -> Outcome {
    guarded(path, root, || {
        analyse_bytes_unguarded(path, root, raw, known)
    })
}

/// [`analyse_bytes`] without the panic guard, so the fuzzer sees panics.
pub(crate) fn analyse_bytes_unguarded(
    path: &Path,
    root: &Path,
    raw: &[u8],
    known: Option<&KnownFile>,
) -> Outcome {
    let stamp = FileStamp {
        size: raw.len() as i64,
        mtime_ns: 0,
    };
    analyse_buffer(path, root, stamp, raw, known, true)
}

/// The largest file read whole before it is decoded: a gzip file is then inflated in one
/// call of libdeflate (1.3-1.4x less CPU than the streaming inflater), which the
/// streaming path replaces wherever that fails, so that its errors name the problem.
/// Larger files (4D series, mostly) stream, keeping memory to their first volume.
const WHOLE_READ_MAX: u64 = 64 << 20;

/// The largest inflated size, as the gzip trailer states it, inflated in one buffer: a
/// 3D volume. A 4D series streams from the bytes read, holding one volume rather than
/// every one (a worker per core, each with a whole series inflated, would multiply
/// import's memory).
const WHOLE_INFLATE_MAX: u64 = 128 << 20;

/// A file's bytes, as stored on disk, already in memory.
fn analyse_buffer(
    path: &Path,
    root: &Path,
    stamp: FileStamp,
    raw: &[u8],
    known: Option<&KnownFile>,
    iqm: bool,
) -> Outcome {
    // Hashed first: a file whose bytes the store holds already (touched, or copied
    // without its times) is not decoded at all.
    let sha = hex_sha256(raw);
    if let Some(unchanged) = unchanged(&sha, stamp, known) {
        return unchanged;
    }
    let mut row = base_row(path, root, Some(stamp));
    // The trailer's size only picks the path: the inflater checks it.
    let stated_size = raw
        .last_chunk::<4>()
        .map_or(u64::MAX, |trailer| u64::from(u32::from_le_bytes(*trailer)));
    let decoded = if !nifti::is_gzip(raw) || stated_size > WHOLE_INFLATE_MAX {
        nifti::decode_raw_stream(path, raw, Some(raw.len() as u64)).map(|d| (d, None))
    } else {
        nifti::decode_file_bytes_scanned(path, raw, true)
    };
    let described = decoded
        .and_then(|(decoded, scanned)| describe_decoded(path, decoded, scanned, &mut row, iqm));
    outcome(row, sha, stamp, known, described)
}

/// Why a guarded analysis was cut short by a panic starts with this.
pub const PANIC_REASON: &str = "internal error while analysing this file";

fn guarded(path: &Path, root: &Path, analysis: impl FnOnce() -> Outcome) -> Outcome {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(analysis)) {
        Ok(outcome) => outcome,
        Err(payload) => {
            let stamp = std::fs::metadata(path).ok().map(|m| FileStamp::of(&m));
            let message = panic_message(payload.as_ref()).replace(['\n', '\r'], " ");
            failed(
                base_row(path, root, stamp),
                format!("{PANIC_REASON} ({message}); the file was skipped"),
            )
        }
    }
}

/// The text a panic was raised with, when it is text.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic without a message".to_string()
    }
}

fn analyse_file(path: &Path, root: &Path, known: Option<&KnownFile>, iqm: bool) -> Outcome {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            let reason = match std::fs::symlink_metadata(path) {
                Ok(l) if l.file_type().is_symlink() => {
                    let target = std::fs::read_link(path)
                        .map(|t| t.display().to_string())
                        .unwrap_or_else(|_| "?".into());
                    format!("broken symbolic link to {target}")
                }
                _ => format!("cannot read file: {e}"),
            };
            return failed(base_row(path, root, None), reason);
        }
    };
    let stamp = FileStamp::of(&meta);
    // Every command after import opens the file by its stored path, which holds text:
    // a name that is not UTF-8 would be stored as a name no file has.
    if path.to_str().is_none() {
        return failed(
            base_row(path, root, Some(stamp)),
            "the file name is not valid UTF-8 (its stored path shows the bytes as \\xNN \
             and ends in //not-UTF-8): \
             rename the file"
                .into(),
        );
    }
    if !meta.is_file() {
        return failed(
            base_row(path, root, Some(stamp)),
            "not a regular file".into(),
        );
    }
    // Checked again on the open handle, never blocking, never read past its size.
    let file = match crate::imaging::nifti::open_regular(path) {
        Ok((file, _)) => file,
        Err(e) => return failed(base_row(path, root, Some(stamp)), e.reason()),
    };
    // A big image waits for memory the other workers hold; one that needs more than
    // the whole budget is refused rather than ending the import out of memory. What it
    // needs comes from its header, read from the bytes in memory when the file is read
    // whole (a small file can inflate to gigabytes too).
    let budget = super::budget::MemoryBudget::shared();
    let refuse = |need: u64, limit: u64| {
        failed(
            base_row(path, root, Some(stamp)),
            format!(
                "importing it needs about {} of memory, more than the {} an import may \
                 hold (half of what this process may use, unless {} sets it in MiB; then \
                 import again with --force)",
                memory(need),
                memory(limit),
                super::budget::LIMIT_VARIABLE
            ),
        )
    };
    if u64::try_from(stamp.size).is_ok_and(|size| size <= WHOLE_READ_MAX) {
        let mut raw = Vec::with_capacity(stamp.size as usize);
        let mut file = file;
        if let Err(e) = file.read_to_end(&mut raw) {
            return failed(
                base_row(path, root, Some(stamp)),
                ImagingError::io(path, e).reason(),
            );
        }
        let need = memory_need(nifti::read_header(path, &raw[..]), &raw, true, iqm);
        let _held = match budget.reserve(need) {
            Ok(held) => held,
            Err(limit) => return refuse(need, limit),
        };
        return analyse_buffer(path, root, stamp, &raw, known, iqm);
    }
    let need = memory_need(nifti::read_header_file(path), &[], false, iqm);
    let _held = match budget.reserve(need) {
        Ok(held) => held,
        Err(limit) => return refuse(need, limit),
    };
    analyse_stream(
        path,
        root,
        stamp,
        std::io::BufReader::with_capacity(1 << 16, file),
        known,
        iqm,
    )
}

/// Memory importing the file will hold at its peak, from its header (`raw`: the file's
/// bytes when read whole): 0 for a header that does not parse, whose decoding then
/// fails with its own reason.
fn memory_need(
    header: Result<nifti::Header, ImagingError>,
    raw: &[u8],
    read_whole: bool,
    iqm: bool,
) -> u64 {
    let Some(layout) = header.ok().and_then(|h| h.layout().ok()) else {
        return 0;
    };
    // A gzip file read whole is inflated whole up to a size, every volume; past it the
    // volumes stream one at a time.
    let whole = read_whole && nifti::is_gzip(raw) && layout.end <= nifti::WHOLE_INFLATE_MAX;
    super::budget::import_need(
        raw.len() as u64,
        read_whole,
        whole.then_some(layout.end),
        layout.voxels_per_volume,
        iqm,
    )
}

/// Bytes as GiB, or MiB under one GiB, for messages.
fn memory(bytes: u64) -> String {
    let mib = bytes as f64 / f64::from(1u32 << 20);
    if mib < 1024.0 {
        format!("{mib:.0} MiB")
    } else {
        format!("{:.1} GiB", mib / 1024.0)
    }
}

/// The most bytes read (and hashed) after what the decoder read: a file with more, which
/// no image needs, is refused without reading them, so that a huge (or sparse) file
/// behind a valid header cannot hold an import for as long as it takes to hash it. A
/// file read whole holds less than this after any header.
pub const UNREAD_TAIL_MAX: u64 = WHOLE_READ_MAX;

/// Reads the file once: the bytes are hashed as they stream into the decoder, and
/// whatever the decoder leaves unread, up to [`UNREAD_TAIL_MAX`], is hashed after it.
fn analyse_stream<R: Read>(
    path: &Path,
    root: &Path,
    stamp: FileStamp,
    reader: R,
    known: Option<&KnownFile>,
    iqm: bool,
) -> Outcome {
    let mut row = base_row(path, root, Some(stamp));
    let mut hashing = HashingReader {
        inner: reader,
        hasher: Sha256::new(),
        read: 0,
    };
    let described = nifti::decode_raw_stream(path, &mut hashing, Some(stamp.size as u64))
        .and_then(|decoded| describe_decoded(path, decoded, None, &mut row, iqm));
    let decoded_bytes = hashing.read;
    let tail = std::io::copy(
        &mut (&mut hashing).take(UNREAD_TAIL_MAX + 1),
        &mut std::io::sink(),
    );
    match tail {
        Err(e) => return failed(row, ImagingError::io(path, e).reason()),
        // The row keeps no hash: an unchanged stamp is enough to skip the file next time.
        Ok(n) if n > UNREAD_TAIL_MAX => {
            return failed(
                row,
                match described {
                    Err(e) => e.reason(),
                    Ok(_) => too_long_tail(decoded_bytes),
                },
            );
        }
        Ok(_) => {}
    }
    let sha = format!("{:x}", hashing.hasher.finalize());
    outcome(row, sha, stamp, known, described)
}

/// Why a file whose image ends long before the file does is refused.
fn too_long_tail(image_bytes: u64) -> String {
    format!(
        "the file runs on for more than {} MiB past its first {image_bytes} bytes, which \
         hold its header and image; no image needs them, and they were not read (a copy \
         cut to the image's size imports)",
        UNREAD_TAIL_MAX >> 20
    )
}

/// The outcome of a file whose bytes hash to `sha`: unchanged when the store holds them
/// already, else its row (failed when it could not be described).
fn outcome(
    mut row: ImageRow,
    sha: String,
    stamp: FileStamp,
    known: Option<&KnownFile>,
    described: Result<Described, ImagingError>,
) -> Outcome {
    if let Some(unchanged) = unchanged(&sha, stamp, known) {
        return unchanged;
    }
    row.sha256 = Some(sha);
    match described {
        Ok((previews, warnings, iqm)) => {
            if !warnings.is_empty() {
                row.warnings = Some(warnings.join("; "));
            }
            scrub_nul(&mut row);
            Outcome::Imported {
                write: ImageWrite::Upsert {
                    row: Box::new(row),
                    previews,
                    iqm: iqm.map(Box::new),
                },
                new: known.is_none(),
                warnings,
            }
        }
        Err(e) => failed(row, e.reason()),
    }
}

/// The outcome of a file whose bytes hash to `sha` when the store holds them already:
/// unchanged, with its new modification time to remember if it has one.
fn unchanged(sha: &str, stamp: FileStamp, known: Option<&KnownFile>) -> Option<Outcome> {
    let k = known.filter(|k| k.status != "missing" && k.sha256.as_deref() == Some(sha))?;
    let write =
        (k.mtime_ns != stamp.mtime_ns || k.file_size != stamp.size).then_some(ImageWrite::Touch {
            image_id: k.image_id,
            mtime_ns: stamp.mtime_ns,
        });
    Some(Outcome::Unchanged { write })
}

/// A reader that hashes and counts what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Text from a file (header description, sidecar fields) may hold NUL characters,
/// which the store does not take in text values.
fn scrub_nul(row: &mut ImageRow) {
    let scrub = |text: &mut String| {
        if text.contains('\0') {
            *text = text.replace('\0', "");
        }
    };
    if let Some(h) = row.header.as_mut() {
        scrub(&mut h.description);
    }
    if let Some(w) = row.warnings.as_mut() {
        scrub(w);
    }
    if let Some(s) = row.sidecar.as_mut() {
        for field in [
            &mut s.manufacturer,
            &mut s.model,
            &mut s.acquisition_type,
            &mut s.series_description,
            &mut s.protocol_name,
            &mut s.institution,
            &mut s.station,
        ]
        .into_iter()
        .flatten()
        {
            scrub(field);
        }
        scrub(&mut s.raw);
    }
}

/// What describing an image gives beside its row: previews, warnings, and the quality
/// metrics of a 3D image.
type Described = (Vec<PreviewRow>, Vec<String>, Option<IqmRow>);

/// Fills header facts, intensities and sidecar fields from a decoded file (`scanned`:
/// its [`stats::scan`] when the decoder took it); returns previews, warnings and the
/// quality metrics of a 3D image.
fn describe_decoded(
    path: &Path,
    decoded: nifti::Decoded,
    scanned: Option<stats::Scanned>,
    row: &mut ImageRow,
    with_iqm: bool,
) -> Result<Described, ImagingError> {
    let mut warnings = Vec::new();
    let h = &decoded.header;
    let (affine, source) = orientation::best_affine(h);
    if source == imaging::AffineSource::Pixdim {
        warnings.push("no sform or qform: orientation assumed from voxel order".to_string());
    }
    let voxel = h.voxel_size_mm();
    if !voxel.iter().all(|v| v.is_finite() && *v > 0.0) {
        warnings.push(format!(
            "voxel sizes {voxel:?} mm (pixdim) are not all positive and finite: the quality \
             metrics need them"
        ));
    }
    // Header validation keeps dims within INTEGER and the volume count within BIGINT.
    row.header = Some(HeaderFacts {
        nifti_version: h.version,
        dims: [h.dim[1], h.dim[2], h.dim[3]],
        n_volumes: i64::try_from(h.n_volumes()).unwrap_or(i64::MAX),
        voxel_size: h.voxel_size_mm(),
        datatype: h.datatype.name().to_string(),
        scl_slope: h.scl_slope,
        scl_inter: h.scl_inter,
        qform_code: h.qform_code,
        sform_code: h.sform_code,
        affine_source: source.name().to_string(),
        orientation: orientation::axis_codes(&affine),
        affine,
        intent_code: h.intent_code,
        description: h.descrip.clone(),
    });
    // One pass over the voxels gives the summary's sums and a sample of the finite
    // voxels; one selection in the sample serves the summary's percentiles and the
    // previews' window.
    let scanned = scanned.unwrap_or_else(|| stats::scan(&decoded.data));
    let sample = &scanned.sample;
    let [p01, p50, p99, window_lo, window_hi] = {
        let [s0, s1, s2] = stats::SUMMARY_PERCENTILES;
        let [w0, w1] = preview::WINDOW_PERCENTILES;
        if sample.is_empty() {
            [f32::NAN; 5]
        } else {
            finite_percentiles(sample, [s0, s1, s2, w0, w1])
        }
    };
    let summary = scanned.summary((!sample.is_empty()).then_some([p01, p50, p99]));
    match &summary {
        Some(s) if s.nonfinite > 0 => warnings.push(format!(
            "{} voxels are NaN or infinite (left out of statistics and previews)",
            s.nonfinite
        )),
        None => warnings.push("no finite voxel values".to_string()),
        _ => {}
    }
    // What the summary and the header establish spares the metrics a pass over the
    // values.
    let known = iqm::Known::of_header(
        h,
        summary.map_or(0, |s| s.nonfinite),
        summary.map(|s| (s.min, s.max)),
    );
    row.intensity = summary;
    match sidecar::read(path) {
        Ok(s) => row.sidecar = s,
        Err(w) => warnings.push(w),
    }
    let single_volume = h.n_volumes() == 1;
    let volume = imaging::Volume::from_decoded(decoded);
    let mut previews = Vec::with_capacity(3);
    for (plane, picture) in preview::previews_in_window(
        volume.dims,
        &volume.data,
        &volume.affine,
        volume.voxel_size,
        if sample.is_empty() {
            preview::window_of_sample(sample)
        } else {
            preview::window_of_percentiles(sample, [window_lo, window_hi])
        },
    ) {
        previews.push(PreviewRow {
            plane: plane.name(),
            width: picture.width as u32,
            height: picture.height as u32,
            png: picture.to_png()?,
        });
    }
    let iqm = (with_iqm && single_volume).then(|| iqm_row(&volume, row.suffix.as_deref(), known));
    Ok((previews, warnings, iqm))
}

/// MRIQC's metrics of one volume, or why there are none (the image stays ok).
pub fn iqm_row(volume: &imaging::Volume, suffix: Option<&str>, known: iqm::Known) -> IqmRow {
    let started = std::time::Instant::now();
    let contrast = iqm::Contrast::from_suffix(suffix);
    let outcome = iqm::compute_known(volume, contrast, known);
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(metrics) => IqmRow {
            contrast: contrast.name().to_string(),
            values: Some(metrics.values),
            error: None,
            seconds,
        },
        Err(e) => IqmRow {
            contrast: contrast.name().to_string(),
            values: None,
            error: Some(e.to_string()),
            seconds,
        },
    }
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}
