//! Pictures as terminal graphics (sixel, kitty, iTerm2) where the terminal draws them,
//! else as half blocks: the choice, made once at start-up, and the protocol state of
//! the picture on screen, kept apart from [`super::app::App`] so that the app state
//! stays plain data and tests always draw half blocks.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use image::{DynamicImage, GrayImage};
use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui_image::picker::cap_parser::{Parser, QueryStdioOptions, Response};
use ratatui_image::picker::{Picker, ProtocolType};
use ratatui_image::protocol::StatefulProtocol;
use ratatui_image::{FontSize, Resize, StatefulImage};

use crate::imaging::preview::{Gray8, Plane};

/// How long start-up waits for the terminal to answer the graphics query. A local
/// terminal answers within milliseconds; one that does not answer gets half blocks.
const QUERY_TIMEOUT: Duration = Duration::from_millis(500);

/// `cdwqc tui --graphics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphicsMode {
    /// Sixel, kitty or iTerm2 graphics when the terminal answers the query for them.
    #[default]
    Auto,
    /// Always half-block characters (two pixels a cell, 24-bit grey).
    Halfblocks,
}

/// Why pictures are drawn with half blocks without asking the terminal, if they are:
/// on request; and inside tmux or GNU screen, which pass no graphics on unless
/// configured to, and whose answers to the query come from the multiplexer, not the
/// terminal that draws. `env` reads an environment variable.
pub fn halfblocks_without_query(
    mode: GraphicsMode,
    env: impl Fn(&str) -> Option<String>,
) -> Option<&'static str> {
    let set = |name: &str| env(name).is_some_and(|v| !v.is_empty());
    let term = env("TERM").unwrap_or_default();
    if mode == GraphicsMode::Halfblocks {
        Some("--graphics halfblocks")
    } else if set("TMUX") || term.starts_with("tmux") {
        Some("inside tmux")
    } else if set("STY") || term.starts_with("screen") {
        Some("inside screen")
    } else if term.is_empty() || term == "dumb" || term == "linux" {
        // No graphics on these, and a query could be printed as text.
        Some("terminal without graphics")
    } else {
        None
    }
}

/// The slice a protocol was built for: a new one is encoded only when this changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SliceKey {
    pub image_id: i64,
    pub plane: Plane,
    pub slice: usize,
    pub window: (f32, f32),
}

/// How the Viewer draws its picture.
#[derive(Default)]
pub struct Graphics {
    /// `None`: half blocks.
    picker: Option<Picker>,
    /// Why half blocks, for the Viewer's title; empty when graphics are on.
    reason: String,
    shown: Option<(SliceKey, StatefulProtocol)>,
}

impl Graphics {
    /// Half blocks, for tests and whenever graphics are off.
    pub fn halfblocks(reason: &str) -> Self {
        Self {
            reason: reason.to_string(),
            ..Self::default()
        }
    }

    /// Decides how to draw pictures. Call once, after the terminal is in raw mode on the
    /// alternate screen and before anything else reads its input: the query writes to
    /// the terminal and reads its answer from standard input. Any failure or silence
    /// means half blocks.
    pub fn detect(mode: GraphicsMode) -> Self {
        let env = |name: &str| std::env::var(name).ok();
        if let Some(reason) = halfblocks_without_query(mode, env) {
            return Self::halfblocks(reason);
        }
        if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
            return Self::halfblocks("not a terminal");
        }
        let Some(answer) = query_terminal(QUERY_TIMEOUT, &env) else {
            return Self::halfblocks("the terminal did not answer the graphics query");
        };
        // Terminals that do not answer the cell-size query usually still give the
        // window's size in pixels.
        let window = crossterm::terminal::window_size().ok().and_then(|w| {
            (w.columns > 0 && w.rows > 0 && w.width > 0 && w.height > 0)
                .then(|| (w.width / w.columns, w.height / w.rows))
        });
        match choose(&answer, window, env) {
            Some((protocol, font_size)) => {
                // ratatui-image's own query (Picker::from_query_stdio) reads standard
                // input on a thread that outlives its timeout and then swallows the
                // first key pressed; so the query is ours and the picker is built from
                // its answer.
                #[allow(deprecated)]
                let mut picker = Picker::from_fontsize(font_size);
                picker.set_protocol_type(protocol);
                Self {
                    picker: Some(picker),
                    ..Self::default()
                }
            }
            None => Self::halfblocks("no graphics protocol detected"),
        }
    }

    /// The protocol in use: `sixel`, `kitty`, `iterm2` or `half blocks`.
    pub fn protocol(&self) -> &'static str {
        match self.picker.as_ref().map(Picker::protocol_type) {
            Some(ProtocolType::Sixel) => "sixel",
            Some(ProtocolType::Kitty) => "kitty",
            Some(ProtocolType::Iterm2) => "iterm2",
            Some(ProtocolType::Halfblocks) | None => "half blocks",
        }
    }

    /// Why half blocks are in use; empty with graphics.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    pub fn enabled(&self) -> bool {
        self.picker.is_some()
    }

    /// Draws the slice as graphics, scaled to fill `area` with its aspect kept; the
    /// picture is made (and encoded) only when `key` differs from the slice on screen,
    /// and re-encoded by the protocol when the area changes size. Returns false, to
    /// draw half blocks instead, when graphics are off or encoding failed (which turns
    /// them off for the rest of the session).
    pub fn draw(
        &mut self,
        frame: &mut Frame,
        area: Rect,
        key: SliceKey,
        picture: impl FnOnce() -> Gray8,
    ) -> bool {
        let Some(picker) = &self.picker else {
            return false;
        };
        if self.shown.as_ref().is_none_or(|(shown, _)| *shown != key) {
            let Some(image) = to_image(picture()) else {
                return false;
            };
            self.shown = Some((key, picker.new_resize_protocol(image)));
        }
        let Some((_, protocol)) = self.shown.as_mut() else {
            return false;
        };
        frame.render_stateful_widget(
            StatefulImage::default().resize(Resize::Scale(None)),
            area,
            protocol,
        );
        if let Some(Err(err)) = protocol.last_encoding_result() {
            self.picker = None;
            self.shown = None;
            self.reason = format!("graphics failed: {err}");
            return false;
        }
        true
    }
}

