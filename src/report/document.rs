//! A report as a list of blocks (headings, paragraphs, tables, figures), rendered to
//! Markdown for terminals and to one self-contained HTML file (inline CSS and SVG, no
//! network) for people who never open a terminal.

use super::Figure;

#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    Heading(u8, String),
    Paragraph(String),
    Table {
        headers: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    Figures(Vec<Figure>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Document {
    pub title: String,
    pub blocks: Vec<Block>,
}

impl Document {
    pub fn new(title: impl Into<String>) -> Self {
        Self {
            title: title.into(),
            blocks: Vec::new(),
        }
    }

    pub fn heading(&mut self, level: u8, text: impl Into<String>) {
        self.blocks.push(Block::Heading(level, text.into()));
    }

    pub fn paragraph(&mut self, text: impl Into<String>) {
        self.blocks.push(Block::Paragraph(text.into()));
    }

    pub fn table(&mut self, headers: &[&str], rows: Vec<Vec<String>>) {
        self.blocks.push(Block::Table {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows,
        });
    }

    pub fn figures(&mut self, figures: Vec<Figure>) {
        if !figures.is_empty() {
            self.blocks.push(Block::Figures(figures));
        }
    }

    /// Markdown (figures are listed by title: they live in the HTML report).
    pub fn markdown(&self) -> String {
        let mut out = format!("# {}\n", self.title);
        for block in &self.blocks {
            out.push('\n');
            match block {
                Block::Heading(level, text) => {
                    out.push_str(&format!(
                        "{} {text}\n",
                        "#".repeat(usize::from(*level).clamp(2, 6))
                    ));
                }
                Block::Paragraph(text) => {
                    out.push_str(text);
                    out.push('\n');
                }
                Block::Table { headers, rows } => {
                    let cell = |s: &str| s.replace('|', "\\|");
                    out.push_str(&format!(
                        "| {} |\n",
                        headers
                            .iter()
                            .map(|h| cell(h))
                            .collect::<Vec<_>>()
                            .join(" | ")
                    ));
                    out.push_str(&format!("|{}\n", "---|".repeat(headers.len())));
                    for row in rows {
                        out.push_str(&format!(
                            "| {} |\n",
                            row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | ")
                        ));
                    }
                }
                Block::Figures(figures) => {
                    let titles: Vec<&str> = figures.iter().map(|f| f.title.as_str()).collect();
                    out.push_str(&format!(
                        "Plots (in the HTML report): {}.\n",
                        titles.join("; ")
                    ));
                }
            }
        }
        out
    }

    /// A complete HTML page with inline CSS and SVG.
    pub fn html(&self) -> String {
        let mut body = String::new();
        for block in &self.blocks {
            match block {
                Block::Heading(level, text) => {
                    let l = (*level).clamp(2, 4);
                    body.push_str(&format!("<h{l}>{}</h{l}>\n", escape(text)));
                }
                Block::Paragraph(text) => body.push_str(&format!("<p>{}</p>\n", escape(text))),
                Block::Table { headers, rows } => {
                    body.push_str("<table>\n<thead><tr>");
                    for h in headers {
                        body.push_str(&format!("<th>{}</th>", escape(h)));
                    }
                    body.push_str("</tr></thead>\n<tbody>\n");
                    for row in rows {
                        body.push_str("<tr>");
                        for c in row {
                            let class = if looks_numeric(c) {
                                " class=\"num\""
                            } else {
                                ""
                            };
                            body.push_str(&format!("<td{class}>{}</td>", escape(c)));
                        }
                        body.push_str("</tr>\n");
                    }
                    body.push_str("</tbody></table>\n");
                }
                Block::Figures(figures) => {
                    body.push_str("<div class=\"figures\">\n");
                    for f in figures {
                        body.push_str("<figure>");
                        match &f.svg {
                            Ok(svg) => body.push_str(svg),
                            Err(e) => {
                                body.push_str(&format!("<p class=\"error\">{}</p>", escape(e)))
                            }
                        }
                        body.push_str(&format!(
                            "<figcaption>{}</figcaption></figure>\n",
                            escape(&f.title)
                        ));
                    }
                    body.push_str("</div>\n");
                }
            }
        }
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>\n<style>\n{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n{body}</body>\n</html>\n",
            title = escape(&self.title)
        )
    }
}

const CSS: &str = "body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { border-bottom: 2px solid #3182bd; padding-bottom: .3em; }
h2 { margin-top: 2em; color: #08306b; }
table { border-collapse: collapse; margin: 1em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: left; }
th { background: #f0f4f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 0; }
figcaption { font-size: 13px; color: #555; text-align: center; }
.error { color: #a50f15; }
";

fn looks_numeric(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '-')
        && s.chars().filter(|c| c.is_alphabetic()).count() == 0
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown_and_html() {
        let mut d = Document::new("Agreement <test>");
        d.heading(2, "usable");
        d.paragraph("two raters");
        d.table(&["pair", "kappa"], vec![vec!["a|b".into(), "0.5".into()]]);
        d.figures(vec![Figure {
            title: "cm".into(),
            svg: Ok("<svg></svg>".into()),
        }]);
        let md = d.markdown();
        assert!(md.starts_with("# Agreement <test>\n"));
        assert!(md.contains("| a\\|b | 0.5 |"));
        let html = d.html();
        assert!(html.contains("<title>Agreement &lt;test&gt;</title>"));
        assert!(html.contains("<td class=\"num\">0.5</td>"));
        assert!(html.contains("<svg></svg>"));
    }
}
