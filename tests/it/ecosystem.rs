//! What users of neighbouring tools expect: output people read (no Rust debug forms),
//! shell completions and man pages, a labelled montage.

use std::path::Path;
use std::process::Command;

use crate::support::{cdwqc, ok, stderr, stdout};
use crate::train::tiny_rated_warehouse;

/// Fails when `text` holds Rust's debug form of an `Option` or of a shape.
fn assert_readable(command: &str, text: &str) {
    for debug in ["Some(", "None", "Cuda(", "EarlyStopped"] {
        assert!(
            !text.contains(debug),
            "`cdwqc {command}` printed {debug:?}:\n{text}"
        );
    }
}

#[test]
fn train_infer_and_inspect_print_no_debug_formatting() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    tiny_rated_warehouse(dir);
    let inspected = ok(dir, &["inspect", "w/sub-0001"]);
    assert_readable("inspect", &inspected);
    // Shapes and voxel sizes as people write them: 40x48x40, 1.000x1.000x1.000 mm.
    let first = inspected.lines().next().expect("a line per file");
    assert!(
        first.split("  ").any(|field| {
            let dims: Vec<&str> = field.split('x').collect();
            dims.len() >= 3 && dims.iter().all(|d| d.parse::<u32>().is_ok())
        }),
        "{first}"
    );
    assert!(!first.contains('['), "{first}");

    let trained = ok(
        dir,
        &[
            "train",
            "--preset",
            "tiny",
            "--task",
            "usable",
            "--method",
            "ssda",
            "--epochs",
            "1",
            "--seed",
            "1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    );
    assert_readable("train", &trained);
    let last = trained.lines().last().expect("a summary line");
    assert!(
        last.contains("completed after 1 epochs; best epoch 1, validation BA "),
        "{last}"
    );
    assert!(trained.contains("epoch   1 [main] loss"), "{trained}");

    let predicted = ok(
        dir,
        &[
            "infer",
            "--run",
            "usable-ssda-seed1",
            "--device",
            "cpu",
            "--threads",
            "1",
        ],
    );
    assert_readable("infer", &predicted);
    let report = ok(dir, &["report", "model", "--run", "usable-ssda-seed1"]);
    assert_readable("report model", &report);
    let agreement = ok(dir, &["report", "agreement"]);
    assert_readable("report agreement", &agreement);

    // The predictions leave as BIDS derivatives too, every run described.
    let said = ok(dir, &["ratings", "export", "--bids-derivatives", "w"]);
    assert_readable("ratings export --bids-derivatives", &said);
    let out = dir.join("w/derivatives/cdwqc");
    assert!(check_described(&out, "predictions") > 0);
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("predictions.json")).expect("sidecar"),
    )
    .expect("JSON");
    let run = sidecar["model_run"]["Levels"]["usable-ssda-seed1"]
        .as_str()
        .unwrap_or_default();
    assert!(
        run.contains("method ssda") && run.contains("task usable"),
        "{run}"
    );
}

#[test]
fn bash_loads_the_completion_script() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = env!("CARGO_BIN_EXE_cdwqc");
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{bin}' completions bash) && complete -p cdwqc"
        ))
        .current_dir(tmp.path())
        .output()
        .expect("bash runs");
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("-F _cdwqc"), "{out}");
    assert!(out.trim_end().ends_with(" cdwqc"), "{out}");

    // The script completes subcommands and their options.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{bin}' completions bash) && COMP_WORDS=(cdwqc rat) && COMP_CWORD=1 \
             && _cdwqc cdwqc rat cdwqc && printf '%s\\n' \"${{COMPREPLY[@]}}\""
        ))
        .current_dir(tmp.path())
        .output()
        .expect("bash runs");
    let words = stdout(&o);
    assert!(
        words.lines().any(|w| w == "ratings") && words.lines().any(|w| w == "raters"),
        "{words}"
    );

    for shell in ["zsh", "fish"] {
        let script = ok(tmp.path(), &["completions", shell]);
        assert!(
            script.contains("ratings") && script.contains("completions"),
            "{shell}: {script}"
        );
    }
    let refused = cdwqc(tmp.path(), &["completions", "tcsh"]);
    assert!(!refused.status.success());
}

