//! The graph wire format's per-node loops (`nnsight.serialization`), without a Python frame
//! per node: the records of the nodes the core can spell by itself, and nodes added from
//! records. Python does the rest: msgpack (msgspec), the allowlist of targets, values other
//! than plain scalars, and every node these loops hand back to it (`fallback`).
//!
//! A record is `[kind code, target name, node name, args, kwargs]`; args are `[0, item...]`
//! and kwargs `[2, key, item, ...]`, an item a plain scalar (None, bool, int, float, str), a
//! node reference `[9, id]`, or another tagged value (see `serialization/values.py`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyEllipsis, PyFloat, PyInt, PyList, PySlice, PyString, PyTuple};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use super::core::{CallPlan, Pending, Plan, PyGraphCore, Slot, Slots};
use crate::graph::{Kind, NodeId};

const LIST: i64 = 0;
const TUPLE: i64 = 1;
const DICT: i64 = 2;
const SLICE: i64 = 3;
const ELLIPSIS: i64 = 7;
const NODE: i64 = 9;
/// How deep the core spells containers itself (deeper ones go to Python, which has its limit).
const SPELL_DEPTH: usize = 4;

fn kind_code(kind: Kind) -> i64 {
    match kind {
        Kind::Op => 0,
        Kind::Argument => 1,
        Kind::Swap => 2,
        Kind::Null => 3,
        Kind::Grad => 4,
    }
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

/// Whether `value` travels as itself: None, a bool, a float, a str or an int that fits in 64
/// bits (exact types: a subclass may carry more than its value).
fn plain(value: &Bound<'_, PyAny>) -> bool {
    if value.is_none()
        || value.is_exact_instance_of::<PyBool>()
        || value.is_exact_instance_of::<PyFloat>()
        || value.is_exact_instance_of::<PyString>()
    {
        return true;
    }
    value.is_exact_instance_of::<PyInt>() && value.extract::<i64>().is_ok()
}

/// A node's plan as the export needs it, cloned so no borrow is held across Python calls.
struct Spelled {
    kind: Kind,
    target: Py<PyAny>,
    args: Slots,
    kwargs: Vec<(Py<PyString>, Slot)>,
}

fn slot_item<'py>(
    py: Python<'py>,
    slot: &Slot,
    encode: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    match slot {
        Slot::Node(id) => Ok(PyList::new(py, [NODE, i64::from(*id)])?.into_any()),
        Slot::Const(value) => {
            let value = value.bind(py);
            match spell_constant(value, 0)? {
                Some(spelled) => Ok(spelled),
                None => encode.call1((value,)),
            }
        }
    }
}

/// `value` as the wire spells it when it is made of plain scalars, tuples, lists, slices and
/// Ellipsis (exact types), else None (Python's encoder spells the rest).
fn spell_constant<'py>(
    value: &Bound<'py, PyAny>,
    depth: usize,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = value.py();
    if plain(value) {
        return Ok(Some(value.clone()));
    }
    if depth >= SPELL_DEPTH {
        return Ok(None);
    }
    let (tag, items): (i64, Vec<Bound<'py, PyAny>>) = if value.is_exact_instance_of::<PyTuple>() {
        (TUPLE, value.cast::<PyTuple>()?.iter().collect())
    } else if value.is_exact_instance_of::<PyList>() {
        (LIST, value.cast::<PyList>()?.iter().collect())
    } else if let Ok(slice) = value.cast::<PySlice>() {
        let parts = ["start", "stop", "step"].map(|name| slice.getattr(name));
        (SLICE, parts.into_iter().collect::<PyResult<_>>()?)
    } else if value.is(PyEllipsis::get(py)) {
        (ELLIPSIS, Vec::new())
    } else {
        return Ok(None);
    };
    let spelled = PyList::new(py, [tag])?;
    for item in &items {
        match spell_constant(item, depth + 1)? {
            Some(item) => spelled.append(item)?,
            None => return Ok(None),
        }
    }
    Ok(Some(spelled.into_any()))
}

