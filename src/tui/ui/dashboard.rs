//! The Dashboard view: images per sequence and status, rating progress, inter-rater
//! agreement at a glance, queue progress, latest runs. Empty sections name the command
//! that fills them.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Row, Table};

use super::empty;
use super::figures::{CountColumns, fit_text, room};
use crate::store::dashboard::AgreementGlance;
use crate::tui::app::App;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let summary = match &app.dashboard {
        None => return empty(frame, area, "Dashboard", "loading…"),
        Some(Err(err)) => return empty(frame, area, "Dashboard", err),
        Some(Ok(summary)) => summary,
    };
    let [top, bottom] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(area);
    let [images, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(top);
    // Agreement sits under rating progress: both are about the raters.
    let [raters, agreement] =
        Layout::vertical([Constraint::Fill(1), Constraint::Length(5)]).areas(right);
    let [queues, runs] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);

    if summary.sequences.is_empty() {
        empty(
            frame,
            images,
            "Images",
            "no images yet: run `cdwqc import DIR`",
        );
    } else {
        let total: i64 = summary
            .sequences
            .iter()
            .map(|s| s.ok + s.failed + s.missing)
            .sum();
        let counts = CountColumns::fit(
            &["ok", "failed", "missing"],
            room(images.width, &[NAME_MIN]),
            |f| {
                summary
                    .sequences
                    .iter()
                    .map(|s| vec![f.show(s.ok), f.show(s.failed), f.show(s.missing)])
                    .collect()
            },
        );
        let rows = summary
            .sequences
            .iter()
            .zip(&counts.rows)
            .map(|(s, c)| Row::new([vec![s.sequence.clone()], c.clone()].concat()));
        let mut block =
            Block::bordered().title(format!(" Images ({}) ", counts.figures.show(total)));
        if let Some(legend) = counts.legend() {
            block = block.title_bottom(legend);
        }
        frame.render_widget(
            Table::new(rows, with_name(&counts, &[]))
                .header(bold(
                    [vec!["sequence".to_string()], counts.headers.clone()].concat(),
                ))
                .block(block),
            images,
        );
    }

    if summary.refining && summary.raters.is_empty() {
        empty(
            frame,
            raters,
            "Rating progress",
            "counting the ratings in force… (the other views work meanwhile)",
        );
    } else if summary.raters.is_empty() {
        empty(
            frame,
            raters,
            "Raters",
            "no raters yet: run `cdwqc raters add NAME`",
        );
    } else {
        let counts = CountColumns::fit(
            &["rated", "rej.", "later"],
            room(raters.width, &[NAME_MIN, SAVED_WIDTH]),
            |f| {
                summary
                    .raters
                    .iter()
                    .map(|r| {
                        vec![
                            f.show(r.images_rated),
                            f.show(r.rejected),
                            f.show(r.review_later),
                        ]
                    })
                    .collect()
            },
        );
        let rows = summary.raters.iter().zip(&counts.rows).map(|(r, c)| {
            Row::new([vec![r.rater.clone()], c.clone(), vec![r.last_saved.clone()]].concat())
        });
        let mut block = Block::bordered().title(if summary.refining {
            " Rating progress · refining… "
        } else {
            " Rating progress "
        });
        if let Some(legend) = counts.legend() {
            block = block.title_bottom(legend);
        }
        frame.render_widget(
            Table::new(rows, with_name(&counts, &[SAVED_WIDTH]))
                .header(bold(
                    [
                        vec!["rater".to_string()],
                        counts.headers.clone(),
                        vec!["last saved".to_string()],
                    ]
                    .concat(),
                ))
                .block(block),
            raters,
        );
    }

    if summary.refining && summary.agreement.is_none() && !app.blind() {
        empty(frame, agreement, "Agreement", "counting…");
    } else {
        draw_agreement(frame, agreement, summary.agreement.as_deref());
    }

    if summary.refining && summary.queues.is_empty() {
        empty(frame, queues, "Queue progress", "counting…");
    } else if summary.queues.is_empty() {
        empty(
            frame,
            queues,
            "Queues",
            "no rating queues yet: raters without one rate every ok image (cdwqc tui --rater NAME)",
        );
    } else {
        // Done of all, and the share done: `750,002/1,000,000 75%`.
        let counts = CountColumns::fit(
            &["done", ""],
            room(queues.width, &[NAME_MIN, NAME_MIN]),
            |f| {
                summary
                    .queues
                    .iter()
                    .map(|q| {
                        let done = q.items - q.pending;
                        let share = if q.items > 0 { 100 * done / q.items } else { 0 };
                        vec![
                            format!("{}/{}", f.show(done), f.show(q.items)),
                            format!("{share}%"),
                        ]
                    })
                    .collect()
            },
        );
        let rows =
            summary.queues.iter().zip(&counts.rows).map(|(q, c)| {
                Row::new([vec![q.queue.clone(), q.rater.clone()], c.clone()].concat())
            });
        let mut block = Block::bordered().title(" Queue progress ");
        if let Some(legend) = counts.legend() {
            block = block.title_bottom(legend);
        }
        let mut widths = vec![Constraint::Fill(1)];
        widths.extend(with_name(&counts, &[]));
        frame.render_widget(
            Table::new(rows, widths)
                .header(bold(
                    [
                        vec!["queue".to_string(), "rater".to_string()],
                        counts.headers.clone(),
                    ]
                    .concat(),
                ))
                .block(block),
            queues,
        );
    }

    if app.blind() {
        empty(frame, runs, "Runs", "hidden in blind rating mode");
    } else if summary.runs.is_empty() {
        empty(
            frame,
            runs,
            "Runs",
            "no training or inference runs yet: start one in 7 Jobs, or run `cdwqc train`",
        );
    } else {
        let table = RunsTable::plan(&summary.runs, runs.width.saturating_sub(2));
        frame.render_widget(
            Table::new(table.rows, table.widths)
                .header(bold(table.headers))
                .block(Block::bordered().title(match app.jobs.active() {
                    0 => " Latest runs ".to_string(),
                    n => format!(" Latest runs · {n} job(s) running (7 Jobs) "),
                })),
            runs,
        );
    }
}

