//! The Viewer view apart from drawing: the volume shown, the plane, the slice per plane
//! and the intensity window, and the keys that move them.

use std::sync::Arc;

use crate::imaging::Volume;
use crate::imaging::preview::Plane;

use super::keys::Action;

/// A volume loaded for the viewer, with its default intensity window.
#[derive(Debug, Clone)]
pub struct LoadedVolume {
    pub volume: Volume,
    pub window: (f32, f32),
    /// Slices per plane, in RAS order: sagittal (x), coronal (y), axial (z).
    pub ras_dims: [usize; 3],
}

#[derive(Debug)]
pub struct ViewerState {
    pub image_id: Option<i64>,
    pub volume: Option<Arc<LoadedVolume>>,
    pub error: Option<String>,
    pub plane: Plane,
    /// The slice shown per plane, indexed like [`LoadedVolume::ras_dims`].
    pub slice: [usize; 3],
    pub window: (f32, f32),
}

impl Default for ViewerState {
    fn default() -> Self {
        Self {
            image_id: None,
            volume: None,
            error: None,
            plane: Plane::Axial,
            slice: [0; 3],
            window: (0.0, 1.0),
        }
    }
}

/// The RAS axis a plane slices along.
pub fn slicing_axis(plane: Plane) -> usize {
    match plane {
        Plane::Sagittal => 0,
        Plane::Coronal => 1,
        Plane::Axial => 2,
    }
}

impl ViewerState {
    /// Carries out a Viewer key; false for an action that is not the viewer's.
    pub fn on_action(&mut self, action: Action) -> bool {
        match action {
            Action::NextPlane => {
                self.plane = match self.plane {
                    Plane::Axial => Plane::Coronal,
                    Plane::Coronal => Plane::Sagittal,
                    Plane::Sagittal => Plane::Axial,
                }
            }
            Action::SliceUp => self.move_slice(1),
            Action::SliceDown => self.move_slice(-1),
            Action::SliceUpFast => self.move_slice(10),
            Action::SliceDownFast => self.move_slice(-10),
            Action::WindowWider | Action::WindowNarrower => {
                let (lo, hi) = self.window;
                let (centre, half) = ((lo + hi) / 2.0, (hi - lo) / 2.0);
                let factor = if action == Action::WindowWider {
                    1.2
                } else {
                    1.0 / 1.2
                };
                let half = (half * factor).max(1e-3);
                self.window = (centre - half, centre + half);
            }
            Action::LevelUp | Action::LevelDown => {
                let (lo, hi) = self.window;
                let step = (hi - lo) * 0.05 * if action == Action::LevelUp { 1.0 } else { -1.0 };
                self.window = (lo + step, hi + step);
            }
            Action::ResetWindow => {
                if let Some(v) = &self.volume {
                    self.window = v.window;
                }
            }
            _ => return false,
        }
        true
    }

    fn move_slice(&mut self, delta: i64) {
        let Some(volume) = &self.volume else {
            return;
        };
        let axis = slicing_axis(self.plane);
        let depth = volume.ras_dims[axis] as i64;
        let at = self.slice[axis] as i64 + delta;
        self.slice[axis] = at.clamp(0, (depth - 1).max(0)) as usize;
    }
}