#[test]
fn man_pages_cover_every_visible_command() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let page = ok(dir, &["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH cdwqc 1"),
        "{page}"
    );
    assert!(page.contains("ratings"), "{page}");
    let said = ok(dir, &["man", "--out", "man/man1"]);
    assert!(said.contains("man pages in man/man1"), "{said}");
    let pages = dir.join("man/man1");
    for name in [
        "cdwqc.1",
        "cdwqc-ratings.1",
        "cdwqc-ratings-import.1",
        "cdwqc-train.1",
    ] {
        let text = std::fs::read_to_string(pages.join(name)).unwrap_or_default();
        assert!(text.contains(".TH"), "{name}: {text}");
    }
    // The hidden job runner has no page.
    assert!(!pages.join("cdwqc-job.1").exists());
    if Path::new("/usr/bin/man").exists() {
        let o = Command::new("man")
            .args(["-l", "cdwqc-ratings-import.1"])
            .current_dir(&pages)
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .expect("man runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    } else {
        println!("skipped rendering with man: /usr/bin/man is not installed");
    }
}

#[test]
fn montage_rows_carry_their_class_and_grade() {
    use cdwqc::synth::font::draw_text;
    use cdwqc::synth::montage::{
        LABEL_INK, LABEL_SCALE, label_column_width, label_line_origins, montage_rows, row_label,
    };

    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ok(
        dir,
        &[
            "synth", "--out", "w", "--t1", "6", "--flair", "6", "--other", "0", "--grid", "tiny",
            "--seed", "2",
        ],
    );
    ok(dir, &["synth", "--montage", "montage.png", "--from", "w"]);
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(dir.join("montage.png")).expect("montage"),
    ));
    let mut reader = decoder.read_info().expect("png header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut pixels).expect("png data");
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let width = info.width as usize;
    let pixels = &pixels[..info.buffer_size()];

    // Each row's label, drawn alone, must be found ink for ink in the label column, and
    // the column must hold nothing else: the labels are the ones of their rows.
    let rows = montage_rows();
    let labels = label_column_width();
    let mut expected = vec![0u8; pixels.len()];
    for (row, class) in rows.iter().enumerate() {
        for (line, origin) in row_label(class).iter().zip(label_line_origins(row)) {
            draw_text(&mut expected, width, origin, line, LABEL_SCALE, LABEL_INK);
        }
    }
    let mut ink = 0;
    for y in 0..pixels.len() / width {
        for x in 0..labels {
            let (want, got) = (expected[y * width + x], pixels[y * width + x]);
            if want == LABEL_INK {
                ink += 1;
                assert_eq!(got, LABEL_INK, "missing label ink at ({x}, {y})");
            } else {
                assert_ne!(got, LABEL_INK, "stray ink at ({x}, {y})");
            }
        }
    }
    assert!(ink > 100 * rows.len(), "only {ink} label pixels");
    assert_eq!(
        row_label("motion_2"),
        ["MOTION".to_string(), "GRADE 2".to_string()]
    );
    assert_eq!(
        row_label("reject_truncated_fov"),
        ["REJECT".to_string(), "TRUNCATED_FOV".to_string()]
    );
    assert!(rows.iter().any(|r| r == "motion_2"));
}

/// The tiny warehouse the rating files in tests/data/ecosystem name, imported, with two
/// simulated raters' ratings.
fn small_rated_warehouse(dir: &Path) {
    ok(
        dir,
        &[
            "synth", "--out", "w", "--t1", "6", "--flair", "6", "--other", "0", "--grid", "tiny",
            "--seed", "3",
        ],
    );
    ok(dir, &["init"]);
    ok(dir, &["import", "w"]);
    for r in ["rater1", "rater2"] {
        ok(
            dir,
            &[
                "ratings",
                "import",
                &format!("w/derivatives/cdwqc-synth/ratings/{r}.tsv"),
                "--rater",
                r,
            ],
        );
    }
}

fn fixture(name: &str) -> String {
    crate::support::repo()
        .join("tests/data/ecosystem")
        .join(name)
        .display()
        .to_string()
}

/// Rows of a TSV file as maps from column to cell, after checking that every row has
/// the header's width.
fn read_tsv(path: &Path) -> (Vec<String>, Vec<std::collections::HashMap<String, String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|r| {
            let r = r.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(r.len(), header.len(), "{}: ragged row", path.display());
            header
                .iter()
                .cloned()
                .zip(r.iter().map(str::to_string))
                .collect()
        })
        .collect();
    (header, rows)
}

/// The checks the BIDS specification makes of a tabular file and its sidecar: every
/// column described, every value of a column with levels one of its levels, missing
/// values written n/a.
fn check_described(folder: &Path, table: &str) -> usize {
    let (header, rows) = read_tsv(&folder.join(format!("{table}.tsv")));
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(folder.join(format!("{table}.json"))).expect("sidecar"),
    )
    .expect("sidecar JSON");
    for column in &header {
        let described = &sidecar[column];
        assert!(
            described["Description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{table}.json does not describe {column}"
        );
        if let Some(levels) = described["Levels"].as_object() {
            for row in &rows {
                let cell = &row[column];
                assert!(
                    cell == "n/a" || levels.contains_key(cell),
                    "{table}.tsv: {column} = {cell:?} is not a described level"
                );
            }
        }
    }
    for row in &rows {
        assert!(
            row.values().all(|c| !c.is_empty()),
            "{table}.tsv: empty cell"
        );
    }
    rows.len()
}

