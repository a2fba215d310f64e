//! The permission checks of the use cases, on the data each one loaded.
//!
//! What a caller may not read does not exist for it: such a refusal is
//! [`Error::Hidden`], answered as NOT_FOUND with the message of a missing
//! id. A caller who may read but not change gets [`Error::Denied`].

use super::{Error, Result};
use crate::domain::{
    access::{Action, Caller},
    execution::{Execution, ExecutionState},
    pipeline::Definition,
};

/// May `caller` run the stages of `definition` from index `from` on, for `application`?
pub fn execute(caller: &Caller, application: &str, definition: &Definition, from: usize) -> Result<()> {
    let environments = definition.stages.iter().skip(from).map(|s| s.environment_type).collect();
    caller.authorize(&Action::Execute { application, environments }).map_err(|d| Error::Denied(d.0))
}

/// May `caller` execute anything of `application` (EXECUTE_PIPELINE on it
/// for some environment type, or ADMIN)? The cheap check that comes before a
/// definition is compiled or a resume is planned; [`execute`] checks the
/// stages' environment types after.
pub fn execute_somewhere(caller: &Caller, application: &str) -> Result<()> {
    caller.authorize(&Action::Execute { application, environments: Vec::new() }).map_err(|d| Error::Denied(d.0))
}

/// May `caller` steer `d` (abort, pause, continue, approve, reject)? It must
/// be able to read it, and be allowed to run every stage the execution has
/// not yet passed.
pub fn steer(caller: &Caller, d: &ExecutionState) -> Result<()> {
    read_execution(caller, &d.execution)?;
    let from = d.stages.iter().position(|s| !s.status.is_passed()).unwrap_or(d.stages.len());
    execute(caller, &d.execution.application, &d.definition, from)
}

/// May `caller` read what belongs to `application`? For filters a caller
/// names itself (a list of one application): the denial names nothing the
/// caller did not say.
pub fn read(caller: &Caller, application: &str) -> Result<()> {
    caller.authorize(&Action::Read { application }).map_err(|d| Error::Denied(d.0))
}

/// May `caller` read `what` `id` of `application`? If not, it is not found.
pub fn read_or_hide(caller: &Caller, application: &str, what: &str, id: &str) -> Result<()> {
    caller.authorize(&Action::Read { application }).map_err(|d| match Error::not_found(what, id) {
        Error::NotFound(not_found) => Error::Hidden { not_found, denied: d.0 },
        other => other,
    })
}

/// [`read_or_hide`] for an execution.
pub fn read_execution(caller: &Caller, e: &Execution) -> Result<()> {
    read_or_hide(caller, &e.application, "execution", &e.id)
}

pub fn run_tasks(caller: &Caller) -> Result<()> {
    caller.authorize(&Action::RunTasks).map_err(|d| Error::Denied(d.0))
}

pub fn administer(caller: &Caller) -> Result<()> {
    caller.authorize(&Action::Administer).map_err(|d| Error::Denied(d.0))
}
