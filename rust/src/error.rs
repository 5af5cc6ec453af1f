//! The one error type of the graph core.

use std::fmt;

use crate::id::NodeId;

/// Everything the graph core can refuse. Converted to a Python exception in exactly one place,
/// the bindings' `From<GraphError> for PyErr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GraphError {
    /// No node has this name.
    UnknownName(String),
    /// No node has this id (a handle from another graph, or a corrupted one).
    UnknownId(NodeId),
    /// An explicit name that is already taken.
    DuplicateName(String),
    /// A second `argument` node keyed by the root-module key.
    SecondRoot,
    /// An `argument` node was added without an argument key.
    MissingArgumentKey(String),
    /// `eliminate_dead_code` was given one flag per node, but not for every node.
    EffectsLength { expected: usize, got: usize },
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphError::UnknownName(name) => write!(f, "no node named '{name}' in this graph"),
            GraphError::UnknownId(id) => write!(f, "no node with id {id} in this graph"),
            GraphError::DuplicateName(name) => {
                write!(f, "a node named '{name}' already exists in this graph")
            }
            GraphError::SecondRoot => write!(
                f,
                "can only have one root module node (an 'argument' node keyed '{}')",
                crate::graph::ROOT_ARGUMENT
            ),
            GraphError::MissingArgumentKey(name) => write!(
                f,
                "'argument' node '{name}' needs its argument key as its first argument"
            ),
            GraphError::EffectsLength { expected, got } => write!(
                f,
                "eliminate_dead_code needs one effect flag per node: {expected} nodes, {got} flags"
            ),
        }
    }
}

impl std::error::Error for GraphError {}
