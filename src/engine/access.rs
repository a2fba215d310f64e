//! Access management: resolving a caller's grants, user groups, members,
//! grants and the audit trail. Every change is audited in its transaction
//! and clears the grants cached for callers (here, and through the commit's
//! announcement on the other replicas).

use std::time::Duration;

use moka::sync::Cache;
use serde_json::json;

use super::{Audit, Engine, Error, Result, authorize, new_id, now, query::Page, work::Unit};
use crate::{
    domain::access::{Caller, Grant, Permission, UserGroup},
    store::{
        StoreError, access,
        audit::{self, AuditEvent, AuditFilter},
    },
};

/// The group a bootstrap admin is put in at start-up.
const BOOTSTRAP_GROUP: &str = "bootstrap-admins";

/// Callers' grants, so a call costs no query for them. Cleared by every
/// access change; the time limit bounds how late a change made while the
/// channel from other replicas was down is seen.
pub(super) struct Callers {
    grants: Cache<String, Vec<Grant>>,
}

impl Default for Callers {
    /// Weighed by size, not counted: one subject may hold thousands of grants.
    fn default() -> Self {
        Callers {
            grants: Cache::builder()
                .max_capacity(8 * 1024 * 1024)
                .weigher(|subject: &String, grants: &Vec<Grant>| weight(subject, grants))
                .time_to_live(Duration::from_secs(5))
                .build(),
        }
    }
}

/// What a subject's cached grants take in memory, in bytes, roughly: the
/// entry and each grant's struct and strings.
fn weight(subject: &str, grants: &[Grant]) -> u32 {
    let grant = |g: &Grant| {
        size_of::<Grant>() + g.id.len() + g.group_id.len() + g.application.as_ref().map_or(0, String::len) + 48
    };
    let bytes = 256 + subject.len() + grants.iter().map(grant).sum::<usize>();
    bytes.min(u32::MAX as usize) as u32
}

impl Callers {
    pub fn clear(&self) {
        self.grants.invalidate_all();
    }
}

impl Engine {
    /// The caller with `subject`'s grants, from every group it belongs to.
    pub async fn caller(&self, subject: &str) -> Result<Caller> {
        let grants = match self.inner.callers.grants.get(subject) {
            Some(grants) => grants,
            None => {
                let grants = access::grants_of(&self.store().reader(), subject).await?;
                self.inner.callers.grants.insert(subject.to_owned(), grants.clone());
                grants
            }
        };
        Ok(Caller { subject: subject.to_owned(), grants, unrestricted: false })
    }

    /// Another replica changed access: forget cached grants.
    pub fn access_changed_elsewhere(&self) {
        self.inner.callers.clear();
    }

    /// Makes `subject` an admin through the bootstrap group; safe to run on
    /// every start of every replica.
    pub async fn bootstrap_admin(&self, subject: &str) -> Result<()> {
        let system = Caller::unrestricted("system:bootstrap");
        let group_id =
            match access::group_by_name(&self.store().reader(), BOOTSTRAP_GROUP).await? {
                Some(id) => id,
                None => match self.create_group(&system, BOOTSTRAP_GROUP).await {
                    Ok(g) => {
                        let grant = Grant {
                            id: String::new(),
                            group_id: g.id.clone(),
                            permission: Permission::Admin,
                            application: None,
                            environment: None,
                        };
                        self.add_grant(&system, grant).await?;
                        g.id
                    }
                    // Another replica created it at the same moment.
                    Err(Error::AlreadyExists(_)) => access::group_by_name(&self.store().reader(), BOOTSTRAP_GROUP)
                        .await?
                        .ok_or_else(|| Error::Conflict("bootstrap group vanished; restart".into()))?,
                    Err(e) => return Err(e),
                },
            };
        self.add_member(&system, &group_id, subject).await?;
        tracing::info!(subject, "bootstrap admin ensured");
        Ok(())
    }

    /// One access change in one unit of work.
    async fn access_unit<T>(&self, work: impl AsyncFnOnce(&mut Unit) -> Result<T>) -> Result<T> {
        let mut unit = self.unit(None).await?;
        let result = work(&mut unit).await;
        if result.is_ok() {
            unit.after.access_changed();
        }
        self.finish(unit, result).await
    }

    pub async fn create_group(&self, caller: &Caller, name: &str) -> Result<UserGroup> {
        authorize::administer(caller)?;
        if name.trim().is_empty() || name.len() > 128 {
            return Err(Error::invalid("name", "required, at most 128 characters"));
        }
        let id = new_id();
        self.access_unit(async |unit| {
            match access::insert_group(&unit.tx, &id, name, now()).await {
                Err(StoreError::Duplicate(_)) => {
                    return Err(Error::AlreadyExists(format!(
                        "a user group named {} exists already",
                        crate::domain::quote(name)
                    )));
                }
                other => other?,
            }
            Audit::new(caller, "access.group.create", json!({ "group_id": id, "name": name })).record(&unit.tx).await?;
            Ok(())
        })
        .await?;
        self.group(&id).await
    }

