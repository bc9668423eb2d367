//! Drawing: one function per view, reading [`App`] and never changing it.

mod dashboard;
mod images;
mod picture;
mod rate;
mod reports;
mod viewer;

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, Tabs, Wrap};

use super::app::App;
use super::keys::View;

pub fn draw(frame: &mut Frame, app: &App) {
    let [tabs_area, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    let titles = View::ALL
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{} {}", i + 1, v.title()));
    let selected = View::ALL.iter().position(|v| *v == app.view).unwrap_or(0);
    frame.render_widget(
        Tabs::new(titles)
            .select(selected)
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        tabs_area,
    );
    match app.view {
        View::Dashboard => dashboard::draw(frame, body, app),
        View::Images => images::draw(frame, body, app),
        View::Viewer => viewer::draw(frame, body, app),
        View::Rate => rate::draw(frame, body, app),
        View::Sql => draw_sql(frame, body),
        View::Reports => reports::draw(frame, body, app),
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

fn draw_sql(frame: &mut Frame, area: Rect) {
    let text = "The SQL console is not part of the dashboard yet.\n\n\
                Ask the store from the shell instead:\n  \
                cdwqc sql \"select suffix, count(*) from images group by all\"\n  \
                cdwqc sql -f sql/queries/import_failures.sql";
    frame.render_widget(
        Paragraph::new(text)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" SQL ")),
        area,
    );
}

fn draw_help(frame: &mut Frame, app: &App) {
    let lines = app.keys.help(app.view);
    let area = frame.area();
    let height = (lines.len() as u16 + 2).min(area.height);
    let width = 60.min(area.width);
    let popup = Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    };
    let rows = lines
        .into_iter()
        .map(|(key, help)| Row::new(vec![key, help.to_string()]));
    frame.render_widget(Clear, popup);
    frame.render_widget(
        Table::new(rows, [Constraint::Length(10), Constraint::Min(10)]).block(
            Block::bordered().title(format!(" {} keys (any key closes) ", app.view.title())),
        ),
        popup,
    );
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
