//! `GraphCore`: a [`Graph`] of Python values plus the fast execution path for op nodes.
//!
//! Op nodes whose node references all sit at the top level of their args/kwargs get a
//! [`CallPlan`]: executing one builds the argument tuple in Rust, moves tensors to the first
//! tensor's device when they differ, and calls the target, with no Python frame of ours in
//! between. Every other executable node is run by calling `nodes[id]._run()` on the Python
//! `Node` list the caller passes in (the core never stores Python `Node` objects, so it forms no
//! reference cycle with them).
//!
//! Re-entrancy: the borrow of `self` is never held across a call into Python, so a target may
//! set values on this very graph (a model hook does); that call drains its own frame.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use crate::graph::{Event, Graph, Kind, NodeId};

pyo3::create_exception!(
    _core,
    ForeignNode,
    pyo3::exceptions::PyException,
    "Raised by `GraphCore.add_linked` with the node of another graph as its argument."
);

pub fn register(m: &Bound<'_, pyo3::types::PyModule>) -> PyResult<()> {
    m.add("ForeignNode", m.py().get_type::<ForeignNode>())
}

/// One positional or keyword argument of a fast call.
enum Slot {
    Const(Py<PyAny>),
    Node(NodeId),
}

/// How to call an op node's target without going through Python code of ours.
struct CallPlan {
    target: Py<PyAny>,
    args: Vec<Slot>,
    kwargs: Vec<(Py<PyString>, Slot)>,
}

enum Plan {
    /// Not executed by the core, or executed by the Python `Node._run`.
    Python,
    Call(CallPlan),
}

/// What the drain loop does with the node it popped, decided while `self` is borrowed.
enum Step<'py> {
    Call {
        target: Bound<'py, PyAny>,
        args: Bound<'py, PyTuple>,
        kwargs: Option<Bound<'py, PyDict>>,
    },
    Python,
    Swap,
}

fn parse_kind(kind: &str) -> PyResult<Kind> {
    Ok(match kind {
        "op" => Kind::Op,
        "argument" => Kind::Argument,
        "swap" => Kind::Swap,
        "null" => Kind::Null,
        "grad" => Kind::Grad,
        other => {
            return Err(PyValueError::new_err(format!(
                "unknown node kind '{other}'"
            )))
        }
    })
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Op => "op",
        Kind::Argument => "argument",
        Kind::Swap => "swap",
        Kind::Null => "null",
        Kind::Grad => "grad",
    }
}

/// `add_linked`'s result: the new id and the linked copies of args and kwargs.
type Linked<'py> = (i64, Bound<'py, PyList>, Bound<'py, PyDict>);

/// nnsight's automatic-name stem of a callable target: its `__name__` when that is a string,
/// else the name of its type (as `nnsight.tracing.Node.target_name` does).
fn target_name<'py>(target: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyString>> {
    let py = target.py();
    if let Ok(name) = target.getattr(intern!(py, "__name__")) {
        if let Ok(name) = name.cast_into::<PyString>() {
            return Ok(name);
        }
    }
    target.get_type().name()
}

/// A bare instance of a Python class (`object.__new__(cls)`): no `__init__` runs.
fn new_bare<'py>(cls: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let object = py.get_type::<pyo3::types::PyAny>();
    object.call_method1(intern!(py, "__new__"), (cls,))
}

/// Sets an attribute the way `object.__setattr__` does, so a class's own `__setattr__` (the
/// Proxy's traces assignments) is bypassed and the slot descriptor is used.
fn set_slot(
    obj: &Bound<'_, PyAny>,
    name: &Bound<'_, PyString>,
    value: &Bound<'_, PyAny>,
) -> PyResult<()> {
    // SAFETY: all three pointers are valid, GIL-held objects for the duration of the call.
    let status =
        unsafe { pyo3::ffi::PyObject_GenericSetAttr(obj.as_ptr(), name.as_ptr(), value.as_ptr()) };
    if status == 0 {
        Ok(())
    } else {
        Err(PyErr::fetch(obj.py()))
    }
}

