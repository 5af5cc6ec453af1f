//! Node storage, dependency edges, and the fulfilled/redundant propagation of an intervention graph.
//!
//! Nodes live in an arena indexed by [`NodeId`]; ids are stable for the life of the graph. Edges
//! are stored once, as each node's `dependencies` (written by [`Graph::add_node`] alone); a
//! node's `listeners` are the later nodes that depend on it, in the order they were added, and
//! are derived from the dependencies when needed (by [`Graph::compile`], or on first use after
//! nodes were added), so the two sides cannot disagree.
//!
//! Execution semantics (nnsight's, with two deliberate changes, both for memory):
//!
//! * [`Graph::set_value`] stores a value, then *first* releases the node's dependencies (each
//!   loses one remaining listener; one left with none is destroyed), then tells its listeners
//!   (each loses one remaining dependency; one left with none becomes ready), and finally destroys
//!   the node itself if nothing listens to it.
//! * Ready nodes go on an explicit LIFO stack instead of being executed recursively, so a chain of
//!   any length runs in constant stack depth and each value is freed as soon as its last listener
//!   has its own value. Listeners are pushed in reverse, so the first-registered runs first.
//!
//! The host (the Python bindings, or a closure in tests and benches) executes what
//! [`Graph::pop_ready`] hands out and reports the result with [`Graph::set_value`].
//! Re-entrant hosts use *frames*: each drain only pops entries above the stack depth it started
//! at, so a value set from inside a running node executes exactly what it made ready.

use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::{smallvec, SmallVec};

use crate::error::GraphError;
use crate::names::Names;

/// Stable handle of a node inside one [`Graph`].
pub type NodeId = u32;

/// Argument key of the root-module `argument` node (`Graph.argument_node_names` key).
pub const ROOT_ARGUMENT: &str = "nnsight_root_module";

/// Argument keys a new graph has room for: the root plus a trace's first module reads.
const ARGUMENTS_RESERVED: usize = 16;

/// What kind of node this is, derived from its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Runs its target when all its dependencies have values.
    Op,
    /// Entry point: its value is set from outside the graph, never executed.
    Argument,
    /// When executed it becomes the graph's pending swap; its value is set when the swap is used.
    Swap,
    /// Never executed, so its dependencies always keep one listener: how `.save()` works.
    Null,
    /// Executed by the host (registering a tensor hook); its value is set when the hook fires.
    Grad,
}

impl Kind {
    /// Whether a fulfilled node of this kind is put on the ready stack.
    pub fn executes(self) -> bool {
        matches!(self, Kind::Op | Kind::Swap | Kind::Grad)
    }
}

/// One step of an execution, recorded when [`Graph::set_record_events`] is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// The node was taken off the ready stack to be executed.
    Execute(NodeId),
    /// The node's value was set.
    Set(NodeId),
    /// The node's value was released.
    Destroy(NodeId),
}

/// The intervention graph's bookkeeping, generic over the value type `V` (a Python object
/// reference in the bindings, a number in tests and benches).
///
/// Invariant the hot loop relies on: every per-node vector has exactly [`Graph::len`] entries
/// (`dep_offsets` one more), every id stored in an edge list or on the ready stack is below
/// `len`, and the listener CSR, when fresh, covers all `len` nodes. Only [`Graph::add_node`]
/// adds nodes, checking each dependency first, and nothing ever removes one.
#[derive(Debug)]
pub struct Graph<V> {
    names: Names,
    kinds: Vec<Kind>,
    /// Whether a node is put on the ready stack once fulfilled: an executable kind that
    /// [`Graph::eliminate_dead_code`] did not find dead.
    runs: Vec<bool>,
    /// Nodes [`Graph::eliminate_dead_code`] found dead (empty when it is not in effect).
    dead: Vec<NodeId>,
    /// Dependencies in CSR form: node `i`'s are `dep_edges[dep_offsets[i]..dep_offsets[i + 1]]`.
    /// Append-only, since a node's dependencies are fixed when it is added.
    dep_offsets: Vec<u32>,
    dep_edges: Vec<NodeId>,
    /// Listeners in CSR form, derived from the dependencies: rebuilt by `compile` (or a
    /// `set_value` or `listeners` call) once nodes were added since the last build. Adding a
    /// node thus allocates nothing per node: a list per node cost a `malloc` per traced op.
    listener_csr: Csr,
    /// Edge counts, copied into `remaining` by [`Graph::compile`] in one pass.
    initial: Vec<Counts>,
    remaining: Vec<Counts>,
    values: Vec<Option<V>>,
    /// Argument key -> the `argument` nodes registered under it, keys in first-use order. A
    /// trace makes one key per module value read, so each key is one allocation, shared with
    /// `argument_slots`, and its single node is kept inline.
    arguments: Vec<(Arc<str>, SmallVec<[NodeId; 1]>)>,
    /// Argument key -> its slot in `arguments`.
    argument_slots: FxHashMap<Arc<str>, usize>,
    root: Option<NodeId>,
    /// Nodes with no dependencies that execute: run by [`Graph::compile`].
    roots: Vec<NodeId>,
    ready: Vec<NodeId>,
    swap: Option<NodeId>,
    events: Option<Vec<Event>>,
}

