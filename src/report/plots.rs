//! SVG plots for reports, drawn with plotters: confusion-matrix heatmaps with counts,
//! ROC curves, rater-pair kappa matrices, class balance bars, reliability diagrams.
//! Every function takes plain numbers and returns a self-contained `<svg>` string.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

#[derive(Debug, thiserror::Error)]
#[error("drawing {plot}: {detail}")]
pub struct PlotError {
    plot: &'static str,
    detail: String,
}

fn fail(plot: &'static str) -> impl Fn(String) -> PlotError {
    move |detail| PlotError { plot, detail }
}

/// Blue scale for heatmaps: 0 white, 1 dark blue.
fn heat(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(247.0, 8.0), lerp(251.0, 48.0), lerp(255.0, 107.0))
}

/// Diverging scale for kappa in [-1, 1]: red below zero, white at zero, blue above.
fn diverging(v: f64) -> RGBColor {
    if !v.is_finite() {
        return RGBColor(220, 220, 220);
    }
    let t = v.clamp(-1.0, 1.0);
    if t >= 0.0 {
        heat(t)
    } else {
        let t = -t;
        let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
        RGBColor(lerp(255.0, 165.0), lerp(255.0, 15.0), lerp(255.0, 21.0))
    }
}

fn text_on(fill: &RGBColor) -> RGBColor {
    let luminance =
        0.299 * f64::from(fill.0) + 0.587 * f64::from(fill.1) + 0.114 * f64::from(fill.2);
    if luminance < 140.0 { WHITE } else { BLACK }
}

/// A square matrix heatmap with a number in each cell. `rows` label the vertical axis
/// (top to bottom), `cols` the horizontal one.
fn matrix_svg(
    plot: &'static str,
    title: &str,
    rows: &[String],
    cols: &[String],
    row_axis: &str,
    col_axis: &str,
    cell: impl Fn(usize, usize) -> (RGBColor, String),
) -> Result<String, PlotError> {
    let err = fail(plot);
    let cell_px = 64u32;
    let label_w = 130u32;
    let width = label_w + cell_px * cols.len().max(1) as u32 + 20;
    let height = 70 + cell_px * rows.len().max(1) as u32 + 60;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        root.draw(&Text::new(
            title.to_string(),
            (10, 10),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(|e| err(e.to_string()))?;
        let top = 60i32;
        for (r, name) in rows.iter().enumerate() {
            let y = top + (r as u32 * cell_px) as i32;
            root.draw(&Text::new(
                name.clone(),
                (10, y + cell_px as i32 / 2 - 7),
                ("sans-serif", 14).into_font(),
            ))
            .map_err(|e| err(e.to_string()))?;
            for c in 0..cols.len() {
                let x = label_w as i32 + (c as u32 * cell_px) as i32;
                let (fill, label) = cell(r, c);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell_px as i32 - 2, y + cell_px as i32 - 2)],
                    fill.filled(),
                ))
                .map_err(|e| err(e.to_string()))?;
                let ink = text_on(&fill);
                let style = TextStyle::from(("sans-serif", 14).into_font())
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                root.draw(&Text::new(
                    label,
                    (x + cell_px as i32 / 2 - 1, y + cell_px as i32 / 2 - 1),
                    style,
                ))
                .map_err(|e| err(e.to_string()))?;
            }
        }
        let bottom = top + (rows.len() as u32 * cell_px) as i32;
        for (c, name) in cols.iter().enumerate() {
            let x = label_w as i32 + (c as u32 * cell_px) as i32 + cell_px as i32 / 2;
            let style = TextStyle::from(("sans-serif", 14).into_font())
                .pos(Pos::new(HPos::Center, VPos::Top));
            root.draw(&Text::new(name.clone(), (x, bottom + 6), style))
                .map_err(|e| err(e.to_string()))?;
        }
        let axis = format!("rows: {row_axis} · columns: {col_axis}");
        root.draw(&Text::new(
            axis,
            (10, bottom + 30),
            ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
        ))
        .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// Confusion matrix: counts, shaded by the share of their row.
pub fn confusion_matrix(
    title: &str,
    labels: &[String],
    counts: &[Vec<u64>],
    row_axis: &str,
    col_axis: &str,
) -> Result<String, PlotError> {
    matrix_svg(
        "confusion matrix",
        title,
        labels,
        labels,
        row_axis,
        col_axis,
        |r, c| {
            let row_total: u64 = counts.get(r).map_or(0, |row| row.iter().sum());
            let n = counts
                .get(r)
                .and_then(|row| row.get(c))
                .copied()
                .unwrap_or(0);
            let share = if row_total > 0 {
                n as f64 / row_total as f64
            } else {
                0.0
            };
            (heat(share), n.to_string())
        },
    )
}

