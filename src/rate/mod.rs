//! Pure parts of rating: file formats, consensus (majority and Dawid-Skene latent truth),
//! work queues and terminal previews.

pub mod active;
pub mod bids;
pub mod consensus;
pub mod external;
pub mod formats;
pub mod halfblock;
pub mod import;
pub mod labels;
pub mod latent;
pub mod queue;
pub mod triage;