/// A node's listener and dependency counts, side by side: propagation touches both for
/// neighbouring nodes, and `compile` resets them with one copy.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    listeners: i32,
    dependencies: i32,
}

/// A flattened adjacency list.
#[derive(Debug, Default)]
struct Csr {
    offsets: Vec<u32>,
    edges: Vec<NodeId>,
    /// Number of nodes it was built for; stale once more nodes exist.
    nodes: usize,
}

impl Csr {
    /// The transpose of the dependency CSR of `nodes` nodes: node `d`'s row lists every `i`
    /// with `d` among its dependencies, in increasing `i` (a counting sort).
    fn transpose(&mut self, dep_offsets: &[u32], dep_edges: &[NodeId], nodes: usize) {
        self.offsets.clear();
        self.offsets.resize(nodes + 1, 0);
        for &dep in dep_edges {
            self.offsets[dep as usize + 1] += 1;
        }
        for i in 0..nodes {
            self.offsets[i + 1] += self.offsets[i];
        }
        self.edges.clear();
        self.edges.resize(dep_edges.len(), 0);
        // `fill[d]`: where node `d`'s next listener goes (its row start, moving on).
        let mut fill = self.offsets[..nodes].to_vec();
        for i in 0..nodes {
            for &dep in csr_row(dep_offsets, dep_edges, i) {
                let slot = &mut fill[dep as usize];
                self.edges[*slot as usize] = i as NodeId;
                *slot += 1;
            }
        }
        self.nodes = nodes;
    }

    /// Node `i`'s list; `i` must be below the node count it was built for.
    #[inline]
    fn get(&self, i: usize) -> &[NodeId] {
        csr_row(&self.offsets, &self.edges, i)
    }
}

/// Row `i` of a flattened adjacency list, `edges[offsets[i]..offsets[i + 1]]`, unchecked: the
/// offsets are written non-decreasing and ending at `edges.len()`, and `i` is a node id below the
/// number of rows (all checked in debug builds).
#[inline(always)]
fn csr_row<'a>(offsets: &[u32], edges: &'a [NodeId], i: usize) -> &'a [NodeId] {
    let (start, end) = (*at(offsets, i) as usize, *at(offsets, i + 1) as usize);
    debug_assert!(start <= end && end <= edges.len());
    // SAFETY: `Csr::rebuild` and `Graph::add_node`, the only writers, keep that shape.
    unsafe { edges.get_unchecked(start..end) }
}

/// `slice[i]` for an index that [`Graph`]'s invariant keeps in bounds (checked in debug builds).
#[inline(always)]
fn at<T>(slice: &[T], i: usize) -> &T {
    debug_assert!(i < slice.len());
    // SAFETY: callers index per-node arrays with ids below `Graph::len`, or offset arrays with
    // `id + 1 <= len`; see the invariant on `Graph`.
    unsafe { slice.get_unchecked(i) }
}

/// Mutable [`at`].
#[inline(always)]
fn at_mut<T>(slice: &mut [T], i: usize) -> &mut T {
    debug_assert!(i < slice.len());
    // SAFETY: as for `at`.
    unsafe { slice.get_unchecked_mut(i) }
}

/// Takes one remaining dependency from each listener; one left with none that runs goes on the
/// ready stack. Listeners are pushed in reverse, so the first-registered is popped first.
#[inline(always)]
fn notify_listeners(
    listeners: &[NodeId],
    remaining: &mut [Counts],
    runs: &[bool],
    ready: &mut Vec<NodeId>,
) {
    // The stack's length lives in a register for the loop: pushed through a raw pointer into
    // capacity reserved up front, so no count update can make the compiler reload it.
    ready.reserve(listeners.len());
    let top = ready.as_mut_ptr();
    let mut len = ready.len();
    for &listener in listeners.iter().rev() {
        let l = listener as usize;
        let count = &mut at_mut(remaining, l).dependencies;
        *count -= 1;
        if *count == 0 && *at(runs, l) {
            // SAFETY: at most `listeners.len()` pushes, into the capacity reserved above.
            unsafe { top.add(len).write(listener) };
            len += 1;
        }
    }
    // SAFETY: every slot below `len` was initialised (the old length, or written above).
    unsafe { ready.set_len(len) };
}

/// `dst.copy_from_slice(src)`, done in 256-byte pieces.
///
/// One large copy is glibc's `rep movsb`, which on AMD Zen cores runs about 25x slower when
/// `dst - src` is a small positive multiple of 16 modulo 4096 (4K aliasing): measured at 9.8 µs
/// instead of 0.4 µs for 16 KB. Two vectors grown in lockstep, as `initial` and `remaining`
/// are, land exactly there, which made `compile` of a 2,000-node graph cost more than running
/// it. Pieces this small are copied with vector moves, which it does not slow down, and are
/// no slower than one `memcpy` at any size (`benches/scheduler.rs` covers 1e3 to 1e6 nodes).
fn copy_in_pieces<T: Copy>(dst: &mut [T], src: &[T]) {
    const PIECE_BYTES: usize = 256;
    let piece = (PIECE_BYTES / std::mem::size_of::<T>().max(1)).max(1);
    assert_eq!(dst.len(), src.len(), "copy_in_pieces needs equal lengths");
    for (to, from) in dst.chunks_mut(piece).zip(src.chunks(piece)) {
        to.copy_from_slice(from);
    }
}

