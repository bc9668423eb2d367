//! The SQL view: the editor above, the result (or the error, or what to do) below,
//! and the saved-query list and export prompt as popups.

use ratatui::Frame;
use ratatui::layout::{Alignment, Constraint, Layout, Position, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, Wrap};

use crate::query::Cell;
use crate::tui::app::App;
use crate::tui::keys::{Action, View};
use crate::tui::sql::{Focus, SqlResult, format_elapsed};

/// Space between result columns.
const GAP: u16 = 1;

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    let lines = app.sql.editor.lines().len() as u16;
    let most = (area.height * 2 / 5).max(5);
    let editor_height = (lines + 2).clamp(5, most).min(area.height);
    let [editor, result] =
        Layout::vertical([Constraint::Length(editor_height), Constraint::Min(0)]).areas(area);
    draw_editor(frame, editor, app);
    draw_result(frame, result, app);
    if let Some(at) = app.sql.picker {
        draw_picker(frame, area, app, at);
    }
    if let Some(input) = &app.sql.export_input {
        draw_export(frame, result, app, input);
    }
}

fn key(app: &App, action: Action) -> String {
    app.keys.label(View::Sql, action)
}

fn focused(block: Block<'static>, on: bool) -> Block<'static> {
    if on {
        block.border_style(Style::new().fg(Color::Cyan))
    } else {
        block
    }
}

fn draw_editor(frame: &mut Frame, area: Rect, app: &App) {
    let sql = &app.sql;
    let on = sql.focus == Focus::Editor && sql.picker.is_none() && sql.export_input.is_none();
    let mode = if sql.write {
        Span::styled(
            " WRITING ON ",
            Style::new().fg(Color::White).bg(Color::Red).bold(),
        )
    } else {
        Span::raw(" read-only ")
    };
    let mut title = vec![Span::raw(" SQL ·"), mode];
    if let Some((at, n)) = sql.history_position() {
        title.push(Span::raw(format!("· history {at}/{n} ")));
    }
    let hint = if on {
        format!(
            " {} run · {} results · {} keys ",
            key(app, Action::RunQuery),
            key(app, Action::LeaveEditor),
            key(app, Action::Help)
        )
    } else {
        format!(" {} edits ", key(app, Action::EditQuery))
    };
    let block = focused(
        Block::bordered()
            .title(Line::from(title))
            .title(Line::from(hint).alignment(Alignment::Right)),
        on,
    );
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if inner.width == 0 || inner.height == 0 {
        return;
    }
    let (row, col) = sql.editor.cursor();
    let top = row.saturating_sub(inner.height as usize - 1);
    let left = col.saturating_sub(inner.width as usize - 1);
    if sql.editor.is_blank() && sql.editor.lines().len() == 1 {
        let text = format!(
            "Type SQL here, e.g. select suffix, count(*) from images group by all; \
             {} picks a saved query, {} recalls the last one.",
            key(app, Action::SavedQueries),
            key(app, Action::HistoryPrev)
        );
        frame.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: true })
                .style(Style::new().fg(Color::DarkGray)),
            inner,
        );
    } else {
        let lines: Vec<Line> = sql
            .editor
            .lines()
            .iter()
            .skip(top)
            .take(inner.height as usize)
            .map(|l| Line::from(l.chars().skip(left).collect::<String>()))
            .collect();
        frame.render_widget(Paragraph::new(lines), inner);
    }
    if on {
        frame.set_cursor_position(Position::new(
            inner.x + (col - left) as u16,
            inner.y + (row - top) as u16,
        ));
    }
}

