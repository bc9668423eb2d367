//! Rendering one planned image: geometry, tissue sampling, artefacts, quantisation, NIfTI and sidecar.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::anatomy::{SubjectAnatomy, TissueModel};
use super::artefacts::{self, Artefact, Image3};
use super::contrast::{Sequence, TissueContrast};
use super::nifti_writer::{self, NiftiImage, StoredType};
use super::rejects::{self, BodyPhantom, RejectKind};
use super::scanner::{self, Geometry, ORIENTATIONS, SCANNERS, Scanner, Sidecar};
use super::truth::TruthRecord;
use super::{Grid, ImageClass, ImagePlan, SynthConfig, SynthError};

/// Head centre of the canonical anatomy in world mm.
const HEAD_CENTRE: [f64; 3] = [0.0, -18.0, 14.0];

/// What each voxel shows.
enum VoxelSource<'a> {
    Mr(&'a TissueContrast),
    Segmentation,
    Probability,
    Body(&'a BodyPhantom, &'a TissueContrast),
}

fn jitter(rng: &mut ChaCha8Rng, low: f64, high: f64) -> f64 {
    rng.random_range(low..high)
}

/// Acquisition geometry of an image of `class` on `grid`.
fn plan_geometry(class: ImageClass, shown: Sequence, grid: Grid, rng: &mut ChaCha8Rng) -> Geometry {
    let h = grid.spacing();
    let centre = [
        HEAD_CENTRE[0] + jitter(rng, -5.0, 5.0),
        HEAD_CENTRE[1] + jitter(rng, -6.0, 6.0),
        HEAD_CENTRE[2] + jitter(rng, -5.0, 5.0),
    ];
    let fov = [
        jitter(rng, 176.0, 200.0),
        jitter(rng, 216.0, 240.0),
        jitter(rng, 188.0, 214.0),
    ];
    let orientation = ORIENTATIONS[rng.random_range(0..ORIENTATIONS.len())];
    let thick_slice =
        matches!(class, ImageClass::Reject(RejectKind::ThickSlice)) || shown == Sequence::DwiB0;
    match class {
        _ if thick_slice => {
            // 2D: in-plane fine, slices thick; the slab integrates the slice profile.
            let slice_world = [2usize, 2, 2, 0, 1][rng.random_range(0..5)];
            let code = match slice_world {
                0 => ["PIR", "ASL"][rng.random_range(0..2)],
                1 => ["LIP", "RSA"][rng.random_range(0..2)],
                _ => ["LPS", "RAS", "LAS"][rng.random_range(0..3)],
            };
            let in_plane = if shown == Sequence::DwiB0 {
                1.9 * h
            } else {
                0.9 * h * jitter(rng, 0.95, 1.15)
            };
            let thickness = (2.5 * h).max(5.0) * jitter(rng, 1.0, 1.3);
            let mut voxel = [in_plane; 3];
            voxel[slice_world] = thickness;
            let mut g = Geometry::new(code, centre, fov, voxel, scanner::random_tilt(rng, 0.2));
            let slab_axis = g.file_axis_of_world(slice_world);
            g.slab = Some((slab_axis, thickness * 0.9));
            g
        }
        ImageClass::Reject(RejectKind::Localizer) => {
            let slice_world = rng.random_range(0..3);
            let code = ["PIR", "LIP", "LPS"][slice_world];
            let count = rng.random_range(3..=5) as f64;
            let spacing = jitter(rng, 10.0, 22.0);
            let mut voxel = [1.6 * h; 3];
            voxel[slice_world] = spacing;
            let mut box_mm = [fov[0] * 1.2, fov[1] * 1.2, fov[2] * 1.2];
            box_mm[slice_world] = spacing * count;
            let mut g = Geometry::new(code, centre, box_mm, voxel, [0.0; 3]);
            let slab_axis = g.file_axis_of_world(slice_world);
            g.slab = Some((slab_axis, 8.0));
            g
        }
        ImageClass::Reject(RejectKind::TruncatedFov) => {
            let mut box_mm = fov;
            let mut c = centre;
            if rng.random_bool(0.6) {
                box_mm[2] = jitter(rng, 55.0, 95.0);
                c[2] =
                    HEAD_CENTRE[2] + [-1.0, 1.0][rng.random_range(0..2)] * jitter(rng, 25.0, 55.0);
            } else {
                box_mm[1] = jitter(rng, 80.0, 120.0);
                c[1] =
                    HEAD_CENTRE[1] + [-1.0, 1.0][rng.random_range(0..2)] * jitter(rng, 45.0, 70.0);
            }
            let voxel = [h * jitter(rng, 0.95, 1.1); 3];
            Geometry::new(orientation, c, box_mm, voxel, [0.0; 3])
        }
        ImageClass::Reject(RejectKind::SegmentationMap | RejectKind::ProbabilityMap) => {
            Geometry::new(
                "RAS",
                [0.0, -18.0, 18.0],
                [182.0, 218.0, 182.0],
                [h; 3],
                [0.0; 3],
            )
        }
        _ => {
            let base = h * jitter(rng, 0.92, 1.12);
            let mut voxel = [base; 3];
            if rng.random_bool(0.25) {
                voxel[rng.random_range(0..3)] = base * jitter(rng, 1.1, 1.3);
            }
            Geometry::new(
                orientation,
                centre,
                fov,
                voxel,
                scanner::random_tilt(rng, 0.15),
            )
        }
    }
}

