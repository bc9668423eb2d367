//! Pure parts of rating: file formats, consensus, work queues and terminal previews.

pub mod bids;
pub mod consensus;
pub mod external;
pub mod formats;
pub mod halfblock;
pub mod import;
pub mod labels;
pub mod queue;
