//! Bookkeeping core of nnsight's intervention graphs.
//!
//! The pure graph logic ([`graph`], [`names`], [`error`]) never touches Python, so it is unit
//! tested and benchmarked with plain `cargo test` / `cargo bench`. The PyO3 bindings live in
//! [`python`] behind the `python` feature, which maturin turns on when it builds `nnsight._core`.

pub(crate) mod adjacency;
pub(crate) mod counts;
pub mod error;
pub mod graph;
pub mod id;
pub mod names;

#[cfg(feature = "python")]
pub mod python;

pub use error::GraphError;
pub use graph::{Event, Graph, Inputs, Kind, NodeId, ROOT_ARGUMENT};
