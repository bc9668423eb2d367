//! The Images view apart from drawing: the filter and the keys that change it, the page
//! of rows in view, the selected row and the subject search being typed.

use crossterm::event::{KeyCode, KeyEvent};

use super::keys::Action;
use crate::store::dashboard::{ImageFilter, ImageListRow, ImagePage};

/// Rows fetched per page of the image list.
pub const PAGE_SIZE: usize = 200;

#[derive(Debug, Default)]
pub struct ImagesState {
    pub filter: ImageFilter,
    pub page: Option<ImagePage>,
    /// Index of the selected row in the whole filtered list.
    pub selected: usize,
    /// The subject search being typed, while the search line is open.
    pub search_input: Option<String>,
    pub error: Option<String>,
}

/// What a filter key did to the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKey {
    /// The filter changed (or the search line opened).
    Applied,
    /// Blind rating mode hides what the key filters by: the reason, for the status line.
    Hidden(&'static str),
    /// Not a filter key.
    Other,
}

impl ImagesState {
    /// Carries out a filter key of the Images view. `sequences` are the store's, in the
    /// order the sequence filter cycles through them.
    pub fn on_filter_action(
        &mut self,
        action: Action,
        blind: bool,
        sequences: &[String],
    ) -> FilterKey {
        let filter = self.filter.clone();
        let next = match action {
            Action::CycleSequence => {
                let options: Vec<Option<String>> = std::iter::once(None)
                    .chain(sequences.iter().cloned().map(Some))
                    .collect();
                ImageFilter {
                    sequence: cycle(&options, &filter.sequence),
                    ..filter
                }
            }
            Action::CycleStatus => {
                let options = [
                    None,
                    Some("ok".into()),
                    Some("failed".into()),
                    Some("missing".into()),
                ];
                ImageFilter {
                    status: cycle(&options, &filter.status),
                    ..filter
                }
            }
            Action::CycleRated if blind => {
                return FilterKey::Hidden("who has rated what is hidden in blind rating mode");
            }
            Action::CycleRated => ImageFilter {
                rated: cycle(&[None, Some(false), Some(true)], &filter.rated),
                ..filter
            },
            Action::Search => {
                self.search_input = Some(filter.subject.unwrap_or_default());
                return FilterKey::Applied;
            }
            Action::ClearFilters => ImageFilter::default(),
            Action::CycleModel if blind => {
                return FilterKey::Hidden("model predictions are hidden in blind rating mode");
            }
            Action::CycleModel => {
                // any -> predicted usable -> predicted reject -> model-rater disagreement
                let (predicted, disagreement) =
                    match (filter.predicted.as_deref(), filter.disagreement) {
                        (None, None) => (Some("usable".to_string()), None),
                        (Some("usable"), _) => (Some("reject".to_string()), None),
                        (Some(_), _) => (None, Some(true)),
                        (None, Some(_)) => (None, None),
                    };
                ImageFilter {
                    predicted,
                    disagreement,
                    ..filter
                }
            }
            Action::CycleIqm if blind => {
                return FilterKey::Hidden("image quality metrics are hidden in blind rating mode");
            }
            // any -> an IQM outlier -> measured, no outlier
            Action::CycleIqm => ImageFilter {
                iqm_outlier: cycle(&[None, Some(true), Some(false)], &filter.iqm_outlier),
                ..filter
            },
            _ => return FilterKey::Other,
        };
        self.set_filter(next);
        FilterKey::Applied
    }

    pub fn selected_row(&self) -> Option<&ImageListRow> {
        let page = self.page.as_ref()?;
        self.selected
            .checked_sub(page.offset)
            .and_then(|i| page.rows.get(i))
    }

    /// The first row of the page holding the selected row.
    pub fn page_offset(&self) -> usize {
        self.selected - self.selected % PAGE_SIZE
    }

    /// A new filter starts at the top of a list still to fetch; the same one keeps both.
    pub fn set_filter(&mut self, filter: ImageFilter) {
        if filter != self.filter {
            self.filter = filter;
            self.page = None;
            self.selected = 0;
        }
    }

    /// Moves the selection by `delta` rows, within the filtered list.
    pub fn move_selection(&mut self, delta: i64) {
        let total = self.page.as_ref().map_or(0, |p| p.total);
        if total == 0 {
            return;
        }
        let target = (self.selected as i64).saturating_add(delta);
        self.selected = target.clamp(0, total as i64 - 1) as usize;
    }

    /// A key typed on the open search line: Enter searches for the subject, Esc clears
    /// the search.
    pub fn on_search_key(&mut self, key: &KeyEvent) {
        let Some(input) = self.search_input.as_mut() else {
            return;
        };
        let subject = match key.code {
            KeyCode::Char(c) => {
                input.push(c);
                return;
            }
            KeyCode::Backspace => {
                input.pop();
                return;
            }
            KeyCode::Enter => Some(input.trim().to_string()).filter(|t| !t.is_empty()),
            KeyCode::Esc => None,
            _ => return,
        };
        self.search_input = None;
        self.set_filter(ImageFilter {
            subject,
            ..self.filter.clone()
        });
    }