    pub async fn delete_group(&self, caller: &Caller, group_id: &str) -> Result<()> {
        authorize::administer(caller)?;
        self.access_unit(async |unit| {
            if !access::delete_group(&unit.tx, group_id).await? {
                return Err(Error::not_found("user group", group_id));
            }
            Audit::new(caller, "access.group.delete", json!({ "group_id": group_id })).record(&unit.tx).await?;
            Ok(())
        })
        .await
    }

    pub async fn add_member(&self, caller: &Caller, group_id: &str, subject: &str) -> Result<UserGroup> {
        authorize::administer(caller)?;
        if subject.trim().is_empty() {
            return Err(Error::invalid("subject", "required: the `sub` claim of the member's tokens"));
        }
        self.group(group_id).await?;
        self.access_unit(async |unit| {
            if access::add_member(&unit.tx, group_id, subject).await? {
                Audit::new(caller, "access.member.add", json!({ "group_id": group_id, "subject": subject }))
                    .record(&unit.tx)
                    .await?;
            }
            Ok(())
        })
        .await?;
        self.group(group_id).await
    }

    pub async fn remove_member(&self, caller: &Caller, group_id: &str, subject: &str) -> Result<UserGroup> {
        authorize::administer(caller)?;
        self.group(group_id).await?;
        self.access_unit(async |unit| {
            if access::remove_member(&unit.tx, group_id, subject).await? {
                Audit::new(caller, "access.member.remove", json!({ "group_id": group_id, "subject": subject }))
                    .record(&unit.tx)
                    .await?;
            }
            Ok(())
        })
        .await?;
        self.group(group_id).await
    }

    pub async fn add_grant(&self, caller: &Caller, mut grant: Grant) -> Result<Grant> {
        authorize::administer(caller)?;
        self.group(&grant.group_id).await?;
        if matches!(grant.permission, Permission::Admin | Permission::RunTasks)
            && (grant.application.is_some() || grant.environment.is_some())
        {
            return Err(Error::invalid(
                "grant.application",
                format!(
                    "{} grants cover every application and environment; leave application and environment_type unset",
                    grant.permission.as_str()
                ),
            ));
        }
        grant.id = new_id();
        self.access_unit(async |unit| {
            access::insert_grant(&unit.tx, &grant, now()).await?;
            let details = json!({
                "grant_id": grant.id, "group_id": grant.group_id, "permission": grant.permission.as_str(),
                "application": grant.application, "environment_type": grant.environment.map(|e| e.as_str()),
            });
            let mut audit = Audit::new(caller, "access.grant.add", details);
            if let Some(app) = &grant.application {
                audit = audit.in_application(app);
            }
            audit.record(&unit.tx).await?;
            Ok(())
        })
        .await?;
        Ok(grant)
    }

    pub async fn remove_grant(&self, caller: &Caller, grant_id: &str) -> Result<()> {
        authorize::administer(caller)?;
        self.access_unit(async |unit| {
            let Some(grant) = access::delete_grant(&unit.tx, grant_id).await? else {
                return Err(Error::not_found("grant", grant_id));
            };
            let mut audit =
                Audit::new(caller, "access.grant.remove", json!({ "grant_id": grant_id, "group_id": grant.group_id }));
            if let Some(app) = &grant.application {
                audit = audit.in_application(app);
            }
            audit.record(&unit.tx).await?;
            Ok(())
        })
        .await
    }

    pub async fn list_groups(&self, caller: &Caller, after: Option<&str>, size: u64) -> Result<Page<UserGroup>> {
        authorize::administer(caller)?;
        let mut items = access::list_groups(&self.store().reader(), after, size + 1).await?;
        Ok(Page::cut(&mut items, size, |g| g.id.clone()))
    }

    /// A page of the audit trail. Scoped to an application, an execution or a
    /// chain it needs read access there; the whole trail needs ADMIN.
    pub async fn list_audit(
        &self,
        caller: &Caller,
        filter: &AuditFilter,
        before: Option<&str>,
        size: u64,
    ) -> Result<Page<AuditEvent>> {
        match (&filter.application, &filter.execution_id, &filter.chain_id) {
            (_, Some(id), _) | (_, None, Some(id)) => {
                self.execution_for(caller, id).await?;
            }
            (Some(app), None, None) => authorize::read(caller, app)?,
            (None, None, None) => authorize::administer(caller)?,
        }
        let mut items = audit::list(&self.store().reader(), filter, before, size + 1).await?;
        Ok(Page::cut(&mut items, size, |e| e.id.clone()))
    }

    async fn group(&self, id: &str) -> Result<UserGroup> {
        access::group(&self.store().reader(), id).await?.ok_or_else(|| Error::not_found("user group", id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_with_many_grants_weighs_what_they_hold() {
        let grant = |i: usize| Grant {
            id: format!("grant-{i:05}"),
            group_id: "deployers".into(),
            permission: Permission::View,
            application: Some("payments".into()),
            environment: None,
        };
        let one = weight("alice", &[grant(0)]);
        let many: Vec<Grant> = (0..10_000).map(grant).collect();
        let heavy = weight("alice", &many);
        assert!(heavy > 100 * 10_000, "{heavy}");
        assert!(heavy > 1000 * one, "{heavy} vs {one}");
    }
}
