//! The Reports view: inter-rater agreement and the model comparison for one task, as
//! tables and a bar chart of balanced accuracy per run, and the selected run's
//! calibration, operating point and triage band.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{
    Bar, BarChart, BarGroup, Block, HighlightSpacing, Paragraph, Row, Table, TableState, Wrap,
};

use super::empty;
use super::figures::{CountColumns, exact, fit_text, room};
use crate::report::Value;
use crate::report::agreement::{AgreementReport, Task};
use crate::report::model::{CompareRow, Comparison};
use crate::tui::app::App;
use crate::tui::reports::{OperatingView, ReportsState};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
    if app.blind() {
        return empty(
            frame,
            area,
            "Reports",
            "hidden in blind rating mode: other raters' labels and the models' predictions stay out of sight while rating",
        );
    }
    let data = match &app.reports.data {
        None => return empty(frame, area, "Reports", "computing the reports…"),
        Some(Err(err)) => return empty(frame, area, "Reports", err),
        Some(Ok(data)) => data,
    };
    let task = app.reports.task();
    // The models half gets the rows the operating point needs (10 lines) where the
    // terminal is short; the agreement table needs 8.
    let models = (area.height.saturating_sub(1) / 2).max(OPERATING_HEIGHT);
    let [title, top, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(models),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(Line::from(format!(
            " task {} ({}) · t next task · ↑↓ run · o target · e export HTML",
            task.name(),
            task.categories().join(" / ")
        )))
        .style(Style::new().add_modifier(Modifier::BOLD)),
        title,
    );
    draw_agreement(frame, top, &data.agreement, task);
    match &data.comparison {
        None => empty(
            frame,
            bottom,
            "Models",
            "no run with predictions yet: run `cdwqc train` (it scores its held-out test subjects)",
        ),
        Some(c) => draw_models(frame, bottom, c, &app.reports),
    }
}

fn header(cells: &[&str]) -> Row<'static> {
    Row::new(cells.iter().map(|c| c.to_string()).collect::<Vec<_>>())
        .style(Style::new().add_modifier(Modifier::BOLD))
}

