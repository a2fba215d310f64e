//! The permission checks of the use cases, on the data each one loaded.

use super::{Error, Result};
use crate::domain::{
    access::{Action, Caller},
    execution::ExecutionState,
    pipeline::Definition,
};

/// May `caller` run the stages of `definition` from index `from` on, for `application`?
pub fn execute(caller: &Caller, application: &str, definition: &Definition, from: usize) -> Result<()> {
    let environments = definition.stages.iter().skip(from).map(|s| s.environment_type).collect();
    caller.authorize(&Action::Execute { application, environments }).map_err(|d| Error::Denied(d.0))
}

/// May `caller` steer `d` (abort, pause, continue, approve, reject)? It must
/// be allowed to run every stage the execution has not yet passed.
pub fn steer(caller: &Caller, d: &ExecutionState) -> Result<()> {
    let from = d.stages.iter().position(|s| !s.status.is_passed()).unwrap_or(d.stages.len());
    execute(caller, &d.execution.application, &d.definition, from)
}

pub fn read(caller: &Caller, application: &str) -> Result<()> {
    caller.authorize(&Action::Read { application }).map_err(|d| Error::Denied(d.0))
}

pub fn run_tasks(caller: &Caller) -> Result<()> {
    caller.authorize(&Action::RunTasks).map_err(|d| Error::Denied(d.0))
}

pub fn administer(caller: &Caller) -> Result<()> {
    caller.authorize(&Action::Administer).map_err(|d| Error::Denied(d.0))
}
