//! The Dashboard view: images per sequence and status, rating progress, inter-rater
//! agreement at a glance, queue progress, latest runs. Empty sections name the command
//! that fills them.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Row, Table};

use super::empty;
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
    let header = |cells: &[&'static str]| {
        Row::new(cells.to_vec()).style(Style::new().add_modifier(Modifier::BOLD))
    };

    if summary.sequences.is_empty() {
        empty(
            frame,
            images,
            "Images",
            "no images yet: run `cdwqc import DIR`",
        );
    } else {
        let rows = summary.sequences.iter().map(|s| {
            Row::new(vec![
                s.sequence.clone(),
                s.ok.to_string(),
                s.failed.to_string(),
                s.missing.to_string(),
            ])
        });
        let total: i64 = summary
            .sequences
            .iter()
            .map(|s| s.ok + s.failed + s.missing)
            .sum();
        frame.render_widget(
            Table::new(
                rows,
                [
                    Constraint::Fill(1),
                    Constraint::Length(6),
                    Constraint::Length(6),
                    Constraint::Length(7),
                ],
            )
            .header(header(&["sequence", "ok", "failed", "missing"]))
            .block(Block::bordered().title(format!(" Images ({total}) "))),
            images,
        );
    }

    if summary.raters.is_empty() {
        empty(
            frame,
            raters,
            "Raters",
            "no raters yet: run `cdwqc raters add NAME`",
        );
    } else {
        let rows = summary.raters.iter().map(|r| {
            Row::new(vec![
                r.rater.clone(),
                r.images_rated.to_string(),
                r.rejected.to_string(),
                r.review_later.to_string(),
                r.last_saved.clone(),
            ])
        });
        frame.render_widget(
            Table::new(
                rows,
                [
                    Constraint::Fill(1),
                    Constraint::Length(5),
                    Constraint::Length(4),
                    Constraint::Length(5),
                    Constraint::Length(11),
                ],
            )
            .header(header(&["rater", "rated", "rej.", "later", "last saved"]))
            .block(Block::bordered().title(" Rating progress ")),
            raters,
        );
    }

    draw_agreement(frame, agreement, summary.agreement.as_deref());

    if summary.queues.is_empty() {
        empty(
            frame,
            queues,
            "Queues",
            "no rating queues yet: raters without one rate every ok image (cdwqc tui --rater NAME)",
        );
    } else {
        let rows = summary.queues.iter().map(|q| {
            let done = q.items - q.pending;
            let share = if q.items > 0 { 100 * done / q.items } else { 0 };
            Row::new(vec![
                q.queue.clone(),
                q.rater.clone(),
                format!("{done}/{}", q.items),
                format!("{share}%"),
            ])
        });
        frame.render_widget(
            Table::new(
                rows,
                [
                    Constraint::Fill(1),
                    Constraint::Fill(1),
                    Constraint::Length(11),
                    Constraint::Length(4),
                ],
            )
            .header(header(&["queue", "rater", "done", ""]))
            .block(Block::bordered().title(" Queue progress ")),
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
        let rows = summary.runs.iter().map(|r| {
            Row::new(vec![
                r.run_id.clone(),
                r.kind.clone(),
                r.status.clone(),
                r.test_balanced_accuracy.clone(),
                r.started_at.clone(),
            ])
        });
        frame.render_widget(
            Table::new(
                rows,
                [
                    Constraint::Fill(1),
                    Constraint::Length(5),
                    Constraint::Length(9),
                    Constraint::Length(7),
                    Constraint::Length(11),
                ],
            )
            .header(header(&["run", "kind", "status", "test BA", "started"]))
            .block(Block::bordered().title(match app.jobs.active() {
                0 => " Latest runs ".to_string(),
                n => format!(" Latest runs · {n} job(s) running (7 Jobs) "),
            })),
            runs,
        );
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
    let rows = glance.iter().map(|g| {
        Row::new(vec![
            g.task.clone(),
            g.images.to_string(),
            g.percent_agreement
                .map_or("–".to_string(), |p| format!("{:.1}%", 100.0 * p)),
            number(g.fleiss_kappa),
            number(g.krippendorff_alpha),
        ])
    });
    frame.render_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(8),
                Constraint::Length(6),
                Constraint::Length(8),
                Constraint::Length(6),
            ],
        )
        .header(
            Row::new(vec!["task", "rated 2+", "agree", "Fleiss κ", "α"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(
            Block::bordered()
                .title(" Agreement ")
                .title_bottom(" κ: images rated by every rater "),
        ),
        area,
    );
}