impl<V> Default for Graph<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> Graph<V> {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty graph with room for `nodes` nodes (and as many edges) before any per-node
    /// vector grows: a graph made per trace would otherwise reallocate each of them several
    /// times while its first few dozen nodes are added.
    pub fn with_capacity(nodes: usize) -> Self {
        let mut dep_offsets = Vec::with_capacity(nodes + 1);
        dep_offsets.push(0);
        Self {
            names: Names::with_capacity(nodes),
            kinds: Vec::with_capacity(nodes),
            runs: Vec::with_capacity(nodes),
            dead: Vec::new(),
            dep_offsets,
            dep_edges: Vec::with_capacity(nodes),
            listener_csr: Csr::default(),
            initial: Vec::with_capacity(nodes),
            remaining: Vec::with_capacity(nodes),
            values: Vec::with_capacity(nodes),
            arguments: Vec::with_capacity(ARGUMENTS_RESERVED),
            argument_slots: FxHashMap::with_capacity_and_hasher(
                ARGUMENTS_RESERVED,
                Default::default(),
            ),
            root: None,
            roots: Vec::new(),
            ready: Vec::new(),
            swap: None,
            events: None,
        }
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty()
    }

    /// Adds a node and returns its id. Checks everything first: a refused node changes nothing.
    ///
    /// `dependencies` may repeat a node (`x + x`); each dependency is recorded once, in order of
    /// first appearance. `argument_key` is required for [`Kind::Argument`] and ignored otherwise.
    pub fn add_node(
        &mut self,
        name: Option<&str>,
        target_name: &str,
        kind: Kind,
        dependencies: &[NodeId],
        argument_key: Option<&str>,
    ) -> Result<NodeId, GraphError> {
        for &dep in dependencies {
            self.check(dep)?;
        }
        let chosen = self.names.choose(name, target_name)?;
        let argument_key = match kind {
            Kind::Argument => match argument_key {
                Some(key) => Some(key),
                None => {
                    let name = match chosen {
                        crate::names::Chosen::Explicit(name) => name,
                        crate::names::Chosen::Auto(n) => format!("{target_name}_{n}"),
                    };
                    return Err(GraphError::MissingArgumentKey(name));
                }
            },
            _ => None,
        };
        if argument_key == Some(ROOT_ARGUMENT) && self.root.is_some() {
            return Err(GraphError::SecondRoot);
        }

        if !self.dead.is_empty() {
            self.revive_all();
        }
        let id = self.kinds.len() as NodeId;
        let start = self.dep_edges.len();
        for &dep in dependencies {
            if !self.dep_edges[start..].contains(&dep) {
                self.dep_edges.push(dep);
                self.initial[dep as usize].listeners += 1;
            }
        }
        if self.dep_edges.len() == start && kind.executes() {
            self.roots.push(id);
        }
        self.dep_offsets.push(self.dep_edges.len() as u32);
        self.names.insert(chosen, target_name, id);
        self.kinds.push(kind);
        self.runs.push(kind.executes());
        self.initial.push(Counts {
            listeners: 0,
            dependencies: (self.dep_edges.len() - start) as i32,
        });
        self.remaining.push(Counts::default());
        self.values.push(None);
        if let Some(key) = argument_key {
            if key == ROOT_ARGUMENT {
                self.root = Some(id);
            }
            match self.argument_slots.get(key) {
                Some(&slot) => self.arguments[slot].1.push(id),
                None => {
                    let key: Arc<str> = Arc::from(key);
                    self.argument_slots
                        .insert(Arc::clone(&key), self.arguments.len());
                    self.arguments.push((key, smallvec![id]));
                }
            }
        }
        Ok(id)
    }

    /// Resets every node for a new execution: values released into `released`, remaining counts
    /// set to the edge counts, no pending swap, an empty ready stack. Then the executable nodes
    /// that have no dependencies are made ready (the first added on top), for the host to drain.
    pub fn compile(&mut self, released: &mut Vec<V>) {
        self.release_all(released);
        self.fresh_listeners();
        copy_in_pieces(&mut self.remaining, &self.initial);
        self.ready.clear();
        self.swap = None;
        let runs = &self.runs;
        self.ready
            .extend(self.roots.iter().rev().filter(|&&id| runs[id as usize]));
    }

