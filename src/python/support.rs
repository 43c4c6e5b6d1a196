//! The Python half of a worker (`ferricorn_support.py`), compiled once at boot.

use pyo3::prelude::*;
use pyo3::types::PyModule;
use std::ffi::CString;

const SOURCE: &str = include_str!("ferricorn_support.py");

/// Handles to the support module's functions and classes.
pub struct Support {
    pub module: Py<PyModule>,
}

impl Support {
    pub fn load(py: Python<'_>) -> PyResult<Support> {
        let code = CString::new(SOURCE).expect("support source has no NUL");
        let module = PyModule::from_code(py, &code, c"ferricorn_support.py", c"ferricorn_support")?;
        Ok(Support {
            module: module.unbind(),
        })
    }

    pub fn attr<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        self.module.bind(py).getattr(name)
    }
}

/// Log a Python error with its traceback and return the text.
pub fn traceback_text(py: Python<'_>, err: &PyErr) -> String {
    let tb = err
        .traceback(py)
        .and_then(|tb| tb.format().ok())
        .unwrap_or_default();
    format!("{tb}{err}")
}
