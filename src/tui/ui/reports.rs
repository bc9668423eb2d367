//! The Reports view: inter-rater agreement and the model comparison for one task, as
//! tables and a bar chart of balanced accuracy per run.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Row, Table};

use super::empty;
use super::figures::{CountColumns, exact, room};
use crate::report::agreement::{AgreementReport, Task};
use crate::report::model::Comparison;
use crate::tui::app::App;

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
    let [title, top, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Percentage(50),
        Constraint::Percentage(50),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(Line::from(format!(
            " task {} ({}) · t next task · e export HTML",
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
        Some(c) => draw_models(frame, bottom, c, task),
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

fn draw_models(frame: &mut Frame, area: Rect, c: &Comparison, task: Task) {
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
    let [table, chart] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(area);
    // Narrow tables drop the comparison, then the AUC, rather than cut a figure: a
    // compact count needs at most 5 cells.
    let fits = |others: &[u16]| room(table.width, others) >= 5;
    let (auc, versus) = if fits(&[6, 22, 5, 24]) {
        (true, true)
    } else {
        (fits(&[6, 22, 5]), false)
    };
    let mut others = vec![6, 22];
    others.extend(auc.then_some(5).into_iter().chain(versus.then_some(24)));
    let counts = CountColumns::fit(&["n"], room(table.width, &others), |f| {
        runs.iter()
            .map(|r| vec![f.show(i64::try_from(r.images).unwrap_or(i64::MAX))])
            .collect()
    });
    let rows = runs.iter().zip(&counts.rows).map(|(r, n)| {
        let mut cells = vec![
            r.method.clone().unwrap_or_else(|| r.run_id.clone()),
            n[0].clone(),
            r.balanced_accuracy.text(),
        ];
        if auc {
            cells.push(r.auc.value.map_or("-".into(), |v| format!("{v:.3}")));
        }
        if versus {
            cells.push(
                c.versus_baseline
                    .iter()
                    .find(|p| p.run_id == r.run_id)
                    .map_or(String::new(), |p| p.difference.text()),
            );
        }
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Fill(1),
        Constraint::Length(counts.widths[0]),
        Constraint::Length(22),
    ];
    let mut headers = vec!["method", counts.headers[0].as_str(), "BA [95% CI]"];
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
    frame.render_widget(
        Table::new(rows, widths)
            .header(header(&headers))
            .block(block),
        table,
    );
    let bars: Vec<Bar> = runs
        .iter()
        .map(|r| {
            let value = r.balanced_accuracy.value.unwrap_or(0.0);
            let label = r.method.clone().unwrap_or_else(|| r.run_id.clone());
            Bar::default()
                .value((value * 100.0).round() as u64)
                .text_value(format!("{value:.2}"))
                .label(Line::from(short(&label)))
        })
        .collect();
    frame.render_widget(
        BarChart::default()
            .block(Block::bordered().title(" Balanced accuracy "))
            .data(BarGroup::default().bars(&bars))
            .bar_width(5)
            .bar_gap(1)
            .max(100),
        chart,
    );
}

/// Method names fit under a five-column bar.
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
