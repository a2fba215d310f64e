//! Access management: resolving a caller's grants, user groups, members,
//! grants and the audit trail. Every change is audited in its transaction.

use serde_json::json;

use super::{Audit, Engine, Error, Result, authorize, new_id, now, query::Page};
use crate::{
    domain::access::{Caller, Grant, Permission, UserGroup},
    store::{
        StoreError, access,
        audit::{self, AuditEvent},
    },
};

/// The group a bootstrap admin is put in at start-up.
const BOOTSTRAP_GROUP: &str = "bootstrap-admins";

impl Engine {
    /// The caller with `subject`'s grants, from every group it belongs to.
    pub async fn caller(&self, subject: &str) -> Result<Caller> {
        let grants = access::grants_of(self.db(), subject).await?;
        Ok(Caller { subject: subject.to_owned(), grants, unrestricted: false })
    }

    /// Makes `subject` an admin through the bootstrap group; safe to run on
    /// every start of every replica.
    pub async fn bootstrap_admin(&self, subject: &str) -> Result<()> {
        let system = Caller::unrestricted("system:bootstrap");
        let group_id = match access::group_by_name(self.db(), BOOTSTRAP_GROUP).await? {
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
                Err(Error::AlreadyExists(_)) => access::group_by_name(self.db(), BOOTSTRAP_GROUP)
                    .await?
                    .ok_or_else(|| Error::Conflict("bootstrap group vanished; restart".into()))?,
                Err(e) => return Err(e),
            },
        };
        self.add_member(&system, &group_id, subject).await?;
        tracing::info!(subject, "bootstrap admin ensured");
        Ok(())
    }

    pub async fn create_group(&self, caller: &Caller, name: &str) -> Result<UserGroup> {
        authorize::administer(caller)?;
        if name.trim().is_empty() || name.len() > 128 {
            return Err(Error::invalid("name", "required, at most 128 characters"));
        }
        let id = new_id();
        let (_turn, txn) = self.begin().await?;
        let written = async {
            access::insert_group(&txn, &id, name, now()).await?;
            Audit::new(caller, "access.group.create", json!({ "group_id": id, "name": name }))
                .record(&txn, None, None)
                .await
        };
        match written.await {
            Err(StoreError::Duplicate(_)) => {
                return Err(Error::AlreadyExists(format!("a user group named {name:?} exists already")));
            }
            other => other?,
        }
        txn.commit().await?;
        self.group(&id).await
    }

    pub async fn delete_group(&self, caller: &Caller, group_id: &str) -> Result<()> {
        authorize::administer(caller)?;
        let (_turn, txn) = self.begin().await?;
        if !access::delete_group(&txn, group_id).await? {
            txn.rollback().await?;
            return Err(Error::not_found("user group", group_id));
        }
        Audit::new(caller, "access.group.delete", json!({ "group_id": group_id })).record(&txn, None, None).await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn add_member(&self, caller: &Caller, group_id: &str, subject: &str) -> Result<UserGroup> {
        authorize::administer(caller)?;
        if subject.trim().is_empty() {
            return Err(Error::invalid("subject", "required: the `sub` claim of the member's tokens"));
        }
        self.group(group_id).await?;
        let (_turn, txn) = self.begin().await?;
        if access::add_member(&txn, group_id, subject).await? {
            Audit::new(caller, "access.member.add", json!({ "group_id": group_id, "subject": subject }))
                .record(&txn, None, None)
                .await?;
        }
        txn.commit().await?;
        self.group(group_id).await
    }

    pub async fn remove_member(&self, caller: &Caller, group_id: &str, subject: &str) -> Result<UserGroup> {
        authorize::administer(caller)?;
        self.group(group_id).await?;
        let (_turn, txn) = self.begin().await?;
        if access::remove_member(&txn, group_id, subject).await? {
            Audit::new(caller, "access.member.remove", json!({ "group_id": group_id, "subject": subject }))
                .record(&txn, None, None)
                .await?;
        }
        txn.commit().await?;
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
        let (_turn, txn) = self.begin().await?;
        access::insert_grant(&txn, &grant, now()).await?;
        let details = json!({
            "grant_id": grant.id, "group_id": grant.group_id, "permission": grant.permission.as_str(),
            "application": grant.application, "environment_type": grant.environment.map(|e| e.as_str()),
        });
        Audit::new(caller, "access.grant.add", details).record(&txn, grant.application.as_deref(), None).await?;
        txn.commit().await?;
        Ok(grant)
    }

    pub async fn remove_grant(&self, caller: &Caller, grant_id: &str) -> Result<()> {
        authorize::administer(caller)?;
        let (_turn, txn) = self.begin().await?;
        let Some(grant) = access::delete_grant(&txn, grant_id).await? else {
            txn.rollback().await?;
            return Err(Error::not_found("grant", grant_id));
        };
        Audit::new(caller, "access.grant.remove", json!({ "grant_id": grant_id, "group_id": grant.group_id }))
            .record(&txn, grant.application.as_deref(), None)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn list_groups(&self, caller: &Caller, after: Option<&str>, size: u64) -> Result<Page<UserGroup>> {
        authorize::administer(caller)?;
        let mut items = access::list_groups(self.db(), after, size + 1).await?;
        Ok(Page::cut(&mut items, size, |g| g.id.clone()))
    }

    /// A page of the audit trail. Scoped to an application or an execution it
    /// needs read access there; the whole trail needs ADMIN.
    pub async fn list_audit(
        &self,
        caller: &Caller,
        application: Option<&str>,
        execution_id: Option<&str>,
        before: Option<&str>,
        size: u64,
    ) -> Result<Page<AuditEvent>> {
        match (application, execution_id) {
            (_, Some(id)) => {
                self.execution_for(caller, id).await?;
            }
            (Some(app), None) => authorize::read(caller, app)?,
            (None, None) => authorize::administer(caller)?,
        }
        let mut items = audit::list(self.db(), application, execution_id, before, size + 1).await?;
        Ok(Page::cut(&mut items, size, |e| e.id.clone()))
    }

    async fn group(&self, id: &str) -> Result<UserGroup> {
        access::group(self.db(), id).await?.ok_or_else(|| Error::not_found("user group", id))
    }
}
