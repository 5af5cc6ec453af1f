//! `ModuleReads`: the module values one trace's envoys asked for.
//!
//! `model.layer.output` inside a trace stands for one call of one module, in one invoke. The
//! first read adds an `argument` node keyed `"<path>.output.<call>"`; later reads of the same
//! call in the same invoke get the same proxy. This keeps, per trace, which call each envoy
//! addresses (moved on by `.next()`), the proxy of every (envoy, kind, call, invoke), and every
//! read in the order it was made: the run's hooks are planned from that list
//! (`OutputHook.install`). A read is one core call, with no Python frame of the tracer's.

use std::fmt::Write;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};
use rustc_hash::FxHashMap;

use super::core::{new_bare, set_slot, PyGraphCore};
use super::slots::MemberSlot;
use super::source::SourceFinder;
use crate::graph::NodeId;

/// Reads (and envoys) a trace has room for before its lists and maps grow: they are made anew
/// for every trace, and growing them from empty was ~550 instructions per read.
const READS_RESERVED: usize = 32;

/// An envoy the trace has seen.
pub(super) struct Addressed {
    pub envoy: Py<PyAny>,
    /// Its `path` (`".transformer.h.0"`).
    pub path: Py<PyString>,
    /// The call its reads address, counted from 0 and moved on by `advance`.
    call: u32,
}

/// One module value read: node `node` takes `rows` of call `call` of the module at envoy
/// `envoy` (an index into `ModuleReads::envoys`).
#[derive(Clone, Copy)]
pub(super) struct Read {
    pub envoy: u32,
    pub output: bool,
    pub call: u32,
    pub node: NodeId,
    pub start: usize,
    pub size: usize,
}

/// The invoke reads are made for, while one is open.
struct OpenInvoke {
    index: u32,
    start: usize,
    size: usize,
    /// Its scan context (`ScanContext`), or None with the scan off.
    scan: Py<PyAny>,
}

/// What a read's node is made with: the graph's core and `_nodes`, the proxy and proxy-value
/// types, and the source finder.
struct Maker {
    core: Py<PyGraphCore>,
    nodes: Py<PyList>,
    proxy_type: Py<PyType>,
    value_type: Py<PyType>,
    /// `value_type`'s `_ctx` and `_key` slots, where it has them as plain object slots.
    value_slots: Option<(MemberSlot, MemberSlot)>,
    finder: Py<SourceFinder>,
}

impl Maker {
    /// A bare `value_type` instance (a `ScannedValue`) whose `_ctx` and `_key` slots are
    /// `scan` and `key`. Runs no Python code: the type's allocator, then two slot writes.
    fn scanned_value<'py>(
        &self,
        scan: &Bound<'py, PyAny>,
        key: &Bound<'py, PyString>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = scan.py();
        let value = new_bare(self.value_type.bind(py))?;
        let direct = self
            .value_slots
            .as_ref()
            .is_some_and(|(ctx, slot)| ctx.set(&value, scan) && slot.set(&value, key));
        if !direct {
            set_slot(&value, intern!(py, "_ctx"), scan)?;
            set_slot(&value, intern!(py, "_key"), key)?;
        }
        Ok(value)
    }
}

/// The reads of one trace (see the module docs), made by the tracer.
#[pyclass(module = "nnsight._core")]
pub struct ModuleReads {
    maker: Option<Maker>,
    pub(super) envoys: Vec<Addressed>,
    /// Envoy address -> index in `envoys` (each held there, so the address stays its own).
    index: FxHashMap<usize, u32>,
    /// (envoy, output, call, invoke) -> proxy.
    values: FxHashMap<(u32, bool, u32, u32), Py<PyAny>>,
    pub(super) reads: Vec<Read>,
    invoke: Option<OpenInvoke>,
}

fn parse_kind(kind: &Bound<'_, PyString>) -> PyResult<bool> {
    match kind.to_str()? {
        "output" => Ok(true),
        "input" => Ok(false),
        other => Err(PyValueError::new_err(format!(
            "a module value is 'output' or 'input', not {other:?}"
        ))),
    }
}

pub(super) fn kind_name(output: bool) -> &'static str {
    if output {
        "output"
    } else {
        "input"
    }
}

/// The argument key of a read, `"<path>.<kind>.<call>"`, built from the path's UTF-8: `format!`
/// with the path as a Python string went through `str()`, ~1.6k instructions of a read's ~7.7k.
fn argument_key(path: &str, output: bool, call: u32) -> String {
    let kind = kind_name(output);
    let mut key = String::with_capacity(path.len() + kind.len() + 12);
    key.push_str(path);
    key.push('.');
    key.push_str(kind);
    key.push('.');
    let _ = write!(key, "{call}"); // writing to a String cannot fail
    key
}

