//! Node storage, dependency edges, and the fulfilled/redundant propagation of an intervention graph.
//!
//! Nodes live in an arena indexed by [`NodeId`]; ids are stable for the life of the graph. Edges
//! are stored once, as each node's `dependencies` (written by [`Graph::add_node`] alone); a
//! node's `listeners` are the later nodes that depend on it, in the order they were added, and
//! are derived from the dependencies when needed (by [`Graph::compile`], or on first use after
//! nodes were added), so the two sides cannot disagree. Both live in one flattened array
//! ([`crate::adjacency`]); the remaining counts are 16 bits each ([`crate::counts`]).
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

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::{smallvec, SmallVec};

use crate::adjacency::{row, Adjacency, DEPS, LISTENERS};
use crate::counts::{Counts, Excess, Which};
use crate::error::GraphError;
pub use crate::id::NodeId;
use crate::names::Names;

/// Argument key of the root-module `argument` node (`Graph.argument_node_names` key).
pub const ROOT_ARGUMENT: &str = "nnsight_root_module";

/// Argument keys a new graph has room for: the root plus a trace's first module reads.
const ARGUMENTS_RESERVED: usize = 16;

/// Possibly repeated stores a run may make before its counts switch to checked arithmetic.
///
/// The hot loop decrements 16-bit count fields without testing for overflow. A count only goes
/// below zero when a node is stored more than once in a run, and each extra store takes it at
/// most one further down. So a run counts the stores that may be extra, and once this many
/// were made (leaving every field far above `i16::MIN`) it switches to checked arithmetic:
///
/// * A drain's own stores are never extra: it stores what it pops, and an unchecked run pops
///   each node at most once (a node is pushed when its count of dependencies, which only falls,
///   reaches zero).
/// * A [`Graph::set_value`] from outside is counted, except the first store of a node after
///   [`Graph::pop_ready`] handed it out: that is a host completing the node it ran, which makes
///   at most one uncounted store per node and run.
///
/// Counts set from outside and nodes added after `compile` switch to checked arithmetic at once;
/// `compile` switches back.
const UNCHECKED_STORES: u32 = 16_384;

/// Bits of [`Graph`]'s per-node `flags`, the one byte the hot loop reads per node.
mod flag {
    /// Put on the ready stack once fulfilled: an executable kind, not found dead.
    pub const RUNS: u8 = 1;
    /// A `swap` node: taken off the ready stack as the pending swap, not executed.
    pub const SWAP: u8 = 2;
    /// A count of this node has been wider than its 16-bit field (see [`crate::counts`]).
    pub const WIDE: u8 = 4;
    /// Handed out by [`super::Graph::pop_ready`] and not stored since (see `UNCHECKED_STORES`).
    pub const POPPED: u8 = 8;
}

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
/// (the adjacency's offsets one more), every id stored in an edge list or on the ready stack is
/// below `len`, and the adjacency's listener half, when fresh, covers all `len` nodes. Only
/// [`Graph::add_node`] adds nodes, checking each dependency first, and nothing ever removes one.
#[derive(Debug)]
pub struct Graph<V> {
    names: Names,
    kinds: Vec<Kind>,
    /// [`flag`] bits per node.
    flags: Vec<u8>,
    /// Nodes [`Graph::eliminate_dead_code`] found dead (empty when it is not in effect).
    dead: Vec<NodeId>,
    /// Dependencies and listeners. The listeners are rebuilt by `compile` (or a `set_value` or
    /// `listeners` call) once nodes were added since the last build.
    adjacency: Adjacency,
    /// Edge counts, copied into `remaining` by [`Graph::compile`] in one pass, with the parts
    /// that do not fit 16 bits in `initial_excess` (copied into `excess`).
    initial: Vec<Counts>,
    initial_excess: Excess,
    remaining: Vec<Counts>,
    excess: Excess,
    /// Possibly repeated stores left before counts need checked arithmetic; 0 when they do.
    /// See [`UNCHECKED_STORES`].
    unchecked_stores_left: u32,
    /// Whether [`Graph::pop_ready`] flagged nodes since `compile` last cleared the flags.
    popped: bool,
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

/// The ready stack during a propagation: its buffer, length and capacity held in locals, so the
/// hot loop keeps them in registers instead of reloading the `Vec` after every count it writes.
/// The length is written back when the stack grows and when this is dropped.
struct Stack<'g> {
    vec: &'g mut Vec<NodeId>,
    top: *mut NodeId,
    len: usize,
    cap: usize,
}

