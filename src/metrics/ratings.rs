//! Rating containers: subjects x raters matrices, per-subject category counts and 2-rater contingency tables.

use super::undefined::MetricError;

/// Ratings of `n_subjects` subjects by `n_raters` raters, stored row-major.
///
/// Each cell is the index of a category in the declared category order
/// (`0..n_categories`), or `None` when that rater did not rate that subject.
/// Weighted statistics use these positions, never the category labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Ratings {
    cells: Vec<Option<usize>>,
    n_raters: usize,
    n_categories: usize,
}

impl Ratings {
    /// Builds a matrix from row-major cells, checking the shape and every category index.
    pub fn new(
        cells: Vec<Option<usize>>,
        n_raters: usize,
        n_categories: usize,
    ) -> Result<Self, MetricError> {
        if n_raters == 0 {
            return Err(MetricError::invalid("n_raters", "must be at least 1"));
        }
        if !cells.len().is_multiple_of(n_raters) {
            return Err(MetricError::invalid(
                "cells",
                format!(
                    "{} cells cannot be split into rows of {n_raters} raters",
                    cells.len()
                ),
            ));
        }
        if let Some(position) = cells
            .iter()
            .position(|cell| cell.is_some_and(|category| category >= n_categories))
        {
            return Err(MetricError::invalid(
                "cells",
                format!(
                    "subject {} rater {} has category index {:?}, outside the {n_categories} declared categories",
                    position / n_raters,
                    position % n_raters,
                    cells[position]
                ),
            ));
        }
        Ok(Ratings {
            cells,
            n_raters,
            n_categories,
        })
    }

    /// Builds a matrix from one row per subject; every row must have the same length.
    pub fn from_rows(
        rows: &[Vec<Option<usize>>],
        n_categories: usize,
    ) -> Result<Self, MetricError> {
        let n_raters = rows.first().map_or(1, Vec::len);
        if let Some(bad) = rows.iter().position(|row| row.len() != n_raters) {
            return Err(MetricError::invalid(
                "rows",
                format!(
                    "subject {bad} has {} ratings, subject 0 has {n_raters}",
                    rows[bad].len()
                ),
            ));
        }
        Ratings::new(rows.concat(), n_raters, n_categories)
    }

    /// Number of subjects (rows).
    pub fn n_subjects(&self) -> usize {
        self.cells.len() / self.n_raters
    }

    /// Number of raters (columns).
    pub fn n_raters(&self) -> usize {
        self.n_raters
    }

    /// Number of declared categories.
    pub fn n_categories(&self) -> usize {
        self.n_categories
    }

    /// The ratings of one subject, one cell per rater.
    pub fn subject(&self, subject: usize) -> &[Option<usize>] {
        &self.cells[subject * self.n_raters..(subject + 1) * self.n_raters]
    }

    /// Counts per subject and category, in one pass over the cells.
    pub fn subject_counts(&self) -> SubjectCounts {
        let q = self.n_categories;
        let mut counts = vec![0u32; self.n_subjects() * q];
        for (subject, row) in self.cells.chunks_exact(self.n_raters).enumerate() {
            let out = &mut counts[subject * q..(subject + 1) * q];
            for category in row.iter().flatten() {
                out[*category] += 1;
            }
        }
        SubjectCounts::from_flat_unchecked(counts, q)
    }

    /// Contingency table of two raters over the subjects rated by both.
    pub fn pair_table(
        &self,
        rater_a: usize,
        rater_b: usize,
    ) -> Result<ContingencyTable, MetricError> {
        for (input, rater) in [("rater_a", rater_a), ("rater_b", rater_b)] {
            if rater >= self.n_raters {
                return Err(MetricError::invalid(
                    input,
                    format!("rater {rater} does not exist ({} raters)", self.n_raters),
                ));
            }
        }
        let mut table = ContingencyTable::zeros(self.n_categories);
        for row in self.cells.chunks_exact(self.n_raters) {
            if let (Some(a), Some(b)) = (row[rater_a], row[rater_b]) {
                table.counts[a * self.n_categories + b] += 1;
            }
        }
        Ok(table)
    }