/// `read` as the interleaver's Python takes it: `(path, kind, call, node id, start, rows)`.
pub(super) fn request<'py>(
    py: Python<'py>,
    path: &Bound<'py, PyString>,
    read: &Read,
) -> PyResult<Bound<'py, PyTuple>> {
    (
        path,
        kind_name(read.output),
        read.call,
        read.node,
        read.start,
        read.size,
    )
        .into_pyobject(py)
}

impl ModuleReads {
    /// The index of `envoy` in `envoys`, adding it (and reading its `path`) on first sight.
    fn envoy_index(slf: &Bound<'_, Self>, envoy: &Bound<'_, PyAny>) -> PyResult<u32> {
        let address = envoy.as_ptr() as usize;
        if let Some(&index) = slf.borrow().index.get(&address) {
            return Ok(index);
        }
        let path = envoy
            .getattr(intern!(slf.py(), "path"))?
            .cast_into::<PyString>()?
            .unbind();
        let mut this = slf.borrow_mut();
        let index = this.envoys.len() as u32;
        this.envoys.push(Addressed {
            envoy: envoy.clone().unbind(),
            path,
            call: 0,
        });
        this.index.insert(address, index);
        Ok(index)
    }

    /// The cache key of `envoy`'s value of this kind at its current call in the open invoke.
    fn key(
        slf: &Bound<'_, Self>,
        envoy: &Bound<'_, PyAny>,
        kind: &Bound<'_, PyString>,
    ) -> PyResult<Option<(u32, bool, u32, u32)>> {
        let output = parse_kind(kind)?;
        let Some(invoke) = slf.borrow().invoke.as_ref().map(|invoke| invoke.index) else {
            return Ok(None);
        };
        let index = Self::envoy_index(slf, envoy)?;
        let call = slf.borrow().envoys[index as usize].call;
        Ok(Some((index, output, call, invoke)))
    }
}

#[pymethods]
impl ModuleReads {
    #[new]
    fn new(
        py: Python<'_>,
        core: Py<PyGraphCore>,
        nodes: Py<PyList>,
        proxy_type: Py<PyType>,
        value_type: Py<PyType>,
        finder: Py<SourceFinder>,
    ) -> Self {
        let value_slots = {
            let cls = value_type.bind(py);
            MemberSlot::of(cls, "_ctx").zip(MemberSlot::of(cls, "_key"))
        };
        Self {
            maker: Some(Maker {
                core,
                nodes,
                proxy_type,
                value_type,
                value_slots,
                finder,
            }),
            envoys: Vec::with_capacity(READS_RESERVED),
            index: FxHashMap::with_capacity_and_hasher(READS_RESERVED, Default::default()),
            values: FxHashMap::with_capacity_and_hasher(READS_RESERVED, Default::default()),
            reads: Vec::with_capacity(READS_RESERVED),
            invoke: None,
        }
    }

    /// Reads from now on are for the invoke numbered `index`, whose rows are
    /// `start..start + size`, its values scanned with `scan` (None: no scan). Every envoy
    /// addresses its first call again, as in nnsight 0.2 (`.next()` holds within an invoke).
    fn open_invoke(&mut self, index: u32, start: usize, size: usize, scan: Py<PyAny>) {
        for addressed in &mut self.envoys {
            addressed.call = 0;
        }
        self.invoke = Some(OpenInvoke {
            index,
            start,
            size,
            scan,
        });
    }

    /// No invoke is open from now on.
    fn close_invoke(&mut self) {
        self.invoke = None;
    }