/// The value a spelled constant stands for, when it is one `spell_constant` makes; None
/// otherwise (Python decodes it).
fn read_constant<'py>(
    item: &Bound<'py, PyAny>,
    depth: usize,
) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = item.py();
    if plain(item) {
        return Ok(Some(item.clone()));
    }
    if depth >= SPELL_DEPTH {
        return Ok(None);
    }
    let Ok(list) = item.cast::<PyList>() else {
        return Ok(None);
    };
    let Some(tag) = list
        .get_item(0)
        .ok()
        .and_then(|tag| tag.extract::<i64>().ok())
    else {
        return Ok(None);
    };
    let mut items = Vec::with_capacity(list.len().saturating_sub(1));
    for part in list.iter().skip(1) {
        match read_constant(&part, depth + 1)? {
            Some(part) => items.push(part),
            None => return Ok(None),
        }
    }
    Ok(Some(match (tag, items.len()) {
        (TUPLE, _) => PyTuple::new(py, items)?.into_any(),
        (LIST, _) => PyList::new(py, items)?.into_any(),
        (ELLIPSIS, 0) => PyEllipsis::get(py).to_owned().into_any(),
        (SLICE, 3) => PySlice::full(py)
            .get_type()
            .call1(PyTuple::new(py, items)?)?,
        _ => return Ok(None),
    }))
}

/// The record of every node but the root, in order. `name_of(target)` is an op target's wire
/// name (None: it has none); `encode(value)` spells a constant that is not a plain scalar;
/// `fallback(id)` gives the record of a node the core cannot spell by itself (a `Node` made in
/// Python, a target without a name, a constant `encode` refused), raising what it must.
#[pyfunction]
pub(super) fn export_records<'py>(
    core: &Bound<'py, PyGraphCore>,
    name_of: &Bound<'py, PyAny>,
    encode: &Bound<'py, PyAny>,
    fallback: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyList>> {
    let py = core.py();
    let records = PyList::empty(py);
    // Target address -> (target, its name): a handful of distinct targets per graph.
    let mut names: FxHashMap<usize, (Py<PyAny>, Option<Py<PyString>>)> = FxHashMap::default();
    let count = core.borrow().graph.len();
    for id in 1..count {
        let id = id as NodeId;
        let spelled = {
            let this = core.borrow();
            let kind = this.graph.kind(id)?;
            match &this.plans[id as usize] {
                Plan::Call(plan) | Plan::Held(plan) => Some(Spelled {
                    kind,
                    target: plan.target.clone_ref(py),
                    args: plan.args.iter().map(|slot| slot.clone_ref(py)).collect(),
                    kwargs: plan
                        .kwargs
                        .iter()
                        .map(|(key, slot)| (key.clone_ref(py), slot.clone_ref(py)))
                        .collect(),
                }),
                Plan::Python => None,
            }
        };
        let record = match spelled {
            Some(spelled) => spell(core, id, spelled, name_of, encode, &mut names)?,
            None => None,
        };
        match record {
            Some(record) => records.append(record)?,
            None => records.append(fallback.call1((id,))?)?,
        }
    }
    Ok(records)
}

/// The record of node `id`, or None when Python must spell it.
fn spell<'py>(
    core: &Bound<'py, PyGraphCore>,
    id: NodeId,
    spelled: Spelled,
    name_of: &Bound<'py, PyAny>,
    encode: &Bound<'py, PyAny>,
    names: &mut FxHashMap<usize, (Py<PyAny>, Option<Py<PyString>>)>,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let py = core.py();
    let target_name = if spelled.kind == Kind::Op {
        let target = spelled.target.bind(py);
        let address = target.as_ptr() as usize;
        let name = match names.get(&address) {
            Some((_, name)) => name.as_ref().map(|name| name.clone_ref(py)),
            None => {
                let found = name_of.call1((target,))?;
                let name = if found.is_none() {
                    None
                } else {
                    Some(found.cast_into::<PyString>()?.unbind())
                };
                let kept = name.as_ref().map(|name| name.clone_ref(py));
                names.insert(address, (target.clone().unbind(), kept));
                name
            }
        };
        match name {
            Some(name) => name.into_bound(py).into_any(),
            None => return Ok(None),
        }
    } else {
        PyString::intern(py, kind_name(spelled.kind)).into_any()
    };
    let args = PyList::new(py, [LIST])?;
    for slot in &spelled.args {
        match slot_item(py, slot, encode) {
            Ok(item) => args.append(item)?,
            Err(_) => return Ok(None), // Python names the node and the value
        }
    }
    let kwargs = PyList::new(py, [DICT])?;
    for (key, slot) in &spelled.kwargs {
        kwargs.append(key.bind(py))?;
        match slot_item(py, slot, encode) {
            Ok(item) => kwargs.append(item)?,
            Err(_) => return Ok(None),
        }
    }
    // Automatic names travel as None: the receiver, adding the same targets in the same
    // order, names them alike, and errors come back by node id anyway.
    let name = match core.borrow().graph.explicit_name(id)? {
        Some(name) => PyString::new(py, name).into_any(),
        None => py.None().into_bound(py),
    };
    let record = PyList::empty(py);
    record.append(kind_code(spelled.kind))?;
    record.append(target_name)?;
    record.append(name)?;
    record.append(args)?;
    record.append(kwargs)?;
    Ok(Some(record))
}

