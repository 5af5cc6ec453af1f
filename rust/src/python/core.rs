//! `GraphCore`: a [`Graph`] of Python values plus the fast execution path for op nodes.
//!
//! Op nodes whose node references all sit at the top level of their args/kwargs get a
//! [`CallPlan`]: executing one builds the argument tuple in Rust, moves tensors to the first
//! tensor's device when they differ, and calls the target, with no Python frame of ours in
//! between. Every other executable node is run by calling `nodes[id]._run()` on the Python
//! `Node` list the caller passes in (the core never stores Python `Node` objects, and holds its
//! graph only weakly, so it forms no reference cycle with them).
//!
//! Lazy nodes: `add_object` (the `Graph.add` hot path) makes only a proxy that names its node
//! by `(core, id)`, keeps the node's target and arguments in its plan and its name, proxy value
//! and source in a [`Pending`] record, and puts None in the graph's `_nodes` list. The Python
//! `Node` is made on first use (`node_object`) and then kept in that list. A graph built with
//! its proxies dropped thus holds no GC-tracked Python object per node: with torch imported,
//! each of CPython's full collections walks ~190k objects, and eager nodes set one off every
//! ~15k adds.
//!
//! Re-entrancy: the borrow of `self` is never held across a call into Python, so a target may
//! set values on this very graph (a model hook does); that call drains its own frame.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple, PyType};
use pyo3::{intern, PyTraverseError, PyVisit};

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::slots::MemberSlot;
use super::source::SourceFinder;
use crate::graph::{Event, Graph, Kind, NodeId};

pyo3::create_exception!(
    _core,
    ForeignNode,
    pyo3::exceptions::PyException,
    "Raised by `GraphCore.add_linked` with the node of another graph as its argument."
);

pub fn register(m: &Bound<'_, pyo3::types::PyModule>) -> PyResult<()> {
    m.add("ForeignNode", m.py().get_type::<ForeignNode>())?;
    m.add_function(pyo3::wrap_pyfunction!(proxy_node, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(set_classes, m)?)
}

/// `object.__setattr__(obj, "__class__", cls)` for every object in `objects`, with Python's own
/// layout checks: a trace's saved proxies become `SavedProxy`s in one call.
#[pyfunction]
fn set_classes(objects: &Bound<'_, PyList>, cls: &Bound<'_, PyType>) -> PyResult<()> {
    let py = objects.py();
    for obj in objects.iter() {
        // A proxy saved twice is listed twice: its class is set already the second time.
        if !obj.get_type().is(cls) {
            set_slot(&obj, intern!(py, "__class__"), cls.as_any())?;
        }
    }
    Ok(())
}

/// The node of a proxy `GraphCore.add_object` made, which names its node by its `_core` and
/// `_id` slots: made (or found) by the core and stored in the proxy's `node` slot.
#[pyfunction]
fn proxy_node<'py>(proxy: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = proxy.py();
    let Some((core, id)) = proxy_slots(proxy)? else {
        return Err(pyo3::exceptions::PyAttributeError::new_err(format!(
            "{} object has no node",
            proxy.get_type().name()?
        )));
    };
    let node = PyGraphCore::node_object(&core, id, None)?;
    set_slot(proxy, intern!(py, "node"), &node)?;
    Ok(node)
}

/// `object.__getattribute__(obj, name)`, None when it raises (an unset slot): a proxy's traced
/// `__getattr__` never runs.
fn generic_getattr<'py>(
    obj: &Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
) -> Option<Bound<'py, PyAny>> {
    let py = obj.py();
    // SAFETY: valid, GIL-held pointers; a new reference or NULL comes back.
    let ptr = unsafe { pyo3::ffi::PyObject_GenericGetAttr(obj.as_ptr(), name.as_ptr()) };
    if ptr.is_null() {
        let _ = PyErr::take(py);
        None
    } else {
        // SAFETY: `ptr` is a new, non-null reference.
        Some(unsafe { Bound::from_owned_ptr(py, ptr) })
    }
}

/// One positional or keyword argument of a fast call.
pub(super) enum Slot {
    Const(Py<PyAny>),
    Node(NodeId),
}

impl Slot {
    pub(super) fn clone_ref(&self, py: Python<'_>) -> Slot {
        match self {
            Slot::Const(value) => Slot::Const(value.clone_ref(py)),
            Slot::Node(id) => Slot::Node(*id),
        }
    }
}

/// Positional slots kept inline: most ops take one to three arguments (an `argument` node's
/// plan holds its key, rows and start).
pub(super) type Slots = SmallVec<[Slot; 3]>;

/// A traced call's top-level arguments, gathered without a heap allocation for the usual few.
type Items<'py> = SmallVec<[Bound<'py, PyAny>; 4]>;

/// How to call an op node's target without going through Python code of ours.
pub(super) struct CallPlan {
    pub(super) target: Py<PyAny>,
    pub(super) args: Slots,
    pub(super) kwargs: Vec<(Py<PyString>, Slot)>,
}

