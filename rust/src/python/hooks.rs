//! `OutputHook`: the forward hook a trace's run puts on every module whose output it reads.
//!
//! One object serves every hooked module. A call counts the module's calls and, for a call
//! read by a single invoke that owns the whole batch (a plain `model.trace(x)`), sets the
//! argument node's value and runs what becomes ready, all without a Python frame. Anything
//! else (a pending swap, rows of several invokes) goes to the interleaver's Python fallback.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3::{intern, PyTraverseError, PyVisit};
use rustc_hash::FxHashMap;

use super::core::PyGraphCore;
use crate::graph::NodeId;

/// One hooked module.
struct Hooked {
    module: Py<PyAny>,
    /// The module's `_forward_hooks`, holding this hook under `hook_id`.
    table: Py<PyAny>,
    hook_id: Py<PyAny>,
    calls: u32,
    /// Call -> the argument node that takes the whole output as it is.
    whole: FxHashMap<u32, NodeId>,
    /// Whether the graph reads other calls (the fallback handles them).
    others: bool,
    /// The last call the graph reads.
    last: u32,
}

struct Run {
    core: Py<PyGraphCore>,
    nodes: Py<PyAny>,
    fallback: Py<PyAny>,
}

/// The output hook of one run (see the module docs), made by the interleaver.
#[pyclass(module = "nnsight._core")]
pub struct OutputHook {
    /// The graph's core, its `_nodes`, and `fallback(slot, call, output, fed)`: `fed` is
    /// `(node_id, swap_id)` when the whole output was just given to `node_id` and swap
    /// `swap_id` is now pending, None when the call is not a whole-batch one. Dropped by
    /// `remove`: the fallback is a method of the interleaver holding this hook, and that
    /// cycle must not outlive the run.
    run: Option<Run>,
    /// Module address -> its slot in `hooked`.
    slots: FxHashMap<usize, u32>,
    hooked: Vec<Hooked>,
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

    /// Hooks `module`, writing this hook into its `_forward_hooks` under `hook_id` as
    /// `register_forward_hook` would; `whole` maps calls to the node taking the whole output,
    /// `others` says whether other calls are read, `last` is the last call read. Returns the
    /// module's slot, or None (nothing done) for a module already hooked or without a
    /// `_forward_hooks` dict.
    fn add(
        slf: &Bound<'_, Self>,
        module: &Bound<'_, PyAny>,
        whole: &Bound<'_, PyDict>,
        others: bool,
        last: u32,
        hook_id: &Bound<'_, PyAny>,
    ) -> PyResult<Option<u32>> {
        let py = slf.py();
        let address = module.as_ptr() as usize;
        if slf.borrow().slots.contains_key(&address) {
            return Ok(None);
        }
        let table = match module.getattr(intern!(py, "_forward_hooks")) {
            Ok(table) if table.is_instance_of::<PyDict>() => table,
            _ => return Ok(None),
        };
        let mut calls = FxHashMap::default();
        for (call, node) in whole.iter() {
            calls.insert(call.extract::<u32>()?, node.extract::<NodeId>()?);
        }
        table.set_item(hook_id, slf)?;
        let mut this = slf.borrow_mut();
        let slot = this.hooked.len() as u32;
        this.slots.insert(address, slot);
        this.hooked.push(Hooked {
            module: module.clone().unbind(),
            table: table.unbind(),
            hook_id: hook_id.clone().unbind(),
            calls: 0,
            whole: calls,
            others,
            last,
        });
        Ok(Some(slot))
    }

    /// How many times the module in `slot` was called so far.
    fn calls(&self, slot: u32) -> u32 {
        self.hooked
            .get(slot as usize)
            .map_or(0, |hooked| hooked.calls)
    }

    /// Slots whose module ran fewer times than the graph reads (`.next()` past the last call).
    fn short(&self) -> Vec<u32> {
        (0..)
            .zip(&self.hooked)
            .filter(|(_, hooked)| hooked.calls <= hooked.last)
            .map(|(slot, _)| slot)
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
            table
                .bind(py)
                .call_method1(intern!(py, "pop"), (hook_id.bind(py), py.None()))?;
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
        let (slot, call, node, others, core, nodes, fallback) = {
            let mut this = slf.borrow_mut();
            let Some(&slot) = this.slots.get(&(module.as_ptr() as usize)) else {
                return Ok(py.None());
            };
            let hooked = &mut this.hooked[slot as usize];
            let call = hooked.calls;
            hooked.calls += 1;
            let (node, others) = (hooked.whole.get(&call).copied(), hooked.others);
            let Some(run) = &this.run else {
                return Ok(py.None()); // removed (slots is empty then too)
            };
            (
                slot,
                call,
                node,
                others,
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
                    Some(swap) => Ok(fallback.call1(py, (slot, call, output, (id, swap)))?),
                }
            }
            None if others => Ok(fallback.call1(py, (slot, call, output, py.None()))?),
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
