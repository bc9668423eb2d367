//! Reports: agreement between raters and model performance, assembled from the store
//! and rendered as Markdown, JSON and a self-contained HTML file with SVG plots.

pub mod plots;