/// One item of a record's args or kwargs as a slot, for a node added as `id`: None when it is
/// neither a plain scalar nor a reference to an earlier node (Python decodes it).
fn item_slot(
    item: &Bound<'_, PyAny>,
    id: NodeId,
    deps: &mut SmallVec<[NodeId; 8]>,
    constant: &Bound<'_, PyAny>,
) -> PyResult<Option<Slot>> {
    if plain(item) {
        return Ok(Some(Slot::Const(item.clone().unbind())));
    }
    let Ok(list) = item.cast::<PyList>() else {
        return Ok(None);
    };
    if list.len() != 2 || list.get_item(0)?.extract::<i64>().ok() != Some(NODE) {
        // Another tagged value (a slice, a tuple, a dtype...): a constant if it is plain data
        // the core reads itself, or if `constant` says so.
        if let Some(value) = read_constant(item, 0)? {
            return Ok(Some(Slot::Const(value.unbind())));
        }
        return Ok(constant
            .call1((item,))
            .ok()
            .map(|value| Slot::Const(value.unbind())));
    }
    let reference = list.get_item(1)?;
    if !reference.is_exact_instance_of::<PyInt>() {
        return Ok(None);
    }
    match reference.extract::<NodeId>() {
        Ok(dep) if dep < id => {
            deps.push(dep);
            Ok(Some(Slot::Node(dep)))
        }
        _ => Ok(None), // a reference to a later node: Python raises saying so
    }
}

/// Adds the nodes of `records` in order, each as id `len(graph)` at that moment. Ops,
/// `argument`s and `null`s whose arguments are plain scalars, node references and constants
/// (`constant(item)`: the decoded value, raising for one that holds a node or a tensor in a
/// container) are added here, their target from `resolve(name)` (once per distinct name; it
/// raises for names outside the allowlist); anything else goes to `fallback(record, id)`,
/// which adds it or raises. Every node gets `(source, id)` as its line (the sender maps it
/// back to its own), `empty` as its proxy value, and a `None` in `nodes`.
#[pyfunction]
pub(super) fn import_records<'py>(
    core: &Bound<'py, PyGraphCore>,
    records: &Bound<'py, PyList>,
    resolve: &Bound<'py, PyAny>,
    constant: &Bound<'py, PyAny>,
    fallback: &Bound<'py, PyAny>,
    nodes: &Bound<'py, PyList>,
    source: &Bound<'py, PyString>,
) -> PyResult<()> {
    let py = core.py();
    let mut targets: FxHashMap<String, Py<PyAny>> = FxHashMap::default();
    let empty = core.borrow().empty.clone_ref(py);
    for record in records.iter() {
        let id = core.borrow().graph.len() as NodeId;
        let flat = Flat {
            resolve,
            constant,
            source,
            empty: &empty,
        };
        if !add_flat(core, &record, id, &flat, &mut targets)? {
            fallback.call1((&record, id))?;
            continue;
        }
        nodes.append(py.None())?;
    }
    Ok(())
}

/// What `add_flat` adds nodes with (see `import_records`).
struct Flat<'a, 'py> {
    resolve: &'a Bound<'py, PyAny>,
    constant: &'a Bound<'py, PyAny>,
    source: &'a Bound<'py, PyString>,
    empty: &'a Py<PyAny>,
}