impl<'g> Stack<'g> {
    #[inline(always)]
    fn new(vec: &'g mut Vec<NodeId>) -> Self {
        Self {
            top: vec.as_mut_ptr(),
            len: vec.len(),
            cap: vec.capacity(),
            vec,
        }
    }

    /// Takes the top entry if the stack is deeper than `base`.
    #[inline(always)]
    fn pop_above(&mut self, base: usize) -> Option<NodeId> {
        if self.len <= base {
            return None;
        }
        self.len -= 1;
        // SAFETY: `len` was below the length, so the slot is initialised.
        Some(unsafe { self.top.add(self.len).read() })
    }

    /// Makes room for `n` more entries.
    #[inline(always)]
    fn reserve(&mut self, n: usize) {
        if self.cap - self.len < n {
            (self.top, self.cap) = grow(self.vec, self.len, n);
        }
    }

    /// Checks that room for `n` more entries was made before the run (see
    /// [`Graph::compile`]): unchecked runs push each node at most once. Failing is a bug; it
    /// panics rather than grow, so the hot loop makes no call that returns.
    #[inline(always)]
    fn assert_room(&self, n: usize) {
        if self.cap - self.len < n {
            no_room(self.len, n);
        }
    }

    /// Pushes into room made by [`Stack::reserve`].
    #[inline(always)]
    fn push_reserved(&mut self, id: NodeId) {
        debug_assert!(self.len < self.cap);
        // SAFETY: callers reserve first, so `len < cap`.
        unsafe { self.top.add(self.len).write(id) };
        self.len += 1;
    }
}

impl Drop for Stack<'_> {
    fn drop(&mut self) {
        // SAFETY: every slot below `len` is initialised (the old length, or pushed since).
        unsafe { self.vec.set_len(self.len) };
    }
}

#[cold]
#[inline(never)]
fn no_room(len: usize, n: usize) -> ! {
    panic!(
        "ready stack full at {len} entries, {n} more: unchecked runs push each node at most once"
    )
}

/// Grows the ready stack to hold `len + n` entries; returns its buffer and capacity. Takes the
/// length by value so the caller's copy never has its address taken.
#[cold]
#[inline(never)]
fn grow(vec: &mut Vec<NodeId>, len: usize, n: usize) -> (*mut NodeId, usize) {
    // SAFETY: every slot below `len` is initialised.
    unsafe { vec.set_len(len) };
    vec.reserve(n.max(vec.capacity()));
    (vec.as_mut_ptr(), vec.capacity())
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

/// What the host sees of the node it executes in [`Graph::drain`]: its id, its dependencies in
/// order, and their values.
pub struct Inputs<'g, V> {
    id: NodeId,
    dependencies: &'g [NodeId],
    values: &'g [Option<V>],
}

impl<'g, V> Inputs<'g, V> {
    /// The node being executed.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Its dependencies, in order of first appearance (as [`Graph::dependencies`]).
    pub fn dependencies(&self) -> &'g [NodeId] {
        self.dependencies
    }

    /// The value of its `k`-th dependency: `None` past the last one or when not set.
    #[inline]
    pub fn input(&self, k: usize) -> Option<&'g V> {
        let dep = *self.dependencies.get(k)?;
        // Dependencies are node ids, below the node count (the `Graph` invariant).
        at(self.values, dep as usize).as_ref()
    }

    /// The values of all its dependencies, in order (`None` for one not set).
    pub fn inputs(&self) -> impl ExactSizeIterator<Item = Option<&'g V>> + '_ {
        (0..self.dependencies.len()).map(|k| self.input(k))
    }
}

/// The state that setting a value reads and changes, borrowed field by field from a [`Graph`]
/// whose listeners are fresh (see [`Graph::split`]), so the hot loop holds each in a register.
struct Propagation<'g, V> {
    offsets: &'g [[u32; 2]],
    edges: &'g [NodeId],
    flags: &'g [u8],
    remaining: &'g mut [Counts],
    excess: &'g mut Excess,
    values: &'g mut [Option<V>],
    ready: Stack<'g>,
    events: &'g mut Option<Vec<Event>>,
}

