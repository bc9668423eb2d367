//! The Images view: the paged, filtered image list and the selected image's facts,
//! previews and (outside blind mode) ratings.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table, TableState};

use super::empty;
use super::figures::exact;
use super::iqms::iqm_box;
use super::picture::half_block_lines;
use crate::tui::app::{App, Detail};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let [list, detail] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(area);
    draw_list(frame, list, app);
    match app.selected_image().and_then(|id| app.detail(id)) {
        Some(Ok(d)) => draw_detail(frame, detail, d, app),
        Some(Err(err)) => empty(frame, detail, "Image", err),
        None if app.selected_image().is_some() => empty(frame, detail, "Image", "loading…"),
        None => empty(frame, detail, "Image", "no image selected"),
    }
}

fn filter_line(app: &App) -> String {
    let f = &app.images.filter;
    let rated = match f.rated {
        _ if app.blind() => "",
        None => " · any",
        Some(true) => " · rated",
        Some(false) => " · unrated",
    };
    let search = match &app.images.search_input {
        Some(input) => format!("/{input}▏"),
        None => f.subject.clone().unwrap_or_else(|| "-".into()),
    };
    let model = match (f.predicted.as_deref(), f.disagreement) {
        (Some(label), _) => format!(" · model {label}"),
        (None, Some(true)) => " · model ≠ rater".to_string(),
        _ => String::new(),
    };
    let iqm = match f.iqm_outlier {
        _ if app.blind() => "",
        None => "",
        Some(true) => " · IQM outlier",
        Some(false) => " · no IQM outlier",
    };
    format!(
        "seq {} · status {}{rated} · subject {search}{model}{iqm}",
        f.sequence.as_deref().unwrap_or("any"),
        f.status.as_deref().unwrap_or("any"),
    )
}

fn draw_list(frame: &mut Frame, area: Rect, app: &App) {
    let state = &app.images;
    let [filters, table_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    frame.render_widget(Paragraph::new(filter_line(app)), filters);
    let Some(page) = &state.page else {
        let waiting = if app.outlier_flags_pending() {
            "computing every image's IQM outlier flag…"
        } else {
            "loading…"
        };
        return empty(frame, table_area, "Images", waiting);
    };
    if let Some(err) = &state.error {
        return empty(frame, table_area, "Images", err);
    }
    if page.total == 0 {
        let text = if state.filter == Default::default() {
            "no images yet: run `cdwqc import DIR`"
        } else {
            "no image matches these filters (c clears them)"
        };
        return empty(frame, table_area, "Images", text);
    }
    // Every column at its full width needs 56 cells; narrower lists drop the session
    // and orientation columns rather than squeezing them all.
    let wide = table_area.width >= 58;
    // The model's label stays out of sight in blind mode, and out of narrow lists.
    let model = !app.blind() && table_area.width >= 66;
    // Who has rated an image is other raters' progress: not shown in blind mode.
    let rated = !app.blind();
    let keep = |column: usize| {
        (wide || !matches!(column, 2 | 6)) && (model || column != 8) && (rated || column != 7)
    };
    let pick = |cells: Vec<String>| -> Vec<String> {
        cells
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep(*i))
            .map(|(_, c)| c)
            .collect()
    };
    let cells: Vec<Vec<String>> = page
        .rows
        .iter()
        .map(|r| {
            vec![
                r.image_id.to_string(),
                r.subject.clone(),
                r.session.clone(),
                r.suffix.clone(),
                r.status.clone(),
                r.shape.clone(),
                r.orientation.clone(),
                r.rated_by.to_string(),
                r.predicted.clone(),
            ]
        })
        .collect();
    let names = [
        "id", "subject", "session", "suffix", "status", "shape", "ori", "rated", "model",
    ];
    // Ids, shapes and counts are as wide as the widest on this page, so none is cut;
    // the subject takes what is left.
    let widths: Vec<Constraint> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| keep(*i))
        .map(|(i, name)| {
            if i == 1 {
                return Constraint::Fill(1);
            }
            let widest = cells.iter().map(|row| row[i].chars().count()).max();
            Constraint::Length(widest.unwrap_or(0).max(name.len()) as u16)
        })
        .collect();
    let rows = cells.into_iter().map(|row| Row::new(pick(row)));
    let header = Row::new(pick(names.iter().map(|n| n.to_string()).collect()))
        .style(Style::new().add_modifier(Modifier::BOLD));
    let table = Table::new(rows, widths)
        .header(header)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .block(Block::bordered().title(format!(
            " Images {}/{}{} ",
            exact(state.selected as i64 + 1),
            exact(page.total as i64),
            // The filter line is cut first on a narrow list: the title keeps this one.
            match state.filter.iqm_outlier {
                Some(true) => " · IQM outliers",
                Some(false) => " · no IQM outlier",
                None => "",
            }
        )));
    let mut table_state = TableState::default();
    table_state.select(state.selected.checked_sub(page.offset));
    frame.render_stateful_widget(table, table_area, &mut table_state);
}

