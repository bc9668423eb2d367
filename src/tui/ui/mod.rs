//! Drawing: one function per view, reading [`App`] and never changing it.

mod dashboard;
pub mod figures;
mod images;
mod iqms;
mod jobs;
mod picture;
mod rate;
mod reports;
pub mod sql;
mod viewer;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, Tabs, Wrap};

use super::app::App;
use super::graphics::Graphics;
use super::keys::View;

/// Draws the app with pictures in half blocks (tests, and whenever graphics are off).
pub fn draw(frame: &mut Frame, app: &App) {
    draw_with(frame, app, &mut Graphics::default());
}

/// Draws the app, the Viewer's slice as terminal graphics where `graphics` has them.
pub fn draw_with(frame: &mut Frame, app: &App, graphics: &mut Graphics) {
    let [tabs_area, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    // Blind rating mode offers fewer views; each keeps its number key.
    let titles = app.views().iter().map(|v| {
        let number = View::ALL.iter().position(|a| a == v).unwrap_or(0) + 1;
        format!("{number} {}", v.title())
    });
    let selected = app.views().iter().position(|v| *v == app.view).unwrap_or(0);
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        tabs_area,
    );
    if app.sql.write {
        // Seen from every view: SQL statements may change the store.
        let badge = " SQL WRITING ON ";
        let width = (badge.len() as u16).min(tabs_area.width);
        frame.render_widget(
            Paragraph::new(badge).style(
                Style::new()
                    .fg(ratatui::style::Color::White)
                    .bg(ratatui::style::Color::Red)
                    .add_modifier(Modifier::BOLD),
            ),
            Rect {
                x: tabs_area.right() - width,
                width,
                ..tabs_area
            },
        );
    }
    match app.view {
        View::Dashboard => dashboard::draw(frame, body, app),
        View::Images => images::draw(frame, body, app),
        View::Viewer => viewer::draw(frame, body, app, graphics),
        View::Rate => rate::draw(frame, body, app),
        View::Reports => reports::draw(frame, body, app),
        View::Sql => sql::draw(frame, body, app),
        View::Jobs => jobs::draw(frame, body, app),
    }
    let who = match &app.rater {
        Some(r) => format!(" rater {r} (blind) "),
        None => String::new(),
    };
    let left = if app.message.is_empty() {
        "? help  q quit".to_string()
    } else {
        app.message.clone()
    };
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw(who).reversed(),
            Span::raw(" "),
            Span::raw(left),
        ])),
        status,
    );
    if app.help {
        draw_help(frame, app);
    }
}

/// The keys of the current view, in two columns when one does not fit the height.
fn draw_help(frame: &mut Frame, app: &App) {
    let lines = app.keys.help(app.view);
    let area = frame.area();
    let columns = if lines.len() as u16 + 2 > area.height {
        2
    } else {
        1
    };
    let per_column = lines.len().div_ceil(columns);
    let height = (per_column as u16 + 2).min(area.height);
    let width = (60 * columns as u16 + 2 * (columns as u16 - 1)).min(area.width);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let block = Block::bordered().title(format!(" {} keys (any key closes) ", app.view.title()));
    let inner = block.inner(popup);
    frame.render_widget(Clear, popup);
    frame.render_widget(block, popup);
    let parts = Layout::horizontal(vec![Constraint::Fill(1); columns]).split(inner);
    for (chunk, part) in lines.chunks(per_column.max(1)).zip(parts.iter()) {
        let rows = chunk
            .iter()
            .map(|(key, help)| Row::new(vec![key.clone(), help.to_string()]));
        frame.render_widget(
            Table::new(rows, [Constraint::Length(10), Constraint::Min(10)]),
            *part,
        );
    }
}

/// A bordered block holding one line of text: how empty states look.
fn empty(frame: &mut Frame, area: Rect, title: &str, text: &str) {
    frame.render_widget(
        Paragraph::new(text.to_string())
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(format!(" {title} "))),
        area,
    );
}