fn to_id(id: i64) -> Option<NodeId> {
    NodeId::try_from(id).ok()
}

/// Node storage, names and propagation for one `nnsight.tracing.Graph`.
#[pyclass(name = "GraphCore", module = "nnsight._core")]
pub struct PyGraphCore {
    graph: Graph<Py<PyAny>>,
    plans: Vec<Plan>,
    /// The "no value" sentinel (`inspect._empty`): what `value` returns for an unset node, and
    /// what `Node._run` returns when a node sets no value now.
    empty: Py<PyAny>,
    /// `torch.Tensor`, for the device check of fast calls (`None`: no device handling).
    tensor_type: Option<Py<PyType>>,
    /// `nnsight.tracing.Proxy` and `Node`, for `add_linked`'s argument scan.
    proxy_type: Option<Py<PyType>>,
    node_type: Option<Py<PyType>>,
}

/// The Python types `add_linked` tells apart, cloned out of the core for one scan.
struct ScanTypes {
    proxy: Option<Py<PyType>>,
    node: Option<Py<PyType>>,
    tensor: Option<Py<PyType>>,
}

/// Whether a container (list, tuple, dict or slice, at any depth) holds a proxy, a node or a
/// tensor. A top-level proxy, node or tensor is not "held": the caller handles those.
fn holds_special(item: &Bound<'_, PyAny>, types: &ScanTypes) -> PyResult<bool> {
    let special = |value: &Bound<'_, PyAny>| -> PyResult<bool> {
        Ok(is_subtype(value, &types.proxy)
            || is_subtype(value, &types.node)
            || is_subtype(value, &types.tensor)
            || holds_special(value, types)?)
    };
    if let Ok(list) = item.cast::<PyList>() {
        for value in list.iter() {
            if special(&value)? {
                return Ok(true);
            }
        }
    } else if let Ok(tuple) = item.cast::<PyTuple>() {
        for value in tuple.iter() {
            if special(&value)? {
                return Ok(true);
            }
        }
    } else if let Ok(dict) = item.cast::<PyDict>() {
        for (_, value) in dict.iter() {
            if special(&value)? {
                return Ok(true);
            }
        }
    } else if let Ok(slice) = item.cast::<pyo3::types::PySlice>() {
        for attr in ["start", "stop", "step"] {
            if special(&slice.getattr(attr)?)? {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

fn is_subtype(value: &Bound<'_, PyAny>, ty: &Option<Py<PyType>>) -> bool {
    match ty {
        // SAFETY: both pointers are valid type objects for as long as the GIL is held.
        Some(ty) => unsafe {
            pyo3::ffi::PyType_IsSubtype(value.get_type_ptr(), ty.as_ptr().cast()) != 0
        },
        None => false,
    }
}

impl PyGraphCore {
    fn slot<'py>(&self, py: Python<'py>, slot: &Slot) -> PyResult<Bound<'py, PyAny>> {
        match slot {
            Slot::Const(value) => Ok(value.bind(py).clone()),
            Slot::Node(dep) => match self.graph.value(*dep)? {
                Some(value) => Ok(value.bind(py).clone()),
                None => Err(PyRuntimeError::new_err(format!(
                    "dependency '{}' has no value (it was never set, or was already destroyed)",
                    self.graph.name(*dep)?
                ))),
            },
        }
    }

    fn is_tensor(&self, value: &Bound<'_, PyAny>) -> bool {
        is_subtype(value, &self.tensor_type)
    }

    /// Links one top-level argument: a proxy is swapped for its node (via `replace`), a node
    /// becomes a dependency and a node slot, anything else a constant slot. `None` when a
    /// container holds nodes, proxies or tensors: the Python walk must take over.
    fn link<'py>(
        slf: &Bound<'py, Self>,
        types: &ScanTypes,
        item: Bound<'py, PyAny>,
        deps: &mut Vec<NodeId>,
        replace: impl FnOnce(&Bound<'py, PyAny>) -> PyResult<()>,
    ) -> PyResult<Option<Slot>> {
        let py = slf.py();
        let mut item = item;
        if is_subtype(&item, &types.proxy) {
            item = item.getattr(intern!(py, "node"))?;
            replace(&item)?;
        }
        if is_subtype(&item, &types.node) {
            if !item.getattr(intern!(py, "_core"))?.is(slf) {
                return Err(ForeignNode::new_err(item.unbind()));
            }
            let id = item.getattr(intern!(py, "id"))?.extract()?;
            deps.push(id);
            return Ok(Some(Slot::Node(id)));
        }
        if holds_special(&item, types)? {
            return Ok(None);
        }
        Ok(Some(Slot::Const(item.unbind())))
    }

    /// Builds the call of a fast op node from its plan and the current values.
    fn prepare_call<'py>(&self, py: Python<'py>, plan: &CallPlan) -> PyResult<Step<'py>> {
        let mut args = Vec::with_capacity(plan.args.len());
        for slot in &plan.args {
            args.push(self.slot(py, slot)?);
        }
        let mut kw_values = Vec::with_capacity(plan.kwargs.len());
        for (_, slot) in &plan.kwargs {
            kw_values.push(self.slot(py, slot)?);
        }
        self.align_devices(py, &mut args, &mut kw_values)?;
        let kwargs = if plan.kwargs.is_empty() {
            None
        } else {
            let dict = PyDict::new(py);
            for ((key, _), value) in plan.kwargs.iter().zip(kw_values) {
                dict.set_item(key.bind(py), value)?;
            }
            Some(dict)
        };
        Ok(Step::Call {
            target: plan.target.bind(py).clone(),
            args: PyTuple::new(py, args)?,
            kwargs,
        })
    }

    /// Moves every tensor to the device of the first one, when there are several on different
    /// devices (nnsight's `prepare_inputs` rule). One tensor, or none, costs a type check each.
    fn align_devices<'py>(
        &self,
        py: Python<'py>,
        args: &mut [Bound<'py, PyAny>],
        kwargs: &mut [Bound<'py, PyAny>],
    ) -> PyResult<()> {
        let mut tensors = args
            .iter_mut()
            .chain(kwargs.iter_mut())
            .filter(|value| self.is_tensor(value));
        let Some(first) = tensors.next() else {
            return Ok(());
        };
        let mut device: Option<Bound<'py, PyAny>> = None;
        for tensor in tensors {
            let device = match &device {
                Some(device) => device,
                None => device.insert(first.getattr(intern!(py, "device"))?),
            };
            if !tensor.getattr(intern!(py, "device"))?.eq(device)? {
                *tensor = tensor.call_method1(intern!(py, "to"), (device,))?;
            }
        }
        Ok(())
    }

    /// Pops the next ready node above `base` and decides how to run it.
    fn next_step<'py>(
        slf: &Bound<'py, Self>,
        base: usize,
    ) -> Option<(NodeId, PyResult<Step<'py>>)> {
        let py = slf.py();
        let mut this = slf.borrow_mut();
        let id = this.graph.pop_ready(base)?;
        let step = match (this.graph.kind(id), &this.plans[id as usize]) {
            (Ok(Kind::Swap), _) => Ok(Step::Swap),
            (_, Plan::Call(plan)) => this.prepare_call(py, plan),
            (_, Plan::Python) => Ok(Step::Python),
        };
        Some((id, step))
    }

    /// Executes ready nodes above `base` until there are none. On an error the execution is
    /// aborted (every value released) and the error, wrapped by `Node._execution_error` so it
    /// names the node and the user's line, is returned.
    fn drain(slf: &Bound<'_, Self>, base: usize, nodes: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let py = slf.py();
        while let Some((id, step)) = Self::next_step(slf, base) {
            let result = step.and_then(|step| match step {
                Step::Call {
                    target,
                    args,
                    kwargs,
                } => target.call(args, kwargs.as_ref()).map(Some),
                Step::Python => match nodes {
                    Some(nodes) => nodes
                        .get_item(id)?
                        .call_method0(intern!(py, "_run"))
                        .map(Some),
                    None => Err(PyRuntimeError::new_err(
                        "the graph this node belongs to no longer exists",
                    )),
                },
                Step::Swap => {
                    slf.borrow_mut().graph.set_swap(Some(id))?;
                    Ok(None)
                }
            });
            match result {
                Ok(Some(value)) if !value.is(slf.borrow().empty.bind(py)) => {
                    Self::store(slf, id, value.unbind())?
                }
                Ok(_) => {}
                Err(err) => return Err(Self::fail(slf, id, err, nodes)),
            }
        }
        Ok(())
    }

    fn store(slf: &Bound<'_, Self>, id: NodeId, value: Py<PyAny>) -> PyResult<()> {
        let mut released = Vec::new();
        let result = slf.borrow_mut().graph.set_value(id, value, &mut released);
        // Dropped with no borrow held: a value's finaliser may call back into this graph.
        drop(released);
        Ok(result?)
    }

    fn fail(
        slf: &Bound<'_, Self>,
        id: NodeId,
        err: PyErr,
        nodes: Option<&Bound<'_, PyAny>>,
    ) -> PyErr {
        let py = slf.py();
        let mut released = Vec::new();
        slf.borrow_mut().graph.abort(&mut released);
        drop(released);
        let Some(nodes) = nodes else { return err };
        let wrapped = nodes
            .get_item(id)
            .and_then(|node| node.call_method1(intern!(py, "_execution_error"), (err.value(py),)));
        match wrapped {
            Ok(exc) => PyErr::from_value(exc),
            Err(wrap_err) => wrap_err,
        }
    }
}

