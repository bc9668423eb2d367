//! The Images view apart from drawing: the filter, the page of rows in view, the
//! selected row and the subject search being typed.

use crossterm::event::{KeyCode, KeyEvent};

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

impl ImagesState {
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
}