/// Samples the clean image: each voxel averages points across its slab for 2D acquisitions.
fn sample_clean(
    geometry: &Geometry,
    model: &TissueModel,
    subject: &SubjectAnatomy,
    source: &VoxelSource<'_>,
) -> Image3 {
    let [nx, ny, nz] = geometry.dims;
    let offsets: Vec<[f64; 3]> = match geometry.slab {
        Some((axis, thickness)) => {
            let step = thickness / geometry.voxel_mm[axis] / 4.0;
            (-2..=2)
                .map(|s| {
                    let mut o = [0.0; 3];
                    o[axis] = s as f64 * step;
                    o
                })
                .collect()
        }
        None => vec![[0.0; 3]],
    };
    let mut data = vec![0f32; nx * ny * nz];
    data.par_chunks_mut(nx * ny)
        .enumerate()
        .for_each(|(k, plane)| {
            for j in 0..ny {
                for i in 0..nx {
                    let mut value = 0f32;
                    for o in &offsets {
                        let world =
                            geometry.world([i as f64 + o[0], j as f64 + o[1], k as f64 + o[2]]);
                        value += match source {
                            VoxelSource::Body(body, contrast) => body.signal(world, contrast),
                            _ => {
                                let p = subject.canonical(world);
                                let tissue = model.sample(p);
                                match source {
                                    VoxelSource::Mr(contrast) => {
                                        let lesion = if tissue.wm > 0.05 {
                                            subject.lesion_fraction(p)
                                        } else {
                                            0.0
                                        };
                                        contrast.signal(&tissue, lesion, &subject.layers)
                                    }
                                    VoxelSource::Segmentation => {
                                        rejects::segmentation_label(&tissue)
                                    }
                                    VoxelSource::Probability => tissue.gm,
                                    VoxelSource::Body(..) => 0.0,
                                }
                            }
                        };
                    }
                    plane[i + nx * j] = value / offsets.len() as f32;
                }
            }
        });
    if matches!(source, VoxelSource::Segmentation) {
        for v in data.iter_mut() {
            *v = v.round();
        }
    }
    Image3 {
        dims: geometry.dims,
        voxel_mm: geometry.voxel_mm,
        data,
    }
}