    /// Marks every node that cannot affect a result as dead, and returns the dead ids.
    ///
    /// A node is live when `effects[id]` says it has an effect of its own (a save, a swap, an
    /// in-place edit, a call that may do anything) or when a live node depends on it. Dead
    /// nodes are never executed, and their edges no longer count as listeners, so their
    /// dependencies' values are released as if the dead nodes did not exist. Dependencies
    /// always precede their listeners, so one backward pass finds every live node.
    ///
    /// Takes effect at the next [`Graph::compile`]; adding a node undoes it (every node is
    /// live again) since the new node may need dead ones.
    pub fn eliminate_dead_code(&mut self, effects: &[bool]) -> Result<Vec<NodeId>, GraphError> {
        if effects.len() != self.len() {
            return Err(GraphError::EffectsLength {
                expected: self.len(),
                got: effects.len(),
            });
        }
        let mut live = effects.to_vec();
        for i in (0..self.len()).rev() {
            if live[i] {
                for &dep in self.deps_of(i) {
                    live[dep as usize] = true;
                }
            }
        }
        let mut listeners = vec![0; self.len()];
        let mut dead = Vec::new();
        for (i, &is_live) in live.iter().enumerate() {
            self.runs[i] = is_live && self.kinds[i].executes();
            if !is_live {
                dead.push(i as NodeId);
                continue;
            }
            for &dep in self.deps_of(i) {
                listeners[dep as usize] += 1;
            }
        }
        for (counts, listeners) in self.initial.iter_mut().zip(listeners) {
            counts.listeners = listeners;
        }
        self.dead.clone_from(&dead);
        Ok(dead)
    }

    /// Undoes [`Graph::eliminate_dead_code`]: every node is live again.
    pub fn revive_all(&mut self) {
        for counts in &mut self.initial {
            counts.listeners = 0;
        }
        for &dep in &self.dep_edges {
            self.initial[dep as usize].listeners += 1;
        }
        for (runs, kind) in self.runs.iter_mut().zip(&self.kinds) {
            *runs = kind.executes();
        }
        self.dead.clear();
    }

    /// The nodes found dead by the last [`Graph::eliminate_dead_code`] still in effect.
    pub fn dead(&self) -> &[NodeId] {
        &self.dead
    }

    /// Sets a node's value and propagates (see the module docs). Released values, the node's old
    /// value among them, go to `released` so the caller drops them when it is safe to.
    pub fn set_value(
        &mut self,
        id: NodeId,
        value: V,
        released: &mut Vec<V>,
    ) -> Result<(), GraphError> {
        self.check(id)?;
        self.store(id, value, released);
        Ok(())
    }

    /// [`Graph::set_value`] for an id known to be valid (checked, or taken off the ready stack).
    ///
    /// The hot loop. Each field is borrowed on its own so the edge walks can take them as
    /// separate slices, and `notify_listeners` keeps the ready stack's length in a register.
    /// Every index below is an id or offset that the struct invariant keeps in bounds, so it
    /// indexes without bounds checks (still checked in debug builds).
    #[inline(always)]
    fn store(&mut self, id: NodeId, value: V, released: &mut Vec<V>) {
        debug_assert!((id as usize) < self.len());
        self.fresh_listeners(); // nodes may have been added since `compile`
        let i = id as usize;
        let Self {
            values,
            events,
            dep_offsets,
            dep_edges,
            remaining,
            listener_csr,
            runs,
            ready,
            ..
        } = self;
        if let Some(old) = at_mut(values, i).replace(value) {
            Self::defer_drop(old, released);
        }
        if let Some(events) = events {
            events.push(Event::Set(id));
        }
        let deps = csr_row(dep_offsets, dep_edges, i);
        Self::release_dependencies(deps, remaining, values, events, released);
        notify_listeners(listener_csr.get(i), remaining, runs, ready);
        if at(remaining, i).listeners == 0 {
            Self::release(values, events, id, released);
        }
    }

    /// Takes one remaining listener from each dependency; one left with none is released.
    #[inline(always)]
    fn release_dependencies(
        deps: &[NodeId],
        remaining: &mut [Counts],
        values: &mut [Option<V>],
        events: &mut Option<Vec<Event>>,
        released: &mut Vec<V>,
    ) {
        for &dep in deps {
            let count = &mut at_mut(remaining, dep as usize).listeners;
            *count -= 1;
            if *count == 0 {
                Self::release(values, events, dep, released);
            }
        }
    }

    /// Hands a released value to the caller, who drops it when that is safe (a Python object's
    /// finaliser may call back into the graph). Values with no drop glue are simply forgotten.
    #[inline]
    fn defer_drop(value: V, released: &mut Vec<V>) {
        if std::mem::needs_drop::<V>() {
            released.push(value);
        }
    }

    /// Releases a node's value (nnsight's `destroy`).
    pub fn destroy(&mut self, id: NodeId, released: &mut Vec<V>) -> Result<(), GraphError> {
        self.check(id)?;
        Self::release(&mut self.values, &mut self.events, id, released);
        Ok(())
    }

    fn release(
        values: &mut [Option<V>],
        events: &mut Option<Vec<Event>>,
        id: NodeId,
        released: &mut Vec<V>,
    ) {
        if let Some(value) = at_mut(values, id as usize).take() {
            Self::defer_drop(value, released);
            if let Some(events) = events {
                events.push(Event::Destroy(id));
            }
        }
    }

    /// Abandons the current execution: empties the ready stack, drops the pending swap and
    /// releases every value. [`Graph::compile`] makes the graph runnable again.
    pub fn abort(&mut self, released: &mut Vec<V>) {
        self.ready.clear();
        self.swap = None;
        self.release_all(released);
    }