fn draw_result(frame: &mut Frame, area: Rect, app: &App) {
    let sql = &app.sql;
    let on = sql.focus == Focus::Results && sql.picker.is_none() && sql.export_input.is_none();
    if let Some((_, started)) = sql.running {
        let text = format!(
            "running… {} ({} cancels; the other views keep working)",
            format_elapsed(started.elapsed()),
            key(app, Action::CancelQuery)
        );
        return message(frame, area, " Result ", &text, on, Style::new());
    }
    match &sql.outcome {
        None => {
            let text = format!(
                "No result yet. {} runs the query; at most {} rows are fetched. \
                 The store is read-only here unless {} turns writing on.",
                key(app, Action::RunQuery),
                thousands(crate::tui::sql::ROW_LIMIT),
                key(app, Action::ToggleWrite)
            );
            message(frame, area, " Result ", &text, on, Style::new())
        }
        Some(Err(err)) => {
            let mut text = err.clone();
            if err.contains("read-only mode") {
                text.push_str(&format!(
                    "\n\nThe view is read-only: {} turns writing on.",
                    key(app, Action::ToggleWrite)
                ));
            }
            message(
                frame,
                area,
                " Error ",
                &text,
                on,
                Style::new().fg(Color::Red),
            )
        }
        Some(Ok(done)) => draw_table(frame, area, app, done, on),
    }
}

fn message(frame: &mut Frame, area: Rect, title: &str, text: &str, on: bool, style: Style) {
    frame.render_widget(
        Paragraph::new(text.to_string())
            .style(style)
            .wrap(Wrap { trim: false })
            .block(focused(Block::bordered().title(title.to_string()), on)),
        area,
    );
}

pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The columns shown from `first` on and their widths: each at its content's width
/// while they fit in `space`, the last one cut to what is left (at least 3 cells)
/// unless it holds numbers, which are shown whole or not at all (scroll right).
pub fn fit_columns(
    widths: &[usize],
    numeric: &[bool],
    first: usize,
    space: u16,
) -> Vec<(usize, u16)> {
    let mut out = Vec::new();
    let mut used = 0u16;
    for (i, w) in widths.iter().enumerate().skip(first) {
        let gap = if out.is_empty() { 0 } else { GAP };
        let w = u16::try_from((*w).max(1)).unwrap_or(u16::MAX);
        let left = space.saturating_sub(used + gap);
        if w <= left {
            out.push((i, w));
            used += gap + w;
        } else {
            let number = numeric.get(i).copied().unwrap_or(false);
            if out.is_empty() || (left >= 3 && !number) {
                out.push((i, left.max(1)));
            }
            break;
        }
    }
    out
}

