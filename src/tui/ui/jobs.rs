//! The Jobs view: this session's jobs and the stored runs, the selected one's progress
//! gauge, loss and validation curves and log tail, and the new-job form.

use std::time::Duration;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Chart, Clear, Dataset, Gauge, GraphType, List, ListItem, ListState, Paragraph,
    Wrap,
};

use super::empty;
use super::figures::fit_text;
use crate::jobs::plan::epoch_row;
use crate::model::train::Method;
use crate::store::runs::EpochRow;
use crate::tui::app::App;
use crate::tui::jobs::{Field, Job, JobForm, JobStatus, PRESETS, Selection, TASKS};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    if app.blind() {
        return empty(
            frame,
            area,
            "Jobs",
            "hidden in blind rating mode: training curves and models stay out of sight while rating",
        );
    }
    let jobs = &app.jobs;
    let [list_area, detail_area] =
        Layout::horizontal([Constraint::Percentage(38), Constraint::Percentage(62)]).areas(area);
    draw_list(frame, list_area, app);
    match jobs.selection() {
        Some(Selection::Job(job)) => draw_job(frame, detail_area, job),
        Some(Selection::Run(run)) => {
            let epochs = match &jobs.run_epochs {
                Some((id, Ok(rows))) if *id == run.run_id => Ok(rows.as_slice()),
                Some((id, Err(e))) if *id == run.run_id => Err(e.as_str()),
                _ => Err("loading…"),
            };
            let [facts, curves] =
                Layout::vertical([Constraint::Length(4), Constraint::Min(0)]).areas(detail_area);
            let metric = |name: &str| {
                run.metrics
                    .as_deref()
                    .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
                    .and_then(|v| v.get(name).and_then(|x| x.as_f64()))
                    .map_or("-".to_string(), |x| format!("{x:.3}"))
            };
            frame.render_widget(
                Paragraph::new(vec![
                    Line::from(format!(
                        "{} {} · {} · started {}",
                        run.task.as_deref().unwrap_or(""),
                        run.method.as_deref().unwrap_or(""),
                        run.status,
                        run.started_at
                    )),
                    Line::from(format!(
                        "validation BA {} · test BA {}",
                        metric("best_val_balanced_accuracy"),
                        metric("test_balanced_accuracy")
                    )),
                ])
                .block(Block::bordered().title(format!(" {} ", run.run_id))),
                facts,
            );
            match epochs {
                // An inference run (a trained run's or an exported model's predictions)
                // has no epochs of its own: say so rather than wait for one.
                _ if run.kind != "train" => empty(
                    frame,
                    curves,
                    "Curves",
                    &format!(
                        "predictions only, no training: `cdwqc report model --run {}` \
                         scores them",
                        run.run_id
                    ),
                ),
                Ok(rows) => draw_curves(frame, curves, rows),
                Err(text) => empty(frame, curves, "Curves", text),
            }
        }
        None => empty(
            frame,
            detail_area,
            "Job",
            "no job yet: n opens the form to train a model or predict with one",
        ),
    }
    if let Some(form) = &jobs.form {
        draw_form(frame, area, app, form);
    }
}

fn status_style(status: &str) -> Style {
    match status {
        "running" | "starting" | "stopping" => Style::new().fg(Color::Yellow),
        "completed" => Style::new().fg(Color::Green),
        "failed" => Style::new().fg(Color::Red),
        _ => Style::new(),
    }
}

/// The status column: the longest status ("interrupted") and a space before the name.
const STATUS_WIDTH: usize = 12;

