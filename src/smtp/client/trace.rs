//! The optional step-by-step record of a connection, printed by `postern connection test`.

use std::fmt;

/// One step of connecting: what was done, whether it worked, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `dns`, `tcp`, `greeting`, `ehlo`, `starttls`, `tls`, `token`, `auth`, ...
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mark = if self.ok { "ok" } else { "FAILED" };
        write!(f, "{:<9} {:<6} {}", self.name, mark, self.detail)
    }
}

/// Where steps go: nowhere (ordinary delivery) or a caller's list.
pub(crate) struct Trace<'a>(Option<&'a mut Vec<Step>>);

impl<'a> Trace<'a> {
    pub fn off() -> Self {
        Trace(None)
    }

    pub fn into(steps: &'a mut Vec<Step>) -> Self {
        Trace(Some(steps))
    }

    /// Records a step; `detail` is only built when someone is listening.
    pub fn step(&mut self, name: &'static str, ok: bool, detail: impl FnOnce() -> String) {
        if let Some(steps) = self.0.as_deref_mut() {
            steps.push(Step {
                name,
                ok,
                detail: detail(),
            });
        }
    }

    /// Records the outcome of a fallible step and passes the result through.
    pub fn record<T, E: fmt::Display>(
        &mut self,
        name: &'static str,
        result: Result<T, E>,
        detail: impl FnOnce(&T) -> String,
    ) -> Result<T, E> {
        match &result {
            Ok(v) => self.step(name, true, || detail(v)),
            Err(e) => self.step(name, false, || e.to_string()),
        }
        result
    }
}