    /// The subjects rated by every rater (Fleiss' kappa needs such complete rows).
    pub fn complete_subjects(&self) -> Ratings {
        let cells = self
            .cells
            .chunks_exact(self.n_raters)
            .filter(|row| row.iter().all(Option::is_some))
            .flatten()
            .copied()
            .collect();
        Ratings {
            cells,
            n_raters: self.n_raters,
            n_categories: self.n_categories,
        }
    }

    /// A new matrix made of the given subjects, in the given order, repeats allowed
    /// (a bootstrap resample). Indices must be below `n_subjects`.
    pub fn select_subjects(&self, subjects: &[usize]) -> Result<Ratings, MetricError> {
        let mut cells = Vec::with_capacity(subjects.len() * self.n_raters);
        for &subject in subjects {
            if subject >= self.n_subjects() {
                return Err(MetricError::invalid(
                    "subjects",
                    format!(
                        "subject {subject} does not exist ({} subjects)",
                        self.n_subjects()
                    ),
                ));
            }
            cells.extend_from_slice(self.subject(subject));
        }
        Ok(Ratings {
            cells,
            n_raters: self.n_raters,
            n_categories: self.n_categories,
        })
    }
}

/// Number of ratings each subject received in each category (Fleiss' "counts" layout).
#[derive(Debug, Clone, PartialEq)]
pub struct SubjectCounts {
    counts: Vec<u32>,
    n_categories: usize,
}

impl SubjectCounts {
    fn from_flat_unchecked(counts: Vec<u32>, n_categories: usize) -> Self {
        SubjectCounts {
            counts,
            n_categories,
        }
    }

    /// Builds the table from one row per subject with one count per declared category.
    pub fn from_rows(rows: &[Vec<u32>], n_categories: usize) -> Result<Self, MetricError> {
        if n_categories == 0 {
            return Err(MetricError::invalid("n_categories", "must be at least 1"));
        }
        if let Some(bad) = rows.iter().position(|row| row.len() != n_categories) {
            return Err(MetricError::invalid(
                "rows",
                format!(
                    "subject {bad} has {} counts for {n_categories} categories",
                    rows[bad].len()
                ),
            ));
        }
        Ok(SubjectCounts::from_flat_unchecked(
            rows.concat(),
            n_categories,
        ))
    }

    /// Number of subjects, including those without any rating.
    pub fn n_subjects(&self) -> usize {
        self.counts
            .len()
            .checked_div(self.n_categories)
            .unwrap_or(0)
    }

    /// Number of declared categories.
    pub fn n_categories(&self) -> usize {
        self.n_categories
    }

    /// The counts of one subject, one per category.
    pub fn subject(&self, subject: usize) -> &[u32] {
        &self.counts[subject * self.n_categories..(subject + 1) * self.n_categories]
    }

    /// Iterator over the subjects' count rows.
    pub fn rows(&self) -> impl Iterator<Item = &[u32]> {
        self.counts.chunks_exact(self.n_categories.max(1))
    }

    /// Total number of ratings given in each category.
    pub fn category_totals(&self) -> Vec<u64> {
        let mut totals = vec![0u64; self.n_categories];
        for row in self.rows() {
            for (total, &count) in totals.iter_mut().zip(row) {
                *total += u64::from(count);
            }
        }
        totals
    }

    /// A new table made of the given subjects, repeats allowed (a bootstrap resample).
    pub fn select_subjects(&self, subjects: &[usize]) -> Result<SubjectCounts, MetricError> {
        let mut counts = Vec::with_capacity(subjects.len() * self.n_categories);
        for &subject in subjects {
            if subject >= self.n_subjects() {
                return Err(MetricError::invalid(
                    "subjects",
                    format!(
                        "subject {subject} does not exist ({} subjects)",
                        self.n_subjects()
                    ),
                ));
            }
            counts.extend_from_slice(self.subject(subject));
        }
        Ok(SubjectCounts::from_flat_unchecked(
            counts,
            self.n_categories,
        ))
    }
}

/// Square contingency table of two raters (or truth x prediction): rows are
/// rater 1, columns rater 2, both in the declared category order.
#[derive(Debug, Clone, PartialEq)]
pub struct ContingencyTable {
    counts: Vec<u64>,
    n_categories: usize,
}

