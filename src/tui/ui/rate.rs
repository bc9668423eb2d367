//! The Rate view: the rater's current image, the pending code and what it means, and
//! this session's saves. Blind: no other rater's rating and no prediction is shown.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Wrap};

use super::empty;
use super::images::{bids_name, draw_previews};
use crate::tui::app::App;
use crate::tui::rate::{describe, parse_code};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    if app.rater.is_none() {
        return empty(
            frame,
            area,
            "Rate",
            "rating needs a rater: start with `cdwqc tui --rater NAME` (add one with `cdwqc raters add NAME`)",
        );
    }
    let rate = &app.rate;
    let Some(work) = &rate.work else {
        return empty(frame, area, "Rate", "loading your images…");
    };
    let Some(image_id) = rate.current() else {
        let text = if let Some(err) = &rate.error {
            err.clone()
        } else if rate.from_queue {
            "your queue is done: nothing left to rate".to_string()
        } else {
            "nothing left to rate: every ok image has your rating (import more with `cdwqc import DIR`)"
                .to_string()
        };
        return empty(frame, area, "Rate", &text);
    };
    let [pictures, side] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(34)]).areas(area);
    match app.detail(image_id) {
        Some(Ok(detail)) => draw_previews(frame, pictures, detail),
        Some(Err(err)) => empty(frame, pictures, "Previews", err),
        None => empty(frame, pictures, "Previews", "loading…"),
    }

    let source = if rate.from_queue {
        "queue"
    } else {
        "unrated ok images"
    };
    let mut lines = vec![Line::from(format!(
        "image {} · {} of {} ({source})",
        image_id,
        rate.index + 1,
        work.len()
    ))];
    if let Some(Ok(detail)) = app.detail(image_id)
        && let Some(f) = &detail.facts
    {
        lines.push(Line::from(bids_name(&f.subject, &f.session, &f.suffix)));
        if let Some(s) = f.shape {
            lines.push(Line::from(format!("{}x{}x{}", s[0], s[1], s[2])));
        }
    }
    // Blind: the queue and its strategy only, never the image's own reason.
    if let Some((queue, strategy)) = rate.queues.get(&image_id) {
        lines.push(Line::from(format!("queue {queue}")));
        if let Some(note) = crate::store::queues::blind_queue_note(strategy.as_deref()) {
            lines.push(Line::from(note));
        }
    }
    lines.push(Line::from(""));
    lines.push(Line::from(format!("code: {}▏", rate.code)));
    let meaning = match parse_code(&rate.code) {
        Ok(parsed) => describe(&parsed),
        Err(reason) => reason,
    };
    lines.push(Line::from(meaning));
    if rate.review_later {
        lines.push(Line::from("marked: review later"));
    }
    if let Some(err) = &rate.error {
        lines.push(Line::from(format!("! {err}")));
    }
    lines.push(Line::from(""));
    lines.push(Line::from("r reject  k gado  a/z/d motion/contrast/noise"));
    lines.push(Line::from("Enter save  u undo  l later  n/p move"));
    if !rate.saved.is_empty() {
        lines.push(Line::from(""));
        lines.push(Line::from(format!(
            "saved this session: {}",
            rate.saved.len()
        )));
        // Images and codes only: rating ids count every rater's saves.
        for save in rate.saved.iter().rev().take(5) {
            lines.push(Line::from(format!(
                "  image {} '{}'",
                save.image_id, save.code
            )));
        }
    }
    frame.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(" Rate ")),
        side,
    );
}