pub(super) enum Plan {
    /// Added by `add_node`: its Python `Node` was made eagerly and holds its arguments.
    Python,
    /// Called by the core.
    Call(CallPlan),
    /// A reserved target (`argument`, `swap`, `null`, `grad`): never called by the core, the
    /// plan only keeps its linked arguments for a `Node` made later.
    Held(CallPlan),
}

/// What a node added by `add_object` needs for its Python `Node` (see
/// `PyGraphCore::node_object`); the target and arguments stay in its plan. The proxy value
/// moves into the first `Node` kept in the graph's list; name and source stay, so a proxy that
/// outlives its graph (and that list) can still make a `Node` that names its user line.
pub(super) struct Pending {
    pub(super) name: Option<Py<PyString>>,
    pub(super) proxy_value: Option<Py<PyAny>>,
    pub(super) source: Py<PyAny>,
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

/// Puts a linked argument's node into the caller's copy of the arguments.
type Replace<'a, 'py> = &'a dyn Fn(&Bound<'py, PyAny>) -> PyResult<()>;

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
///
/// Allocates with the class's `tp_alloc` directly, which is all `object.__new__` does for a
/// class that is not abstract once it has checked that it got no arguments; calling it as a
/// Python method took 800 instructions, a fifth of adding a node.
pub(super) fn new_bare<'py>(cls: &Bound<'py, PyType>) -> PyResult<Bound<'py, PyAny>> {
    let py = cls.py();
    let ty = cls.as_type_ptr();
    // SAFETY: `ty` is a live type object (borrowed from `cls`); its `tp_alloc` slot, when set,
    // is its allocator and returns a new reference or NULL with an exception set.
    unsafe {
        if (*ty).tp_flags & pyo3::ffi::Py_TPFLAGS_IS_ABSTRACT == 0 {
            if let Some(alloc) = (*ty).tp_alloc {
                return Bound::from_owned_ptr_or_err(py, alloc(ty, 0));
            }
        }
    }
    let object = py.get_type::<pyo3::types::PyAny>();
    object.call_method1(intern!(py, "__new__"), (cls,)) // raises for an abstract class
}

/// Sets an attribute the way `object.__setattr__` does, so a class's own `__setattr__` (the
/// Proxy's traces assignments) is bypassed and the slot descriptor is used.
pub(super) fn set_slot(
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

/// The core and id a proxy made by `add_object` names its node by (its `_core` and `_id`
/// slots), or None for a proxy without them. Read as `object.__getattribute__` reads them, so
/// a proxy's traced `__getattr__` never runs.
fn proxy_slots<'py>(
    proxy: &Bound<'py, PyAny>,
) -> PyResult<Option<(Bound<'py, PyGraphCore>, NodeId)>> {
    let py = proxy.py();
    let core = generic_getattr(proxy, intern!(py, "_core"))
        .and_then(|core| core.cast_into::<PyGraphCore>().ok());
    match (core, generic_getattr(proxy, intern!(py, "_id"))) {
        (Some(core), Some(id)) => Ok(Some((core, id.extract()?))),
        _ => Ok(None),
    }
}

/// The id a proxy of this graph names its node by, or None for a proxy of another graph or
/// one without the slots (see `proxy_slots`). Reads the slots directly where the core knows
/// where they are (`ProxySlots`).
fn proxy_id(core: &Bound<'_, PyGraphCore>, proxy: &Bound<'_, PyAny>) -> PyResult<Option<NodeId>> {
    if let Some(slots) = &core.borrow().proxy_slots {
        if let (Some(owner), Some(id)) = (slots.core.get(proxy), slots.id.get(proxy)) {
            return match (owner, id) {
                (Some(owner), Some(id)) if owner.is(core) => Ok(Some(id.extract()?)),
                _ => Ok(None),
            };
        }
    }
    Ok(proxy_slots(proxy)?.and_then(|(owner, id)| owner.is(core).then_some(id)))
}

/// The `_core` and `_id` slots of the proxy class a core was made with.
struct ProxySlots {
    core: MemberSlot,
    id: MemberSlot,
}

impl ProxySlots {
    fn of(cls: &Bound<'_, PyType>) -> Option<Self> {
        Some(Self {
            core: MemberSlot::of(cls, "_core")?,
            id: MemberSlot::of(cls, "_id")?,
        })
    }
}

fn to_id(id: i64) -> Option<NodeId> {
    NodeId::try_from(id).ok()
}

/// Nodes a new graph has room for before its vectors grow: a trace's graph is made anew for
/// every trace, and most hold a few dozen nodes (a read and a save per layer of a 32-layer
/// model is 65).
const NODES_RESERVED: usize = 128;