/// What the terminal said about itself.
#[derive(Debug, Default, Clone, PartialEq)]
struct Answer {
    kitty: bool,
    sixel: bool,
    /// Cell size in pixels, when it answered that query.
    cell: Option<(u16, u16)>,
}

/// Reads the terminal's answers byte by byte until its Device Status Report, which
/// every terminal sends and which comes last; `None` if the bytes stop first.
fn parse_answer(mut next_byte: impl FnMut() -> Option<u8>) -> Option<Answer> {
    let mut parser = Parser::new();
    let mut answer = Answer::default();
    loop {
        for response in parser.push(char::from(next_byte()?)) {
            match response {
                Response::Status => return Some(answer),
                Response::Kitty => answer.kitty = true,
                Response::Sixel => answer.sixel = true,
                Response::CellSize(cell) => answer.cell = cell.or(answer.cell),
                _ => {}
            }
        }
    }
}

/// The protocol and cell size in pixels to draw with, or `None` for half blocks:
/// kitty, then sixel, as the terminal answered; iTerm2 where the environment names a
/// terminal that speaks it (it has no query). Graphics need the cell size.
fn choose(
    answer: &Answer,
    window_cell: Option<(u16, u16)>,
    env: impl Fn(&str) -> Option<String>,
) -> Option<(ProtocolType, FontSize)> {
    let (width, height) = answer.cell.or(window_cell)?;
    if width == 0 || height == 0 {
        return None;
    }
    let iterm2 = env("TERM_PROGRAM").is_some_and(|p| {
        [
            "iTerm",
            "WezTerm",
            "mintty",
            "vscode",
            "Tabby",
            "Hyper",
            "rio",
            "WarpTerminal",
        ]
        .iter()
        .any(|name| p.contains(name))
    }) || env("LC_TERMINAL").is_some_and(|t| t.contains("iTerm"));
    let protocol = if answer.kitty {
        ProtocolType::Kitty
    } else if answer.sixel {
        ProtocolType::Sixel
    } else if iterm2 {
        ProtocolType::Iterm2
    } else {
        return None;
    };
    Some((protocol, FontSize::new(width, height)))
}

/// Asks the terminal for kitty graphics, sixel (device attributes) and its cell size,
/// and reads the answer from standard input, never past `timeout`: nothing is left
/// reading input afterwards, so no key is lost.
fn query_terminal(timeout: Duration, env: &dyn Fn(&str) -> Option<String>) -> Option<Answer> {
    let mut options = QueryStdioOptions::default();
    // As ratatui-image does: WezTerm and Konsole draw iTerm2 images better than their
    // kitty or sixel ones.
    if env("WEZTERM_EXECUTABLE").is_some_and(|v| !v.is_empty())
        || env("KONSOLE_VERSION").is_some_and(|v| !v.is_empty())
    {
        options.blacklist_protocols = vec![ProtocolType::Kitty, ProtocolType::Sixel];
    }
    let mut stdout = std::io::stdout();
    stdout
        .write_all(Parser::query(false, options).as_bytes())
        .ok()?;
    stdout.flush().ok()?;
    let deadline = Instant::now() + timeout;
    parse_answer(|| read_stdin_byte(deadline))
}

/// One byte from standard input, waiting until `deadline` at most. Read unbuffered, one
/// byte at a time, so that keys typed after the answer stay for the input thread.
fn read_stdin_byte(deadline: Instant) -> Option<u8> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut fds = libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd, alive for the whole call.
        let ready = unsafe { libc::poll(&mut fds, 1, millis) };
        if ready < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if ready <= 0 {
            return None;
        }
        let mut byte = 0u8;
        // SAFETY: reads at most one byte into a valid one-byte buffer.
        let read = unsafe { libc::read(libc::STDIN_FILENO, (&raw mut byte).cast(), 1) };
        return (read == 1).then_some(byte);
    }
}

