//! What users of neighbouring tools expect: output people read (no Rust debug forms),
//! shell completions and man pages, a labelled montage.

use std::path::Path;
use std::process::Command;

use crate::support::{cdwqc, ok, stdout};
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