    /// A page of the current filter arrived (a page of an earlier filter is dropped
    /// before this); in blind mode it keeps no other rater's progress and no prediction.
    pub fn on_page(&mut self, result: Result<ImagePage, String>, blind: bool) {
        match result {
            Ok(mut page) => {
                if blind {
                    for row in &mut page.rows {
                        row.rated_by = 0;
                        row.predicted.clear();
                    }
                }
                self.error = None;
                if page.total > 0 && self.selected >= page.total {
                    self.selected = page.total - 1;
                }
                if page.total == 0 {
                    self.selected = 0;
                }
                self.page = Some(page);
            }
            Err(err) => {
                self.error = Some(err);
                self.page = Some(ImagePage::default());
            }
        }
    }
}

/// The option after `current` (the first when `current` is not among them).
fn cycle<T: Clone + PartialEq>(options: &[T], current: &T) -> T {
    let at = options.iter().position(|o| o == current).unwrap_or(0);
    options[(at + 1) % options.len()].clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::KeyModifiers;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn page(offset: usize, total: usize) -> ImagePage {
        let row = |image_id| ImageListRow {
            image_id,
            subject: format!("{image_id}"),
            session: "01".into(),
            suffix: "FLAIR".into(),
            status: "ok".into(),
            shape: "8x8x8".into(),
            orientation: "RAS".into(),
            rated_by: 3,
            predicted: "usable".into(),
        };
        ImagePage {
            offset,
            total,
            rows: (offset..total.min(offset + PAGE_SIZE))
                .map(|i| row(i as i64))
                .collect(),
        }
    }

    #[test]
    fn the_search_line_filters_by_subject_and_esc_clears_it() {
        let mut images = ImagesState {
            selected: 40,
            page: Some(page(0, 50)),
            search_input: Some(String::new()),
            ..ImagesState::default()
        };
        for c in " 42 ".chars() {
            images.on_search_key(&key(KeyCode::Char(c)));
        }
        images.on_search_key(&key(KeyCode::Enter));
        assert_eq!(images.filter.subject.as_deref(), Some("42"));
        assert_eq!((images.search_input.clone(), images.selected), (None, 0));
        assert!(images.page.is_none(), "a new filter fetches its first page");
        images.page = Some(page(0, 3));
        images.search_input = Some("42".into());
        images.on_search_key(&key(KeyCode::Esc));
        assert_eq!(images.filter, ImageFilter::default());
    }

    #[test]
    fn a_shorter_list_pulls_the_selection_in_and_blind_pages_carry_no_other_work() {
        let mut images = ImagesState {
            selected: 450,
            ..ImagesState::default()
        };
        assert_eq!(images.page_offset(), 400);
        images.on_page(Ok(page(400, 420)), true);
        assert_eq!(images.selected, 419);
        let row = images.selected_row().expect("the last row");
        assert_eq!(
            (row.image_id, row.rated_by, row.predicted.as_str()),
            (419, 0, "")
        );
        images.move_selection(i64::MAX / 2);
        assert_eq!(images.selected, 419);
        images.move_selection(-1000);
        assert_eq!(images.selected, 0);
        images.on_page(Err("the store is busy".into()), false);
        assert_eq!(images.error.as_deref(), Some("the store is busy"));
        assert_eq!(images.page, Some(ImagePage::default()));
    }

    #[test]
    fn filter_keys_cycle_and_blind_mode_refuses_what_it_hides() {
        let mut images = ImagesState::default();
        let sequences = ["FLAIR".to_string(), "T1w".to_string()];
        let mut seen = Vec::new();
        for _ in 0..3 {
            let done = images.on_filter_action(Action::CycleSequence, false, &sequences);
            assert_eq!(done, FilterKey::Applied);
            seen.push(images.filter.sequence.clone());
        }
        assert_eq!(seen, [Some("FLAIR".into()), Some("T1w".into()), None]);

        images.page = Some(page(0, 10));
        images.selected = 5;
        for action in [Action::CycleRated, Action::CycleModel, Action::CycleIqm] {
            let done = images.on_filter_action(action, true, &sequences);
            assert!(matches!(done, FilterKey::Hidden(_)), "{action:?}");
        }
        assert_eq!(
            images.filter,
            ImageFilter::default(),
            "blind keys change nothing"
        );
        assert_eq!(images.selected, 5, "nor the place in the list");

        let mut models = Vec::new();
        for _ in 0..4 {
            images.on_filter_action(Action::CycleModel, false, &sequences);
            models.push((images.filter.predicted.clone(), images.filter.disagreement));
        }
        assert_eq!(
            models,
            [
                (Some("usable".into()), None),
                (Some("reject".into()), None),
                (None, Some(true)),
                (None, None)
            ]
        );
        assert_eq!(images.selected, 0, "a new filter starts at the top");
        assert_eq!(
            images.on_filter_action(Action::NextPlane, false, &sequences),
            FilterKey::Other
        );
    }
}