/// Node storage, names and propagation for one `nnsight.tracing.Graph`.
#[pyclass(name = "GraphCore", module = "nnsight._core")]
pub struct PyGraphCore {
    pub(super) graph: Graph<Py<PyAny>>,
    pub(super) plans: Vec<Plan>,
    /// The "no value" sentinel (`inspect._empty`): what `value` returns for an unset node, and
    /// what `Node._run` returns when a node sets no value now.
    pub(super) empty: Py<PyAny>,
    /// `torch.Tensor`, for the device check of fast calls (`None`: no device handling).
    tensor_type: Option<Py<PyType>>,
    /// `nnsight.tracing.Proxy` and `Node`, for `add_linked`'s argument scan.
    proxy_type: Option<Py<PyType>>,
    node_type: Option<Py<PyType>>,
    /// A weak reference to the Python `Graph`, whose `_nodes` list caches the `Node` objects.
    graph_ref: Option<Py<PyAny>>,
    /// Per node added by `add_object`: what its `Node` object is made from.
    pub(super) pending: Vec<Option<Pending>>,
    /// Whether the Python graph is tracing, and the proxy class `add_op` makes proxies of
    /// while the graph allows it (None: `add_op` declines); both set by `set_modes`.
    tracing: bool,
    op_class: Option<Py<PyType>>,
    /// Automatic-name stems of the op targets seen (target address -> (target, stem)): a
    /// builtin's `__name__` is a new string on every read.
    stems: FxHashMap<usize, (Py<PyAny>, Py<PyString>)>,
    /// Where `proxy_type`'s `_core` and `_id` slots are (None: use the attribute protocol).
    proxy_slots: Option<ProxySlots>,
}