/// Applies the planned artefacts in acquisition order; noise comes last as in a real magnitude image.
fn apply_artefacts(
    image: &mut Image3,
    plan: &ImagePlan,
    geometry: &Geometry,
    rng: &mut ChaCha8Rng,
) {
    let s = |a: Artefact| plan.severities.get(a);
    let level = image.signal_level();
    if s(Artefact::BiasField) > 0.0 {
        artefacts::apply_bias_field(image, s(Artefact::BiasField), rng);
    }
    if s(Artefact::ContrastLoss) > 0.0 {
        let c = s(Artefact::ContrastLoss);
        artefacts::apply_contrast_loss(image, (0.85 * c).min(0.92), -0.7 * c);
    }
    if s(Artefact::Blur) > 0.0 {
        artefacts::apply_blur(image, s(Artefact::Blur));
    }
    if s(Artefact::Motion) > 0.0 {
        let movements = artefacts::random_movements(s(Artefact::Motion), rng);
        artefacts::apply_motion(image, &movements, geometry.phase_axis);
    }
    if s(Artefact::Ghosting) > 0.0 {
        let period = rng.random_range(2..=4);
        artefacts::apply_ghosting(image, s(Artefact::Ghosting), period, geometry.phase_axis);
    }
    if s(Artefact::Noise) > 0.0 {
        artefacts::add_rician_noise(image, level * (s(Artefact::Noise) / 100.0) as f32, rng);
    }
}

/// Sidecar fields with the inconsistencies real warehouses carry; returns the sidecar and what is wrong in it.
fn make_sidecar(
    plan: &ImagePlan,
    scanner: &Scanner,
    geometry: &Geometry,
    rng: &mut ChaCha8Rng,
) -> (Sidecar, Vec<&'static str>) {
    let mut wrong = Vec::new();
    let three_d = geometry.slab.is_none();
    let mut description = scanner::series_description(scanner, plan.shown, three_d, rng);
    if plan.class == ImageClass::Reject(RejectKind::WrongSequence) && rng.random_bool(0.5) {
        description = scanner::series_description(scanner, plan.label, true, rng);
        wrong.push("series_description");
    }
    match plan.class {
        ImageClass::Reject(RejectKind::SegmentationMap) => {
            description = format!("{description}_seg")
        }
        ImageClass::Reject(RejectKind::ProbabilityMap) => description = format!("c1_{description}"),
        ImageClass::Reject(RejectKind::Localizer) => description = "localizer".into(),
        _ => {}
    }
    let manufacturer = match (scanner.manufacturer, rng.random_bool(0.4)) {
        ("Siemens", true) => "SIEMENS",
        ("GE", true) => "GE MEDICAL SYSTEMS",
        ("Philips", true) => "Philips Medical Systems",
        (m, _) => m,
    };
    let mut field = Some(scanner.field_t);
    if rng.random_bool(0.06) {
        field = None;
        wrong.push("field_strength_missing");
    } else if rng.random_bool(0.03) {
        field = Some(scanner.field_t * 10000.0);
        wrong.push("field_strength_gauss");
    }
    let mut acquisition = if three_d { "3D" } else { "2D" };
    if rng.random_bool(0.05) {
        acquisition = if three_d { "2D" } else { "3D" };
        wrong.push("acquisition_type");
    }
    let slice = geometry
        .slab
        .map(|(_, t)| t / 0.9)
        .unwrap_or(geometry.voxel_mm[2]);
    let (tr, te, ti) = match plan.shown {
        Sequence::T1w => (
            jitter(rng, 1.9, 2.3),
            jitter(rng, 0.0025, 0.004),
            Some(jitter(rng, 0.85, 1.1)),
        ),
        Sequence::Flair => (
            jitter(rng, 4.8, 9.0),
            jitter(rng, 0.09, 0.4),
            Some(jitter(rng, 1.6, 2.5)),
        ),
        Sequence::T2w => (jitter(rng, 3.0, 6.0), jitter(rng, 0.08, 0.11), None),
        Sequence::DwiB0 => (jitter(rng, 4.0, 8.0), jitter(rng, 0.06, 0.09), None),
    };
    let sidecar = Sidecar {
        manufacturer: manufacturer.to_string(),
        manufacturers_model_name: scanner.model.to_string(),
        magnetic_field_strength: field,
        mr_acquisition_type: acquisition.to_string(),
        protocol_name: description.clone(),
        series_description: description,
        slice_thickness: (slice * 100.0).round() / 100.0,
        repetition_time: (tr * 1e4).round() / 1e4,
        echo_time: (te * 1e5).round() / 1e5,
        inversion_time: ti.map(|t| (t * 1e4).round() / 1e4),
        conversion_software: "dcm2niix".into(),
        conversion_software_version: "v1.0.20220720".into(),
    };
    (sidecar, wrong)
}

