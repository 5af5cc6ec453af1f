//! The node id, on its own: every module below [`crate::graph`] names nodes by it, so it lives
//! here and none of them imports back up from the graph.

/// Index of a node in its graph's arena; stable for the life of the graph.
pub type NodeId = u32;