impl<'g, V> Propagation<'g, V> {
    /// Node `id`'s dependencies; `id` must be below the node count.
    #[inline(always)]
    fn dependencies(&self, id: NodeId) -> &'g [NodeId] {
        row(self.offsets, self.edges, id as usize, DEPS)
    }

    /// Takes one from a count of node `id`; returns whether the whole count reached zero.
    ///
    /// Unchecked (the hot loop): a plain decrement of the 16-bit field, looking further only
    /// when it reaches zero on a node flagged wide. Checked: exact at any size. See
    /// [`UNCHECKED_STORES`] for when the unchecked one is exact.
    #[inline(always)]
    fn take_one<const CHECKED: bool>(&mut self, id: NodeId, which: Which) -> bool {
        let field = at_mut(self.remaining, id as usize).field_mut(which);
        if CHECKED {
            return self.excess.take_one(field, id, which);
        }
        *field -= 1;
        if *field != 0 {
            return false;
        }
        if at(self.flags, id as usize) & flag::WIDE == 0 {
            return true;
        }
        // Kept out of line by the hint (a call here would cost the whole loop registers).
        std::hint::cold_path();
        self.excess.refill(field, id, which)
    }

    /// Sets node `id`'s value and propagates (see the module docs). `RECORD`: whether events
    /// are on; `CHECKED`: whether counts need checked arithmetic.
    #[inline(always)]
    fn store<const RECORD: bool, const CHECKED: bool>(
        &mut self,
        id: NodeId,
        value: V,
        released: &mut Vec<V>,
    ) {
        let deps = self.dependencies(id);
        self.store_with::<RECORD, CHECKED>(id, deps, value, released);
    }

    /// [`Propagation::store`] given node `id`'s dependencies. The hot loop: every index is an id
    /// or offset that the [`Graph`] invariant keeps in bounds, so nothing is bounds-checked
    /// (except in debug builds).
    #[inline(always)]
    fn store_with<const RECORD: bool, const CHECKED: bool>(
        &mut self,
        id: NodeId,
        deps: &[NodeId],
        value: V,
        released: &mut Vec<V>,
    ) {
        debug_assert_eq!(RECORD, self.events.is_some());
        let i = id as usize;
        if let Some(old) = at_mut(self.values, i).replace(value) {
            defer_drop(old, released);
        }
        if RECORD {
            if let Some(events) = self.events {
                events.push(Event::Set(id));
            }
        }
        for &dep in deps {
            if self.take_one::<CHECKED>(dep, Which::Listeners) {
                release::<V, RECORD>(self.values, self.events, dep, released);
            }
        }
        // Listeners are pushed in reverse, so the first-registered is popped first.
        let listeners = row(self.offsets, self.edges, i, LISTENERS);
        if CHECKED {
            self.ready.reserve(listeners.len());
        } else {
            self.ready.assert_room(listeners.len());
        }
        for &listener in listeners.iter().rev() {
            if self.take_one::<CHECKED>(listener, Which::Dependencies)
                && at(self.flags, listener as usize) & flag::RUNS != 0
            {
                self.ready.push_reserved(listener);
            }
        }
        let redundant = if CHECKED {
            let field = at(self.remaining, i).listeners;
            self.excess.count(field, id, Which::Listeners) == 0
        } else {
            // Unchecked, a zero field is a zero count: a wide one is refilled as it reaches zero.
            at(self.remaining, i).listeners == 0
        };
        if redundant {
            release::<V, RECORD>(self.values, self.events, id, released);
        }
    }
}

/// Releases a node's value into `released` (nnsight's `destroy`), recording the event if
/// `RECORD` and events are on.
#[inline(always)]
fn release<V, const RECORD: bool>(
    values: &mut [Option<V>],
    events: &mut Option<Vec<Event>>,
    id: NodeId,
    released: &mut Vec<V>,
) {
    if let Some(value) = at_mut(values, id as usize).take() {
        defer_drop(value, released);
        if RECORD {
            if let Some(events) = events {
                events.push(Event::Destroy(id));
            }
        }
    }
}

