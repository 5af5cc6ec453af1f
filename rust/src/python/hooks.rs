//! `OutputHook`: the forward hook a trace's run puts on every module whose output it reads.
//!
//! One object serves every hooked module. `install` plans the run from the trace's reads
//! (`ModuleReads`) and writes the hook into each module's `_forward_hooks`. A call counts the
//! module's calls and, for a call read by a single invoke that owns the whole batch (a plain
//! `model.trace(x)`), sets the argument node's value and runs what becomes ready, all without
//! a Python frame. Anything else (a pending swap, rows of several invokes) goes to the
//! interleaver's Python fallback; reads the hook cannot take (module inputs, a module at two
//! paths) are handed back to the interleaver to hook in Python.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use pyo3::{intern, PyTraverseError, PyVisit};
use rustc_hash::{FxHashMap, FxHashSet};

use super::core::PyGraphCore;
use super::reads::{request, ModuleReads, Read};
use crate::graph::NodeId;

/// One hooked module.
struct Hooked {
    module: Py<PyAny>,
    path: Py<PyString>,
    /// The module's `_forward_hooks` (an `OrderedDict`: written through the mapping
    /// protocol, never `PyDict_SetItem`, which would skip its order list), holding this hook
    /// under `hook_id`.
    table: Py<PyAny>,
    hook_id: Py<PyAny>,
    calls: u32,
    /// Call -> the argument node that takes the whole output as it is.
    whole: FxHashMap<u32, NodeId>,
    /// Calls read otherwise (rows of several invokes): the fallback handles them.
    others: Vec<u32>,
    /// Every `(call, node)` the graph reads of this module.
    reads: Vec<(u32, NodeId)>,
}

struct Run {
    core: Py<PyGraphCore>,
    nodes: Py<PyAny>,
    fallback: Py<PyAny>,
}

/// The output hook of one run (see the module docs), made by the interleaver.
#[pyclass(module = "nnsight._core")]
pub struct OutputHook {
    /// The graph's core, its `_nodes`, and `fallback(path, call, output, fed)`: `fed` is
    /// `(node_id, swap_id)` when the whole output was just given to `node_id` and swap
    /// `swap_id` is now pending, None for a call of `others`. Dropped by `remove`: the
    /// fallback is a method of the interleaver holding this hook, and that cycle must not
    /// outlive the run.
    run: Option<Run>,
    /// Module address -> its slot in `hooked`.
    slots: FxHashMap<usize, u32>,
    hooked: Vec<Hooked>,
}

/// The live reads of one module value, in the order first read.
struct Group {
    envoy: Py<PyAny>,
    path: Py<PyString>,
    output: bool,
    reads: Vec<Read>,
}

/// Groups the reads of `reads` whose nodes are not dead by envoy and kind.
fn live_groups(py: Python<'_>, reads: &ModuleReads, dead: &[NodeId]) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    let mut by_key: FxHashMap<(u32, bool), usize> = FxHashMap::default();
    for read in &reads.reads {
        if dead.binary_search(&read.node).is_ok() {
            continue;
        }
        let at = *by_key.entry((read.envoy, read.output)).or_insert_with(|| {
            let addressed = &reads.envoys[read.envoy as usize];
            groups.push(Group {
                envoy: addressed.envoy.clone_ref(py),
                path: addressed.path.clone_ref(py),
                output: read.output,
                reads: Vec::new(),
            });
            groups.len() - 1
        });
        groups[at].reads.push(*read);
    }
    groups
}

#[pymethods]
impl OutputHook {
    #[new]
    fn new(core: Py<PyGraphCore>, nodes: Py<PyAny>, fallback: Py<PyAny>) -> Self {
        Self {
            run: Some(Run {
                core,
                nodes,
                fallback,
            }),
            slots: FxHashMap::default(),
            hooked: Vec::new(),
        }
    }