#[test]
fn bids_derivatives_export_is_described_round_trips_and_validates() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    small_rated_warehouse(dir);
    // A quality-only rater too: the export keeps their grades unknown.
    ok(
        dir,
        &[
            "ratings",
            "import",
            &fixture("mriqc-widget"),
            "--rater",
            "mriqc_rater",
        ],
    );
    let said = ok(dir, &["ratings", "export", "--bids-derivatives", "w"]);
    assert!(said.contains("ratings of"), "{said}");
    assert_readable("ratings export --bids-derivatives", &said);
    let out = dir.join("w/derivatives/cdwqc");
    let description: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("dataset_description.json")).expect("description"),
    )
    .expect("JSON");
    assert_eq!(description["DatasetType"], "derivative");
    assert_eq!(description["GeneratedBy"][0]["Name"], "cdwqc");
    assert!(description["GeneratedBy"][0]["Version"].is_string());
    assert!(description["BIDSVersion"].is_string());

    let ratings = check_described(&out, "ratings");
    let consensus = check_described(&out, "consensus");
    check_described(&out, "predictions");
    assert!(
        consensus > 0 && ratings > consensus,
        "{ratings} ratings, {consensus} images"
    );
    let (_, rows) = read_tsv(&out.join("ratings.tsv"));
    let quality_only: Vec<_> = rows
        .iter()
        .filter(|r| r["rater"] == "mriqc_rater")
        .collect();
    assert_eq!(quality_only.len(), 4);
    assert!(
        quality_only
            .iter()
            .all(|r| r["motion"] == "n/a" && r["gado"] == "n/a")
    );
    assert!(
        rows.iter()
            .all(|r| r["filename"].starts_with("sub-")
                && dir.join("w").join(&r["filename"]).is_file())
    );
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ratings.json")).expect("json"))
            .expect("json");
    for rater in ["rater1", "rater2", "mriqc_rater"] {
        assert!(sidecar["rater"]["Levels"][rater].is_string(), "{rater}");
    }

    // Round trip: a fresh store of the same warehouse, fed the export, holds the same
    // ratings in force (a reject's gado and grades are not applicable, so not compared).
    let in_force = |db: &str| {
        ok(
            dir,
            &[
                "--db",
                db,
                "sql",
                "select i.rel_path, r.rater, r.usable, r.reject_reason, \
                 case when r.usable then r.gado end, case when r.usable then r.motion end, \
                 case when r.usable then r.contrast end, case when r.usable then r.noise end, \
                 r.quality, r.confidence, r.time_ms, r.comment, \
                 strftime(r.rated_at, '%Y-%m-%dT%H:%M:%S') \
                 from ratings_latest r join images i using (image_id) order by 1, 2",
                "--format",
                "csv",
            ],
        )
    };
    let before = in_force("cdwqc.duckdb");
    let other = ["--db", "other.duckdb"];
    ok(dir, &[other[0], other[1], "init"]);
    ok(dir, &[other[0], other[1], "import", "w"]);
    let imported = ok(
        dir,
        &[
            other[0],
            other[1],
            "ratings",
            "import",
            "w/derivatives/cdwqc/ratings.tsv",
        ],
    );
    assert!(
        imported.contains(&format!("{ratings} ratings imported")),
        "{imported}"
    );
    let after = in_force("other.duckdb");
    assert_eq!(before.lines().count(), ratings + 1);
    assert_eq!(before, after);

    // The BIDS validator, where npm can run it.
    let version = Command::new("npx")
        .args(["--yes", "bids-validator@1.15.0", "--version"])
        .output();
    match version {
        Ok(o) if o.status.success() => {
            let o = Command::new("npx")
                .args(["--yes", "bids-validator@1.15.0", "w", "--json"])
                .current_dir(dir)
                .output()
                .expect("bids-validator runs");
            let report: serde_json::Value = serde_json::from_slice(&o.stdout)
                .unwrap_or_else(|e| panic!("bids-validator output: {e}\n{}", stdout(&o)));
            let errors = report["issues"]["errors"].as_array().expect("errors");
            assert!(errors.is_empty(), "BIDS validator errors: {errors:#?}");
        }
        Ok(o) => println!(
            "skipped the BIDS validator: `npx bids-validator@1.15.0` failed ({})",
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
        Err(e) => println!("skipped the BIDS validator: npx is not available ({e})"),
    }
}

