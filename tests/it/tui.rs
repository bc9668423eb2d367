//! `cdwqc tui` end to end: the real binary in a fixed-size tmux session, driven with
//! keys; ratings checked in the store afterwards, also after a SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{external, ok};

/// A tmux server of its own (its own socket), killed when the test ends.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, dir: &Path, command: &str) -> Self {
        let version = Command::new("tmux").arg("-V").output();
        assert!(
            version.as_ref().is_ok_and(|o| o.status.success()),
            "tmux is not installed but the dashboard tests drive the binary in it: \
             run scripts/setup.sh (or `apt-get install -y tmux`)"
        );
        let socket = format!("cdwqc-{name}-{}", std::process::id());
        let tmux = Self { socket };
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "100",
            "-y",
            "30",
            "-c",
            &dir.display().to_string(),
            command,
        ]);
        tmux
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["-L", &self.socket, "has-session", "-t", "t"])
            .output()
            .is_ok_and(|o| o.status.success())
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "t"])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "t"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Waits until the screen shows `text`; fails with the screen otherwise.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "the dashboard never showed {text:?}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for_exit(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.alive() {
            assert!(Instant::now() < deadline, "cdwqc tui did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

/// A store with four real images and the rater ann.
fn store_with_rater() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let w = tmp.path().join("w");
    std::fs::create_dir_all(&w).expect("mkdir");
    for name in [
        "anatomical.nii",
        "standard.nii.gz",
        "example_nifti2.nii.gz",
        "reoriented_anat_moved.nii",
    ] {
        std::fs::copy(external(name), w.join(name)).expect("copy");
    }
    ok(tmp.path(), &["init"]);
    ok(tmp.path(), &["import", "w"]);
    ok(tmp.path(), &["raters", "add", "ann"]);
    let db = tmp.path().join("cdwqc.duckdb");
    (tmp, db)
}

fn tui_command(db: &Path) -> String {
    format!(
        "CDWQC_KEYS=/dev/null exec {} --db {} tui --rater ann",
        env!("CARGO_BIN_EXE_cdwqc"),
        db.display()
    )
}

fn sql(dir: &Path, query: &str) -> String {
    ok(dir, &["sql", query, "--format", "csv"])
}

/// The image id in "saved image N as ..." on the status line.
fn saved_image(screen: &str) -> i64 {
    let (_, rest) = screen
        .split_once("saved image ")
        .unwrap_or_else(|| panic!("no save shown:\n{screen}"));
    rest.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no image id after 'saved image':\n{screen}"))
}

#[test]
fn rates_three_images_with_keys_and_quits() {
    let (tmp, db) = store_with_rater();
    let tmux = Tmux::start("rate", tmp.path(), &tui_command(&db));
    tmux.wait_for("code: ");
    tmux.keys(&["a", "Enter"]);
    tmux.wait_for("saved this session: 1");
    // An invalid key is refused in place and saves nothing.
    tmux.keys(&["r", "a"]);
    tmux.wait_for("'ra' refused");
    tmux.keys(&["Enter"]);
    tmux.wait_for("saved this session: 2");
    tmux.keys(&["k", "z", "z", "Enter"]);
    tmux.wait_for("saved this session: 3");
    tmux.keys(&["q"]);
    tmux.wait_for_exit();
    assert_eq!(
        sql(tmp.path(), "select count(*) as n from ratings_latest"),
        "n\n3\n"
    );
    assert_eq!(
        sql(
            tmp.path(),
            "select code, usable, gado, contrast, source from ratings_latest order by rating_id"
        ),
        "code,usable,gado,contrast,source\na,true,false,0,tui\nr,false,false,0,tui\nkzz,true,true,2,tui\n"
    );
}

#[test]
fn every_save_shown_survives_sigkill() {
    let (tmp, db) = store_with_rater();
    let tmux = Tmux::start("kill", tmp.path(), &tui_command(&db));
    tmux.wait_for("code: ");
    let mut shown = Vec::new();
    for (n, code) in ["d", "aa", "k"].iter().enumerate() {
        let keys: Vec<String> = code.chars().map(String::from).collect();
        let mut args: Vec<&str> = keys.iter().map(String::as_str).collect();
        args.push("Enter");
        tmux.keys(&args);
        let screen = tmux.wait_for(&format!("saved this session: {}", n + 1));
        shown.push(saved_image(&screen));
    }
    let pid = tmux.run(&["display-message", "-p", "-t", "t", "#{pane_pid}"]);
    let killed = Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    tmux.wait_for_exit();
    let stored = sql(
        tmp.path(),
        "select image_id from ratings_latest where rater = 'ann' order by image_id",
    );
    let stored: Vec<i64> = stored.lines().skip(1).filter_map(|l| l.parse().ok()).collect();
    shown.sort_unstable();
    assert_eq!(stored, shown, "every rating shown as saved is in the store");
}
