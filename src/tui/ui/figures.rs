//! Counts on screen: written exactly (`1,000,000`) where their column has room, else in
//! a compact unit (`750k`, `1.2M`) that cannot be taken for an exact figure; a count is
//! never cut to fewer digits than it has.

/// How a table writes its counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figures {
    /// Every digit, grouped by thousands: `750,002`.
    Exact,
    /// At most four characters (five when negative), rounded toward zero so that a
    /// compact count never overstates: `750k`, `1.2M`.
    Compact,
}

impl Figures {
    pub fn show(self, n: i64) -> String {
        match self {
            Self::Exact => exact(n),
            Self::Compact => compact(n),
        }
    }
}

/// `1,000,000`, `-1,234`, `999`.
pub fn exact(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `999`, `1.0k`, `9.9k`, `10k`, `999k`, `1.0M`, ... up to `9.2E` for `i64::MAX`.
/// Rounded toward zero: 999,999 is `999k`, never `1.0M`.
pub fn compact(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "" };
    let magnitude = n.unsigned_abs();
    if magnitude < 1000 {
        return format!("{sign}{magnitude}");
    }
    let mut unit = 1000u64;
    for suffix in ['k', 'M', 'G', 'T', 'P', 'E'] {
        let whole = magnitude / unit;
        if whole < 10 {
            let tenth = magnitude % unit / (unit / 10);
            return format!("{sign}{whole}.{tenth}{suffix}");
        }
        if whole < 1000 || suffix == 'E' {
            return format!("{sign}{whole}{suffix}");
        }
        unit *= 1000;
    }
    unreachable!("the exa unit returns above")
}

/// A table's count columns written so that none is cut: each column as wide as its
/// widest cell or header, counts right-aligned under right-aligned headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountColumns {
    pub figures: Figures,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub widths: Vec<u16>,
}

impl CountColumns {
    /// Exact figures when the columns, with one cell between neighbours, fit in
    /// `room`; compact ones otherwise. `render` writes every row's count cells in the
    /// given figures (a cell may hold more than one count, as `3/10`).
    pub fn fit(headers: &[&str], room: u16, render: impl Fn(Figures) -> Vec<Vec<String>>) -> Self {
        let exact = Self::build(headers, Figures::Exact, render(Figures::Exact));
        if exact.needed() <= room {
            return exact;
        }
        Self::build(headers, Figures::Compact, render(Figures::Compact))
    }

    fn build(headers: &[&str], figures: Figures, cells: Vec<Vec<String>>) -> Self {
        let widths: Vec<u16> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                cells
                    .iter()
                    .filter_map(|row| row.get(i))
                    .map(|c| c.chars().count())
                    .chain([h.chars().count()])
                    .max()
                    .unwrap_or(0) as u16
            })
            .collect();
        let pad = |i: usize, text: &str| format!("{text:>width$}", width = widths[i] as usize);
        Self {
            figures,
            headers: headers.iter().enumerate().map(|(i, h)| pad(i, h)).collect(),
            rows: cells
                .iter()
                .map(|row| row.iter().enumerate().map(|(i, c)| pad(i, c)).collect())
                .collect(),
            widths,
        }
    }

    /// Cells the columns need, the single-cell gaps between them included.
    pub fn needed(&self) -> u16 {
        self.widths.iter().sum::<u16>() + self.widths.len().saturating_sub(1) as u16
    }

    /// A block's bottom title saying how to read compact figures; none when exact.
    pub fn legend(&self) -> Option<&'static str> {
        (self.figures == Figures::Compact).then_some(" k/M: rounded down ")
    }
}

/// `text` in at most `width` characters: whole, or with its middle replaced by `…`
/// (names give way this way so that the figures beside them stay whole). Both ends
/// stay because run names differ at either: `model:cdwqc-flair-usable` and
/// `model:cdwqc-flair-quality` cut at the end would read the same.
pub fn fit_text(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let head = (width - 1).div_ceil(2);
    let tail = width - 1 - head;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(count - tail).collect();
    format!("{start}…{end}")
}

#[cfg(test)]
mod fit_text_tests {
    use super::fit_text;