/// Renders one planned image, writes `.nii.gz` and `.json`, and returns its ground truth.
pub fn render_and_write(
    plan: &ImagePlan,
    model: &TissueModel,
    cfg: &SynthConfig,
) -> Result<TruthRecord, SynthError> {
    let mut rng = ChaCha8Rng::seed_from_u64(plan.image_seed);
    let subject = SubjectAnatomy::random(
        model,
        &mut ChaCha8Rng::seed_from_u64(plan.subject_seed),
        plan.lesions,
    );
    let scanner = SCANNERS[rng.random_range(0..SCANNERS.len())];
    let contrast = TissueContrast::random(plan.shown, plan.gado, &mut rng);
    let geometry = plan_geometry(plan.class, plan.shown, cfg.grid, &mut rng);
    let body;
    let source = match plan.class {
        ImageClass::Reject(RejectKind::SegmentationMap) => VoxelSource::Segmentation,
        ImageClass::Reject(RejectKind::ProbabilityMap) => VoxelSource::Probability,
        ImageClass::Reject(RejectKind::NonBrain) => {
            body = BodyPhantom::random(
                geometry.world([0, 1, 2].map(|a| (geometry.dims[a] as f64 - 1.0) / 2.0)),
                &mut rng,
            );
            VoxelSource::Body(&body, &contrast)
        }
        _ => VoxelSource::Mr(&contrast),
    };
    let mut image = sample_clean(&geometry, model, &subject, &source);
    let derived = matches!(source, VoxelSource::Segmentation | VoxelSource::Probability);
    let (stored, slope, gain, intent) = match source {
        VoxelSource::Segmentation => (StoredType::Int16, 1.0, 1.0, 1002),
        VoxelSource::Probability => (StoredType::Float32, 1.0, 1.0, 0),
        _ => {
            apply_artefacts(&mut image, plan, &geometry, &mut rng);
            let (stored, slope, gain) = scanner::storage(&mut rng);
            (stored, slope, gain, 0)
        }
    };
    if !derived {
        let level = image.signal_level().max(1e-6);
        let factor = gain / level;
        for v in image.data.iter_mut() {
            *v *= factor;
        }
        // Integer images carry the scanner's scaled integers: rounding to the slope grid keeps read-back exact.
        // Float images keep about 10 bits below the tissue level, as a reconstruction would; it keeps files small.
        let step = if stored == StoredType::Float32 {
            gain / 1024.0
        } else {
            slope
        };
        for v in image.data.iter_mut() {
            *v = (*v / step).round() * step;
        }
    }
    let (sidecar, sidecar_errors) = make_sidecar(plan, &scanner, &geometry, &mut rng);
    let nii_path = cfg.out.join(&plan.path);
    if let Some(parent) = nii_path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| SynthError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let description = format!("cdwqc synthetic {}", plan.shown.name());
    nifti_writer::write_nifti_gz(
        &nii_path,
        &NiftiImage {
            dims: image.dims,
            data: &image.data,
            affine: geometry.affine,
            stored,
            scl_slope: slope,
            scl_inter: 0.0,
            intent_code: intent,
            description: &description,
        },
    )?;
    let json_path = cfg
        .out
        .join(plan.path.trim_end_matches(".nii.gz").to_string() + ".json");
    let json = serde_json::to_string_pretty(&sidecar)
        .map_err(|e| SynthError::Invalid(format!("{}: {e}", json_path.display())))?;
    std::fs::write(&json_path, json + "\n").map_err(|source| SynthError::Io {
        path: json_path.clone(),
        source,
    })?;
    let bytes = std::fs::metadata(&nii_path).map(|m| m.len()).unwrap_or(0);
    Ok(TruthRecord {
        plan: plan.clone(),
        dims: image.dims,
        voxel_mm: geometry.voxel_mm,
        orientation: if geometry.oblique {
            format!("{}-oblique", geometry.orientation)
        } else {
            geometry.orientation.clone()
        },
        datatype: stored.name().to_string(),
        manufacturer: sidecar.manufacturer.clone(),
        field_strength: scanner.field_t,
        sidecar_errors: sidecar_errors.join(";"),
        bytes,
        world_to_template: subject.world_to_canonical,
    })
}
