//! Who may do what: grants held through user groups, and the one function
//! that decides. A grant scoped to an environment type allows an action only
//! if every stage the action would run targets that type.

use std::fmt;

use super::{limits::quote, pipeline::EnvironmentType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Deployments: Execute Pipeline — start, resume, abort, pause, continue, approve, reject.
    ExecutePipeline,
    /// Read executions and pipelines.
    View,
    /// Poll, heartbeat and complete tasks (workers).
    RunTasks,
    /// Manage groups and grants; implies every other permission.
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 4] =
        [Permission::ExecutePipeline, Permission::View, Permission::RunTasks, Permission::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ExecutePipeline => "EXECUTE_PIPELINE",
            Permission::View => "VIEW",
            Permission::RunTasks => "RUN_TASKS",
            Permission::Admin => "ADMIN",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == text)
    }

    /// Whether a grant of this permission lets its holder read pipelines and
    /// executions in its scope. RUN_TASKS does not: a worker gets the tasks it
    /// polls, and nothing else.
    pub fn reads(self) -> bool {
        matches!(self, Permission::View | Permission::ExecutePipeline | Permission::Admin)
    }
}

impl EnvironmentType {
    pub fn as_str(self) -> &'static str {
        match self {
            EnvironmentType::Prod => "PROD",
            EnvironmentType::NonProd => "NON_PROD",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [EnvironmentType::Prod, EnvironmentType::NonProd].into_iter().find(|e| e.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub id: String,
    pub group_id: String,
    pub permission: Permission,
    /// None: every application.
    pub application: Option<String>,
    /// None: every environment type.
    pub environment: Option<EnvironmentType>,
}

/// The authenticated caller and the grants of every group it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub grants: Vec<Grant>,
    /// Authentication is switched off (dev, or `--insecure-no-auth`): everything is allowed.
    pub unrestricted: bool,
}

/// What a caller wants to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action<'a> {
    /// Run (or steer) stages of `application` that target these environment types.
    Execute {
        application: &'a str,
        environments: Vec<EnvironmentType>,
    },
    /// Read anything of `application`.
    Read {
        application: &'a str,
    },
    RunTasks,
    Administer,
}

/// A refusal naming the permission, application and environment types missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Denied(pub String);

impl Caller {
    pub fn unrestricted(subject: &str) -> Caller {
        Caller { subject: subject.into(), grants: Vec::new(), unrestricted: true }
    }

    /// Allows `action` or says which grant is missing.
    pub fn authorize(&self, action: &Action<'_>) -> Result<(), Denied> {
        if self.unrestricted || self.grants.iter().any(|g| g.allows(action)) {
            return Ok(());
        }
        Err(Denied(format!("{} may not {action}: {}", quote(&self.subject), action.requirement())))
    }

    /// The applications this caller may read; None means all of them.
    pub fn readable_applications(&self) -> Option<Vec<String>> {
        let readers = || self.grants.iter().filter(|g| g.permission.reads());
        if self.unrestricted || readers().any(|g| g.application.is_none()) {
            return None;
        }
        let mut apps: Vec<String> = readers().filter_map(|g| g.application.clone()).collect();
        apps.sort();
        apps.dedup();
        Some(apps)
    }
}

impl Grant {
    fn covers_application(&self, application: &str) -> bool {
        self.application.as_deref().is_none_or(|a| a == application)
    }

    pub fn allows(&self, action: &Action<'_>) -> bool {
        if self.permission == Permission::Admin {
            return true;
        }
        match action {
            Action::Execute { application, environments } => {
                self.permission == Permission::ExecutePipeline
                    && self.covers_application(application)
                    && self.environment.is_none_or(|env| environments.iter().all(|e| *e == env))
            }
            Action::Read { application } => self.permission.reads() && self.covers_application(application),
            Action::RunTasks => self.permission == Permission::RunTasks,
            Action::Administer => false,
        }
    }
}

impl Action<'_> {
    fn requirement(&self) -> String {
        match self {
            Action::Execute { application, environments } => {
                let mut types: Vec<&str> = environments.iter().map(|e| e.as_str()).collect();
                types.sort_unstable();
                types.dedup();
                format!(
                    "it needs a grant of EXECUTE_PIPELINE on application {} covering environment type(s) [{}]; ask an admin to add one to a group you belong to",
                    quote(application),
                    types.join(", ")
                )
            }
            Action::Read { application } => {
                format!(
                    "it needs a grant of VIEW, EXECUTE_PIPELINE or ADMIN on application {}; ask an admin to add one to a group you belong to",
                    quote(application)
                )
            }
            Action::RunTasks => "it needs a RUN_TASKS grant".into(),
            Action::Administer => "it needs an ADMIN grant".into(),
        }
    }
}

impl fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Execute { application, .. } => write!(f, "execute pipelines of application {}", quote(application)),
            Action::Read { application } => write!(f, "read application {}", quote(application)),
            Action::RunTasks => f.write_str("run tasks"),
            Action::Administer => f.write_str("manage access"),
        }
    }
}