    /// The proxy of `envoy`'s `kind` (`"output"` or `"input"`) at its current call, for the
    /// open invoke: the one made before, or a new `argument` node's. None when no invoke is
    /// open (the caller says why that is an error).
    fn read<'py>(
        slf: &Bound<'py, Self>,
        envoy: &Bound<'py, PyAny>,
        kind: &Bound<'py, PyString>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let Some(key) = Self::key(slf, envoy, kind)? else {
            return Ok(None);
        };
        // Borrowed only here: adding the node runs Python (the source finder, the proxy type).
        let (index, output, call, _) = key;
        let (maker, argument_key, value, start, size) = {
            let this = slf.borrow();
            if let Some(proxy) = this.values.get(&key) {
                return Ok(Some(proxy.bind(py).clone()));
            }
            let (Some(maker), Some(invoke)) = (&this.maker, &this.invoke) else {
                return Ok(None); // cleared
            };
            let path = this.envoys[index as usize].path.bind(py);
            let argument_key = PyString::new(py, &argument_key(path.to_str()?, output, call));
            let scan = invoke.scan.bind(py);
            let value = if scan.is_none() {
                None
            } else {
                Some(maker.scanned_value(scan, &argument_key)?)
            };
            (
                (
                    maker.core.clone_ref(py),
                    maker.nodes.clone_ref(py),
                    maker.proxy_type.clone_ref(py),
                    maker.finder.clone_ref(py),
                ),
                argument_key,
                value,
                invoke.start,
                invoke.size,
            )
        };
        let (core, nodes, proxy_type, finder) = maker;
        let (proxy, node) = PyGraphCore::add_argument(
            core.bind(py),
            proxy_type.bind(py),
            nodes.bind(py),
            argument_key,
            size.into_pyobject(py)?.into_any(),
            start.into_pyobject(py)?.into_any(),
            value,
            finder.bind(py),
        )?;
        let mut this = slf.borrow_mut();
        this.values.insert(key, proxy.clone().unbind());
        this.reads.push(Read {
            envoy: index,
            output,
            call,
            node,
            start,
            size,
        });
        Ok(Some(proxy))
    }

    /// Records that `node`, an `argument` node already in the graph, reads call `call` of
    /// `envoy`'s `kind` for rows `start..start + size`: a graph rebuilt from a message
    /// (`nnsight.serialization`) is planned from the same list of reads as a traced one.
    #[allow(clippy::too_many_arguments)] // the six fields of a read, as the interleaver has them
    fn register(
        slf: &Bound<'_, Self>,
        envoy: &Bound<'_, PyAny>,
        kind: &Bound<'_, PyString>,
        call: u32,
        node: NodeId,
        start: usize,
        size: usize,
    ) -> PyResult<()> {
        let output = parse_kind(kind)?;
        let index = Self::envoy_index(slf, envoy)?;
        slf.borrow_mut().reads.push(Read {
            envoy: index,
            output,
            call,
            node,
            start,
            size,
        });
        Ok(())
    }

    /// Forgets the proxy `read` hands out for `envoy`'s `kind` at its current call in the open
    /// invoke: after a swap, later reads get a new node, set once the swap is applied.
    fn forget(
        slf: &Bound<'_, Self>,
        envoy: &Bound<'_, PyAny>,
        kind: &Bound<'_, PyString>,
    ) -> PyResult<()> {
        if let Some(key) = Self::key(slf, envoy, kind)? {
            slf.borrow_mut().values.remove(&key);
        }
        Ok(())
    }

    /// Moves `envoy`'s reads `steps` calls on (`.next()`).
    fn advance(slf: &Bound<'_, Self>, envoy: &Bound<'_, PyAny>, steps: u32) -> PyResult<()> {
        let index = Self::envoy_index(slf, envoy)?;
        let mut this = slf.borrow_mut();
        let addressed = &mut this.envoys[index as usize];
        addressed.call = addressed
            .call
            .checked_add(steps)
            .ok_or_else(|| PyValueError::new_err(format!("too many .next() steps ({steps})")))?;
        Ok(())
    }

    /// The call `envoy`'s reads address now (0: the first; `tracer.iter`).
    fn call(slf: &Bound<'_, Self>, envoy: &Bound<'_, PyAny>) -> PyResult<u32> {
        let index = Self::envoy_index(slf, envoy)?;
        Ok(slf.borrow().envoys[index as usize].call)
    }

    /// Makes `envoy`'s reads address call `call` from now on (`tracer.iter`).
    fn set_call(slf: &Bound<'_, Self>, envoy: &Bound<'_, PyAny>, call: u32) -> PyResult<()> {
        let index = Self::envoy_index(slf, envoy)?;
        slf.borrow_mut().envoys[index as usize].call = call;
        Ok(())
    }

    /// Drops everything held: the trace is over.
    fn clear(&mut self) {
        self.__clear__();
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(maker) = &self.maker {
            visit.call(&maker.core)?;
            visit.call(&maker.nodes)?;
            visit.call(&maker.proxy_type)?;
            visit.call(&maker.value_type)?;
            if let Some((ctx, key)) = &maker.value_slots {
                visit.call(ctx.owner())?;
                visit.call(key.owner())?;
            }
            visit.call(&maker.finder)?;
        }
        for addressed in &self.envoys {
            visit.call(&addressed.envoy)?;
            visit.call(&addressed.path)?;
        }
        for proxy in self.values.values() {
            visit.call(proxy)?;
        }
        if let Some(invoke) = &self.invoke {
            visit.call(&invoke.scan)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.maker = None;
        self.envoys.clear();
        self.index.clear();
        self.values.clear();
        self.reads.clear();
        self.invoke = None;
    }
}