fn draw_agreement(frame: &mut Frame, area: Rect, report: &AgreementReport, task: Task) {
    let Some(t) = report.tasks.iter().find(|t| t.task == task) else {
        return empty(frame, area, "Agreement", "no ratings yet");
    };
    if t.overall.ratings == 0 {
        return empty(
            frame,
            area,
            "Agreement",
            "no ratings for this task yet: `cdwqc ratings import FILE --rater NAME`, or rate in the Rate view",
        );
    }
    let [all, pairs] =
        Layout::horizontal([Constraint::Length(38), Constraint::Fill(1)]).areas(area);
    let o = &t.overall;
    let rows = vec![
        Row::new(vec!["images".to_string(), exact(o.images as i64)]),
        Row::new(vec![
            "rated by 2+".to_string(),
            exact(o.images_multiply_rated as i64),
        ]),
        Row::new(vec![
            "agreement".to_string(),
            o.percent_agreement_pairwise.text(),
        ]),
        Row::new(vec!["Fleiss' kappa".to_string(), o.fleiss_kappa.text()]),
        Row::new(vec![
            "Krippendorff".to_string(),
            o.krippendorff_alpha.text(),
        ]),
        Row::new(vec!["Gwet's AC1".to_string(), o.gwet_ac1.brief()]),
    ];
    frame.render_widget(
        Table::new(rows, [Constraint::Length(13), Constraint::Fill(1)])
            .block(Block::bordered().title(format!(" Agreement, {} raters ", report.raters.len()))),
        all,
    );
    if t.pairs.is_empty() {
        return empty(
            frame,
            pairs,
            "Rater pairs",
            "no two raters share an image yet",
        );
    }
    // The human balanced accuracy column only where the pair names still fit.
    let wide = pairs.width >= 52;
    let counts = CountColumns::fit(
        &["n"],
        room(
            pairs.width,
            if wide { &[8, 22, 6][..] } else { &[8, 22][..] },
        ),
        |f| {
            t.pairs
                .iter()
                .map(|p| vec![f.show(i64::try_from(p.n).unwrap_or(i64::MAX))])
                .collect()
        },
    );
    let rows = t.pairs.iter().zip(&counts.rows).map(|(p, n)| {
        let mut cells = vec![
            format!("{} · {}", p.rater_a, p.rater_b),
            n[0].clone(),
            p.kappa.brief(),
        ];
        if wide {
            cells.push(
                p.human_balanced_accuracy
                    .value
                    .map_or("-".into(), |v| format!("{v:.3}")),
            );
        }
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Min(8),
        Constraint::Length(counts.widths[0]),
        Constraint::Length(22),
    ];
    let mut headers = vec!["pair", counts.headers[0].as_str(), "kappa [95% CI]"];
    if wide {
        widths.push(Constraint::Length(6));
        headers.push("BA");
    }
    frame.render_widget(
        Table::new(rows, widths).header(header(&headers)).block({
            let block =
                Block::bordered().title(format!(" Rater pairs ({} kappa) ", t.kappa_weighting));
            match counts.legend() {
                Some(legend) => block.title_bottom(legend),
                None => block,
            }
        }),
        pairs,
    );
}

fn draw_models(frame: &mut Frame, area: Rect, c: &Comparison, state: &ReportsState) {
    let task = state.task();
    let runs: Vec<_> = c.runs.iter().filter(|r| r.task == task).collect();
    if runs.is_empty() {
        return empty(
            frame,
            area,
            "Models",
            &format!(
                "no {} run with predictions: `cdwqc train --task {}`",
                task.name(),
                task.name()
            ),
        );
    }
    // The operating point of the selected run always; the bar chart where room is left.
    let [table, operating, chart] = if area.width >= 110 {
        Layout::horizontal([
            Constraint::Percentage(45),
            Constraint::Length(OPERATING_WIDTH),
            Constraint::Fill(1),
        ])
        .areas(area)
    } else {
        Layout::horizontal([
            Constraint::Fill(1),
            Constraint::Length(OPERATING_WIDTH),
            Constraint::Length(0),
        ])
        .areas(area)
    };
    let selected = state.selected.min(runs.len() - 1);
    draw_operating(frame, operating, state, &runs[selected].run_id);
    // Narrow tables drop the comparison, then the AUC, rather than cut a figure: a
    // compact count needs at most 5 cells.
    let fits = |others: &[u16]| room(table.width.saturating_sub(MARK), others) >= 5;
    let (auc, versus) = if fits(&[6, 22, 5, 24]) {
        (true, true)
    } else {
        (fits(&[6, 22, 5]), false)
    };
    let mut others = vec![6, 22];
    others.extend(auc.then_some(5).into_iter().chain(versus.then_some(24)));
    let counts = CountColumns::fit(
        &["n"],
        room(table.width.saturating_sub(MARK), &others),
        |f| {
            runs.iter()
                .map(|r| vec![f.show(i64::try_from(r.images).unwrap_or(i64::MAX))])
                .collect()
        },
    );
    // Runs are named by their id (method and seed both matter: three seeds of one
    // method are three rows), cut in the middle to the room the figures leave.
    let mut fixed = vec![counts.widths[0], 22];
    fixed.extend(auc.then_some(5).into_iter().chain(versus.then_some(24)));
    let name_width = usize::from(room(table.width.saturating_sub(MARK), &fixed));
    let rows = runs.iter().zip(&counts.rows).map(|(r, n)| {
        let mut cells = vec![
            fit_text(&r.run_id, name_width),
            n[0].clone(),
            r.balanced_accuracy.text(),
        ];
        if auc {
            cells.push(r.auc.value.map_or("-".into(), |v| format!("{v:.3}")));
        }
        if versus {
            // A run scored beside several baselines with none on its own images has
            // several differences: the cell says so rather than show one of them.
            let mut pairs = c.versus_baseline.iter().filter(|p| p.run_id == r.run_id);
            cells.push(match (pairs.next(), pairs.count()) {
                (None, _) => String::new(),
                (Some(p), 0) => p.difference.signed(),
                (Some(_), more) => format!("{} baselines, e: HTML", more + 1),
            });
        }
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Fill(1),
        Constraint::Length(counts.widths[0]),
        Constraint::Length(22),
    ];
    let mut headers = vec!["run", counts.headers[0].as_str(), "BA [95% CI]"];
    if auc {
        widths.push(Constraint::Length(5));
        headers.push("AUC");
    }
    if versus {
        widths.push(Constraint::Length(24));
        headers.push("vs target-only");
    }
    let mut block = Block::bordered().title(format!(
        " Models on {} ({}) ",
        c.runs.first().map_or("test", |r| match r.set {
            crate::report::model::EvalSet::Test => "held-out test subjects",
            crate::report::model::EvalSet::Unseen => "unseen images",
            crate::report::model::EvalSet::All => "all predicted images",
        }),
        c.against
    ));
    if let Some(legend) = counts.legend() {
        block = block.title_bottom(legend);
    }
    let mut table_state = TableState::default();
    table_state.select(Some(selected));
    frame.render_stateful_widget(
        Table::new(rows, widths)
            .header(header(&headers))
            .highlight_symbol("›")
            .highlight_spacing(HighlightSpacing::Always)
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
            .block(block),
        table,
        &mut table_state,
    );
    if chart.width == 0 {
        return;
    }
    // One group per method: a method run several times (seeds, fractions) shows each
    // run's bar under what tells its id apart (`seed2`) and the method below the group.
    let bar = |r: &&CompareRow, label: String| {
        let value = r.balanced_accuracy.value.unwrap_or(0.0);
        Bar::default()
            .value((value * 100.0).round() as u64)
            .text_value(format!("{value:.2}"))
            .label(Line::from(label))
    };
    let mut chart_widget =
        BarChart::default().block(Block::bordered().title(" Balanced accuracy "));
    for same in runs.chunk_by(|a, b| a.method == b.method) {
        let group = match same {
            [one] => {
                let name = one.method.clone().unwrap_or_else(|| one.run_id.clone());
                BarGroup::default().bars(&[bar(one, short(&name))])
            }
            several => {
                let ids: Vec<&str> = several.iter().map(|r| r.run_id.as_str()).collect();
                let bars: Vec<Bar> = several
                    .iter()
                    .zip(distinguishing(&ids, 5))
                    .map(|(r, label)| bar(r, label))
                    .collect();
                let method = several[0].method.as_deref().unwrap_or("(none)");
                BarGroup::default()
                    .label(Line::from(method.to_string()).centered())
                    .bars(&bars)
            }
        };
        chart_widget = chart_widget.data(group);
    }
    frame.render_widget(chart_widget.bar_width(5).bar_gap(1).max(100), chart);
}

/// Columns of the operating point panel.
const OPERATING_WIDTH: u16 = 40;
/// Rows of the operating point panel, borders included.
const OPERATING_HEIGHT: u16 = 12;
/// Columns of the selection mark before each run.
const MARK: u16 = 1;

fn num(v: &Value) -> String {
    v.value
        .map_or_else(|| "n/a".to_string(), |x| format!("{x:.3}"))
}

fn percent(v: &Value) -> String {
    v.value
        .map_or_else(|| "n/a".to_string(), |x| format!("{:.1}%", 100.0 * x))
}

/// The selected run's calibration, the threshold at the target sensitivity and the
/// triage band at the same rate, all picked on its validation images.
fn draw_operating(frame: &mut Frame, area: Rect, state: &ReportsState, run_id: &str) {
    let title = operating_title(run_id, state.target(), area.width);
    let view = match state.operating_view() {
        None => return empty(frame, area, &title, "computing the operating point…"),
        Some(Err(err)) => return empty(frame, area, &title, err),
        Some(Ok(view)) => view,
    };
    frame.render_widget(
        Paragraph::new(operating_lines(view))
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(format!(" {title} "))),
        area,
    );
}

/// The panel's title: the run id gives way (shortened with `…`) so that the target is
/// always whole, never cut into a different figure (0.95 read as 0.9).
fn operating_title(run_id: &str, target: f64, width: u16) -> String {
    // Two borders and the spaces around the title.
    let room = usize::from(width).saturating_sub(4);
    let target = format!("sensitivity {target:.2}");
    let short_target = format!("sens. {}", &target["sensitivity ".len()..]);
    let whole = format!("{run_id} · {target}");
    if whole.chars().count() <= room {
        return whole;
    }
    let name_room = room.saturating_sub(target.chars().count() + 3);
    if name_room >= 6 {
        return format!("{} · {target}", fit_text(run_id, name_room));
    }
    if target.chars().count() <= room {
        return target;
    }
    if short_target.chars().count() <= room {
        return short_target;
    }
    String::new()
}

fn operating_lines(view: &OperatingView) -> Vec<Line<'static>> {
    let c = &view.calibration;
    let mut lines = vec![match c.temperature {
        Some(t) => Line::from(format!(
            "T {t:.3}{} · ECE {} → {}",
            if c.at_bound { " (bound)" } else { "" },
            num(&c.ece_before),
            num(&c.ece_after)
        )),
        None => Line::from(format!("ECE {} · no temperature", num(&c.ece_before))),
    }];
    lines.push(Line::from("in use: most probable class"));
    if let Some(op) = &view.operating_point {
        match op.threshold.value {
            Some(t) => {
                lines.push(Line::from(format!(
                    "auto: flag P({}) ≥ {t:.3}",
                    op.positive_class
                )));
                lines.push(Line::from(format!(
                    " val  sens {} spec {}",
                    num(&op.validation_sensitivity),
                    num(&op.validation_specificity)
                )));
                lines.push(Line::from(format!(
                    " {} sens {} spec {}",
                    view.set,
                    num(&op.sensitivity),
                    num(&op.specificity)
                )));
                lines.push(Line::from(format!(
                    " to review {}",
                    percent(&op.review_share)
                )));
            }
            None => lines.push(Line::from(format!(
                "no threshold on {} validation images: {}",
                op.validation_images,
                op.threshold.brief()
            ))),
        }
    }
    if let Some(t) = &view.triage {
        match (t.accept_below.value, t.reject_from.value) {
            (Some(a), Some(b)) => {
                lines.push(Line::from(format!("triage: accept <{a:.3} reject ≥{b:.3}")));
                lines.push(Line::from(format!(
                    " {} accepted {} rejected {} to people",
                    t.accepted, t.rejected, t.to_review
                )));
                lines.push(Line::from(format!(
                    " ratings saved {} of {}",
                    percent(&t.ratings_saved_share),
                    t.images
                )));
            }
            // Without thresholds the operating point above already says why.
            _ => lines.push(Line::from("triage: every image to people")),
        }
    }
    lines
}