#[pymethods]
impl PyGraphCore {
    #[new]
    #[pyo3(signature = (empty, tensor_type=None, proxy_type=None, node_type=None))]
    fn new(
        empty: Py<PyAny>,
        tensor_type: Option<Py<PyType>>,
        proxy_type: Option<Py<PyType>>,
        node_type: Option<Py<PyType>>,
    ) -> Self {
        Self {
            graph: Graph::new(),
            plans: Vec::new(),
            empty,
            tensor_type,
            proxy_type,
            node_type,
        }
    }

    /// Adds a node whose arguments are scanned here, in one call: the node is named after
    /// `target.__name__` (else its type's name), `args` (a list, a tuple or None) and `kwargs`
    /// (a dict or None) are copied, proxies in them are replaced by their nodes, nodes become
    /// dependencies and fast-call slots, and the core calls the target itself. A reserved
    /// target name (`argument`, `swap`, `null`, `grad`) makes a node of that kind, which the
    /// core does not call. Returns `(id, args, kwargs)` with the linked copies, or None
    /// (nothing added) when a container holds nodes, proxies or tensors, when the target is a
    /// method name, or when an `argument` node lacks a string key: the Python side then walks
    /// the arguments and calls `add_node`. A node of another graph raises `ForeignNode(node)`.
    #[pyo3(signature = (name, target, args=None, kwargs=None))]
    fn add_linked<'py>(
        slf: &Bound<'py, Self>,
        name: Option<&str>,
        target: Bound<'py, PyAny>,
        args: Option<Bound<'py, PyAny>>,
        kwargs: Option<Bound<'py, PyDict>>,
    ) -> PyResult<Option<Linked<'py>>> {
        let py = slf.py();
        let kind = match target.cast::<PyString>() {
            Ok(reserved) => match parse_kind(reserved.to_str()?) {
                Ok(Kind::Op) | Err(_) => return Ok(None), // a method name: the walk handles it
                Ok(kind) => kind,
            },
            Err(_) => Kind::Op,
        };
        let args = match args {
            None => PyList::empty(py),
            Some(args) => match args.cast::<PyList>() {
                Ok(list) => list.get_slice(0, list.len()),
                Err(_) => PyList::new(py, args.try_iter()?.collect::<PyResult<Vec<_>>>()?)?,
            },
        };
        let kwargs = match kwargs {
            None => PyDict::new(py),
            Some(kwargs) => kwargs.copy()?,
        };
        let types = {
            let this = slf.borrow();
            let clone = |ty: &Option<Py<PyType>>| ty.as_ref().map(|ty| ty.clone_ref(py));
            ScanTypes {
                proxy: clone(&this.proxy_type),
                node: clone(&this.node_type),
                tensor: clone(&this.tensor_type),
            }
        };
        let mut deps = Vec::new();
        let mut plan = CallPlan {
            target: target.clone().unbind(),
            args: Vec::with_capacity(args.len()),
            kwargs: Vec::with_capacity(kwargs.len()),
        };
        for (i, item) in args.iter().enumerate() {
            match Self::link(slf, &types, item, &mut deps, |node| args.set_item(i, node))? {
                Some(slot) => plan.args.push(slot),
                None => return Ok(None),
            }
        }
        for (key, item) in kwargs.iter() {
            match Self::link(slf, &types, item, &mut deps, |node| {
                kwargs.set_item(&key, node)
            })? {
                Some(slot) => plan
                    .kwargs
                    .push((key.cast_into::<PyString>()?.unbind(), slot)),
                None => return Ok(None),
            }
        }
        let argument_key = match kind {
            Kind::Argument => match args.get_item(0).ok().map(|key| key.cast_into::<PyString>()) {
                Some(Ok(key)) => Some(key),
                _ => return Ok(None), // the walk raises the error naming the bad key
            },
            _ => None,
        };
        let argument_key = match &argument_key {
            Some(key) => Some(key.to_str()?),
            None => None,
        };
        let target_name = match kind {
            Kind::Op => target_name(&target)?,
            _ => target.cast_into::<PyString>()?,
        };
        let mut this = slf.borrow_mut();
        let id = this
            .graph
            .add_node(name, target_name.to_str()?, kind, &deps, argument_key)?;
        this.plans.push(match kind {
            Kind::Op => Plan::Call(plan),
            _ => Plan::Python,
        });
        Ok(Some((i64::from(id), args, kwargs)))
    }

    /// `Graph.add`'s hot path, in one call: links the node as `add_linked` does, makes the
    /// Python node (a bare `node_type` instance whose slots are filled as `Node._setup` fills
    /// them), appends it to `nodes`, and returns a bare `proxy_type` instance holding it.
    /// Returns None, having added nothing, where `add_linked` would; it raises what
    /// `add_linked` raises.
    #[allow(clippy::too_many_arguments)] // one crossing instead of three: that is the point
    #[pyo3(signature = (node_type, proxy_type, nodes, graph_ref, name, target, value, args, kwargs, source))]
    fn add_object<'py>(
        slf: &Bound<'py, Self>,
        node_type: &Bound<'py, PyType>,
        proxy_type: &Bound<'py, PyType>,
        nodes: &Bound<'py, PyList>,
        graph_ref: &Bound<'py, PyAny>,
        name: Option<Bound<'py, PyString>>,
        target: Bound<'py, PyAny>,
        value: &Bound<'py, PyAny>,
        args: Option<Bound<'py, PyAny>>,
        kwargs: Option<Bound<'py, PyDict>>,
        source: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let name_str = match &name {
            Some(name) => Some(name.to_str()?),
            None => None,
        };
        let Some((id, args, kwargs)) =
            Self::add_linked(slf, name_str, target.clone(), args, kwargs)?
        else {
            return Ok(None);
        };
        let node = new_bare(node_type)?;
        let name = match name {
            Some(name) => name.into_any(),
            None => py.None().into_bound(py),
        };
        set_slot(&node, intern!(py, "id"), &id.into_pyobject(py)?.into_any())?;
        set_slot(&node, intern!(py, "args"), &args.into_any())?;
        set_slot(&node, intern!(py, "kwargs"), &kwargs.into_any())?;
        set_slot(&node, intern!(py, "_name"), &name)?;
        set_slot(&node, intern!(py, "_core"), slf.as_any())?;
        set_slot(&node, intern!(py, "_graph_ref"), graph_ref)?;
        set_slot(&node, intern!(py, "target"), &target)?;
        set_slot(&node, intern!(py, "_proxy_value"), value)?;
        set_slot(&node, intern!(py, "source"), source)?;
        nodes.append(&node)?;
        let proxy = new_bare(proxy_type)?;
        set_slot(&proxy, intern!(py, "node"), &node)?;
        Ok(Some(proxy))
    }

    /// Adds a node the core does not call itself (reserved and method-name targets, and ops
    /// with nodes or tensors nested in their arguments: `Node._run` executes those); returns
    /// its id (`name_of` spells its unique name).
    #[pyo3(signature = (name, target_name, kind, dependencies, argument_key=None))]
    fn add_node(
        &mut self,
        name: Option<&str>,
        target_name: &str,
        kind: &str,
        dependencies: Vec<i64>,
        argument_key: Option<&str>,
    ) -> PyResult<u32> {
        let kind = parse_kind(kind)?;
        let mut deps = Vec::with_capacity(dependencies.len());
        for dep in dependencies {
            deps.push(
                to_id(dep)
                    .ok_or_else(|| PyValueError::new_err(format!("invalid dependency id {dep}")))?,
            );
        }
        let id = self
            .graph
            .add_node(name, target_name, kind, &deps, argument_key)?;
        self.plans.push(Plan::Python);
        Ok(id)
    }

    /// Resets every node for a new execution and runs the nodes that need no input.
    fn compile(slf: &Bound<'_, Self>, nodes: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let mut released = Vec::new();
        slf.borrow_mut().graph.compile(&mut released);
        drop(released);
        Self::drain(slf, 0, nodes)
    }

    /// Sets a node's value and executes everything that becomes ready because of it.
    fn set_value(
        slf: &Bound<'_, Self>,
        id: i64,
        value: Py<PyAny>,
        nodes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let id = to_id(id).ok_or_else(|| PyValueError::new_err(format!("invalid node id {id}")))?;
        let base = slf.borrow().graph.frame_base();
        Self::store(slf, id, value)?;
        Self::drain(slf, base, nodes)
    }

    /// Releases a node's value.
    fn destroy(slf: &Bound<'_, Self>, id: u32) -> PyResult<()> {
        let mut released = Vec::new();
        let result = slf.borrow_mut().graph.destroy(id, &mut released);
        drop(released);
        Ok(result?)
    }

    /// The node's value, or the empty sentinel when it is not set.
    fn value(&self, py: Python<'_>, id: u32) -> PyResult<Py<PyAny>> {
        Ok(match self.graph.value(id)? {
            Some(value) => value.clone_ref(py),
            None => self.empty.clone_ref(py),
        })
    }

    fn done(&self, id: u32) -> PyResult<bool> {
        Ok(self.graph.done(id)?)
    }

    fn fulfilled(&self, id: u32) -> PyResult<bool> {
        Ok(self.graph.fulfilled(id)?)
    }

    fn redundant(&self, id: u32) -> PyResult<bool> {
        Ok(self.graph.redundant(id)?)
    }

    fn kind(&self, id: u32) -> PyResult<&'static str> {
        Ok(kind_name(self.graph.kind(id)?))
    }

    fn listeners(&self, id: u32) -> PyResult<Vec<u32>> {
        Ok(self.graph.listeners(id)?.to_vec())
    }

    fn dependencies(&self, id: u32) -> PyResult<Vec<u32>> {
        Ok(self.graph.dependencies(id)?.to_vec())
    }

    fn remaining_listeners(&self, id: u32) -> PyResult<i32> {
        Ok(self.graph.remaining_listeners(id)?)
    }

    fn remaining_dependencies(&self, id: u32) -> PyResult<i32> {
        Ok(self.graph.remaining_dependencies(id)?)
    }

    fn set_remaining_listeners(&mut self, id: u32, n: i32) -> PyResult<()> {
        Ok(self.graph.set_remaining_listeners(id, n)?)
    }

    fn set_remaining_dependencies(&mut self, id: u32, n: i32) -> PyResult<()> {
        Ok(self.graph.set_remaining_dependencies(id, n)?)
    }

    /// Id of the node with this name; `KeyError` if there is none.
    fn id_of(&self, name: &str) -> PyResult<u32> {
        Ok(self.graph.id_of(name)?)
    }

    fn name_of(&self, id: u32) -> PyResult<String> {
        Ok(self.graph.name(id)?)
    }

    fn __contains__(&self, name: &str) -> bool {
        self.graph.id_of(name).is_ok()
    }

    fn __len__(&self) -> usize {
        self.graph.len()
    }

    /// `Graph.name_idx`: target name -> number of nodes added with it.
    fn name_idx<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (target, count) in self.graph.names().counters() {
            dict.set_item(target, count)?;
        }
        Ok(dict)
    }

    /// `Graph.argument_node_names`: argument key -> names of its `argument` nodes.
    fn argument_node_names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (key, ids) in self.graph.arguments() {
            let names = ids
                .iter()
                .map(|&id| self.graph.name(id))
                .collect::<Result<Vec<_>, _>>()?;
            dict.set_item(key, names)?;
        }
        Ok(dict)
    }

    fn root(&self) -> Option<u32> {
        self.graph.root()
    }

    fn swap(&self) -> Option<u32> {
        self.graph.swap()
    }

    fn set_swap(&mut self, id: Option<u32>) -> PyResult<()> {
        Ok(self.graph.set_swap(id)?)
    }

    /// Marks nodes that cannot affect a result as dead (see `Graph::eliminate_dead_code`);
    /// `effects` has one flag per node. Returns the dead ids.
    fn eliminate_dead_code(&mut self, effects: Vec<bool>) -> PyResult<Vec<u32>> {
        Ok(self.graph.eliminate_dead_code(&effects)?)
    }

    /// The ids found dead by the elimination in effect (empty when none is).
    fn dead(&self) -> Vec<u32> {
        self.graph.dead().to_vec()
    }

    /// Abandons the current execution (after an error outside the graph, such as one raised
    /// by the model itself): empties the ready stack, drops the pending swap and releases
    /// every value. `compile` makes the graph runnable again.
    fn abort(slf: &Bound<'_, Self>) {
        let mut released = Vec::new();
        slf.borrow_mut().graph.abort(&mut released);
        drop(released); // after the borrow ends: a finaliser may call back into the graph
    }

    fn record_events(&mut self, on: bool) {
        self.graph.set_record_events(on);
    }

    /// Events since the last call, as `(kind, node id)` with kind `execute`, `set` or `destroy`.
    fn take_events(&mut self) -> Vec<(&'static str, u32)> {
        self.graph
            .take_events()
            .into_iter()
            .map(|event| match event {
                Event::Execute(id) => ("execute", id),
                Event::Set(id) => ("set", id),
                Event::Destroy(id) => ("destroy", id),
            })
            .collect()
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.empty)?;
        visit.call(&self.tensor_type)?;
        visit.call(&self.proxy_type)?;
        visit.call(&self.node_type)?;
        for value in self.graph.values() {
            visit.call(value)?;
        }
        for plan in &self.plans {
            if let Plan::Call(plan) = plan {
                visit.call(&plan.target)?;
                let slots = plan.args.iter().chain(plan.kwargs.iter().map(|(_, s)| s));
                for slot in slots {
                    if let Slot::Const(value) = slot {
                        visit.call(value)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        let mut released = Vec::new();
        self.graph.abort(&mut released);
        self.plans.clear();
        self.graph = Graph::new();
    }
}
