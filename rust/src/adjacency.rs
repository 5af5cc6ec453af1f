//! A graph's edges in both directions, flattened into one array.
//!
//! Node `i`'s dependencies are `edges[offsets[i][DEPS]..offsets[i + 1][DEPS]]` and its listeners
//! `edges[offsets[i][LISTENERS]..offsets[i + 1][LISTENERS]]`: the dependency edges first, then
//! the listener edges. One offset array and one edge array, instead of two of each, leaves the
//! propagation loop two fewer pointers to keep in registers, and puts a node's four row bounds in
//! one 16-byte window.
//!
//! Dependencies are fixed when a node is added, so their half only grows. Listeners are derived
//! from them ([`Adjacency::rebuild_listeners`], a counting sort) when first needed after nodes
//! were added; adding a node thus allocates nothing per node, where a list per node cost a
//! `malloc` per traced op.

use crate::id::NodeId;

/// Index into an `offsets` entry: where a node's dependencies start.
pub(crate) const DEPS: usize = 0;
/// Index into an `offsets` entry: where a node's listeners start.
pub(crate) const LISTENERS: usize = 1;

#[derive(Debug)]
pub(crate) struct Adjacency {
    /// One entry per node, and one more that ends the last node's rows.
    offsets: Vec<[u32; 2]>,
    edges: Vec<NodeId>,
    /// Number of dependency edges: `edges[..dependency_edges]` are the dependency half.
    dependency_edges: usize,
    /// Number of nodes the listener half was built for: stale once more nodes exist.
    listeners_for: usize,
}

impl Adjacency {
    /// No nodes, with room for `nodes` nodes and as many edges.
    pub fn with_capacity(nodes: usize) -> Self {
        let mut offsets = Vec::with_capacity(nodes + 1);
        offsets.push([0, 0]);
        Self {
            offsets,
            edges: Vec::with_capacity(nodes),
            dependency_edges: 0,
            listeners_for: 0,
        }
    }

    pub fn nodes(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Every dependency edge, node by node.
    pub fn all_dependencies(&self) -> &[NodeId] {
        &self.edges[..self.dependency_edges]
    }

    /// Starts adding a node. The listener half, which follows the dependencies, is dropped: it
    /// is stale from now on.
    pub fn begin_node(&mut self) {
        self.edges.truncate(self.dependency_edges);
    }

    /// The dependencies recorded so far for the node being added.
    pub fn pending_dependencies(&self) -> &[NodeId] {
        &self.edges[self.dependency_edges..]
    }

    /// Records a dependency of the node being added; it must be an existing node's id.
    pub fn push_dependency(&mut self, dep: NodeId) {
        debug_assert!((dep as usize) < self.nodes());
        self.edges.push(dep);
    }

    /// Ends the node being added: its dependencies are those pushed since
    /// [`Adjacency::begin_node`].
    pub fn end_node(&mut self) {
        self.dependency_edges = self.edges.len();
        self.offsets.push([self.dependency_edges as u32, 0]);
    }

    pub fn listeners_fresh(&self) -> bool {
        self.listeners_for == self.nodes()
    }

    /// Derives the listener half from the dependencies: node `d`'s listeners are every `i` with
    /// `d` among its dependencies, in increasing `i`.
    pub fn rebuild_listeners(&mut self) {
        let nodes = self.nodes();
        let deps = self.dependency_edges;
        self.edges.truncate(deps);
        for entry in &mut self.offsets {
            entry[LISTENERS] = 0;
        }
        for k in 0..deps {
            self.offsets[self.edges[k] as usize + 1][LISTENERS] += 1;
        }
        self.offsets[0][LISTENERS] = deps as u32;
        for i in 0..nodes {
            self.offsets[i + 1][LISTENERS] += self.offsets[i][LISTENERS];
        }
        self.edges.resize(2 * deps, 0);
        // `fill[d]`: where node `d`'s next listener goes (its row start, moving on).
        let mut fill: Vec<u32> = self.offsets[..nodes].iter().map(|o| o[LISTENERS]).collect();
        for i in 0..nodes {
            let (start, end) = (self.offsets[i][DEPS], self.offsets[i + 1][DEPS]);
            for k in start..end {
                let slot = &mut fill[self.edges[k as usize] as usize];
                self.edges[*slot as usize] = i as NodeId;
                *slot += 1;
            }
        }
        self.listeners_for = nodes;
    }

    /// The offsets and edges, for the propagation loop's unchecked [`row`].
    pub fn parts(&self) -> (&[[u32; 2]], &[NodeId]) {
        (&self.offsets, &self.edges)
    }

    /// Node `i`'s dependencies; `i` must be below [`Adjacency::nodes`].
    pub fn dependencies(&self, i: usize) -> &[NodeId] {
        row(&self.offsets, &self.edges, i, DEPS)
    }

    /// Node `i`'s listeners; the listener half must be fresh and `i` below the node count.
    pub fn listeners(&self, i: usize) -> &[NodeId] {
        debug_assert!(self.listeners_fresh());
        row(&self.offsets, &self.edges, i, LISTENERS)
    }
}

/// Node `i`'s dependencies (`half` = [`DEPS`]) or listeners ([`LISTENERS`]), unchecked: `i` is
/// a node id and, for listeners, the listener half is fresh (checked in debug builds).
#[inline(always)]
pub(crate) fn row<'a>(
    offsets: &[[u32; 2]],
    edges: &'a [NodeId],
    i: usize,
    half: usize,
) -> &'a [NodeId] {
    debug_assert!(i + 1 < offsets.len() && half < 2);
    // SAFETY: `i + 1` is below `offsets.len()`, the node count plus one (the caller's id is a node
    // id), and `half` is 0 or 1.
    let (start, end) = unsafe {
        (
            offsets.get_unchecked(i).get_unchecked(half),
            offsets.get_unchecked(i + 1).get_unchecked(half),
        )
    };
    let (start, end) = (*start as usize, *end as usize);
    debug_assert!(start <= end && end <= edges.len());
    // SAFETY: `end_node` and `rebuild_listeners`, the only writers of offsets, write each half
    // non-decreasing and within `edges`.
    unsafe { edges.get_unchecked(start..end) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(deps: &[&[NodeId]]) -> Adjacency {
        let mut a = Adjacency::with_capacity(0);
        for node in deps {
            a.begin_node();
            for &d in *node {
                a.push_dependency(d);
            }
            a.end_node();
        }
        a
    }

    #[test]
    fn listeners_are_the_transpose_in_id_order() {
        let mut a = build(&[&[], &[0], &[0, 1], &[1]]);
        a.rebuild_listeners();
        assert_eq!(a.listeners(0), &[1, 2]);
        assert_eq!(a.listeners(1), &[2, 3]);
        assert_eq!(a.listeners(3), &[] as &[NodeId]);
        assert_eq!(a.dependencies(2), &[0, 1]);
    }

    #[test]
    fn adding_after_a_rebuild_keeps_dependencies_and_stales_listeners() {
        let mut a = build(&[&[], &[0]]);
        a.rebuild_listeners();
        assert!(a.listeners_fresh());
        a.begin_node();
        assert_eq!(a.pending_dependencies(), &[] as &[NodeId]);
        a.push_dependency(1);
        a.push_dependency(0);
        a.end_node();
        assert!(!a.listeners_fresh());
        assert_eq!(a.all_dependencies(), &[0, 1, 0]);
        assert_eq!(a.dependencies(2), &[1, 0]);
        a.rebuild_listeners();
        assert_eq!(a.listeners(0), &[1, 2]);
        assert_eq!(a.listeners(1), &[2]);
    }
}