/// Rater-pair agreement matrix (kappa); `None` cells are undefined.
pub fn kappa_matrix(
    title: &str,
    raters: &[String],
    kappa: &[Vec<Option<f64>>],
) -> Result<String, PlotError> {
    matrix_svg(
        "kappa matrix",
        title,
        raters,
        raters,
        "rater",
        "rater",
        |r, c| match kappa.get(r).and_then(|row| row.get(c)).copied().flatten() {
            Some(k) => (diverging(k), format!("{k:.2}")),
            None => (RGBColor(235, 235, 235), "–".into()),
        },
    )
}

/// Horizontal bars of class counts.
pub fn class_balance(title: &str, labels: &[String], counts: &[u64]) -> Result<String, PlotError> {
    let err = fail("class balance");
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let height = 60 + 34 * labels.len().max(1) as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        root.draw(&Text::new(
            title.to_string(),
            (10, 10),
            ("sans-serif", 18).into_font(),
        ))
        .map_err(|e| err(e.to_string()))?;
        for (i, (label, &n)) in labels.iter().zip(counts).enumerate() {
            let y = 50 + 34 * i as i32;
            root.draw(&Text::new(
                label.clone(),
                (10, y + 6),
                ("sans-serif", 14).into_font(),
            ))
            .map_err(|e| err(e.to_string()))?;
            let w = (300.0 * n as f64 / max as f64).round() as i32;
            root.draw(&Rectangle::new(
                [(130, y), (130 + w.max(1), y + 24)],
                RGBColor(49, 130, 189).filled(),
            ))
            .map_err(|e| err(e.to_string()))?;
            root.draw(&Text::new(
                n.to_string(),
                (136 + w, y + 6),
                ("sans-serif", 14).into_font(),
            ))
            .map_err(|e| err(e.to_string()))?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// One curve of a ROC plot.
#[derive(Debug, Clone, PartialEq)]
pub struct RocSeries {
    pub name: String,
    /// (false positive rate, true positive rate), from (0, 0) to (1, 1).
    pub points: Vec<(f64, f64)>,
    pub auc: Option<f64>,
}

/// One ROC curve per series.
pub fn roc_curves(title: &str, series: &[RocSeries]) -> Result<String, PlotError> {
    let err = fail("ROC curve");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("false positive rate (1 - specificity)")
            .y_desc("true positive rate (sensitivity)")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                RGBColor(180, 180, 180),
            ))
            .map_err(|e| err(e.to_string()))?;
        for (i, RocSeries { name, points, auc }) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let label = match auc {
                Some(a) => format!("{name} (AUC {a:.3})"),
                None => name.clone(),
            };
            chart
                .draw_series(LineSeries::new(
                    points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| err(e.to_string()))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

/// Reliability diagram: per probability bin, (mean predicted probability, observed
/// frequency, count).
pub fn reliability(title: &str, bins: &[(f64, f64, u64)]) -> Result<String, PlotError> {
    let err = fail("reliability diagram");
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (520, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)
            .map_err(|e| err(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("predicted probability")
            .y_desc("observed frequency")
            .draw()
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                RGBColor(180, 180, 180),
            ))
            .map_err(|e| err(e.to_string()))?;
        let color = RGBColor(49, 130, 189);
        chart
            .draw_series(LineSeries::new(
                bins.iter().filter(|b| b.2 > 0).map(|b| (b.0, b.1)),
                color.stroke_width(2),
            ))
            .map_err(|e| err(e.to_string()))?;
        chart
            .draw_series(
                bins.iter()
                    .filter(|b| b.2 > 0)
                    .map(|b| Circle::new((b.0, b.1), 4, color.filled())),
            )
            .map_err(|e| err(e.to_string()))?;
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plots_are_svg_with_their_numbers() {
        let cm = confusion_matrix(
            "usable",
            &labels(&["usable", "reject"]),
            &[vec![40, 2], vec![5, 13]],
            "rater a",
            "rater b",
        )
        .expect("draws");
        assert!(cm.starts_with("<svg") && cm.trim_end().ends_with("</svg>"));
        for n in ["40", "13", "usable", "reject"] {
            assert!(cm.contains(&format!(">\n{n}\n<")), "{n} missing");
        }
        let km = kappa_matrix(
            "kappa",
            &labels(&["a", "b"]),
            &[vec![Some(1.0), Some(0.62)], vec![Some(0.62), None]],
        )
        .expect("draws");
        assert!(km.contains(">\n0.62\n<") && km.contains(">\n–\n<"));
        let bars = class_balance("classes", &labels(&["good", "bad"]), &[10, 3]).expect("draws");
        assert!(bars.contains(">\n10\n<"));
        let roc = roc_curves(
            "roc",
            &[RocSeries {
                name: "model".into(),
                points: vec![(0.0, 0.0), (0.2, 0.8), (1.0, 1.0)],
                auc: Some(0.8),
            }],
        )
        .expect("draws");
        assert!(roc.contains("AUC 0.800"));
        let rel = reliability("calibration", &[(0.1, 0.05, 10), (0.9, 0.8, 12)]).expect("draws");
        assert!(rel.contains("<circle"));
    }
}