#[test]
fn mriqc_widget_files_and_fetmrqc_csv_import_onto_the_protocol() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    small_rated_warehouse(dir);
    let query = |rater: &str| {
        ok(
            dir,
            &[
                "sql",
                &format!(
                    "select regexp_extract(i.path, 'sub-[^/]*$') as file, r.usable, r.reject_reason, r.quality, \
                     r.motion, r.confidence, r.time_ms, r.comment from ratings_latest r join images i using (image_id) \
                     where r.rater = '{rater}' order by file"
                ),
                "--format",
                "csv",
            ],
        )
    };

    // Without --rater the widget files name nobody: nothing is saved.
    let refused = cdwqc(dir, &["ratings", "import", &fixture("mriqc-widget")]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("no row names its rater")
            && stderr(&refused).contains("give --rater NAME"),
        "{}",
        stderr(&refused)
    );

    let widget_files: Vec<String> = [
        "warehouse_sub-0003_ses-01_FLAIR.json",
        "warehouse_sub-0004_ses-01_FLAIR.json",
    ]
    .iter()
    .map(|f| fixture(&format!("mriqc-widget/{f}")))
    .collect();
    let mut args = vec![
        "ratings",
        "import",
        "--format",
        "mriqc-json",
        "--rater",
        "ann",
    ];
    args.extend(widget_files.iter().map(String::as_str));
    let said = ok(dir, &args);
    assert!(
        said.contains("2 ratings imported (mriqc-json format"),
        "{said}"
    );
    let said = ok(
        dir,
        &[
            "ratings",
            "import",
            &fixture("mriqc-widget"),
            "--rater",
            "bob",
        ],
    );
    assert!(
        said.contains("4 ratings imported (mriqc-json format"),
        "{said}"
    );
    assert_eq!(
        query("bob"),
        "file,usable,reject_reason,quality,motion,confidence,time_ms,comment\n\
         sub-0002_ses-02_FLAIR.nii.gz,true,,medium,,,18500,\n\
         sub-0003_ses-01_FLAIR.nii.gz,true,,good,,5,21400,\n\
         sub-0004_ses-01_FLAIR.nii.gz,true,,bad,,,35250,\"MRIQC widget: artifacts: head-motion, noise-global\"\n\
         sub-0005_ses-01_FLAIR.nii.gz,false,other,,,2,12000,MRIQC widget: artifacts: wrap-around; brain cut at the vertex\n"
    );
    // The same files again: already imported, nothing saved twice.
    let again = ok(
        dir,
        &[
            "ratings",
            "import",
            &fixture("mriqc-widget"),
            "--rater",
            "bob",
        ],
    );
    assert!(again.contains("already imported"), "{again}");

    let said = ok(
        dir,
        &[
            "ratings",
            "import",
            &fixture("fetmrqc/ratings.csv"),
            "--rater",
            "cid",
        ],
    );
    assert!(
        said.contains("4 ratings imported (fetmrqc format"),
        "{said}"
    );
    assert_eq!(
        query("cid"),
        "file,usable,reject_reason,quality,motion,confidence,time_ms,comment\n\
         sub-0001_ses-01_acq-space_FLAIR.nii.gz,true,,bad,,,55000,\"fetMRQC: fetal_motion 2.4 (high); bias_field 0.8 (low); artifacts ['blur']; motion in the last slices, see slice 4\"\n\
         sub-0002_ses-02_FLAIR.nii.gz,true,,medium,,,30000,fetMRQC: fetal_motion 1.2 (moderate); bias_field 0.4 (low)\n\
         sub-0003_ses-01_FLAIR.nii.gz,true,,good,,,41200,fetMRQC: fetal_motion 0.5 (low); bias_field 0.2 (low)\n\
         sub-0004_ses-01_FLAIR.nii.gz,false,other,,,,9750,fetMRQC: fetal_motion 1.0 (moderate); bias_field 2.0 (high); not a brain\n"
    );
    // Excluded images as bad-quality usable ones, on request (a copy: the same bytes
    // would be refused as already imported).
    let copy = dir.join("fetmrqc-copy.csv");
    let mut text = std::fs::read_to_string(fixture("fetmrqc/ratings.csv")).expect("fixture");
    text.push('\n');
    std::fs::write(&copy, text).expect("copy");
    let said = ok(
        dir,
        &[
            "ratings",
            "import",
            &copy.display().to_string(),
            "--rater",
            "dan",
            "--mriqc-exclude",
            "bad",
        ],
    );
    assert!(said.contains("4 ratings imported"), "{said}");
    assert!(
        query("dan").contains("sub-0004_ses-01_FLAIR.nii.gz,true,,bad,"),
        "{}",
        query("dan")
    );
}
