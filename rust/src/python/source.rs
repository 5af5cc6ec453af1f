//! `SourceFinder`: the user's `(file, line)` that made a node, found by walking Python frames.
//!
//! `Graph.add` asks for it once per node, so it is on the tracing hot path. The frame walk in
//! Python cost ~2k instructions per node; here each step is a pointer lookup. What counts as
//! library code is decided once per code object, and each call site's line once per
//! instruction offset: `frame.f_lineno` scans the code's line table from its start, which in a
//! long function cost more than the rest of `Graph.add`.

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};
use rustc_hash::FxHashMap;

/// Cached code objects at most; the cache is emptied when it would hold more.
const MAX_CODES: usize = 4096;

/// What the finder knows about one code object (kept alive, so its address stays its own).
struct CodeSites {
    code: Py<PyAny>,
    internal: bool,
    /// Instruction offset -> `(file, line)`.
    sites: FxHashMap<i32, Py<PyTuple>>,
}

/// Finds the innermost frame outside the library directories (`nnsight._source`'s
/// `user_source`). Directories are prefixes ending in the path separator; `unknown` is what
/// `find` answers when every frame is library code.
#[pyclass(module = "nnsight._core")]
pub struct SourceFinder {
    library_dirs: Vec<String>,
    codes: FxHashMap<usize, CodeSites>,
    unknown: Py<PyTuple>,
}

#[pymethods]
impl SourceFinder {
    #[new]
    fn new(library_dirs: Vec<String>, unknown: Py<PyTuple>) -> Self {
        Self {
            library_dirs,
            codes: FxHashMap::default(),
            unknown,
        }
    }

    /// Treats files under `directory` (ending in the path separator) as library internals.
    fn add_library_dir(&mut self, directory: String) {
        if !self.library_dirs.contains(&directory) {
            self.library_dirs.push(directory);
            self.codes.clear();
        }
    }

    /// `(file, line)` of the innermost frame outside the library, searched from the frame of
    /// the Python function calling this, `skip - 1` frames further up (as `sys._getframe(skip)`
    /// in a Python helper would start); `unknown` when every frame is library code.
    #[pyo3(signature = (skip = 1))]
    fn find<'py>(&mut self, py: Python<'py>, skip: usize) -> PyResult<Bound<'py, PyTuple>> {
        self.find_from(py, skip)
    }

    fn __traverse__(&self, visit: pyo3::PyVisit<'_>) -> Result<(), pyo3::PyTraverseError> {
        for entry in self.codes.values() {
            visit.call(&entry.code)?;
            for site in entry.sites.values() {
                visit.call(site)?;
            }
        }
        visit.call(&self.unknown)
    }
}

impl SourceFinder {
    /// [`SourceFinder::find`] for the core's own hot paths: called from Rust code that Python
    /// called, `skip = 1` starts at that Python caller's frame.
    pub(crate) fn find_from<'py>(
        &mut self,
        py: Python<'py>,
        skip: usize,
    ) -> PyResult<Bound<'py, PyTuple>> {
        // SAFETY: with the GIL held, PyEval_GetFrame returns the running frame (borrowed) or
        // NULL; PyFrame_GetBack returns a new reference or NULL.
        let current = unsafe { ffi::PyEval_GetFrame() };
        let mut frame: Option<Bound<'py, PyAny>> =
            unsafe { Bound::from_borrowed_ptr_or_opt(py, current.cast()) };
        for _ in 1..skip {
            frame = frame.and_then(|f| back(&f));
        }
        while let Some(f) = frame {
            let ptr: *mut ffi::PyFrameObject = f.as_ptr().cast();
            // SAFETY: `ptr` is a live frame object; PyFrame_GetCode returns a new reference.
            let code = unsafe { Bound::from_owned_ptr(py, ffi::PyFrame_GetCode(ptr).cast()) };
            let key = code.as_ptr() as usize;
            if !self.codes.contains_key(&key) {
                if self.codes.len() >= MAX_CODES {
                    self.codes.clear();
                }
                let file = code.getattr(pyo3::intern!(py, "co_filename"))?;
                let file_str = file.cast::<PyString>()?.to_str()?;
                let internal = self
                    .library_dirs
                    .iter()
                    .any(|dir| file_str.starts_with(dir.as_str()));
                self.codes.insert(
                    key,
                    CodeSites {
                        code: code.clone().unbind(),
                        internal,
                        sites: FxHashMap::default(),
                    },
                );
            }
            let entry = self.codes.get_mut(&key).expect("inserted above");
            if entry.internal {
                frame = back(&f);
                continue;
            }
            // SAFETY: `ptr` is a live frame object.
            let offset = unsafe { ffi::PyFrame_GetLasti(ptr) };
            if let Some(site) = entry.sites.get(&offset) {
                return Ok(site.bind(py).clone());
            }
            // SAFETY: as above.
            let line = unsafe { ffi::PyFrame_GetLineNumber(ptr) };
            let file = code.getattr(pyo3::intern!(py, "co_filename"))?;
            let site = PyTuple::new(py, [file, line.into_pyobject(py)?.into_any()])?;
            entry.sites.insert(offset, site.clone().unbind());
            return Ok(site);
        }
        Ok(self.unknown.bind(py).clone())
    }
}

/// The frame that called `frame`, if any.
fn back<'py>(frame: &Bound<'py, PyAny>) -> Option<Bound<'py, PyAny>> {
    // SAFETY: `frame` is a live frame object; PyFrame_GetBack returns a new reference or NULL.
    unsafe {
        Bound::from_owned_ptr_or_opt(
            frame.py(),
            ffi::PyFrame_GetBack(frame.as_ptr().cast()).cast(),
        )
    }
}