    #[test]
    fn names_keep_both_ends_and_never_exceed_their_room() {
        assert_eq!(fit_text("demo-usable-ssda", 16), "demo-usable-ssda");
        assert_eq!(
            fit_text("model:cdwqc-flair-usable", 17),
            "model:cd…r-usable"
        );
        assert_eq!(
            fit_text("model:cdwqc-flair-quality", 17),
            "model:cd…-quality"
        );
        assert_eq!(fit_text("abc", 1), "…");
        assert_eq!(fit_text("abc", 0), "");
        for width in 0..30 {
            assert!(
                fit_text("model:cdwqc-flair-usable-adabn", width)
                    .chars()
                    .count()
                    <= width
            );
        }
    }
}

/// The room a table's count columns get inside `outer` (a bordered block's width),
/// after `others`: the widths the other columns need, each with its one-cell gap.
pub fn room(outer: u16, others: &[u16]) -> u16 {
    outer
        .saturating_sub(2)
        .saturating_sub(others.iter().map(|w| w + 1).sum::<u16>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_groups_thousands() {
        assert_eq!(exact(0), "0");
        assert_eq!(exact(999), "999");
        assert_eq!(exact(1000), "1,000");
        assert_eq!(exact(999_999), "999,999");
        assert_eq!(exact(1_000_000), "1,000,000");
        assert_eq!(exact(9_999_999), "9,999,999");
        assert_eq!(exact(-1234), "-1,234");
        assert_eq!(exact(-999), "-999");
        assert_eq!(exact(i64::MIN), "-9,223,372,036,854,775,808");
    }

    #[test]
    fn compact_never_overstates_and_stays_short() {
        assert_eq!(compact(0), "0");
        assert_eq!(compact(999), "999");
        assert_eq!(compact(1000), "1.0k");
        assert_eq!(compact(1050), "1.0k");
        assert_eq!(compact(9_999), "9.9k");
        assert_eq!(compact(10_000), "10k");
        assert_eq!(compact(50_134), "50k");
        assert_eq!(compact(750_002), "750k");
        assert_eq!(compact(999_999), "999k");
        assert_eq!(compact(1_000_000), "1.0M");
        assert_eq!(compact(1_250_000), "1.2M");
        assert_eq!(compact(9_999_999), "9.9M");
        assert_eq!(compact(10_000_000), "10M");
        assert_eq!(compact(999_999_999), "999M");
        assert_eq!(compact(1_000_000_000), "1.0G");
        assert_eq!(compact(-999), "-999");
        assert_eq!(compact(-1_000), "-1.0k");
        assert_eq!(compact(-999_999), "-999k");
        assert_eq!(compact(i64::MAX), "9.2E");
        assert_eq!(compact(i64::MIN), "-9.2E");
        for n in [
            0,
            7,
            999,
            1000,
            123_456,
            999_999,
            1_000_000,
            9_999_999,
            i64::MAX,
        ] {
            assert!(compact(n).chars().count() <= 4, "{n}: {}", compact(n));
            assert!(compact(-n).chars().count() <= 5, "-{n}: {}", compact(-n));
        }
    }

    #[test]
    fn columns_are_exact_when_they_fit_and_compact_when_not() {
        let counts = [[1_000_000_i64, 750_002], [12, 3]];
        let render = |f: Figures| -> Vec<Vec<String>> {
            counts
                .iter()
                .map(|row| row.iter().map(|&n| f.show(n)).collect())
                .collect()
        };
        // "1,000,000" and "750,002" with one gap: 9 + 1 + 7.
        let wide = CountColumns::fit(&["rated", "rej."], 17, render);
        assert_eq!(wide.figures, Figures::Exact);
        assert_eq!(wide.widths, vec![9, 7]);
        assert_eq!(wide.rows[0], vec!["1,000,000", "750,002"]);
        assert_eq!(wide.rows[1], vec!["       12", "      3"]);
        assert_eq!(wide.headers, vec!["    rated", "   rej."]);
        assert_eq!(wide.legend(), None);
        let narrow = CountColumns::fit(&["rated", "rej."], 16, render);
        assert_eq!(narrow.figures, Figures::Compact);
        assert_eq!(narrow.widths, vec![5, 4]);
        assert_eq!(narrow.rows[0], vec![" 1.0M", "750k"]);
        assert!(narrow.legend().is_some());
        assert_eq!(narrow.needed(), 10);
    }

    #[test]
    fn room_leaves_borders_and_gaps() {
        assert_eq!(room(40, &[8, 11]), 40 - 2 - 9 - 12);
        assert_eq!(room(10, &[20]), 0);
    }
}