/// Adds `record` as node `id` when it is flat (see `import_records`); false when it is not.
fn add_flat<'py>(
    core: &Bound<'py, PyGraphCore>,
    record: &Bound<'py, PyAny>,
    id: NodeId,
    flat: &Flat<'_, 'py>,
    targets: &mut FxHashMap<String, Py<PyAny>>,
) -> PyResult<bool> {
    let py = core.py();
    let Ok(record) = record.cast::<PyList>() else {
        return Ok(false);
    };
    if record.len() != 5 {
        return Ok(false);
    }
    let kind = match record.get_item(0)?.extract::<i64>() {
        Ok(0) => Kind::Op,
        Ok(1) => Kind::Argument,
        Ok(3) => Kind::Null,
        _ => return Ok(false),
    };
    let target_name = record.get_item(1)?;
    let node_name = record.get_item(2)?;
    let Ok(target_name) = target_name.cast::<PyString>() else {
        return Ok(false);
    };
    let node_name = if node_name.is_none() {
        None // an automatic name
    } else {
        match node_name.cast_into::<PyString>() {
            Ok(name) => Some(name),
            Err(_) => return Ok(false),
        }
    };
    if kind != Kind::Op && target_name.to_str()? != kind_name(kind) {
        return Ok(false);
    }
    let args = record.get_item(3)?;
    let kwargs = record.get_item(4)?;
    let (Ok(args), Ok(kwargs)) = (args.cast::<PyList>(), kwargs.cast::<PyList>()) else {
        return Ok(false);
    };
    if args.is_empty() || args.get_item(0)?.extract::<i64>().ok() != Some(LIST) {
        return Ok(false);
    }
    if kwargs.len() % 2 != 1 || kwargs.get_item(0)?.extract::<i64>().ok() != Some(DICT) {
        return Ok(false);
    }
    let mut deps = SmallVec::<[NodeId; 8]>::new();
    let mut slots = Slots::with_capacity(args.len() - 1);
    for item in args.iter().skip(1) {
        match item_slot(&item, id, &mut deps, flat.constant)? {
            Some(slot) => slots.push(slot),
            None => return Ok(false),
        }
    }
    let mut keyword_slots = Vec::with_capacity(kwargs.len() / 2);
    for pair in 0..kwargs.len() / 2 {
        let key = kwargs.get_item(1 + 2 * pair)?;
        let Ok(key) = key.cast_into::<PyString>() else {
            return Ok(false);
        };
        if kind == Kind::Op && key.to_str()? == "out" {
            return Ok(false); // an `out=` call runs under a guard Python adds
        }
        match item_slot(
            &kwargs.get_item(2 + 2 * pair)?,
            id,
            &mut deps,
            flat.constant,
        )? {
            Some(slot) => keyword_slots.push((key.unbind(), slot)),
            None => return Ok(false),
        }
    }
    if kind == Kind::Null && (slots.len() != 1 || !keyword_slots.is_empty()) {
        return Ok(false);
    }
    // An argument node's key (its first argument, a str): the root's is refused by Python.
    let argument_key = match (kind, slots.first()) {
        (Kind::Argument, Some(Slot::Const(key))) => match key.bind(py).cast::<PyString>() {
            Ok(key) if key.to_str()? != crate::graph::ROOT_ARGUMENT => {
                Some(key.to_str()?.to_owned())
            }
            _ => return Ok(false),
        },
        (Kind::Argument, _) => return Ok(false),
        _ => None,
    };
    if kind == Kind::Argument && (!deps.is_empty() || !keyword_slots.is_empty()) {
        return Ok(false);
    }
    let target = match kind {
        Kind::Op => {
            let key = target_name.to_str()?;
            match targets.get(key) {
                Some(target) => target.bind(py).clone(),
                None => {
                    let target = flat.resolve.call1((target_name,))?;
                    if target.cast::<PyString>().is_ok() {
                        return Ok(false); // a method-name target: Python's walk runs those
                    }
                    targets.insert(key.to_owned(), target.clone().unbind());
                    target
                }
            }
        }
        _ => target_name.clone().into_any(),
    };
    let stem = match kind {
        Kind::Op => PyGraphCore::stem(core, &target)?,
        _ => target_name.clone(),
    };
    let explicit = match &node_name {
        Some(name) => Some(name.to_str()?),
        None => None,
    };
    let mut this = core.borrow_mut();
    let added = this.graph.add_node(
        explicit,
        stem.to_str()?,
        kind,
        &deps,
        argument_key.as_deref(),
    )?;
    if added != id {
        return Err(PyValueError::new_err(format!(
            "node {id} was added as {added}"
        )));
    }
    let plan = CallPlan {
        target: target.unbind(),
        args: slots,
        kwargs: keyword_slots,
    };
    this.plans.push(match kind {
        Kind::Op => Plan::Call(plan),
        _ => Plan::Held(plan),
    });
    this.pending.push(Some(Pending {
        name: node_name.map(Bound::unbind),
        proxy_value: Some(flat.empty.clone_ref(py)),
        source: PyTuple::new(
            py,
            [
                flat.source.clone().into_any(),
                id.into_pyobject(py)?.into_any(),
            ],
        )?
        .into_any()
        .unbind(),
    }));
    Ok(true)
}