fn draw_detail(frame: &mut Frame, area: Rect, detail: &Detail, app: &App) {
    let blind = app.blind();
    let Some(facts) = &detail.facts else {
        return empty(frame, area, "Image", "this image is no longer in the store");
    };
    let mut lines = vec![
        Line::from(format!(
            "#{} {} [{}]",
            facts.image_id,
            bids_name(&facts.subject, &facts.session, &facts.suffix),
            facts.status
        )),
        // The file name: the pane is narrow, and the entities above say where it sits.
        Line::from(
            std::path::Path::new(&facts.path)
                .file_name()
                .map_or_else(|| facts.path.clone(), |n| n.to_string_lossy().into_owned()),
        ),
    ];
    if let Some(shape) = facts.shape {
        let voxel = facts
            .voxel_mm
            .map(|v| format!("{:.2}x{:.2}x{:.2} mm", v[0], v[1], v[2]))
            .unwrap_or_default();
        lines.push(Line::from(format!(
            "{}x{}x{} {voxel} {} {}",
            shape[0],
            shape[1],
            shape[2],
            facts.datatype.as_deref().unwrap_or(""),
            facts.orientation.as_deref().unwrap_or("")
        )));
    }
    if let Some(m) = &facts.manufacturer {
        let field = facts
            .field_strength
            .map(|f| format!(" {f} T"))
            .unwrap_or_default();
        lines.push(Line::from(format!("{m}{field}")));
    }
    if let Some(err) = &facts.error {
        lines.push(Line::from(format!("error: {err}")));
    }
    if let Some(w) = &facts.warnings {
        lines.push(Line::from(format!("warnings: {w}")));
    }
    match (&detail.ratings, blind) {
        (_, true) => {
            lines.push(Line::from("ratings hidden (blind mode)"));
            lines.push(Line::from("IQMs hidden (blind mode)"));
        }
        (Some(ratings), false) if ratings.is_empty() => lines.push(Line::from("not rated yet")),
        (Some(ratings), false) => {
            for r in ratings {
                let later = if r.review_later {
                    " (review later)"
                } else {
                    ""
                };
                let code = if r.code.is_empty() { "-" } else { &r.code };
                lines.push(Line::from(format!(
                    "{}: {code}{later} {}",
                    r.rater, r.saved_at
                )));
            }
        }
        (None, false) => {}
    }
    if let (Some(predictions), false) = (&detail.predictions, blind) {
        for p in predictions {
            lines.push(Line::from(match (&p.label, &p.error) {
                (Some(label), _) => match &p.reason {
                    Some(_) => format!("model {} {}: {label} (not registered)", p.run_id, p.task),
                    None => format!(
                        "model {} {}: {label} {}",
                        p.run_id,
                        p.task,
                        p.probability.map_or(String::new(), |v| format!("({v:.2})"))
                    ),
                },
                (None, Some(err)) => format!("model {}: failed: {err}", p.run_id),
                (None, None) => format!("model {}: no label", p.run_id),
            }));
            // The reason on a line of its own, from what failed on: the file's path
            // before it is the one the panel's header shows.
            if let (Some(_), Some(reason)) = (&p.label, &p.reason) {
                let from = ["registration failed", "registration:"]
                    .iter()
                    .find_map(|what| reason.find(what))
                    .unwrap_or(0);
                lines.push(Line::from(format!("  {}", &reason[from..])));
            }
        }
    }
    if let (Some(queued), false) = (&detail.queued, blind) {
        for q in queued {
            let why = q.describe();
            if !why.is_empty() {
                lines.push(Line::from(format!("queued {} for {}:", q.queue, q.rater)));
                lines.extend(why.into_iter().map(|w| Line::from(format!("  {w}"))));
            }
        }
    }
    let facts_height = (lines.len() as u16 + 2).min(area.height);
    // The metrics are neither read nor shown in blind mode (docs/iqm.md).
    let (iqm_title, iqm_lines) = if blind {
        (String::new(), Vec::new())
    } else {
        iqm_box(
            detail.iqms.as_ref(),
            app.iqm_groups.as_ref(),
            area.width.saturating_sub(2) as usize,
        )
    };
    let iqm_height = if blind { 0 } else { iqm_lines.len() as u16 + 2 };
    let [facts_area, iqm_area, previews_area] = Layout::vertical([
        Constraint::Length(facts_height),
        Constraint::Length(iqm_height),
        Constraint::Min(0),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" Image ")),
        facts_area,
    );
    if !blind {
        frame.render_widget(
            Paragraph::new(iqm_lines).block(Block::bordered().title(iqm_title)),
            iqm_area,
        );
    }
    draw_previews(frame, previews_area, detail);
}

/// The three preview slices side by side.
pub fn draw_previews(frame: &mut Frame, area: Rect, detail: &Detail) {
    if detail.previews.is_empty() {
        return empty(frame, area, "Previews", "no previews stored for this image");
    }
    let columns = Layout::horizontal(vec![Constraint::Ratio(1, 3); 3]).split(area);
    for ((plane, picture), column) in detail.previews.iter().zip(columns.iter()) {
        let block = Block::bordered().title(format!(" {} ", plane.name()));
        let inner = block.inner(*column);
        frame.render_widget(block, *column);
        frame.render_widget(
            Paragraph::new(half_block_lines(picture, inner.width, inner.height)),
            inner,
        );
    }
}

/// `sub-01 ses-02 FLAIR`, leaving out what the file name does not carry.
pub fn bids_name(subject: &str, session: &str, suffix: &str) -> String {
    let mut parts = Vec::new();
    if !subject.is_empty() {
        parts.push(format!("sub-{subject}"));
    }
    if !session.is_empty() {
        parts.push(format!("ses-{session}"));
    }
    if !suffix.is_empty() {
        parts.push(suffix.to_string());
    }
    if parts.is_empty() {
        "(no BIDS name)".into()
    } else {
        parts.join(" ")
    }
}
