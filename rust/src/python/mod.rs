//! PyO3 bindings: the private `nnsight._core` extension module.
//!
//! Only this module knows about Python. [`GraphError`]s become Python exceptions in exactly one
//! place, the `From` impl below.

mod core;
mod hooks;
mod reads;
mod slots;
mod source;
mod wire;

use pyo3::exceptions::{PyKeyError, PyValueError};
use pyo3::prelude::*;

use crate::error::GraphError;

impl From<GraphError> for PyErr {
    fn from(err: GraphError) -> PyErr {
        match err {
            GraphError::UnknownName(_) => PyKeyError::new_err(err.to_string()),
            _ => PyValueError::new_err(err.to_string()),
        }
    }
}

/// `nnsight._core`: the graph bookkeeping the Python `nnsight.tracing` layer is built on.
///
/// The module keeps a GIL-guarded `RefCell`-like borrow per graph; it is declared
/// `gil_used = true` until the bindings are audited for free-threaded Python.
#[pymodule(gil_used = true)]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<core::PyGraphCore>()?;
    m.add_class::<source::SourceFinder>()?;
    m.add_class::<hooks::OutputHook>()?;
    m.add_class::<reads::ModuleReads>()?;
    core::register(m)?;
    m.add_function(wrap_pyfunction!(wire::export_records, m)?)?;
    m.add_function(wrap_pyfunction!(wire::import_records, m)?)?;
    m.add("ROOT_ARGUMENT", crate::graph::ROOT_ARGUMENT)?;
    Ok(())
}