fn cut(text: &str, width: u16) -> String {
    let width = width as usize;
    let text = text.replace(['\n', '\r', '\t'], " ");
    if text.chars().count() <= width {
        text
    } else {
        let mut t: String = text.chars().take(width.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

fn draw_table(frame: &mut Frame, area: Rect, app: &App, done: &SqlResult, on: bool) {
    let sql = &app.sql;
    let rs = &done.result;
    let n = rs.rows.len();
    let count = if done.truncated {
        format!(
            "first {} rows, more not fetched (`cdwqc sql --out` gets all)",
            thousands(n)
        )
    } else {
        format!("{} row{}", thousands(n), if n == 1 { "" } else { "s" })
    };
    let title = format!(" Result · {count} · {} ", format_elapsed(done.elapsed));
    let block = focused(Block::bordered().title(title), on);
    let inner = block.inner(area);
    if rs.columns.is_empty() {
        let text = "Done: the statement returns no rows.";
        return frame.render_widget(Paragraph::new(text).block(block), area);
    }
    let shown = fit_columns(&done.widths, &done.numeric, sql.column, inner.width);
    let (first, last) = (
        shown.first().map_or(0, |c| c.0),
        shown.last().map_or(0, |c| c.0),
    );
    let position = format!(
        " row {}/{} · col {}-{}/{} ",
        if n == 0 { 0 } else { sql.row + 1 },
        thousands(n),
        first + 1,
        last + 1,
        rs.columns.len()
    );
    let block = block.title(Line::from(position).alignment(Alignment::Right));
    let visible = (inner.height as usize).saturating_sub(1).max(1);
    // Whole pages, the last one filled up: the selected row is always shown.
    let top = (sql.row / visible * visible).min(n.saturating_sub(visible));
    let aligned = |i: usize, w: u16, text: String| -> String {
        if done.numeric[i] {
            format!("{text:>width$}", width = w as usize)
        } else {
            text
        }
    };
    let header = Row::new(
        shown
            .iter()
            .map(|&(i, w)| aligned(i, w, cut(&rs.columns[i], w)))
            .collect::<Vec<_>>(),
    )
    .style(Style::new().add_modifier(Modifier::BOLD));
    let null = Style::new()
        .fg(Color::DarkGray)
        .add_modifier(Modifier::ITALIC);
    let rows = rs
        .rows
        .iter()
        .enumerate()
        .skip(top)
        .take(visible)
        .map(|(r, row)| {
            let cells = shown.iter().map(|&(i, w)| match &row[i] {
                Cell::Null => {
                    ratatui::widgets::Cell::from(aligned(i, w, "NULL".into())).style(null)
                }
                c => ratatui::widgets::Cell::from(aligned(i, w, cut(&c.display(), w))),
            });
            let style = if r == sql.row {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            Row::new(cells.collect::<Vec<_>>()).style(style)
        });
    let widths: Vec<Constraint> = shown.iter().map(|&(_, w)| Constraint::Length(w)).collect();
    let mut table = Table::new(rows.collect::<Vec<_>>(), widths)
        .header(header)
        .column_spacing(GAP)
        .block(block);
    if n == 0 {
        table = table.footer(Row::new(vec!["(no rows)"]));
    }
    frame.render_widget(table, area);
}

fn popup(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

fn draw_picker(frame: &mut Frame, area: Rect, app: &App, at: usize) {
    let saved = &app.sql.saved;
    let area = popup(area, 76, saved.len() as u16 * 2 + 2);
    let width = area.width.saturating_sub(4);
    let lines: Vec<Line> = saved
        .iter()
        .enumerate()
        .flat_map(|(i, q)| {
            let style = if i == at {
                Style::new().add_modifier(Modifier::REVERSED)
            } else {
                Style::new()
            };
            [
                Line::from(Span::styled(q.name.clone(), style.bold())),
                Line::from(Span::styled(
                    format!("  {}", cut(&q.description, width)),
                    Style::new().fg(Color::DarkGray),
                )),
            ]
        })
        .collect();
    let inner_height = area.height.saturating_sub(2) as usize;
    let scroll = (at * 2 + 2).saturating_sub(inner_height) as u16;
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines)
            .scroll((scroll, 0))
            .block(Block::bordered().title(" Saved queries (Up/Down, Enter loads, Esc closes) ")),
        area,
    );
}

fn draw_export(frame: &mut Frame, area: Rect, app: &App, input: &str) {
    let error = app.sql.export_error.as_deref();
    let height = if error.is_some() { 4 } else { 3 };
    let area = Rect {
        y: area.y + area.height.saturating_sub(height),
        height: height.min(area.height),
        ..area
    };
    let width = area.width.saturating_sub(2) as usize;
    // The end of a long path is what matters while typing it.
    let shown: String = {
        let chars: Vec<char> = format!("{input}▏").chars().collect();
        chars[chars.len().saturating_sub(width)..].iter().collect()
    };
    let mut lines = vec![Line::from(shown)];
    if let Some(err) = error {
        lines.push(Line::from(Span::styled(
            err.to_string(),
            Style::new().fg(Color::Red),
        )));
    }
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(
            Block::bordered()
                .border_style(Style::new().fg(Color::Cyan))
                .title(" Export to .csv .tsv .json .parquet (Enter writes, Esc cancels) "),
        ),
        area,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_at_content_width_and_the_last_is_cut() {
        let text = [false; 3];
        assert_eq!(
            fit_columns(&[4, 10, 6], &text, 0, 40),
            [(0, 4), (1, 10), (2, 6)]
        );
        assert_eq!(fit_columns(&[4, 10, 6], &text, 0, 18), [(0, 4), (1, 10)]);
        assert_eq!(
            fit_columns(&[4, 10, 6], &text, 0, 20),
            [(0, 4), (1, 10), (2, 4)]
        );
        assert_eq!(fit_columns(&[4, 10, 6], &text, 1, 12), [(1, 10)]);
        assert_eq!(
            fit_columns(&[4, 10, 6], &[false, false, true], 0, 20),
            [(0, 4), (1, 10)],
            "a number is shown whole or not at all"
        );
        assert_eq!(
            fit_columns(&[40], &text, 0, 20),
            [(0, 20)],
            "one column is always shown"
        );
    }

    #[test]
    fn numbers_get_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(10_000), "10,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