    /// Hooks every module whose output the live reads of `reads` (those dead-code elimination
    /// left) take, writing this hook into its `_forward_hooks` under an id from torch's
    /// counter `handle_type.next_id`, as `register_forward_hook` would; `total` is the batch
    /// size. Returns `(own, fallback)`, lists of `(path, kind, call, node id, start, rows)`:
    /// `own` are reads the caller must hook itself (module inputs, a module at a second path
    /// or without a `_forward_hooks` dict), `fallback` the reads of hooked modules this hook
    /// hands to the fallback (calls read by several invokes).
    #[allow(clippy::type_complexity)]
    fn install<'py>(
        slf: &Bound<'py, Self>,
        reads: &Bound<'py, ModuleReads>,
        total: usize,
        handle_type: &Bound<'py, PyAny>,
    ) -> PyResult<(Vec<Bound<'py, PyTuple>>, Vec<Bound<'py, PyTuple>>)> {
        let py = slf.py();
        let groups = {
            let this = slf.borrow();
            let Some(run) = &this.run else {
                return Ok((Vec::new(), Vec::new())); // removed
            };
            let core = run.core.bind(py).borrow();
            live_groups(py, &reads.borrow(), core.dead_nodes())
        };
        let mut own = Vec::new();
        let mut fallback = Vec::new();
        let mut hookable = Vec::new();
        let mut seen: FxHashSet<usize> = FxHashSet::default();
        for group in groups {
            let path = group.path.bind(py);
            if !group.output {
                for read in &group.reads {
                    own.push(request(py, path, read)?);
                }
                continue;
            }
            let module = group.envoy.bind(py).getattr(intern!(py, "_module"))?;
            let address = module.as_ptr() as usize;
            let table = module
                .getattr(intern!(py, "_forward_hooks"))
                .ok()
                .filter(|table| table.is_instance_of::<PyDict>());
            let fresh = !slf.borrow().slots.contains_key(&address) && !seen.contains(&address);
            match table {
                Some(table) if fresh => {
                    seen.insert(address);
                    hookable.push((group, module, table));
                }
                _ => {
                    for read in &group.reads {
                        own.push(request(py, path, read)?);
                    }
                }
            }
        }
        // Hook ids: as many as needed, taken from torch's counter at once.
        let first: u64 = handle_type.getattr(intern!(py, "next_id"))?.extract()?;
        handle_type.setattr(intern!(py, "next_id"), first + hookable.len() as u64)?;
        for (hook_id, (group, module, table)) in (first..).zip(hookable) {
            let mut per_call: FxHashMap<u32, (u32, Option<NodeId>)> = FxHashMap::default();
            for read in &group.reads {
                let whole = (read.start == 0 && read.size == total).then_some(read.node);
                per_call
                    .entry(read.call)
                    .and_modify(|(count, _)| *count += 1)
                    .or_insert((1, whole));
            }
            let mut whole = FxHashMap::default();
            let mut others = Vec::new();
            for (&call, &(count, node)) in &per_call {
                match node {
                    Some(node) if count == 1 => {
                        whole.insert(call, node);
                    }
                    _ => others.push(call),
                }
            }
            for read in &group.reads {
                if others.contains(&read.call) {
                    fallback.push(request(py, group.path.bind(py), read)?);
                }
            }
            let hook_id = hook_id.into_pyobject(py)?.into_any();
            table.set_item(&hook_id, slf)?;
            let mut this = slf.borrow_mut();
            let slot = this.hooked.len() as u32;
            this.slots.insert(module.as_ptr() as usize, slot);
            this.hooked.push(Hooked {
                module: module.unbind(),
                path: group.path,
                table: table.unbind(),
                hook_id: hook_id.unbind(),
                calls: 0,
                whole,
                others,
                reads: group
                    .reads
                    .iter()
                    .map(|read| (read.call, read.node))
                    .collect(),
            });
        }
        Ok((own, fallback))
    }

    /// The reads of hooked modules whose call never came (`.next()` past the module's last
    /// call), as `(path, call, calls made, node id)`.
    fn unreached<'py>(&self, py: Python<'py>) -> Vec<(Bound<'py, PyString>, u32, u32, NodeId)> {
        self.hooked
            .iter()
            .flat_map(|hooked| {
                hooked
                    .reads
                    .iter()
                    .filter(|(call, _)| *call >= hooked.calls)
                    .map(|&(call, node)| (hooked.path.bind(py).clone(), call, hooked.calls, node))
            })
            .collect()
    }

    /// Takes the hook out of every module it was added to (again: a no-op). Call counts stay.
    fn remove(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let tables: Vec<_> = {
            let mut this = slf.borrow_mut();
            this.slots.clear();
            this.run = None;
            this.hooked
                .iter()
                .map(|hooked| (hooked.table.clone_ref(py), hooked.hook_id.clone_ref(py)))
                .collect()
        };
        for (table, hook_id) in tables {
            let table = table.bind(py);
            if table.contains(&hook_id)? {
                table.del_item(&hook_id)?;
            }
        }
        Ok(())
    }

    fn __call__(
        slf: &Bound<'_, Self>,
        module: &Bound<'_, PyAny>,
        _args: &Bound<'_, PyAny>,
        output: Bound<'_, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        // Borrowed only here: the graph may run code that calls a hooked module again.
        let (path, call, node, other, core, nodes, fallback) = {
            let mut this = slf.borrow_mut();
            let Some(&slot) = this.slots.get(&(module.as_ptr() as usize)) else {
                return Ok(py.None());
            };
            let hooked = &mut this.hooked[slot as usize];
            let call = hooked.calls;
            hooked.calls += 1;
            let node = hooked.whole.get(&call).copied();
            let other = node.is_none() && hooked.others.contains(&call);
            let path = hooked.path.clone_ref(py);
            let Some(run) = &this.run else {
                return Ok(py.None()); // removed (slots is empty then too)
            };
            (
                path,
                call,
                node,
                other,
                run.core.clone_ref(py),
                run.nodes.clone_ref(py),
                run.fallback.clone_ref(py),
            )
        };
        match node {
            Some(id) => {
                let swap = PyGraphCore::feed(
                    core.bind(py),
                    id,
                    output.clone().unbind(),
                    Some(nodes.bind(py)),
                )?;
                match swap {
                    None => Ok(py.None()),
                    Some(swap) => Ok(fallback.call1(py, (path, call, output, (id, swap)))?),
                }
            }
            None if other => Ok(fallback.call1(py, (path, call, output, py.None()))?),
            None => Ok(py.None()),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(run) = &self.run {
            visit.call(&run.core)?;
            visit.call(&run.nodes)?;
            visit.call(&run.fallback)?;
        }
        for hooked in &self.hooked {
            visit.call(&hooked.module)?;
            visit.call(&hooked.path)?;
            visit.call(&hooked.table)?;
            visit.call(&hooked.hook_id)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.run = None;
        self.hooked.clear();
        self.slots.clear();
    }
}