/// Method names fit under a five-column bar.
/// Labels of at most `width` characters that tell run ids apart: the end of where they
/// differ (`…-seed2`, with the common tail left out), or their start when they differ
/// from the first character (`demo-` against `model`).
fn distinguishing(ids: &[&str], width: usize) -> Vec<String> {
    let chars: Vec<Vec<char>> = ids.iter().map(|id| id.chars().collect()).collect();
    let common = |rev: bool| {
        let shortest = chars.iter().map(Vec::len).min().unwrap_or(0);
        (0..shortest)
            .take_while(|&i| {
                let at = |c: &Vec<char>| if rev { c[c.len() - 1 - i] } else { c[i] };
                chars.iter().all(|c| at(c) == at(&chars[0]))
            })
            .count()
    };
    let (prefix, suffix) = (common(false), common(true));
    chars
        .iter()
        .map(|c| {
            if prefix == 0 {
                return c.iter().take(width).collect();
            }
            let end = c.len().saturating_sub(suffix).max(prefix.min(c.len()));
            c[end.saturating_sub(width)..end].iter().collect()
        })
        .collect()
}

fn short(name: &str) -> String {
    match name {
        "ssda" => "SSDA".into(),
        "target-only" => "tgt".into(),
        "source-only" => "src".into(),
        "finetune" => "fine".into(),
        "ssda-no-domain" => "noDom".into(),
        other => other.chars().take(5).collect(),
    }
}