/// A group with its members and grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserGroup {
    pub id: String,
    pub name: String,
    pub members: Vec<String>,
    pub grants: Vec<Grant>,
    pub created_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use EnvironmentType::{NonProd, Prod};

    fn caller(grants: &[(Permission, Option<&str>, Option<EnvironmentType>)]) -> Caller {
        Caller {
            subject: "alice".into(),
            grants: grants
                .iter()
                .map(|(p, a, e)| Grant {
                    id: "g".into(),
                    group_id: "grp".into(),
                    permission: *p,
                    application: a.map(Into::into),
                    environment: *e,
                })
                .collect(),
            unrestricted: false,
        }
    }

    /// Grant scope × environment types of the stages to run → allowed?
    #[test]
    fn execute_permission_table() {
        use Permission::*;
        // (grant application, grant environment type, stage environment types, allowed)
        type Row<'a> = (Option<&'a str>, Option<EnvironmentType>, &'a [EnvironmentType], bool);
        let table: &[Row] = &[
            (None, None, &[Prod, NonProd], true),
            (Some("shop"), None, &[Prod, NonProd], true),
            (Some("other"), None, &[NonProd], false),
            (Some("shop"), Some(Prod), &[Prod], true),
            (Some("shop"), Some(Prod), &[Prod, NonProd], false),
            (Some("shop"), Some(NonProd), &[NonProd, NonProd], true),
            (Some("shop"), Some(NonProd), &[Prod], false),
            (None, Some(NonProd), &[NonProd], true),
            (None, Some(NonProd), &[], true),
        ];
        for (app, env, stages, want) in table {
            let c = caller(&[(ExecutePipeline, *app, *env)]);
            let action = Action::Execute { application: "shop", environments: stages.to_vec() };
            assert_eq!(c.authorize(&action).is_ok(), *want, "{app:?} {env:?} {stages:?}");
        }
    }

    #[test]
    fn view_grants_read_but_not_execute_and_admin_implies_everything() {
        use Permission::*;
        let viewer = caller(&[(View, Some("shop"), None)]);
        assert!(viewer.authorize(&Action::Read { application: "shop" }).is_ok());
        assert!(viewer.authorize(&Action::Read { application: "bank" }).is_err());
        let denied = viewer.authorize(&Action::Execute { application: "shop", environments: vec![Prod] }).unwrap_err();
        assert!(
            denied.0.contains("EXECUTE_PIPELINE") && denied.0.contains("\"shop\"") && denied.0.contains("PROD"),
            "{denied}"
        );
        assert!(viewer.authorize(&Action::Administer).is_err());
        assert!(viewer.authorize(&Action::RunTasks).is_err());

        let admin = caller(&[(Admin, None, None)]);
        for action in [Action::Administer, Action::RunTasks, Action::Read { application: "x" }] {
            assert!(admin.authorize(&action).is_ok());
        }
        assert!(Caller::unrestricted("dev").authorize(&Action::Administer).is_ok());
    }

    /// Permission × scope × the application read → allowed? RUN_TASKS gives
    /// a worker its tasks, not reads (issue 9).
    #[test]
    fn read_permission_table() {
        use Permission::*;
        let table: &[(Permission, Option<&str>, bool)] = &[
            (View, None, true),
            (View, Some("shop"), true),
            (View, Some("bank"), false),
            (ExecutePipeline, None, true),
            (ExecutePipeline, Some("shop"), true),
            (ExecutePipeline, Some("bank"), false),
            (Admin, None, true),
            (RunTasks, None, false),
            (RunTasks, Some("shop"), false),
        ];
        for (permission, app, want) in table {
            let grant = Grant {
                id: "g".into(),
                group_id: "grp".into(),
                permission: *permission,
                application: app.map(Into::into),
                environment: None,
            };
            assert_eq!(grant.allows(&Action::Read { application: "shop" }), *want, "{permission:?} on {app:?}");
            let c = caller(&[(*permission, *app, None)]);
            assert_eq!(c.authorize(&Action::Read { application: "shop" }).is_ok(), *want);
            let readable = c.readable_applications();
            let lists_shop = readable.as_ref().is_none_or(|apps| apps.iter().any(|a| a == "shop"));
            assert_eq!(lists_shop, *want, "{permission:?} on {app:?} lists {readable:?}");
        }
        let worker = caller(&[(RunTasks, None, None)]);
        assert!(worker.authorize(&Action::RunTasks).is_ok());
        assert_eq!(worker.readable_applications(), Some(vec![]));
    }

    #[test]
    fn readable_applications_follow_grant_scopes() {
        use Permission::*;
        assert_eq!(caller(&[(View, None, None)]).readable_applications(), None);
        let c = caller(&[(View, Some("b"), None), (ExecutePipeline, Some("a"), Some(Prod)), (View, Some("a"), None)]);
        assert_eq!(c.readable_applications(), Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(caller(&[]).readable_applications(), Some(vec![]));
    }
}