fn to_image(picture: Gray8) -> Option<DynamicImage> {
    let width = u32::try_from(picture.width).ok()?;
    let height = u32::try_from(picture.height).ok()?;
    GrayImage::from_raw(width, height, picture.pixels).map(DynamicImage::ImageLuma8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn half_blocks_on_request_and_inside_multiplexers() {
        let auto = GraphicsMode::Auto;
        let kitty = [("TERM", "xterm-kitty")];
        assert_eq!(halfblocks_without_query(auto, env(&kitty)), None);
        assert_eq!(
            halfblocks_without_query(GraphicsMode::Halfblocks, env(&kitty)),
            Some("--graphics halfblocks")
        );
        let in_tmux = [
            ("TERM", "xterm-256color"),
            ("TMUX", "/tmp/tmux-0/default,1,0"),
        ];
        assert_eq!(
            halfblocks_without_query(auto, env(&in_tmux)),
            Some("inside tmux")
        );
        // TERM alone says tmux too: over SSH from a tmux pane, TMUX stays behind.
        assert_eq!(
            halfblocks_without_query(auto, env(&[("TERM", "tmux-256color")])),
            Some("inside tmux")
        );
        assert_eq!(
            halfblocks_without_query(auto, env(&[("TERM", "xterm"), ("STY", "1.pts-0")])),
            Some("inside screen")
        );
        // An empty TMUX is not tmux.
        assert_eq!(
            halfblocks_without_query(auto, env(&[("TERM", "foot"), ("TMUX", "")])),
            None
        );
        assert!(halfblocks_without_query(auto, env(&[])).is_some());
        assert!(halfblocks_without_query(auto, env(&[("TERM", "dumb")])).is_some());
    }

    #[test]
    fn half_blocks_never_take_the_graphics_path() {
        let mut graphics = Graphics::halfblocks("test");
        assert!(!graphics.enabled());
        assert_eq!(graphics.protocol(), "half blocks");
        let mut terminal =
            ratatui::Terminal::new(ratatui::backend::TestBackend::new(10, 5)).expect("terminal");
        let key = SliceKey {
            image_id: 1,
            plane: Plane::Axial,
            slice: 0,
            window: (0.0, 1.0),
        };
        terminal
            .draw(|frame| {
                let drawn = graphics.draw(frame, frame.area(), key, || {
                    panic!("no picture is made for half blocks")
                });
                assert!(!drawn);
            })
            .expect("draw");
    }

    #[test]
    fn the_answer_ends_at_the_status_report() {
        let sixel_terminal = b"\x1b[?62;4;22c\x1b[6;20;10t\x1b[0nq";
        let mut bytes = sixel_terminal.iter().copied();
        let answer = parse_answer(|| bytes.next()).expect("answer");
        assert_eq!(
            answer,
            Answer {
                kitty: false,
                sixel: true,
                cell: Some((10, 20)),
            }
        );
        // The key typed after the answer is left for the input thread.
        assert_eq!(bytes.next(), Some(b'q'));
        let mut silent = b"\x1b[?62;22c".iter().copied();
        assert_eq!(parse_answer(|| silent.next()), None);
    }

    #[test]
    fn kitty_before_sixel_and_nothing_without_a_cell_size() {
        let both = Answer {
            kitty: true,
            sixel: true,
            cell: Some((9, 18)),
        };
        let no_env = |_: &str| None;
        // FontSize has no PartialEq: compare its fields.
        let plain = |c: Option<(ProtocolType, FontSize)>| c.map(|(p, f)| (p, f.width, f.height));
        assert_eq!(
            plain(choose(&both, None, no_env)),
            Some((ProtocolType::Kitty, 9, 18))
        );
        let sixel = Answer {
            kitty: false,
            sixel: true,
            cell: None,
        };
        assert_eq!(
            plain(choose(&sixel, Some((8, 16)), no_env)),
            Some((ProtocolType::Sixel, 8, 16))
        );
        assert!(choose(&sixel, None, no_env).is_none());
        let no_graphics = Answer {
            cell: Some((8, 16)),
            ..Answer::default()
        };
        assert!(choose(&no_graphics, None, no_env).is_none());
        assert_eq!(
            choose(&no_graphics, None, env(&[("TERM_PROGRAM", "iTerm.app")])).map(|c| c.0),
            Some(ProtocolType::Iterm2)
        );
    }

    #[test]
    fn a_gray_picture_becomes_a_luma_image() {
        let picture = Gray8 {
            width: 3,
            height: 2,
            pixels: vec![0, 1, 2, 3, 4, 5],
        };
        let image = to_image(picture).expect("image");
        assert_eq!((image.width(), image.height()), (3, 2));
        assert!(
            to_image(Gray8 {
                width: 3,
                height: 3,
                pixels: vec![0; 4],
            })
            .is_none()
        );
    }
}
