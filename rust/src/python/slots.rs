//! Direct reads and writes of a class's `__slots__` members.
//!
//! A slot named in `__slots__` is a pointer at a fixed offset in every instance of the class and
//! of its subclasses; its descriptor (a `member_descriptor`) knows the offset. Going through
//! `PyObject_GenericGetAttr` / `GenericSetAttr` instead looks the name up along the type's MRO
//! on every access: that was ~150 instructions per access, and a traced op reads two slots of
//! each proxy argument and writes two on its new proxy.

use std::sync::Mutex;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::PyType;

/// Slots found before, by class and name: a graph and its reads are made anew for every trace,
/// and finding a slot along the class's MRO cost ~1.5k instructions, four per trace. Each entry
/// holds its class, so a class's address is never reused while it is listed; a program that
/// makes more proxy classes than this holds finds the rest each time.
static FOUND: Mutex<Vec<Found>> = Mutex::new(Vec::new());
const FOUND_MAX: usize = 32;

fn lock_found() -> std::sync::MutexGuard<'static, Vec<Found>> {
    FOUND
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Found {
    cls: Py<PyType>,
    name: &'static str,
    slot: Option<(Py<PyType>, isize)>,
}

/// Where the slot `name` of class `owner` lives in its instances.
pub(super) struct MemberSlot {
    owner: Py<PyType>,
    offset: isize,
}

impl MemberSlot {
    /// The object slot `name` of `cls`, or None when `cls.name` is not a writable object slot
    /// (then callers use the generic attribute protocol).
    pub(super) fn of(cls: &Bound<'_, PyType>, name: &'static str) -> Option<Self> {
        let py = cls.py();
        // The lock is never held while Python code runs (`find` may run some), so neither a
        // re-entrant call nor another thread waiting for the GIL can deadlock on it.
        let known = |found: &[Found]| {
            found
                .iter()
                .find(|f| f.cls.is(cls) && f.name == name)
                .map(|hit| {
                    hit.slot.as_ref().map(|(owner, offset)| Self {
                        owner: owner.clone_ref(py),
                        offset: *offset,
                    })
                })
        };
        if let Some(slot) = known(&lock_found()) {
            return slot;
        }
        let slot = Self::find(cls, name);
        let mut found = lock_found();
        if found.len() < FOUND_MAX && known(&found).is_none() {
            found.push(Found {
                cls: cls.clone().unbind(),
                name,
                slot: slot
                    .as_ref()
                    .map(|slot| (slot.owner.clone_ref(py), slot.offset)),
            });
        }
        slot
    }

    fn find(cls: &Bound<'_, PyType>, name: &str) -> Option<Self> {
        let descriptor = cls.getattr(name).ok()?;
        // SAFETY: `descriptor` is a live object; it is read as a member descriptor only after
        // its type is checked to be exactly `member_descriptor`, whose `d_member` points to
        // the `PyMemberDef` the class was built with (alive as long as the class).
        unsafe {
            if ffi::Py_TYPE(descriptor.as_ptr()) != &raw mut ffi::PyMemberDescr_Type {
                return None;
            }
            let member = (*descriptor.as_ptr().cast::<ffi::PyMemberDescrObject>()).d_member;
            if member.is_null()
                || (*member).type_code != ffi::Py_T_OBJECT_EX
                || (*member).flags & ffi::Py_READONLY != 0
            {
                return None;
            }
            let owner = (*descriptor.as_ptr().cast::<ffi::PyDescrObject>()).d_type;
            Some(Self {
                owner: Bound::from_borrowed_ptr(cls.py(), owner.cast())
                    .cast_into::<PyType>()
                    .ok()?
                    .unbind(),
                offset: (*member).offset,
            })
        }
    }

    /// Whether instances of `cls` have this slot (`cls` is the owner or a subclass of it).
    pub(super) fn in_type(&self, cls: &Bound<'_, PyType>) -> bool {
        // SAFETY: both are live type objects while the GIL is held.
        unsafe { ffi::PyType_IsSubtype(cls.as_type_ptr(), self.owner.as_ptr().cast()) != 0 }
    }

    fn field(&self, obj: &Bound<'_, PyAny>) -> Option<*mut *mut ffi::PyObject> {
        self.in_type(&obj.get_type()).then(|| {
            // SAFETY: `obj` is an instance of the owner or a subclass, so `offset` is inside it
            // and holds the slot's pointer (NULL while unset).
            unsafe { obj.as_ptr().cast::<u8>().offset(self.offset).cast() }
        })
    }

    /// The slot's value on `obj`: `Some(None)` while unset, None when `obj` has no such slot.
    pub(super) fn get<'py>(&self, obj: &Bound<'py, PyAny>) -> Option<Option<Bound<'py, PyAny>>> {
        let field = self.field(obj)?;
        // SAFETY: `field` is the slot of a live object; a non-null value is a reference it
        // owns, borrowed here and made a new reference.
        Some(unsafe { Bound::from_borrowed_ptr_or_opt(obj.py(), *field) })
    }

    /// Sets the slot on `obj` as `object.__setattr__` would (a class's own `__setattr__` is
    /// bypassed). False, with nothing set, when `obj` has no such slot.
    pub(super) fn set(&self, obj: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> bool {
        let Some(field) = self.field(obj) else {
            return false;
        };
        // SAFETY: as in `get`; the slot takes a new reference and drops the old one last, so
        // a finaliser the old value runs sees the slot already set.
        unsafe {
            let old = std::mem::replace(&mut *field, value.clone().into_ptr());
            ffi::Py_XDECREF(old);
        }
        true
    }

    pub(super) fn owner(&self) -> &Py<PyType> {
        &self.owner
    }
}