fn draw_list(frame: &mut Frame, area: Rect, app: &App) {
    let jobs = &app.jobs;
    // Inside the borders, after the status column: the run name gives way to the
    // progress figure, which is never cut.
    let room = usize::from(area.width.saturating_sub(2)).saturating_sub(STATUS_WIDTH);
    let mut items: Vec<ListItem> = jobs
        .jobs
        .iter()
        .rev()
        .map(|job| {
            let status = job.status.label();
            let progress = if job.status.is_active() {
                format!(" {:>3.0}%", job.progress() * 100.0)
            } else {
                String::new()
            };
            let name = fit_text(&job.run_id, room.saturating_sub(progress.len()));
            ListItem::new(Line::from(vec![
                Span::styled(format!("{status:<STATUS_WIDTH$}"), status_style(status)),
                Span::raw(format!("{name}{progress}")),
            ]))
        })
        .collect();
    items.extend(jobs.other_runs().into_iter().map(|run| {
        ListItem::new(Line::from(vec![
            Span::styled(
                format!("{:<STATUS_WIDTH$}", run.status),
                status_style(&run.status),
            ),
            Span::raw(run.run_id.clone()),
        ]))
    }));
    let title = match &jobs.runs {
        Some(Err(e)) => format!(" Jobs · runs not loaded: {e} "),
        _ => format!(" Jobs ({} running) · n new · c stop ", jobs.active()),
    };
    let mut state =
        ListState::default().with_selected((!items.is_empty()).then_some(jobs.selected));
    frame.render_stateful_widget(
        List::new(items)
            .block(Block::bordered().title(title))
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        area,
        &mut state,
    );
}

fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

fn draw_job(frame: &mut Frame, area: Rect, job: &Job) {
    let [title, gauge, curves, log] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Percentage(55),
        Constraint::Min(3),
    ])
    .areas(area);
    let status = match &job.status {
        JobStatus::Failed(e) => format!("failed: {e}"),
        other => other.label().to_string(),
    };
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(Span::styled(
                job.title.clone(),
                Style::new().add_modifier(Modifier::BOLD),
            )),
            Line::from(vec![
                Span::styled(status, status_style(job.status.label())),
                Span::raw(format!(
                    " · run {} · {}{}",
                    if job.run_id.is_empty() {
                        "-"
                    } else {
                        &job.run_id
                    },
                    job.device.as_deref().unwrap_or("device not chosen yet"),
                    job.test_balanced_accuracy
                        .map_or(String::new(), |b| format!(" · test BA {b:.3}"))
                )),
            ]),
        ]),
        title,
    );
    let label = if job.training {
        let (epoch, total) = job.epoch;
        let (batch, batches) = job.batch;
        format!(
            "epoch {}/{} · batch {}/{}",
            super::figures::exact(epoch as i64),
            super::figures::exact(total as i64),
            super::figures::exact(batch as i64),
            super::figures::exact(batches as i64)
        )
    } else {
        format!(
            "{}/{} images",
            super::figures::exact(job.images.0 as i64),
            super::figures::exact(job.images.1 as i64)
        )
    };
    let timing = match job.remaining() {
        Some(left) => format!(" · {}, ~{} left", duration(job.elapsed()), duration(left)),
        None => format!(" · {}", duration(job.elapsed())),
    };
    frame.render_widget(
        Gauge::default()
            .gauge_style(status_style(job.status.label()))
            .ratio(job.progress())
            .label(format!("{label}{timing}")),
        gauge,
    );
    if job.training {
        let rows: Vec<EpochRow> = job.epochs.iter().map(epoch_row).collect();
        draw_curves(frame, curves, &rows);
    } else {
        empty(frame, curves, "Curves", "inference has no training curves");
    }
    let height = log.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = job
        .log
        .iter()
        .skip(job.log.len().saturating_sub(height))
        .map(|l| Line::from(l.clone()))
        .collect();
    // Entries wrap over several rows: scroll so that the newest row stays in view.
    let paragraph = Paragraph::new(lines).wrap(Wrap { trim: false });
    let rows = paragraph.line_count(log.width.saturating_sub(2));
    let hidden = u16::try_from(rows.saturating_sub(height)).unwrap_or(u16::MAX);
    frame.render_widget(
        paragraph
            .scroll((hidden, 0))
            .block(Block::bordered().title(" Log ")),
        log,
    );
}

/// Points of one figure per epoch, leaving out undefined values.
fn series(rows: &[EpochRow], value: impl Fn(&EpochRow) -> Option<f64>) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|r| {
            value(r)
                .filter(|v| v.is_finite())
                .map(|v| (f64::from(r.epoch), v))
        })
        .collect()
}