/// The Latest runs table planned for `inner` cells. Status, test BA and start time are
/// never cut; the run name gives way (shortened with `…`), and when it would keep fewer
/// than [`RUN_NAME_WANTED`] characters the kind column goes first, then the test BA
/// header shortens to `BA`, then the start time goes.
struct RunsTable {
    headers: Vec<String>,
    rows: Vec<Row<'static>>,
    widths: Vec<Constraint>,
}

/// What the run name is given before other columns make room for it.
const RUN_NAME_WANTED: u16 = 16;

impl RunsTable {
    fn plan(runs: &[crate::store::dashboard::RunSummary], inner: u16) -> Self {
        let widest = |header: &str, cell: &dyn Fn(&crate::store::dashboard::RunSummary) -> &str| {
            runs.iter()
                .map(|r| cell(r).chars().count())
                .chain([header.chars().count()])
                .max()
                .unwrap_or(0) as u16
        };
        let kind = widest("kind", &|r| &r.kind);
        let status = widest("status", &|r| &r.status);
        let ba_header = |short: bool| if short { "BA" } else { "test BA" };
        let started = widest("started", &|r| &r.started_at);
        // (with kind, short BA header, with start time)
        let plans = [
            (true, false, true),
            (false, false, true),
            (false, true, true),
            (false, true, false),
        ];
        let columns = |(with_kind, short, with_start): (bool, bool, bool)| -> Vec<u16> {
            let ba = widest(ba_header(short), &|r| &r.test_balanced_accuracy);
            [
                with_kind.then_some(kind),
                Some(status),
                Some(ba),
                with_start.then_some(started),
            ]
            .into_iter()
            .flatten()
            .collect()
        };
        // Each column after the name takes its width and a one-cell gap.
        let name_room =
            |widths: &[u16]| inner.saturating_sub(widths.iter().map(|w| w + 1).sum::<u16>());
        let plan = plans
            .into_iter()
            .find(|&p| name_room(&columns(p)) >= RUN_NAME_WANTED)
            .unwrap_or(plans[plans.len() - 1]);
        let (with_kind, short, with_start) = plan;
        let widths = columns(plan);
        let room = name_room(&widths);
        let mut headers = vec!["run".to_string()];
        if with_kind {
            headers.push("kind".into());
        }
        headers.extend(["status".to_string(), ba_header(short).to_string()]);
        if with_start {
            headers.push("started".into());
        }
        let rows = runs
            .iter()
            .map(|r| {
                let mut cells = vec![fit_text(&r.run_id, usize::from(room))];
                if with_kind {
                    cells.push(r.kind.clone());
                }
                cells.extend([r.status.clone(), r.test_balanced_accuracy.clone()]);
                if with_start {
                    cells.push(r.started_at.clone());
                }
                Row::new(cells)
            })
            .collect();
        Self {
            headers,
            rows,
            widths: std::iter::once(room)
                .chain(widths)
                .map(Constraint::Length)
                .collect(),
        }
    }
}