/// Op targets whose stems a graph keeps at most (the cache starts over beyond).
const MAX_STEMS: usize = 256;

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
    /// Adds a node of a reserved kind whose arguments the caller linked (`deps` are the node
    /// slots among `args`), keeping `pending` for its `Node`; the hot paths' `add_scanned`.
    /// An `argument` node's key is its first argument.
    fn add_reserved(
        slf: &Bound<'_, Self>,
        kind: Kind,
        target: &Bound<'_, PyString>,
        deps: &[NodeId],
        args: Slots,
        pending: Pending,
    ) -> PyResult<NodeId> {
        let py = slf.py();
        let key = match (kind, args.first()) {
            (Kind::Argument, Some(Slot::Const(key))) => {
                Some(key.bind(py).cast::<PyString>()?.to_str()?)
            }
            _ => None,
        };
        let mut this = slf.borrow_mut();
        let id = this
            .graph
            .add_node(None, target.to_str()?, kind, deps, key)?;
        this.plans.push(Plan::Held(CallPlan {
            target: target.clone().into_any().unbind(),
            args,
            kwargs: Vec::new(),
        }));
        this.pending.push(Some(pending));
        Ok(id)
    }

    /// A bare `proxy_type` instance whose `_core` and `_id` slots name node `id`.
    fn bare_proxy<'py>(
        slf: &Bound<'py, Self>,
        proxy_type: &Bound<'py, PyType>,
        id: NodeId,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let proxy = new_bare(proxy_type)?;
        let id = id.into_pyobject(py)?.into_any();
        let direct =
            slf.borrow().proxy_slots.as_ref().is_some_and(|slots| {
                slots.core.set(&proxy, slf.as_any()) && slots.id.set(&proxy, &id)
            });
        if !direct {
            set_slot(&proxy, intern!(py, "_core"), slf.as_any())?;
            set_slot(&proxy, intern!(py, "_id"), &id)?;
        }
        Ok(proxy)
    }

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

    /// Links one top-level argument: a proxy or node of this graph becomes a dependency and a
    /// node slot, anything else a constant slot. With `replace`, a proxy is also swapped for
    /// its node in the caller's copy of the arguments. `None` when a container holds nodes,
    /// proxies or tensors: the Python walk must take over.
    fn link<'py>(
        slf: &Bound<'py, Self>,
        types: &ScanTypes,
        item: Bound<'py, PyAny>,
        deps: &mut SmallVec<[NodeId; 8]>,
        replace: Option<Replace<'_, 'py>>,
    ) -> PyResult<Option<Slot>> {
        let py = slf.py();
        let mut item = item;
        if is_subtype(&item, &types.proxy) {
            // A proxy of this graph names its node by id: its `Node` need not exist yet.
            if let Some(id) = proxy_id(slf, &item)? {
                if let Some(replace) = replace {
                    replace(&item.getattr(intern!(py, "node"))?)?;
                }
                deps.push(id);
                return Ok(Some(Slot::Node(id)));
            }
            item = item.getattr(intern!(py, "node"))?;
            if let Some(replace) = replace {
                replace(&item)?;
            }
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

    /// Links a node's top-level arguments into a plan and adds the node (see `add_linked`).
    /// `copies`, when given, are the caller's copies of `args` and `kwargs`: they are what is
    /// scanned, and their proxies are replaced by nodes. `None`: nothing was added.
    fn add_scanned<'py>(
        slf: &Bound<'py, Self>,
        name: Option<&str>,
        target: &Bound<'py, PyAny>,
        args: &[Bound<'py, PyAny>],
        kwargs: Option<&Bound<'py, PyDict>>,
        copies: Option<(&Bound<'py, PyList>, &Bound<'py, PyDict>)>,
    ) -> PyResult<Option<NodeId>> {
        let py = slf.py();
        let kind = match target.cast::<PyString>() {
            Ok(reserved) => match parse_kind(reserved.to_str()?) {
                Ok(Kind::Op) | Err(_) => return Ok(None), // a method name: the walk handles it
                Ok(kind) => kind,
            },
            Err(_) => Kind::Op,
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
        let mut deps = SmallVec::<[NodeId; 8]>::new();
        let mut plan = CallPlan {
            target: target.clone().unbind(),
            args: Slots::with_capacity(args.len()),
            kwargs: Vec::with_capacity(kwargs.map_or(0, |kwargs| kwargs.len())),
        };
        for (i, item) in args.iter().enumerate() {
            let replace =
                copies.map(|(list, _)| move |node: &Bound<'py, PyAny>| list.set_item(i, node));
            let replace = replace.as_ref().map(|f| f as Replace<'_, 'py>);
            match Self::link(slf, &types, item.clone(), &mut deps, replace)? {
                Some(slot) => plan.args.push(slot),
                None => return Ok(None),
            }
        }
        if let Some(kwargs) = kwargs {
            for (key, item) in kwargs.iter() {
                let replace = copies.map(|(_, dict)| {
                    let key = key.clone();
                    move |node: &Bound<'py, PyAny>| dict.set_item(&key, node)
                });
                let replace = replace.as_ref().map(|f| f as Replace<'_, 'py>);
                match Self::link(slf, &types, item, &mut deps, replace)? {
                    Some(slot) => plan
                        .kwargs
                        .push((key.cast_into::<PyString>()?.unbind(), slot)),
                    None => return Ok(None),
                }
            }
        }
        let argument_key = match kind {
            Kind::Argument => match args.first().map(|key| key.cast::<PyString>()) {
                Some(Ok(key)) => Some(key.to_str()?),
                _ => return Ok(None), // the walk raises the error naming the bad key
            },
            _ => None,
        };
        let target_name = match kind {
            Kind::Op => Self::stem(slf, target)?,
            _ => target.cast::<PyString>()?.clone(),
        };
        let mut this = slf.borrow_mut();
        let id = this
            .graph
            .add_node(name, target_name.to_str()?, kind, &deps, argument_key)?;
        this.plans.push(match kind {
            Kind::Op => Plan::Call(plan),
            _ => Plan::Held(plan),
        });
        this.pending.push(None);
        Ok(Some(id))
    }

    /// Adds `argument(key, size, start)`, the node standing for one module call's value in
    /// one invoke, as `add_object` would, with the user's line found by `finder`; returns its
    /// proxy and id. `value` is its proxy value (a `ScannedValue`, or None for the empty
    /// sentinel). `ModuleReads.read`'s slow path, called only while the graph is tracing.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn add_argument<'py>(
        slf: &Bound<'py, Self>,
        proxy_type: &Bound<'py, PyType>,
        nodes: &Bound<'py, PyList>,
        key: Bound<'py, PyString>,
        size: Bound<'py, PyAny>,
        start: Bound<'py, PyAny>,
        value: Option<Bound<'py, PyAny>>,
        finder: &Bound<'py, SourceFinder>,
    ) -> PyResult<(Bound<'py, PyAny>, NodeId)> {
        let py = slf.py();
        let value = match value {
            Some(value) => value.unbind(),
            None => slf.borrow().empty.clone_ref(py),
        };
        let source = finder.borrow_mut().find_from(py, 1)?;
        let id = Self::add_reserved(
            slf,
            Kind::Argument,
            intern!(py, "argument"),
            &[],
            smallvec::smallvec![
                Slot::Const(key.into_any().unbind()),
                Slot::Const(size.unbind()),
                Slot::Const(start.unbind()),
            ],
            Pending {
                name: None,
                proxy_value: Some(value),
                source: source.into_any().unbind(),
            },
        )?;
        nodes.append(py.None())?;
        Ok((Self::bare_proxy(slf, proxy_type, id)?, id))
    }

    /// Nodes the last dead-code elimination found dead, in id order (empty when none or when
    /// a node was added since).
    pub(super) fn dead_nodes(&self) -> &[NodeId] {
        self.graph.dead()
    }

    /// `target_name(target)`, cached per target.
    pub(super) fn stem<'py>(
        slf: &Bound<'py, Self>,
        target: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyString>> {
        let py = slf.py();
        let address = target.as_ptr() as usize;
        if let Some((_, stem)) = slf.borrow().stems.get(&address) {
            return Ok(stem.bind(py).clone());
        }
        let stem = target_name(target)?;
        let mut this = slf.borrow_mut();
        if this.stems.len() >= MAX_STEMS {
            this.stems.clear();
        }
        this.stems
            .insert(address, (target.clone().unbind(), stem.clone().unbind()));
        Ok(stem)
    }

    /// `add_object`'s work once its arguments are listed (see there).
    #[allow(clippy::too_many_arguments)]
    fn add_lazy<'py>(
        slf: &Bound<'py, Self>,
        proxy_type: &Bound<'py, PyType>,
        nodes: &Bound<'py, PyList>,
        name: Option<Bound<'py, PyString>>,
        target: Bound<'py, PyAny>,
        value: Bound<'py, PyAny>,
        items: &[Bound<'py, PyAny>],
        kwargs: Option<&Bound<'py, PyDict>>,
        source: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let name_str = match &name {
            Some(name) => Some(name.to_str()?),
            None => None,
        };
        let Some(id) = Self::add_scanned(slf, name_str, &target, items, kwargs, None)? else {
            return Ok(None);
        };
        slf.borrow_mut().pending[id as usize] = Some(Pending {
            name: name.map(Bound::unbind),
            proxy_value: Some(value.unbind()),
            source: source.unbind(),
        });
        nodes.append(py.None())?;
        Ok(Some(Self::bare_proxy(slf, proxy_type, id)?))
    }

    fn check_id(&self, id: NodeId) -> PyResult<()> {
        if (id as usize) < self.graph.len() {
            Ok(())
        } else {
            Err(PyValueError::new_err(format!("no node with id {id}")))
        }
    }

    /// The Python `Graph` this core belongs to, if it still exists.
    fn live_graph<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(graph_ref) = &self.graph_ref else {
            return Ok(None);
        };
        let graph = graph_ref.bind(py).call0()?;
        Ok((!graph.is_none()).then_some(graph))
    }

    /// The live Python `Graph`'s `_nodes` list, if the graph still exists.
    fn graph_nodes<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        match self.live_graph(py)? {
            Some(graph) => Ok(Some(graph.getattr(intern!(py, "_nodes"))?)),
            None => Ok(None),
        }
    }

    /// Node `id`'s Python `Node`: the one in `nodes` (the graph's `_nodes` when not given), or,
    /// for a node `add_object` made without one, a new one, kept in `nodes` when the graph is
    /// alive (the proxy value then moves into it).
    fn node_object<'py>(
        slf: &Bound<'py, Self>,
        id: NodeId,
        nodes: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let nodes = match nodes {
            Some(nodes) => Some(nodes.clone()),
            None => slf.borrow().graph_nodes(py)?,
        };
        if let Some(nodes) = &nodes {
            let node = nodes.get_item(id)?;
            if !node.is_none() {
                return Ok(node);
            }
        }
        let (node_type, graph_ref, target, name, proxy_value, source) = {
            let this = slf.borrow();
            this.check_id(id)?;
            let missing = || {
                PyRuntimeError::new_err(format!(
                    "node {id} has no Python object and no data to make one"
                ))
            };
            let pending = this.pending[id as usize].as_ref().ok_or_else(missing)?;
            let target = match &this.plans[id as usize] {
                Plan::Call(plan) | Plan::Held(plan) => plan.target.clone_ref(py),
                Plan::Python => return Err(missing()),
            };
            (
                this.node_type.as_ref().ok_or_else(missing)?.clone_ref(py),
                this.graph_ref.as_ref().ok_or_else(missing)?.clone_ref(py),
                target,
                pending.name.as_ref().map(|name| name.clone_ref(py)),
                match &pending.proxy_value {
                    Some(value) => value.clone_ref(py),
                    None => this.empty.clone_ref(py),
                },
                pending.source.clone_ref(py),
            )
        };
        let node = new_bare(node_type.bind(py))?;
        let none = py.None().into_bound(py);
        set_slot(&node, intern!(py, "id"), &id.into_pyobject(py)?.into_any())?;
        set_slot(&node, intern!(py, "_args"), &none)?;
        set_slot(&node, intern!(py, "_kwargs"), &none)?;
        let name = name.map_or(none, |name| name.into_bound(py).into_any());
        set_slot(&node, intern!(py, "_name"), &name)?;
        set_slot(&node, intern!(py, "_core"), slf.as_any())?;
        set_slot(&node, intern!(py, "_graph_ref"), graph_ref.bind(py))?;
        set_slot(&node, intern!(py, "target"), target.bind(py))?;
        set_slot(&node, intern!(py, "_proxy_value"), proxy_value.bind(py))?;
        set_slot(&node, intern!(py, "source"), source.bind(py))?;
        if let Some(nodes) = nodes {
            nodes.set_item(id, &node)?;
            if let Some(pending) = &mut slf.borrow_mut().pending[id as usize] {
                pending.proxy_value = None;
            }
        }
        Ok(node)
    }

    /// Builds the call of a fast op node from its plan and the current values.
    fn prepare_call<'py>(&self, py: Python<'py>, plan: &CallPlan) -> PyResult<Step<'py>> {
        let mut args = Items::with_capacity(plan.args.len());
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
            (_, Plan::Python | Plan::Held(_)) => Ok(Step::Python),
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
                    Some(nodes) => Self::node_object(slf, id, Some(nodes))?
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

    /// `set_value`: stores the value, executes what becomes ready, and returns the pending
    /// swap (also for `OutputHook`, which feeds module outputs without a Python call).
    pub(super) fn feed(
        slf: &Bound<'_, Self>,
        id: NodeId,
        value: Py<PyAny>,
        nodes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<NodeId>> {
        let base = slf.borrow().graph.frame_base();
        Self::store(slf, id, value)?;
        Self::drain(slf, base, nodes)?;
        Ok(slf.borrow().graph.swap())
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
        // A stop node (`tracer.stop()`) ends the model's run, not the graph's: what ran so
        // far keeps its values, and the exception reaches the trace as it was raised.
        if err
            .value(py)
            .hasattr(intern!(py, "nnsight_early_stop"))
            .unwrap_or(false)
        {
            return err;
        }
        let mut released = Vec::new();
        slf.borrow_mut().graph.abort(&mut released);
        drop(released);
        let Some(nodes) = nodes else { return err };
        let wrapped = Self::node_object(slf, id, Some(nodes))
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
    #[pyo3(signature = (empty, tensor_type=None, proxy_type=None, node_type=None, graph_ref=None))]
    fn new(
        py: Python<'_>,
        empty: Py<PyAny>,
        tensor_type: Option<Py<PyType>>,
        proxy_type: Option<Py<PyType>>,
        node_type: Option<Py<PyType>>,
        graph_ref: Option<Py<PyAny>>,
    ) -> Self {
        let proxy_slots = proxy_type
            .as_ref()
            .and_then(|cls| ProxySlots::of(cls.bind(py)));
        Self {
            proxy_slots,
            graph: Graph::with_capacity(NODES_RESERVED),
            plans: Vec::with_capacity(NODES_RESERVED),
            empty,
            tensor_type,
            proxy_type,
            node_type,
            graph_ref,
            pending: Vec::with_capacity(NODES_RESERVED),
            tracing: false,
            op_class: None,
            stems: FxHashMap::default(),
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
        let items: Items<'py> = args.iter().collect();
        let id = Self::add_scanned(
            slf,
            name,
            &target,
            &items,
            Some(&kwargs),
            Some((&args, &kwargs)),
        )?;
        Ok(id.map(|id| (i64::from(id), args, kwargs)))
    }

    /// `Graph.add`'s hot path, in one call: links the node as `add_linked` does (without
    /// copying the arguments), keeps `name`, `value` and `source` for its `Node`, appends None
    /// to `nodes` in its place, and returns a bare `proxy_type` instance whose `_core` and
    /// `_id` slots name it. The `Node` object is made on first use (`node`): a graph whose
    /// proxies are dropped as it is built holds no Python object per node, so building one
    /// does not feed CPython's collector. Returns None, having added nothing, where
    /// `add_linked` would; it raises what `add_linked` raises.
    #[allow(clippy::too_many_arguments)]
    fn add_object<'py>(
        slf: &Bound<'py, Self>,
        proxy_type: &Bound<'py, PyType>,
        nodes: &Bound<'py, PyList>,
        name: Option<Bound<'py, PyString>>,
        target: Bound<'py, PyAny>,
        value: Bound<'py, PyAny>,
        args: Option<Bound<'py, PyAny>>,
        kwargs: Option<Bound<'py, PyDict>>,
        source: Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if slf.borrow().graph_ref.is_none() {
            return Err(PyRuntimeError::new_err(
                "add_object needs a GraphCore made with its graph's weak reference",
            ));
        }
        let items: Items<'py> = match &args {
            None => Items::new(),
            Some(args) => match args.cast::<PyList>() {
                Ok(list) => list.iter().collect(),
                Err(_) => match args.cast::<PyTuple>() {
                    Ok(tuple) => tuple.iter().collect(),
                    Err(_) => args.try_iter()?.collect::<PyResult<_>>()?,
                },
            },
        };
        Self::add_lazy(
            slf,
            proxy_type,
            nodes,
            name,
            target,
            value,
            &items,
            kwargs.as_ref(),
            source,
        )
    }

    /// What the hot paths may assume, set by the Python `Graph` whenever its `tracing`,
    /// `validate` or `proxy_class` change: whether it is tracing (`add_save` declines when
    /// not), and the proxy class `add_op` makes proxies of (None: it declines; the graph
    /// allows it while tracing without validation, with a proxy class whose `__init__` is
    /// `Proxy`'s).
    #[pyo3(signature = (tracing, op_class))]
    fn set_modes(&mut self, tracing: bool, op_class: Option<Py<PyType>>) {
        self.tracing = tracing;
        self.op_class = op_class;
    }

    /// The Python operators' hot path (`proxy * 2`, `-proxy`, `2 - proxy`):
    /// `Graph.add(target, args=args)` with no name, no proxy value and no kwargs, in one
    /// call, the user's line found by `finder`. Returns None, having added nothing, wherever
    /// `Graph.add` has more to do (the graph is gone or does not allow it, see
    /// `set_modes`; an argument is another graph's proxy or a container holding
    /// proxies): the caller then calls it.
    fn add_op<'py>(
        slf: &Bound<'py, Self>,
        target: Bound<'py, PyAny>,
        args: &Bound<'py, PyList>,
        finder: &Bound<'py, SourceFinder>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let Some(proxy_type) = slf.borrow().op_class.as_ref().map(|ty| ty.clone_ref(py)) else {
            return Ok(None);
        };
        let proxy_type = proxy_type.into_bound(py);
        let Some(graph) = slf.borrow().live_graph(py)? else {
            return Ok(None);
        };
        let nodes = graph
            .getattr(intern!(py, "_nodes"))?
            .cast_into::<PyList>()?;
        let source = finder.borrow_mut().find_from(py, 1)?.into_any();
        let value = slf.borrow().empty.clone_ref(py).into_bound(py);
        let items: Items<'py> = args.iter().collect();
        match Self::add_lazy(
            slf,
            &proxy_type,
            &nodes,
            None,
            target,
            value,
            &items,
            None,
            source,
        ) {
            Err(err) if err.is_instance_of::<ForeignNode>(py) => Ok(None),
            result => result,
        }
    }

    /// `InterventionProxy.save()`'s hot path: adds `null(proxy)` as `Graph.add` would, with
    /// the user's line found by `finder`, appends `proxy` to the graph's `saved`, and returns
    /// True. Returns False, having added nothing, for a proxy of another graph or when the
    /// graph is gone or no longer tracing: `Graph.add` then raises what it raises.
    fn add_save(
        slf: &Bound<'_, Self>,
        proxy: &Bound<'_, PyAny>,
        finder: &Bound<'_, SourceFinder>,
    ) -> PyResult<bool> {
        let py = slf.py();
        let Some(id) = proxy_id(slf, proxy)? else {
            return Ok(false);
        };
        let graph = slf.borrow().live_graph(py)?;
        let Some(graph) = graph else {
            return Ok(false);
        };
        if !slf.borrow().tracing {
            return Ok(false);
        }
        let nodes = graph
            .getattr(intern!(py, "_nodes"))?
            .cast_into::<PyList>()?;
        let saved = graph.getattr(intern!(py, "saved"))?.cast_into::<PyList>()?;
        let source = finder.borrow_mut().find_from(py, 1)?;
        Self::add_reserved(
            slf,
            Kind::Null,
            intern!(py, "null"),
            &[id],
            smallvec::smallvec![Slot::Node(id)],
            Pending {
                name: None,
                proxy_value: Some(py.None()),
                source: source.into_any().unbind(),
            },
        )?;
        nodes.append(py.None())?;
        saved.append(proxy)?;
        Ok(true)
    }

    /// Node `id`'s Python `Node`, made now if `add_object` added it without one (and cached
    /// in `nodes`, the graph's `_nodes` by default, while the graph exists).
    #[pyo3(signature = (id, nodes=None))]
    fn node<'py>(
        slf: &Bound<'py, Self>,
        id: u32,
        nodes: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        Self::node_object(slf, id, nodes)
    }

    /// The linked `(args, kwargs)` of a node `add_object` added (nodes as `Node` objects), for
    /// its `Node`'s first read of them.
    fn linked_args<'py>(
        slf: &Bound<'py, Self>,
        id: u32,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyDict>)> {
        let py = slf.py();
        let copy = |slot: &Slot| slot.clone_ref(py);
        let (args, kwargs): (Slots, Vec<(Py<PyString>, Slot)>) = {
            let this = slf.borrow();
            this.check_id(id)?;
            match &this.plans[id as usize] {
                Plan::Call(plan) | Plan::Held(plan) => (
                    plan.args.iter().map(copy).collect(),
                    plan.kwargs
                        .iter()
                        .map(|(key, slot)| (key.clone_ref(py), copy(slot)))
                        .collect(),
                ),
                Plan::Python => {
                    return Err(PyRuntimeError::new_err(format!(
                        "node {id} keeps its arguments on its Python object"
                    )))
                }
            }
        };
        let resolve = |slot: Slot| -> PyResult<Bound<'py, PyAny>> {
            match slot {
                Slot::Const(value) => Ok(value.into_bound(py)),
                Slot::Node(dep) => Self::node_object(slf, dep, None),
            }
        };
        let list = PyList::empty(py);
        for item in args {
            list.append(resolve(item)?)?;
        }
        let dict = PyDict::new(py);
        for (key, item) in kwargs {
            dict.set_item(key.bind(py), resolve(item)?)?;
        }
        Ok((list, dict))
    }

    /// Whether each node has an effect of its own (see `nnsight.tracing.effects`), as far as
    /// the core can tell without Python: `(effects, undecided)`. `effects[i]` is decided for
    /// the reserved kinds (`null` and `swap` have one, `argument` and `grad` do not) and False
    /// as a placeholder for the rest, which `undecided` lists as `(id, target, passes_out)`
    /// read from the node's plan without making its `Node` (`passes_out`: `out` is among its
    /// keyword arguments); the target is None for a node added by `add_node`, whose `Node`
    /// has all it needs. A trace of envoy reads and saves leaves nothing undecided.
    #[allow(clippy::type_complexity)]
    fn effect_facts<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Vec<bool>, Vec<(NodeId, Bound<'py, PyAny>, bool)>)> {
        let mut effects = Vec::with_capacity(self.plans.len());
        let mut undecided = Vec::new();
        for (id, plan) in (0..).zip(&self.plans) {
            let kind = self.graph.kind(id)?;
            if kind != Kind::Op {
                effects.push(matches!(kind, Kind::Null | Kind::Swap));
                continue;
            }
            effects.push(false);
            match plan {
                Plan::Call(plan) | Plan::Held(plan) => {
                    let passes_out = plan
                        .kwargs
                        .iter()
                        .any(|(key, _)| key.bind(py).to_str().is_ok_and(|key| key == "out"));
                    undecided.push((id, plan.target.bind(py).clone(), passes_out));
                }
                Plan::Python => undecided.push((id, py.None().into_bound(py), false)),
            }
        }
        Ok((effects, undecided))
    }

    /// The Python `Graph` this core belongs to, or None once it no longer exists.
    fn graph<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.live_graph(py)
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
        self.pending.push(None);
        Ok(id)
    }

    /// Resets every node for a new execution and runs the nodes that need no input.
    fn compile(slf: &Bound<'_, Self>, nodes: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let mut released = Vec::new();
        slf.borrow_mut().graph.compile(&mut released);
        drop(released);
        Self::drain(slf, 0, nodes)
    }

    /// Sets a node's value and executes everything that becomes ready because of it. Returns
    /// the pending swap's id after that (what `swap()` would say next), or None: a module hook
    /// learns in the same call whether its value is to be replaced.
    fn set_value(
        slf: &Bound<'_, Self>,
        id: i64,
        value: Py<PyAny>,
        nodes: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Option<NodeId>> {
        let id = to_id(id).ok_or_else(|| PyValueError::new_err(format!("invalid node id {id}")))?;
        Self::feed(slf, id, value, nodes)
    }

    /// Releases a node's value.
    fn destroy(slf: &Bound<'_, Self>, id: u32) -> PyResult<()> {
        let mut released = Vec::new();
        let result = slf.borrow_mut().graph.destroy(id, &mut released);
        drop(released);
        Ok(result?)
    }

    /// Stores a value without propagating (`Node.value = ...`); the empty sentinel clears it.
    fn replace_value(slf: &Bound<'_, Self>, id: u32, value: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let value = (!value.is(slf.borrow().empty.bind(py))).then_some(value);
        let old = slf.borrow_mut().graph.replace_value(id, value);
        // Dropped with no borrow held: a value's finaliser may call back into this graph.
        drop(old);
        Ok(())
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

    fn listeners(&mut self, id: u32) -> PyResult<Vec<u32>> {
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

    /// The name node `id` was given explicitly, or None for an automatic one.
    fn explicit_name(&self, id: u32) -> PyResult<Option<String>> {
        Ok(self.graph.explicit_name(id)?.map(str::to_owned))
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
        visit.call(&self.graph_ref)?;
        visit.call(&self.op_class)?;
        if let Some(slots) = &self.proxy_slots {
            visit.call(slots.core.owner())?;
            visit.call(slots.id.owner())?;
        }
        for (target, stem) in self.stems.values() {
            visit.call(target)?;
            visit.call(stem)?;
        }
        for pending in self.pending.iter().flatten() {
            visit.call(&pending.name)?;
            visit.call(&pending.proxy_value)?;
            visit.call(&pending.source)?;
        }
        for plan in &self.plans {
            if let Plan::Call(plan) | Plan::Held(plan) = plan {
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
        self.pending.clear();
        self.graph_ref = None;
        self.op_class = None;
        self.stems.clear();
        self.proxy_slots = None;
        self.graph = Graph::new();
    }
}
