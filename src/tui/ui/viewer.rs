//! The Viewer view: every slice of the selected image in one plane at a time, with
//! window and level.

use ratatui::Frame;
use ratatui::layout::Rect;
use ratatui::widgets::{Block, Paragraph};

use super::empty;
use super::picture::half_block_lines;
use crate::imaging::preview::slice;
use crate::tui::app::{App, slicing_axis};

pub fn draw(frame: &mut Frame, area: Rect, app: &App) {
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
    let picture = slice(
        v.dims,
        &v.data,
        &v.affine,
        v.voxel_size,
        viewer.plane,
        Some(at),
        viewer.window,
    );
    let block = Block::bordered().title(format!(
        " image {} · {} slice {}/{} · window {:.0}..{:.0} ",
        viewer.image_id.unwrap_or_default(),
        viewer.plane.name(),
        at + 1,
        loaded.ras_dims[axis],
        viewer.window.0,
        viewer.window.1
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    frame.render_widget(
        Paragraph::new(half_block_lines(&picture, inner.width, inner.height)),
        inner,
    );
}