/// Per task: images with 2+ labels, pairwise agreement, Fleiss' kappa, Krippendorff's
/// alpha; `None` in blind rating mode.
fn draw_agreement(frame: &mut Frame, area: Rect, glance: Option<&[AgreementGlance]>) {
    let Some(glance) = glance else {
        return empty(frame, area, "Agreement", "hidden in blind rating mode");
    };
    if glance.iter().all(|g| g.images == 0) {
        return empty(
            frame,
            area,
            "Agreement",
            "rate with 2+ raters to see agreement (cdwqc tui --rater NAME)",
        );
    }
    // Undefined statistics (say, all labels in one category) show as a dash.
    let number = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.3}"));
    let counts = CountColumns::fit(&["rated 2+"], room(area.width, &[NAME_MIN, 6, 8, 6]), |f| {
        glance
            .iter()
            .map(|g| vec![f.show(i64::try_from(g.images).unwrap_or(i64::MAX))])
            .collect()
    });
    let rows = glance.iter().zip(&counts.rows).map(|(g, c)| {
        Row::new(vec![
            g.task.clone(),
            c[0].clone(),
            g.percent_agreement
                .map_or("–".to_string(), |p| format!("{:.1}%", 100.0 * p)),
            number(g.fleiss_kappa),
            number(g.krippendorff_alpha),
        ])
    });
    let bottom = counts
        .legend()
        .unwrap_or(" κ: images rated by every rater ");
    frame.render_widget(
        Table::new(rows, with_name(&counts, &[6, 8, 6]))
            .header(bold(
                [
                    vec!["task".to_string()],
                    counts.headers.clone(),
                    vec!["agree".into(), "Fleiss κ".into(), "α".into()],
                ]
                .concat(),
            ))
            .block(Block::bordered().title(" Agreement ").title_bottom(bottom)),
        area,
    );
}

/// The narrowest a name column (sequence, rater, queue) is planned for.
const NAME_MIN: u16 = 5;
/// `11-28 14:05`.
const SAVED_WIDTH: u16 = 11;

/// A name column filling what is left, the count columns, then fixed-width ones.
fn with_name(counts: &CountColumns, after: &[u16]) -> Vec<Constraint> {
    std::iter::once(Constraint::Fill(1))
        .chain(counts.widths.iter().map(|w| Constraint::Length(*w)))
        .chain(after.iter().map(|w| Constraint::Length(*w)))
        .collect()
}

fn bold(cells: Vec<String>) -> Row<'static> {
    Row::new(cells).style(Style::new().add_modifier(Modifier::BOLD))
}