impl ContingencyTable {
    /// An all-zero `k x k` table.
    pub fn zeros(n_categories: usize) -> Self {
        ContingencyTable {
            counts: vec![0; n_categories * n_categories],
            n_categories,
        }
    }

    /// Builds the table from its rows; the table must be square.
    pub fn from_rows(rows: &[Vec<u64>]) -> Result<Self, MetricError> {
        let k = rows.len();
        if let Some(bad) = rows.iter().position(|row| row.len() != k) {
            return Err(MetricError::invalid(
                "table",
                format!(
                    "row {bad} has {} columns, the table has {k} rows",
                    rows[bad].len()
                ),
            ));
        }
        Ok(ContingencyTable {
            counts: rows.concat(),
            n_categories: k,
        })
    }

    /// Cross-tabulates paired category indices; pairs with a missing side are skipped.
    pub fn from_pairs(
        first: &[Option<usize>],
        second: &[Option<usize>],
        n_categories: usize,
    ) -> Result<Self, MetricError> {
        if first.len() != second.len() {
            return Err(MetricError::invalid(
                "second",
                format!(
                    "{} ratings against {} in `first`",
                    second.len(),
                    first.len()
                ),
            ));
        }
        let mut table = ContingencyTable::zeros(n_categories);
        for (index, (a, b)) in first.iter().zip(second).enumerate() {
            if let (Some(a), Some(b)) = (*a, *b) {
                if a >= n_categories || b >= n_categories {
                    return Err(MetricError::invalid(
                        "first/second",
                        format!(
                            "pair {index} ({a}, {b}) is outside the {n_categories} declared categories"
                        ),
                    ));
                }
                table.counts[a * n_categories + b] += 1;
            }
        }
        Ok(table)
    }

    /// Number of categories `k`.
    pub fn n_categories(&self) -> usize {
        self.n_categories
    }

    /// Count in row `row`, column `column`.
    pub fn get(&self, row: usize, column: usize) -> u64 {
        self.counts[row * self.n_categories + column]
    }

    /// Total number of pairs.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Row sums (rater 1 marginal counts).
    pub fn row_sums(&self) -> Vec<u64> {
        (0..self.n_categories)
            .map(|i| (0..self.n_categories).map(|j| self.get(i, j)).sum())
            .collect()
    }

    /// Column sums (rater 2 marginal counts).
    pub fn column_sums(&self) -> Vec<u64> {
        (0..self.n_categories)
            .map(|j| (0..self.n_categories).map(|i| self.get(i, j)).sum())
            .collect()
    }

    /// Sum of the diagonal (agreeing pairs).
    pub fn trace(&self) -> u64 {
        (0..self.n_categories).map(|i| self.get(i, i)).sum()
    }

    /// The same table with rows and columns exchanged (raters swapped).
    pub fn transposed(&self) -> ContingencyTable {
        let k = self.n_categories;
        let mut out = ContingencyTable::zeros(k);
        for i in 0..k {
            for j in 0..k {
                out.counts[j * k + i] = self.get(i, j);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_pair_tables_follow_cells() {
        let ratings = Ratings::new(
            vec![
                Some(0),
                Some(1),
                None,
                Some(1),
                Some(1),
                Some(1),
                None,
                None,
                None,
            ],
            3,
            2,
        )
        .unwrap();
        let counts = ratings.subject_counts();
        assert_eq!(counts.subject(0), &[1, 1]);
        assert_eq!(counts.subject(1), &[0, 3]);
        assert_eq!(counts.subject(2), &[0, 0]);
        let table = ratings.pair_table(0, 1).unwrap();
        assert_eq!(table.total(), 2);
        assert_eq!(table.get(0, 1), 1);
        assert_eq!(table.get(1, 1), 1);
        assert_eq!(ratings.complete_subjects().n_subjects(), 1);
    }

    #[test]
    fn malformed_input_is_rejected_with_its_name() {
        let err = Ratings::new(vec![Some(0), Some(5)], 2, 3).unwrap_err();
        assert!(err.to_string().contains("cells"), "{err}");
        assert!(Ratings::new(vec![Some(0)], 2, 3).is_err());
        assert!(ContingencyTable::from_rows(&[vec![1, 2], vec![3]]).is_err());
        assert!(ContingencyTable::from_pairs(&[Some(0)], &[], 2).is_err());
    }
}