/// Hands a released value to the caller, who drops it when that is safe (a Python object's
/// finaliser may call back into the graph). Values with no drop glue are simply forgotten.
#[inline(always)]
fn defer_drop<V>(value: V, released: &mut Vec<V>) {
    if std::mem::needs_drop::<V>() {
        released.push(value);
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
        Self {
            names: Names::with_capacity(nodes),
            kinds: Vec::with_capacity(nodes),
            flags: Vec::with_capacity(nodes),
            dead: Vec::new(),
            adjacency: Adjacency::with_capacity(nodes),
            initial: Vec::with_capacity(nodes),
            initial_excess: Excess::default(),
            remaining: Vec::with_capacity(nodes),
            excess: Excess::default(),
            unchecked_stores_left: 0,
            popped: false,
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
        self.adjacency.begin_node();
        // Edges are recorded once each. A scan of the few recorded so far is cheapest for the
        // usual handful; a set keeps a wide fan-in (`torch.cat` of many proxies) linear.
        let mut seen = (dependencies.len() > 32)
            .then(|| FxHashSet::with_capacity_and_hasher(dependencies.len(), Default::default()));
        for &dep in dependencies {
            let new = match &mut seen {
                Some(seen) => seen.insert(dep),
                None => !self.adjacency.pending_dependencies().contains(&dep),
            };
            if new {
                self.adjacency.push_dependency(dep);
                let d = dep as usize;
                let field = &mut self.initial[d].listeners;
                if self.initial_excess.add_one(field, dep, Which::Listeners) {
                    self.flags[d] |= flag::WIDE;
                }
            }
        }
        let deps = self.adjacency.pending_dependencies().len();
        if deps == 0 && kind.executes() {
            self.roots.push(id);
        }
        self.adjacency.end_node();
        self.names.insert(chosen, target_name, id);
        self.kinds.push(kind);
        let mut counts = Counts::default();
        let wide = match i16::try_from(deps) {
            Ok(deps) => {
                counts.dependencies = deps;
                false
            }
            Err(_) => self.initial_excess.set(
                &mut counts.dependencies,
                id,
                Which::Dependencies,
                deps as i64,
            ),
        };
        self.initial.push(counts);
        self.flags.push(
            if kind.executes() { flag::RUNS } else { 0 }
                | if kind == Kind::Swap { flag::SWAP } else { 0 }
                | if wide { flag::WIDE } else { 0 },
        );
        self.remaining.push(Counts::default());
        self.values.push(None);
        // The run in progress, if any, counted without this node: see `UNCHECKED_STORES`.
        self.unchecked_stores_left = 0;
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
        self.excess.clone_from(&self.initial_excess);
        self.unchecked_stores_left = UNCHECKED_STORES;
        if self.popped {
            for flags in &mut self.flags {
                *flags &= !flag::POPPED;
            }
            self.popped = false;
        }
        self.ready.clear();
        // Room for every node: an unchecked run pushes each at most once, since its count of
        // dependencies only falls and so reaches zero once.
        self.ready.reserve(self.len());
        self.swap = None;
        let flags = &self.flags;
        self.ready.extend(
            self.roots
                .iter()
                .rev()
                .filter(|&&id| flags[id as usize] & flag::RUNS != 0),
        );
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
            self.set_runs(i, is_live && self.kinds[i].executes());
            if !is_live {
                dead.push(i as NodeId);
                continue;
            }
            for &dep in self.deps_of(i) {
                listeners[dep as usize] += 1;
            }
        }
        self.set_initial_listeners(&listeners);
        self.dead.clone_from(&dead);
        Ok(dead)
    }

    /// Undoes [`Graph::eliminate_dead_code`]: every node is live again.
    pub fn revive_all(&mut self) {
        let mut listeners = vec![0; self.len()];
        for &dep in self.adjacency.all_dependencies() {
            listeners[dep as usize] += 1;
        }
        self.set_initial_listeners(&listeners);
        for i in 0..self.len() {
            self.set_runs(i, self.kinds[i].executes());
        }
        self.dead.clear();
    }

    fn set_runs(&mut self, i: usize, runs: bool) {
        if runs {
            self.flags[i] |= flag::RUNS;
        } else {
            self.flags[i] &= !flag::RUNS;
        }
    }

    /// Sets every node's initial listener count.
    fn set_initial_listeners(&mut self, listeners: &[i64]) {
        for (i, &count) in listeners.iter().enumerate() {
            let field = &mut self.initial[i].listeners;
            if self
                .initial_excess
                .set(field, i as NodeId, Which::Listeners, count)
            {
                self.flags[i] |= flag::WIDE;
            }
        }
    }

    /// Whether this run's counts take checked arithmetic (see [`UNCHECKED_STORES`]).
    #[cfg(test)]
    fn counts_checked(&self) -> bool {
        self.unchecked_stores_left == 0
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
        // Possibly a second store of this node, unless it completes a pop: see
        // `UNCHECKED_STORES`.
        let flags = at_mut(&mut self.flags, id as usize);
        if *flags & flag::POPPED != 0 {
            *flags &= !flag::POPPED;
        } else {
            self.unchecked_stores_left = self.unchecked_stores_left.saturating_sub(1);
        }
        self.store(id, value, released);
        Ok(())
    }

    /// [`Graph::set_value`] for an id known to be valid (checked, or taken off the ready stack).
    #[inline]
    fn store(&mut self, id: NodeId, value: V, released: &mut Vec<V>) {
        debug_assert!((id as usize) < self.len());
        self.fresh_listeners(); // nodes may have been added since `compile`
        let checked = self.unchecked_stores_left == 0;
        let (mut propagation, _) = self.split();
        match (propagation.events.is_some(), checked) {
            (false, false) => propagation.store::<false, false>(id, value, released),
            (false, true) => propagation.store::<false, true>(id, value, released),
            (true, false) => propagation.store::<true, false>(id, value, released),
            (true, true) => propagation.store::<true, true>(id, value, released),
        }
    }

    /// Borrows the state a propagation changes apart from the slot of the pending swap, so the
    /// hot loop keeps every slice in a register.
    fn split(&mut self) -> (Propagation<'_, V>, &mut Option<NodeId>) {
        let Self {
            flags,
            adjacency,
            remaining,
            excess,
            values,
            ready,
            swap,
            events,
            ..
        } = self;
        (
            Propagation {
                offsets: adjacency.parts().0,
                edges: adjacency.parts().1,
                flags,
                remaining,
                excess,
                values,
                ready: Stack::new(ready),
                events,
            },
            swap,
        )
    }

    /// Releases a node's value (nnsight's `destroy`).
    pub fn destroy(&mut self, id: NodeId, released: &mut Vec<V>) -> Result<(), GraphError> {
        self.check(id)?;
        release::<V, true>(&mut self.values, &mut self.events, id, released);
        Ok(())
    }

    /// Stores `value` (or clears the slot, with `None`) without propagating: no listener runs,
    /// no count changes and no event is recorded, as a plain `node.value = ...` in nnsight 0.2.
    /// Returns the old value for the caller to drop when it is safe to.
    pub fn replace_value(&mut self, id: NodeId, value: Option<V>) -> Result<Option<V>, GraphError> {
        self.check(id)?;
        Ok(std::mem::replace(
            at_mut(&mut self.values, id as usize),
            value,
        ))
    }

    /// Abandons the current execution: empties the ready stack, drops the pending swap and
    /// releases every value. [`Graph::compile`] makes the graph runnable again.
    pub fn abort(&mut self, released: &mut Vec<V>) {
        self.ready.clear();
        self.swap = None;
        self.release_all(released);
    }

    /// Derives the listeners from the dependencies when nodes were added since they were.
    #[inline(always)]
    fn fresh_listeners(&mut self) {
        if !self.adjacency.listeners_fresh() {
            self.rebuild_listeners();
        }
    }

    #[cold]
    #[inline(never)]
    fn rebuild_listeners(&mut self) {
        self.adjacency.rebuild_listeners();
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
        *at_mut(&mut self.flags, id as usize) |= flag::POPPED;
        self.popped = true;
        Some(id)
    }

    /// Executes ready nodes above `base` until none are left. `execute` computes a node's value
    /// from its [`Inputs`] (`Ok(None)`: the node sets no value now, as `grad` nodes do); `Swap`
    /// nodes are handled here. On error the execution is aborted (see [`Graph::abort`]) and the
    /// error returned.
    pub fn drain<E>(
        &mut self,
        base: usize,
        released: &mut Vec<V>,
        execute: impl FnMut(&Inputs<'_, V>) -> Result<Option<V>, E>,
    ) -> Result<(), E> {
        // `execute` cannot add nodes or set values, so the listeners, fresh now, stay fresh, and
        // the counts' arithmetic stays what it is now, for the whole drain.
        self.fresh_listeners();
        let checked = self.unchecked_stores_left == 0;
        let result = match (self.events.is_some(), checked) {
            (false, false) => self.drain_frame::<false, false, E>(base, released, execute),
            (false, true) => self.drain_frame::<false, true, E>(base, released, execute),
            (true, false) => self.drain_frame::<true, false, E>(base, released, execute),
            (true, true) => self.drain_frame::<true, true, E>(base, released, execute),
        };
        if result.is_err() {
            self.abort(released);
        }
        result
    }

    /// [`Graph::drain`]'s loop, with the recording of events and the counts' arithmetic decided
    /// once.
    #[inline(always)]
    fn drain_frame<const RECORD: bool, const CHECKED: bool, E>(
        &mut self,
        base: usize,
        released: &mut Vec<V>,
        mut execute: impl FnMut(&Inputs<'_, V>) -> Result<Option<V>, E>,
    ) -> Result<(), E> {
        let (mut propagation, swap) = self.split();
        while let Some(id) = propagation.ready.pop_above(base) {
            if RECORD {
                if let Some(events) = propagation.events {
                    events.push(Event::Execute(id));
                }
            }
            if at(propagation.flags, id as usize) & flag::SWAP != 0 {
                *swap = Some(id);
                continue;
            }
            let dependencies = propagation.dependencies(id);
            let inputs = Inputs {
                id,
                dependencies,
                values: propagation.values,
            };
            if let Some(value) = execute(&inputs)? {
                propagation.store_with::<RECORD, CHECKED>(id, dependencies, value, released);
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

    /// The nodes that depend on `id`, in the order they were added (the listeners are rebuilt
    /// first if nodes were added since they were).
    pub fn listeners(&mut self, id: NodeId) -> Result<&[NodeId], GraphError> {
        self.check(id)?;
        self.fresh_listeners();
        Ok(self.adjacency.listeners(id as usize))
    }

    pub fn dependencies(&self, id: NodeId) -> Result<&[NodeId], GraphError> {
        self.check(id)?;
        Ok(self.deps_of(id as usize))
    }

    /// Node `i`'s dependencies; `i` must be below [`Graph::len`].
    #[inline]
    fn deps_of(&self, i: usize) -> &[NodeId] {
        self.adjacency.dependencies(i)
    }

    pub fn remaining_listeners(&self, id: NodeId) -> Result<i32, GraphError> {
        self.remaining_count(id, Which::Listeners)
    }

    pub fn remaining_dependencies(&self, id: NodeId) -> Result<i32, GraphError> {
        self.remaining_count(id, Which::Dependencies)
    }

    pub fn set_remaining_listeners(&mut self, id: NodeId, n: i32) -> Result<(), GraphError> {
        self.set_remaining_count(id, Which::Listeners, n)
    }

    pub fn set_remaining_dependencies(&mut self, id: NodeId, n: i32) -> Result<(), GraphError> {
        self.set_remaining_count(id, Which::Dependencies, n)
    }

    fn remaining_count(&self, id: NodeId, which: Which) -> Result<i32, GraphError> {
        self.check(id)?;
        let field = self.remaining[id as usize].field(which);
        let count = self.excess.count(field, id, which);
        // Only a run with more than 2^31 extra stores of one node could leave i32.
        Ok(count.clamp(i32::MIN.into(), i32::MAX.into()) as i32)
    }

    fn set_remaining_count(&mut self, id: NodeId, which: Which, n: i32) -> Result<(), GraphError> {
        self.check(id)?;
        let field = self.remaining[id as usize].field_mut(which);
        if self.excess.set(field, id, which, n.into()) {
            self.flags[id as usize] |= flag::WIDE;
        }
        // A count set from outside may be anything: see `UNCHECKED_STORES`.
        self.unchecked_stores_left = 0;
        Ok(())
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    pub fn name(&self, id: NodeId) -> Result<String, GraphError> {
        self.names.name_of(id).ok_or(GraphError::UnknownId(id))
    }

    /// The name node `id` was given explicitly; None when its name is automatic.
    pub fn explicit_name(&self, id: NodeId) -> Result<Option<&str>, GraphError> {
        self.check(id)?;
        Ok(self.names.explicit_name(id))
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

    fn sum_of_deps(node: &Inputs<Box<i64>>) -> Result<Option<Box<i64>>, GraphError> {
        let mut total = 1;
        for value in node.inputs() {
            total += **value.expect("dependency has a value");
        }
        Ok(Some(Box::new(total)))
    }

    fn root(g: &mut G) -> NodeId {
        g.add_node(None, "argument", Kind::Argument, &[], Some(ROOT_ARGUMENT))
            .unwrap()
    }

    #[test]
    fn replace_value_stores_without_propagating() {
        let mut g = G::new();
        let r = root(&mut g);
        let a = g.add_node(None, "add", Kind::Op, &[r], None).unwrap();
        let mut released = Vec::new();
        g.compile(&mut released);
        g.set_record_events(true);
        assert_eq!(g.replace_value(r, Some(Box::new(3))).unwrap(), None);
        // Nothing ran or was counted: the listener still waits, the root keeps its listener.
        assert_eq!(g.pop_ready(0), None);
        assert_eq!(g.remaining_dependencies(a).unwrap(), 1);
        assert_eq!(g.remaining_listeners(r).unwrap(), 1);
        assert_eq!(**g.value(r).unwrap().unwrap(), 3);
        assert!(g.take_events().is_empty());
        assert_eq!(g.replace_value(r, None).unwrap().map(|b| *b), Some(3));
        assert!(!g.done(r).unwrap());
        assert!(g.replace_value(99, None).is_err());
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
        let result = g.drain(0, &mut released, |node| {
            if node.id() == b {
                Err(GraphError::UnknownId(99))
            } else {
                sum_of_deps(node)
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
        g.drain(base, &mut released, |node| {
            ran.push(node.id());
            sum_of_deps(node)
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
            let src: Vec<Counts> = (0..len as i16)
                .map(|i| Counts {
                    listeners: i,
                    dependencies: -i,
                })
                .collect();
            let mut dst = vec![Counts::default(); len];
            copy_in_pieces(&mut dst, &src);
            assert_eq!(dst, src);
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

    /// More listeners and dependencies than a 16-bit count field holds (see `counts`).
    const WIDE: i64 = 40_000;

    #[test]
    fn counts_wider_than_their_fields_are_exact() {
        let mut g = G::new();
        let r = root(&mut g);
        let ops: Vec<NodeId> = (0..WIDE)
            .map(|_| g.add_node(None, "add", Kind::Op, &[r], None).unwrap())
            .collect();
        let sum = g.add_node(None, "sum", Kind::Op, &ops, None).unwrap();
        g.add_node(None, "null", Kind::Null, &[sum], None).unwrap();
        let mut released = Vec::new();
        g.compile(&mut released);
        assert_eq!(g.remaining_listeners(r).unwrap(), WIDE as i32);
        assert_eq!(g.remaining_dependencies(sum).unwrap(), WIDE as i32);
        g.set_record_events(true);
        g.set_value(r, Box::new(1), &mut released).unwrap();
        g.drain(0, &mut released, sum_of_deps).unwrap();
        assert_eq!(g.value(sum).unwrap().map(|v| **v), Some(1 + 2 * WIDE));
        let events = g.take_events();
        let at = |e: Event| events.iter().position(|&x| x == e).unwrap();
        // The root is released when the last op has its value, not at an earlier refill.
        let last = *ops.last().unwrap();
        assert_eq!(at(Event::Destroy(r)), at(Event::Set(last)) + 1);
        // The sum runs once, after every op.
        let runs = events.iter().filter(|&&e| e == Event::Execute(sum)).count();
        assert_eq!(runs, 1);
        assert!(at(Event::Execute(sum)) > at(Event::Set(last)));
        assert_eq!(g.remaining_listeners(r).unwrap(), 0);
        assert_eq!(g.remaining_dependencies(sum).unwrap(), 0);
    }

    #[test]
    fn counts_stay_exact_far_below_zero() {
        // Storing `a` over and over from outside takes its dependency's listener count and its
        // listener's dependency count far below zero: past `UNCHECKED_STORES` (where counting
        // switches to checked arithmetic) and past what 16 bits hold. A debug build would panic
        // on an unchecked overflow.
        let mut g = G::new();
        let r = root(&mut g);
        let a = g.add_node(None, "a", Kind::Op, &[r], None).unwrap();
        let b = g.add_node(None, "b", Kind::Op, &[a], None).unwrap();
        let mut released = Vec::new();
        g.compile(&mut released);
        for _ in 0..WIDE {
            g.set_value(a, Box::new(1), &mut released).unwrap();
        }
        assert!(g.counts_checked());
        assert_eq!(g.remaining_listeners(r).unwrap(), (1 - WIDE) as i32);
        assert_eq!(g.remaining_dependencies(b).unwrap(), (1 - WIDE) as i32);
        assert!(!g.fulfilled(b).unwrap());
        let mut ran = 0;
        g.drain(0, &mut released, |node| {
            ran += 1;
            sum_of_deps(node)
        })
        .unwrap();
        assert_eq!(ran, 1, "b became ready once, on its count's one zero");
        g.compile(&mut released);
        assert_eq!(g.remaining_listeners(r).unwrap(), 1);
        assert_eq!(g.remaining_dependencies(b).unwrap(), 1);
    }

    #[test]
    fn a_host_completing_what_it_pops_keeps_counts_unchecked() {
        // The bindings' loop: pop a node, run it, `set_value` it. Those stores are first
        // stores, so however long the run, it never needs checked arithmetic.
        let mut g = G::new();
        let mut prev = root(&mut g);
        for _ in 0..2 * UNCHECKED_STORES {
            prev = g.add_node(None, "add", Kind::Op, &[prev], None).unwrap();
        }
        g.add_node(None, "null", Kind::Null, &[prev], None).unwrap();
        let mut released = Vec::new();
        g.compile(&mut released);
        g.set_value(g.root().unwrap(), Box::new(0), &mut released)
            .unwrap();
        let mut popped = 0;
        while let Some(id) = g.pop_ready(0) {
            let dep = g.dependencies(id).unwrap()[0];
            let value = **g.value(dep).unwrap().unwrap() + 1;
            if popped == 7 {
                // A host may also set the node it runs: that store is counted, its
                // completion not.
                g.set_value(id, Box::new(value), &mut released).unwrap();
            }
            g.set_value(id, Box::new(value), &mut released).unwrap();
            popped += 1;
        }
        assert_eq!(popped, 2 * UNCHECKED_STORES);
        assert!(!g.counts_checked());
        assert_eq!(
            g.unchecked_stores_left,
            UNCHECKED_STORES - 2,
            "the root and the repeat"
        );
        assert_eq!(g.value(prev).unwrap().map(|v| **v), Some(i64::from(popped)));
    }

    #[test]
    fn counts_set_from_outside_may_be_any_i32() {
        let mut g = G::new();
        let r = root(&mut g);
        let a = g.add_node(None, "a", Kind::Op, &[r], None).unwrap();
        let mut released = Vec::new();
        g.compile(&mut released);
        for n in [i32::MAX, 100_000, 32_768, -32_769, i32::MIN + 1] {
            g.set_remaining_dependencies(a, n).unwrap();
            g.set_remaining_listeners(a, n).unwrap();
            assert_eq!(g.remaining_dependencies(a).unwrap(), n);
            assert_eq!(g.remaining_listeners(a).unwrap(), n);
        }
        // Two left: the first store of `r` leaves one, the second makes `a` ready.
        g.set_remaining_dependencies(a, 2).unwrap();
        g.set_value(r, Box::new(1), &mut released).unwrap();
        assert_eq!(g.frame_base(), 0);
        g.set_value(r, Box::new(1), &mut released).unwrap();
        assert_eq!(g.pop_ready(0), Some(a));
    }
}
