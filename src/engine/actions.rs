//! What a caller may do with an execution now, so a console can disable the
//! controls it may not use and say why. The RPCs still decide when called;
//! this only asks the same questions early: the execution's state first
//! (the domain's rules), then the caller's grants.

use super::{Engine, Error, authorize, now};
use crate::domain::{access::Caller, control, execution::ExecutionDetail, machine::Command, resume};

/// A change a caller can ask for on an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Resume,
    Abort,
    Pause,
    Continue,
    Approve,
    Reject,
}

impl Control {
    pub const ALL: [Control; 6] =
        [Control::Resume, Control::Abort, Control::Pause, Control::Continue, Control::Approve, Control::Reject];
}

/// Why a control is not allowed: a short machine-readable reason and words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotAllowed {
    pub reason: &'static str,
    pub message: String,
}

impl Engine {
    /// For each control, whether `caller` may use it on `d` now. A state
    /// that blocks it wins over a missing grant: no grant would help.
    pub fn allowed_controls(&self, caller: &Caller, d: &ExecutionDetail) -> Vec<(Control, Result<(), NotAllowed>)> {
        let state = &d.state;
        let refused = |r: crate::domain::Refusal| NotAllowed { reason: r.reason.as_str(), message: r.message };
        let denied = |e: Error| NotAllowed { reason: "PERMISSION_DENIED", message: format!("permission denied: {e}") };
        Control::ALL
            .into_iter()
            .map(|control| {
                let allowed = match control {
                    Control::Resume => resume::check_execution(&d.execution, self.settings().chain_limits, now())
                        .map_err(|(_, r)| refused(r))
                        .and_then(|()| authorize::execute_somewhere(caller, &d.execution.application).map_err(denied)),
                    _ => {
                        let command = match control {
                            Control::Abort => Command::Abort,
                            Control::Pause => Command::Pause,
                            Control::Continue => Command::Continue,
                            Control::Approve => Command::Approve,
                            _ => Command::Reject,
                        };
                        control::would_act(state, command)
                            .map_err(refused)
                            .and_then(|()| authorize::steer(caller, state).map_err(denied))
                    }
                };
                (control, allowed)
            })
            .collect()
    }
}