/// Training and validation loss on the left, validation balanced accuracy on the right.
fn draw_curves(frame: &mut Frame, area: Rect, rows: &[EpochRow]) {
    if rows.is_empty() {
        return empty(
            frame,
            area,
            "Curves",
            "no finished epoch yet: the curves appear after the first one",
        );
    }
    let [loss_area, ba_area] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(area);
    let train = series(rows, |r| r.train_loss);
    let val = series(rows, |r| r.val_loss);
    let ba = series(rows, |r| r.val_balanced_accuracy);
    let last_epoch = rows.iter().map(|r| r.epoch).max().unwrap_or(1).max(2);
    let x_axis = || {
        Axis::default()
            .title("epoch")
            .bounds([1.0, f64::from(last_epoch)])
            .labels(["1".to_string(), last_epoch.to_string()])
    };
    let max_loss = train
        .iter()
        .chain(&val)
        .map(|p| p.1)
        .fold(0.0_f64, f64::max)
        .max(1e-6)
        * 1.05;
    let loss = Chart::new(vec![
        Dataset::default()
            .name("train")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Cyan))
            .data(&train),
        Dataset::default()
            .name("validation")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Yellow))
            .data(&val),
    ])
    .hidden_legend_constraints((Constraint::Length(0), Constraint::Length(0)))
    .block(Block::bordered().title(Line::from(vec![
        Span::raw(" Loss: "),
        Span::styled("━ train", Style::new().fg(Color::Cyan)),
        Span::raw(" "),
        Span::styled("━ validation ", Style::new().fg(Color::Yellow)),
    ])))
    .x_axis(x_axis())
    .y_axis(
        Axis::default()
            .bounds([0.0, max_loss])
            .labels(["0".to_string(), format!("{max_loss:.2}")]),
    );
    frame.render_widget(loss, loss_area);
    let accuracy = Chart::new(vec![
        Dataset::default()
            .name("validation BA")
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::new().fg(Color::Green))
            .data(&ba),
    ])
    .hidden_legend_constraints((Constraint::Length(0), Constraint::Length(0)))
    .block(Block::bordered().title(Line::from(vec![
        Span::raw(" "),
        Span::styled("━ validation BA ", Style::new().fg(Color::Green)),
    ])))
    .x_axis(x_axis())
    .y_axis(Axis::default().bounds([0.0, 1.0]).labels(["0", "0.5", "1"]));
    frame.render_widget(accuracy, ba_area);
}

fn draw_form(frame: &mut Frame, area: Rect, app: &App, form: &JobForm) {
    let runs = app.jobs.trained_runs();
    let sequences = app.sequences();
    let pick = |items: &[String], i: usize| {
        items
            .get(i % items.len().max(1))
            .cloned()
            .unwrap_or_else(|| "(none)".into())
    };
    let value = |field: Field| -> (&'static str, String) {
        match field {
            Field::Kind => (
                "job",
                if form.training {
                    "train a model"
                } else {
                    "predict with a model"
                }
                .into(),
            ),
            Field::Task => ("task", TASKS[form.task % TASKS.len()].name().into()),
            Field::Method => (
                "method",
                Method::ALL[form.method % Method::ALL.len()].name().into(),
            ),
            Field::Preset => ("preset", PRESETS[form.preset % PRESETS.len()].into()),
            Field::Epochs => ("epochs", form.epochs.to_string()),
            Field::Run => ("model (run)", pick(&runs, form.run)),
            Field::Sequence => ("sequence", pick(&sequences, form.sequence)),
            Field::Unrated => (
                "images",
                if form.unrated { "unrated only" } else { "all" }.into(),
            ),
        }
    };
    let mut lines: Vec<Line> = form
        .fields()
        .iter()
        .enumerate()
        .map(|(i, field)| {
            let (name, value) = value(*field);
            let selected = i == form.field;
            let style = if selected {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Line::from(vec![
                Span::raw(format!("{name:>12}  ")),
                Span::styled(format!("‹ {value} ›"), style),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    if let Some(error) = &form.error {
        lines.push(Line::from(Span::styled(
            error.clone(),
            Style::new().fg(Color::Red),
        )));
    }
    lines.push(Line::from("↑↓ field · ←→ value · Enter start · Esc close"));
    let width = 60.min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" New job ")),
        popup,
    );
}