    /// Derives the listener CSR from the dependencies when nodes were added since it was built.
    #[inline(always)]
    fn fresh_listeners(&mut self) {
        if self.listener_csr.nodes != self.len() {
            self.rebuild_listeners();
        }
    }

    #[cold]
    #[inline(never)]
    fn rebuild_listeners(&mut self) {
        let nodes = self.len();
        self.listener_csr
            .transpose(&self.dep_offsets, &self.dep_edges, nodes);
    }

    /// Releases every value; values without drop glue are just cleared (a plain memory fill).
    fn release_all(&mut self, released: &mut Vec<V>) {
        if std::mem::needs_drop::<V>() {
            released.extend(self.values.iter_mut().filter_map(Option::take));
        } else {
            self.values.fill_with(|| None);
        }
    }

    /// Depth of the ready stack: a drain started now owns the entries above it.
    pub fn frame_base(&self) -> usize {
        self.ready.len()
    }

    /// Takes the next ready node above `base`.
    pub fn pop_ready(&mut self, base: usize) -> Option<NodeId> {
        if self.ready.len() <= base {
            return None;
        }
        let id = self.ready.pop()?;
        if let Some(events) = &mut self.events {
            events.push(Event::Execute(id));
        }
        Some(id)
    }

    /// Executes ready nodes above `base` until none are left. `execute` computes a node's value
    /// (`Ok(None)`: the node sets no value now, as `grad` nodes do); `Swap` nodes are handled here.
    /// On error the execution is aborted (see [`Graph::abort`]) and the error returned.
    pub fn drain<E>(
        &mut self,
        base: usize,
        released: &mut Vec<V>,
        mut execute: impl FnMut(&Self, NodeId) -> Result<Option<V>, E>,
    ) -> Result<(), E> {
        while let Some(id) = self.pop_ready(base) {
            if *at(&self.kinds, id as usize) == Kind::Swap {
                self.swap = Some(id);
                continue;
            }
            match execute(self, id) {
                Ok(Some(value)) => self.store(id, value, released),
                Ok(None) => {}
                Err(err) => {
                    self.abort(released);
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    fn check(&self, id: NodeId) -> Result<(), GraphError> {
        if (id as usize) < self.kinds.len() {
            Ok(())
        } else {
            Err(GraphError::UnknownId(id))
        }
    }

    // ----- accessors -------------------------------------------------------------------------

    pub fn value(&self, id: NodeId) -> Result<Option<&V>, GraphError> {
        self.check(id)?;
        Ok(at(&self.values, id as usize).as_ref())
    }

    /// Whether the node's value is set.
    pub fn done(&self, id: NodeId) -> Result<bool, GraphError> {
        Ok(self.value(id)?.is_some())
    }

    /// Whether no dependency is still missing.
    pub fn fulfilled(&self, id: NodeId) -> Result<bool, GraphError> {
        Ok(self.remaining_dependencies(id)? == 0)
    }

    /// Whether no listener still needs the value.
    pub fn redundant(&self, id: NodeId) -> Result<bool, GraphError> {
        Ok(self.remaining_listeners(id)? == 0)
    }

    pub fn kind(&self, id: NodeId) -> Result<Kind, GraphError> {
        self.check(id)?;
        Ok(self.kinds[id as usize])
    }

    /// The nodes that depend on `id`, in the order they were added (the listener CSR is
    /// rebuilt first if nodes were added since it was built).
    pub fn listeners(&mut self, id: NodeId) -> Result<&[NodeId], GraphError> {
        self.check(id)?;
        self.fresh_listeners();
        Ok(self.listener_csr.get(id as usize))
    }

    pub fn dependencies(&self, id: NodeId) -> Result<&[NodeId], GraphError> {
        self.check(id)?;
        Ok(self.deps_of(id as usize))
    }

    /// Node `i`'s dependencies; `i` must be below [`Graph::len`].
    #[inline]
    fn deps_of(&self, i: usize) -> &[NodeId] {
        csr_row(&self.dep_offsets, &self.dep_edges, i)
    }

    pub fn remaining_listeners(&self, id: NodeId) -> Result<i32, GraphError> {
        self.check(id)?;
        Ok(self.remaining[id as usize].listeners)
    }

    pub fn remaining_dependencies(&self, id: NodeId) -> Result<i32, GraphError> {
        self.check(id)?;
        Ok(self.remaining[id as usize].dependencies)
    }

    pub fn set_remaining_listeners(&mut self, id: NodeId, n: i32) -> Result<(), GraphError> {
        self.check(id)?;
        self.remaining[id as usize].listeners = n;
        Ok(())
    }

    pub fn set_remaining_dependencies(&mut self, id: NodeId, n: i32) -> Result<(), GraphError> {
        self.check(id)?;
        self.remaining[id as usize].dependencies = n;
        Ok(())
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn name(&self, id: NodeId) -> Result<String, GraphError> {
        self.names.name_of(id).ok_or(GraphError::UnknownId(id))
    }

    pub fn id_of(&self, name: &str) -> Result<NodeId, GraphError> {
        self.names
            .id_of(name)
            .ok_or_else(|| GraphError::UnknownName(name.to_owned()))
    }

    /// `(argument key, argument nodes)` pairs in first-use order.
    pub fn arguments(&self) -> impl ExactSizeIterator<Item = (&str, &[NodeId])> {
        self.arguments.iter().map(|(key, ids)| (&**key, &ids[..]))
    }

    /// The root-module argument node, once added.
    pub fn root(&self) -> Option<NodeId> {
        self.root
    }

    pub fn swap(&self) -> Option<NodeId> {
        self.swap
    }

    pub fn set_swap(&mut self, swap: Option<NodeId>) -> Result<(), GraphError> {
        if let Some(id) = swap {
            self.check(id)?;
        }
        self.swap = swap;
        Ok(())
    }

    /// Turns event recording on (collecting from now) or off (dropping what was collected).
    pub fn set_record_events(&mut self, on: bool) {
        self.events = if on { Some(Vec::new()) } else { None };
    }

    pub fn records_events(&self) -> bool {
        self.events.is_some()
    }

    /// Returns the events recorded since the last call (empty when recording is off).
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Every stored value, for a garbage collector's traversal.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.values.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Boxed so values have drop glue and show up in `released`, as Python objects do.
    type G = Graph<Box<i64>>;

    #[allow(clippy::vec_box)] // the boxes are the point: values with drop glue
    fn unboxed(released: Vec<Box<i64>>) -> Vec<i64> {
        released.into_iter().map(|b| *b).collect()
    }

    /// Runs the graph with every op node's value = 1 + the sum of its dependencies' values.
    fn run_sum(g: &mut G, root_value: i64) -> Vec<i64> {
        let mut released = Vec::new();
        g.compile(&mut released);
        g.drain(0, &mut released, sum_of_deps).unwrap();
        let root = g.root().unwrap();
        let base = g.frame_base();
        g.set_value(root, Box::new(root_value), &mut released)
            .unwrap();
        g.drain(base, &mut released, sum_of_deps).unwrap();
        unboxed(released)
    }

    fn sum_of_deps(g: &G, id: NodeId) -> Result<Option<Box<i64>>, GraphError> {
        let mut total = 1;
        for &dep in g.dependencies(id)? {
            total += **g.value(dep)?.expect("dependency has a value");
        }
        Ok(Some(Box::new(total)))
    }

    fn root(g: &mut G) -> NodeId {
        g.add_node(None, "argument", Kind::Argument, &[], Some(ROOT_ARGUMENT))
            .unwrap()
    }

    #[test]
    fn listeners_are_the_dependents_in_order_added_also_after_compile() {
        let mut g = G::new();
        let r = root(&mut g);
        let a = g.add_node(None, "add", Kind::Op, &[r], None).unwrap();
        let b = g.add_node(None, "add", Kind::Op, &[a, r, a], None).unwrap();
        assert_eq!(g.listeners(r).unwrap(), &[a, b]);
        assert_eq!(g.listeners(a).unwrap(), &[b]);
        assert_eq!(g.listeners(b).unwrap(), &[] as &[NodeId]);
        run_sum(&mut g, 1);
        // Added after `compile`: listed at once, and told when its dependency is set.
        let c = g.add_node(None, "add", Kind::Op, &[b, r], None).unwrap();
        assert_eq!(g.listeners(r).unwrap(), &[a, b, c]);
        assert_eq!(g.listeners(b).unwrap(), &[c]);
        let mut released = Vec::new();
        g.set_remaining_dependencies(c, 1).unwrap();
        g.set_value(b, Box::new(5), &mut released).unwrap();
        assert!(g.fulfilled(c).unwrap());
        assert_eq!(g.pop_ready(0), Some(c));
        // Dead-code elimination and revival count listeners from the same edges.
        let save = g.add_node(None, "null", Kind::Null, &[a], None).unwrap();
        let mut effects = vec![false; g.len()];
        effects[save as usize] = true;
        g.eliminate_dead_code(&effects).unwrap();
        g.compile(&mut released);
        assert_eq!(g.remaining_listeners(r).unwrap(), 1);
        assert_eq!(g.remaining_listeners(a).unwrap(), 1);
        g.revive_all();
        g.compile(&mut released);
        assert_eq!(g.remaining_listeners(r).unwrap(), 3);
        assert_eq!(g.remaining_listeners(a).unwrap(), 2);
    }

    #[test]
    fn chain_runs_in_order_and_frees_each_value_after_its_listener() {
        let mut g = G::new();
        g.set_record_events(true);
        let r = root(&mut g);
        let a = g.add_node(None, "add", Kind::Op, &[r], None).unwrap();
        let b = g.add_node(None, "add", Kind::Op, &[a], None).unwrap();
        let save = g.add_node(None, "null", Kind::Null, &[b], None).unwrap();
        run_sum(&mut g, 10);
        use Event::*;
        assert_eq!(
            g.take_events(),
            vec![
                Set(r),
                Execute(a),
                Set(a),
                Destroy(r),
                Execute(b),
                Set(b),
                Destroy(a)
            ]
        );
        assert_eq!(g.value(b).unwrap().map(|v| **v), Some(12));
        assert!(!g.done(save).unwrap());
        assert_eq!(g.name(a).unwrap(), "add_0");
        assert_eq!(g.name(b).unwrap(), "add_1");
    }

    #[test]
    fn fan_in_waits_for_every_dependency_and_dedups_edges() {
        let mut g = G::new();
        let r = root(&mut g);
        let a = g.add_node(None, "a", Kind::Op, &[r], None).unwrap();
        let b = g.add_node(None, "b", Kind::Op, &[r], None).unwrap();
        let c = g.add_node(None, "c", Kind::Op, &[a, b, a], None).unwrap();
        let _keep = g.add_node(None, "null", Kind::Null, &[c], None).unwrap();
        assert_eq!(g.dependencies(c).unwrap(), &[a, b]);
        assert_eq!(g.listeners(a).unwrap(), &[c]);
        run_sum(&mut g, 1);
        // a = 2, b = 2, c = 1 + 2 + 2
        assert_eq!(g.value(c).unwrap().map(|v| **v), Some(5));
        assert!(!g.done(a).unwrap() && !g.done(b).unwrap() && !g.done(r).unwrap());
    }

    #[test]
    fn node_with_no_listeners_is_destroyed_once_set() {
        let mut g = G::new();
        g.set_record_events(true);
        let r = root(&mut g);
        let a = g.add_node(None, "a", Kind::Op, &[r], None).unwrap();
        let released = run_sum(&mut g, 3);
        assert!(!g.done(a).unwrap());
        assert_eq!(released, vec![3, 4]);
        assert!(g.take_events().contains(&Event::Destroy(a)));
    }

    #[test]
    fn compile_resets_counts_and_values_for_a_rerun() {
        let mut g = G::new();
        let r = root(&mut g);
        let a = g.add_node(None, "a", Kind::Op, &[r], None).unwrap();
        let _keep = g.add_node(None, "null", Kind::Null, &[a], None).unwrap();
        run_sum(&mut g, 1);
        assert_eq!(g.value(a).unwrap().map(|v| **v), Some(2));
        let released = run_sum(&mut g, 5);
        assert_eq!(released, vec![2, 5], "old saved value released by compile");
        assert_eq!(g.value(a).unwrap().map(|v| **v), Some(6));
        assert_eq!(g.remaining_listeners(a).unwrap(), 1);
    }

    #[test]
    fn nodes_without_dependencies_run_at_compile() {
        let mut g = G::new();
        let _r = root(&mut g);
        let c = g.add_node(None, "const", Kind::Op, &[], None).unwrap();
        let d = g.add_node(None, "d", Kind::Op, &[c], None).unwrap();
        let _keep = g.add_node(None, "null", Kind::Null, &[d], None).unwrap();
        let mut released = Vec::new();
        g.compile(&mut released);
        g.drain(0, &mut released, sum_of_deps).unwrap();
        assert_eq!(g.value(d).unwrap().map(|v| **v), Some(2));
    }

    #[test]
    fn swap_node_becomes_pending_and_keeps_its_dependencies() {
        let mut g = G::new();
        let r = root(&mut g);
        let a = g.add_node(None, "a", Kind::Op, &[r], None).unwrap();
        let s = g.add_node(None, "swap", Kind::Swap, &[a], None).unwrap();
        run_sum(&mut g, 1);
        assert_eq!(g.swap(), Some(s));
        assert_eq!(
            g.value(a).unwrap().map(|v| **v),
            Some(2),
            "kept until the swap is used"
        );
        let mut released = Vec::new();
        g.set_value(s, Box::new(0), &mut released).unwrap();
        assert_eq!(unboxed(released), vec![2, 0]);
    }

    #[test]
    fn error_aborts_and_releases_everything() {
        let mut g = G::new();
        let r = root(&mut g);
        let a = g.add_node(None, "a", Kind::Op, &[r], None).unwrap();
        let b = g.add_node(None, "b", Kind::Op, &[a], None).unwrap();
        let _keep = g.add_node(None, "null", Kind::Null, &[a], None).unwrap();
        let _keep = g.add_node(None, "null", Kind::Null, &[b], None).unwrap();
        let mut released = Vec::new();
        g.compile(&mut released);
        g.set_value(r, Box::new(1), &mut released).unwrap();
        let result = g.drain(0, &mut released, |g, id| {
            if id == b {
                Err(GraphError::UnknownId(99))
            } else {
                sum_of_deps(g, id)
            }
        });
        assert_eq!(result, Err(GraphError::UnknownId(99)));
        assert!(g.values().next().is_none());
        assert_eq!(g.frame_base(), 0);
    }

    #[test]
    fn frames_only_drain_their_own_entries() {
        let mut g = G::new();
        let r = root(&mut g);
        let x = g
            .add_node(None, "argument", Kind::Argument, &[], Some("x"))
            .unwrap();
        let a = g.add_node(None, "a", Kind::Op, &[r], None).unwrap();
        let b = g.add_node(None, "b", Kind::Op, &[x], None).unwrap();
        let mut released = Vec::new();
        g.compile(&mut released);
        g.set_value(r, Box::new(1), &mut released).unwrap();
        assert_eq!(g.frame_base(), 1, "a is ready in the outer frame");
        let base = g.frame_base();
        g.set_value(x, Box::new(1), &mut released).unwrap();
        let mut ran = Vec::new();
        g.drain(base, &mut released, |g, id| {
            ran.push(id);
            sum_of_deps(g, id)
        })
        .unwrap();
        assert_eq!(ran, vec![b]);
        assert_eq!(g.pop_ready(0), Some(a));
        assert_eq!(
            g.arguments().collect::<Vec<_>>(),
            [(ROOT_ARGUMENT, &[r][..]), ("x", &[x][..])]
        );
    }

    #[test]
    fn bad_input_is_refused_without_changes() {
        let mut g = G::new();
        let r = root(&mut g);
        assert_eq!(
            g.add_node(None, "argument", Kind::Argument, &[], Some(ROOT_ARGUMENT)),
            Err(GraphError::SecondRoot)
        );
        assert_eq!(
            g.add_node(None, "add", Kind::Op, &[r, 7], None),
            Err(GraphError::UnknownId(7))
        );
        assert!(matches!(
            g.add_node(None, "argument", Kind::Argument, &[], None),
            Err(GraphError::MissingArgumentKey(_))
        ));
        assert_eq!(
            g.add_node(Some("argument_0"), "add", Kind::Op, &[], None),
            Err(GraphError::DuplicateName("argument_0".into()))
        );
        assert_eq!(g.len(), 1);
        assert_eq!(g.listeners(r).unwrap(), &[] as &[NodeId]);
        assert_eq!(g.names().count("argument"), 1);
        assert_eq!(g.id_of("nope"), Err(GraphError::UnknownName("nope".into())));
        let mut released = Vec::new();
        assert_eq!(
            g.set_value(5, Box::new(1), &mut released),
            Err(GraphError::UnknownId(5))
        );
    }

    #[test]
    fn dead_code_never_runs_and_does_not_hold_values() {
        let mut g = G::new();
        g.set_record_events(true);
        let r = root(&mut g);
        let used = g.add_node(None, "used", Kind::Op, &[r], None).unwrap();
        let unused = g.add_node(None, "unused", Kind::Op, &[r], None).unwrap();
        let unused_tail = g.add_node(None, "tail", Kind::Op, &[unused], None).unwrap();
        let save = g.add_node(None, "null", Kind::Null, &[used], None).unwrap();
        let mut effects = vec![false; g.len()];
        effects[save as usize] = true;
        assert_eq!(
            g.eliminate_dead_code(&effects).unwrap(),
            vec![unused, unused_tail]
        );
        run_sum(&mut g, 1);
        use Event::*;
        // The root is released as soon as its one live listener has run.
        assert_eq!(
            g.take_events(),
            vec![Set(r), Execute(used), Set(used), Destroy(r)]
        );
        assert_eq!(g.value(used).unwrap().map(|v| **v), Some(2));
        assert!(!g.done(unused).unwrap());

        // Adding a node revives everything: the new node may use a dead one.
        g.add_node(None, "null", Kind::Null, &[unused_tail], None)
            .unwrap();
        assert!(g.dead().is_empty());
        run_sum(&mut g, 1);
        assert_eq!(g.value(unused_tail).unwrap().map(|v| **v), Some(3));
    }

    #[test]
    fn effects_keep_their_dependencies_alive_transitively() {
        let mut g = G::new();
        let r = root(&mut g);
        let a = g.add_node(None, "a", Kind::Op, &[r], None).unwrap();
        let b = g.add_node(None, "b", Kind::Op, &[a], None).unwrap();
        let edit = g.add_node(None, "setitem", Kind::Op, &[b], None).unwrap();
        let mut effects = vec![false; g.len()];
        effects[edit as usize] = true;
        assert!(g.eliminate_dead_code(&effects).unwrap().is_empty());
        assert_eq!(
            g.eliminate_dead_code(&[true]),
            Err(GraphError::EffectsLength {
                expected: 4,
                got: 1
            })
        );
        run_sum(&mut g, 1);
        assert!(g.value(edit).unwrap().is_none()); // ran, nothing listens: released at once
        assert!(!g.done(a).unwrap() && !g.done(b).unwrap());
    }

    #[test]
    fn copy_in_pieces_copies_every_element_at_any_length() {
        for len in [0usize, 1, 31, 32, 33, 1000, 4097] {
            let src: Vec<Counts> = (0..len as i32)
                .map(|i| Counts {
                    listeners: i,
                    dependencies: -i,
                })
                .collect();
            let mut dst = vec![Counts::default(); len];
            copy_in_pieces(&mut dst, &src);
            assert!(dst
                .iter()
                .zip(&src)
                .all(|(a, b)| (a.listeners, a.dependencies) == (b.listeners, b.dependencies)));
        }
    }

    #[test]
    fn long_chain_runs_without_recursion() {
        let mut g = G::new();
        let mut prev = root(&mut g);
        for _ in 0..200_000 {
            prev = g.add_node(None, "add", Kind::Op, &[prev], None).unwrap();
        }
        g.add_node(None, "null", Kind::Null, &[prev], None).unwrap();
        run_sum(&mut g, 0);
        assert_eq!(g.value(prev).unwrap().map(|v| **v), Some(200_000));
        assert_eq!(g.values().count(), 1);
    }
}
