//! The Viewer view: every slice of the selected image in one plane at a time, with
//! window and level, as terminal graphics where the terminal has them, else in half
//! blocks.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::widgets::{Block, Paragraph};

use super::empty;
use super::picture::half_block_lines;
use crate::imaging::preview::slice;
use crate::tui::app::App;
use crate::tui::graphics::{Graphics, SliceKey};
use crate::tui::viewer::slicing_axis;

pub fn draw(frame: &mut Frame, area: Rect, app: &App, graphics: &mut Graphics) {
    let viewer = &app.viewer;
    if app.selected_image().is_none() {
        return empty(
            frame,
            area,
            "Viewer",
            "select an image in the Images view (2) first",
        );
    }
    if let Some(err) = &viewer.error {
        return empty(frame, area, "Viewer", err);
    }
    let Some(loaded) = &viewer.volume else {
        return empty(frame, area, "Viewer", "loading the volume…");
    };
    let axis = slicing_axis(viewer.plane);
    let at = viewer.slice[axis];
    let v = &loaded.volume;
    // Made only when drawn: graphics keep the encoded slice until it changes.
    let picture = || {
        slice(
            v.dims,
            &v.data,
            &v.affine,
            v.voxel_size,
            viewer.plane,
            Some(at),
            viewer.window,
        )
    };
    let image_id = viewer.image_id.unwrap_or_default();
    // The protocol shows in the title only with graphics, so half-block screens stay
    // as they were.
    let protocol = if graphics.enabled() {
        format!("· {} ", graphics.protocol())
    } else {
        String::new()
    };
    let block = Block::bordered().title(format!(
        " image {} · {} slice {}/{} · window {:.0}..{:.0} {protocol}",
        image_id,
        viewer.plane.name(),
        at + 1,
        loaded.ras_dims[axis],
        viewer.window.0,
        viewer.window.1
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let key = SliceKey {
        image_id,
        plane: viewer.plane,
        slice: at,
        window: viewer.window,
    };
    if !graphics.draw(frame, inner, key, picture) {
        frame.render_widget(
            Paragraph::new(half_block_lines(&picture(), inner.width, inner.height)),
            inner,
        );
    }
}