#[cfg(test)]
mod label_tests {
    use super::distinguishing;

    #[test]
    fn bar_labels_tell_run_ids_apart() {
        assert_eq!(
            distinguishing(&["u-ssda-seed1", "u-ssda-seed2", "u-ssda-seed3"], 5),
            ["seed1", "seed2", "seed3"]
        );
        assert_eq!(
            distinguishing(&["demo-usable-target-only", "model:cdwqc-flair-usable"], 5),
            ["demo-", "model"]
        );
        // The common tail is left out: the fraction, not the task.
        assert_eq!(
            distinguishing(&["fl-f10-s1-usable", "fl-f25-s1-usable"], 5),
            ["l-f10", "l-f25"]
        );
        // Ids shorter than the width, and one id the start of another.
        assert_eq!(distinguishing(&["a1", "a2"], 5), ["a1", "a2"]);
        assert_eq!(distinguishing(&["run", "run-2"], 5), ["run", "run-2"]);
    }
}

#[cfg(test)]
mod title_tests {
    use super::operating_title;

    #[test]
    fn the_target_in_the_operating_panel_title_is_never_cut() {
        let run = "model:cdwqc-flair-usable-adapted-to-this-warehouse";
        for width in 0..=120u16 {
            let title = operating_title(run, 0.95, width);
            assert!(
                title.chars().count() <= usize::from(width).saturating_sub(4),
                "{width}: {title}"
            );
            let figure = title.split(' ').next_back().unwrap_or("");
            assert!(
                title.is_empty() || figure == "0.95",
                "{width}: the target is cut in {title:?}"
            );
            if width >= 40 {
                assert!(title.ends_with(" · sensitivity 0.95"), "{width}: {title}");
                assert!(title.starts_with("model:"), "{width}: {title}");
            }
        }
        assert_eq!(
            operating_title("demo-usable-ssda", 0.9, 60),
            "demo-usable-ssda · sensitivity 0.90"
        );
    }
}
