//! The IQM box of the Images view's detail pane: the selected image's screening
//! metrics, each with its robust z-score in its sequence and scanner group and a mark
//! when it is an outlier, in as many columns as the pane's width allows.

use std::sync::Arc;

use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

use crate::store::iqm_outliers::{ImageIqms, IqmGroups, IqmScore, SCREENING};

/// One cell: a 4-letter name, the value and the z-score in 4 characters each, the
/// outlier mark.
const CELL: usize = 15;
/// Below this inner width the pane leaves out `snrd_total` (unless it is an outlier).
const ALL_TEN: usize = 40;
const OUTLIER_MARK: &str = "!";

/// The box's title and lines for a pane `width` cells wide inside its borders.
pub fn iqm_box(
    iqms: Option<&ImageIqms>,
    groups: Option<&Result<Arc<IqmGroups>, String>>,
    width: usize,
) -> (String, Vec<Line<'static>>) {
    let Some(iqms) = iqms else {
        return (
            " IQMs ".into(),
            wrap(
                "no IQMs (import --no-iqm; run\u{a0}`cdwqc\u{a0}iqm`)",
                width,
            ),
        );
    };
    if let Some(err) = &iqms.error {
        return (" IQMs ".into(), wrap(&format!("no IQMs: {err}"), width));
    }
    let groups = match groups {
        Some(Ok(groups)) => Ok(groups.as_ref()),
        Some(Err(err)) => Err(format!("z: {err}")),
        None => Err("z: reading the groups…".to_string()),
    };
    let scores: Vec<IqmScore> = match &groups {
        Ok(groups) => groups.score(iqms),
        Err(_) => SCREENING
            .iter()
            .zip(iqms.values)
            .map(|(&metric, value)| IqmScore {
                metric,
                value,
                robust_z: None,
                outlier: false,
            })
            .collect(),
    };
    let shown: Vec<&IqmScore> = scores
        .iter()
        .filter(|s| width >= ALL_TEN || s.outlier || s.metric != "snrd_total")
        .collect();
    let columns = (width / CELL).max(1);
    let mut lines: Vec<Line<'static>> = shown
        .chunks(columns)
        .map(|row| Line::from(row.iter().copied().map(cell).collect::<Vec<_>>()))
        .collect();
    let outliers: Vec<&str> = scores
        .iter()
        .filter(|s| s.outlier)
        .map(|s| label(s.metric))
        .collect();
    let group = format!(
        "{} {}",
        iqms.suffix.as_deref().unwrap_or("(no sequence)"),
        iqms.scanner
    );
    let note = match &groups {
        Err(text) => text.clone(),
        Ok(g) if g.iqm_version != Some(iqms.iqm_version) => format!(
            "metrics v{}, groups v{}: run `cdwqc iqm`",
            iqms.iqm_version,
            g.iqm_version.unwrap_or(0)
        ),
        Ok(g) => match g.group_size(iqms) {
            Some(n) if n < 5 => format!("z in {n} {group} (<\u{a0}5:\u{a0}no\u{a0}flags)"),
            Some(n) => format!("z in {n} {group}"),
            None => format!("no group: {group}"),
        },
    };
    lines.extend(wrap(&note, width));
    let title = match outliers.len() {
        0 => " IQMs ".to_string(),
        1 => format!(" IQMs · {OUTLIER_MARK} outlier: {} ", outliers[0]),
        n => format!(" IQMs · {OUTLIER_MARK} {n} outliers "),
    };
    (title, lines)
}

/// `snr  12.3 +0.4 `, marked and coloured when an outlier.
fn cell(score: &IqmScore) -> Span<'static> {
    let value = score.value.map_or_else(|| "-".to_string(), short);
    let z = score.robust_z.map_or_else(|| "-".to_string(), z_text);
    let mark = if score.outlier { OUTLIER_MARK } else { " " };
    let text = format!("{:<4} {value:>4} {z:>4}{mark}", label(score.metric));
    if score.outlier {
        Span::styled(
            text,
            Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        )
    } else {
        Span::raw(text)
    }
}

/// Four letters per metric, so that two fit the 80-column pane.
fn label(metric: &str) -> &'static str {
    match metric {
        "snr_total" => "snr",
        "snrd_total" => "snrd",
        "cnr" => "cnr",
        "cjv" => "cjv",
        "efc" => "efc",
        "fber" => "fber",
        "wm2max" => "wm2m",
        "qi_1" => "qi1",
        "fwhm_avg" => "fwhm",
        "inu_range" => "inu",
        _ => "?",
    }
}

/// A value in at most 4 characters, keeping as many decimals as fit: `0.55`, `12.3`,
/// `2498`, `.072`, `5e4`, `4e-4`.
fn short(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() >= 0.0995 {
        for decimals in [2, 1, 0] {
            let text = format!("{v:.decimals$}");
            if text.len() <= 4 {
                return text;
            }
        }
    } else if v >= 0.00095 {
        // `0.072` without its leading zero.
        return format!("{v:.3}")[1..].to_string();
    }
    format!("{v:.0e}")
}

/// A robust z-score in 4 characters: `+0.4`, `-13`, `+1e3`.
fn z_text(z: f64) -> String {
    if z.abs() < 9.95 {
        format!("{z:+.1}")
    } else if z.abs() < 999.5 {
        format!("{z:+.0}")
    } else {
        format!("{z:+.0e}")
    }
}

/// Words on lines of at most `width` characters (a longer word gets a line of its
/// own); a no-break space joins words that stay together.
fn wrap(text: &str, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut push = |line: String| lines.push(Line::from(line.replace('\u{a0}', " ")));
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        push(line);
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_z_scores_fit_their_columns() {
        for (v, want) in [
            (0.55, "0.55"),
            (12.34, "12.3"),
            (2498.0, "2498"),
            (50000.0, "5e4"),
            (0.005, ".005"),
            (0.0721, ".072"),
            (0.0004, "4e-4"),
            (-1.0, "-1.0"),
            (0.0, "0"),
        ] {
            assert_eq!(short(v), want);
        }
        for (z, want) in [
            (0.44, "+0.4"),
            (-13.0, "-13"),
            (78.2, "+78"),
            (4200.0, "+4e3"),
        ] {
            assert_eq!(z_text(z), want);
        }
    }

    #[test]
    fn long_notes_wrap_at_words() {
        let lines = wrap("no IQMs (import --no-iqm; run\u{a0}`cdwqc\u{a0}iqm`)", 30);
        let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        assert_eq!(text, ["no IQMs (import --no-iqm;", "run `cdwqc iqm`)"]);
        assert_eq!(wrap("a b", 10).len(), 1);
    }
}
