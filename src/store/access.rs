//! User groups, memberships and grants.

use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{
    Result, corrupt,
    entity::{grant, group_member, user_group},
};
use crate::domain::{
    access::{Grant, Permission, UserGroup},
    execution::Millis,
    pipeline::EnvironmentType,
};

pub async fn insert_group(c: &impl ConnectionTrait, id: &str, name: &str, now: Millis) -> Result<()> {
    user_group::Entity::insert(user_group::ActiveModel {
        id: Set(id.into()),
        name: Set(name.into()),
        created_at: Set(now),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

pub async fn group_by_name(c: &impl ConnectionTrait, name: &str) -> Result<Option<String>> {
    Ok(user_group::Entity::find().filter(user_group::Column::Name.eq(name)).one(c).await?.map(|g| g.id))
}

/// Deletes a group with its memberships and grants; false if it did not exist.
pub async fn delete_group(c: &impl ConnectionTrait, id: &str) -> Result<bool> {
    group_member::Entity::delete_many().filter(group_member::Column::GroupId.eq(id)).exec(c).await?;
    grant::Entity::delete_many().filter(grant::Column::GroupId.eq(id)).exec(c).await?;
    Ok(user_group::Entity::delete_by_id(id.to_owned()).exec(c).await?.rows_affected == 1)
}

/// Adds a member; true if it was not one already.
pub async fn add_member(c: &impl ConnectionTrait, group_id: &str, subject: &str) -> Result<bool> {
    let exists = group_member::Entity::find_by_id((group_id.to_owned(), subject.to_owned())).one(c).await?.is_some();
    if !exists {
        group_member::Entity::insert(group_member::ActiveModel {
            group_id: Set(group_id.into()),
            subject: Set(subject.into()),
        })
        .exec_without_returning(c)
        .await?;
    }
    Ok(!exists)
}

pub async fn remove_member(c: &impl ConnectionTrait, group_id: &str, subject: &str) -> Result<bool> {
    let r = group_member::Entity::delete_by_id((group_id.to_owned(), subject.to_owned())).exec(c).await?;
    Ok(r.rows_affected == 1)
}

pub async fn insert_grant(c: &impl ConnectionTrait, g: &Grant, now: Millis) -> Result<()> {
    grant::Entity::insert(grant::ActiveModel {
        id: Set(g.id.clone()),
        group_id: Set(g.group_id.clone()),
        permission: Set(g.permission.as_str().into()),
        application: Set(g.application.clone()),
        environment_type: Set(g.environment.map(|e| e.as_str().to_owned())),
        created_at: Set(now),
    })
    .exec_without_returning(c)
    .await?;
    Ok(())
}

/// Removes a grant and returns it; None if it did not exist.
pub async fn delete_grant(c: &impl ConnectionTrait, id: &str) -> Result<Option<Grant>> {
    let Some(row) = grant::Entity::find_by_id(id.to_owned()).one(c).await? else { return Ok(None) };
    grant::Entity::delete_by_id(id.to_owned()).exec(c).await?;
    grant_from_model(row).map(Some)
}

/// Every grant of every group `subject` belongs to.
pub async fn grants_of(c: &impl ConnectionTrait, subject: &str) -> Result<Vec<Grant>> {
    let groups: Vec<String> = group_member::Entity::find()
        .select_only()
        .column(group_member::Column::GroupId)
        .filter(group_member::Column::Subject.eq(subject))
        .into_tuple()
        .all(c)
        .await?;
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    grant::Entity::find()
        .filter(grant::Column::GroupId.is_in(groups))
        .all(c)
        .await?
        .into_iter()
        .map(grant_from_model)
        .collect()
}

pub async fn group(c: &impl ConnectionTrait, id: &str) -> Result<Option<UserGroup>> {
    let Some(row) = user_group::Entity::find_by_id(id.to_owned()).one(c).await? else { return Ok(None) };
    with_members_and_grants(c, row).await.map(Some)
}

/// A page of groups ordered by id, after `after`.
pub async fn list_groups(c: &impl ConnectionTrait, after: Option<&str>, limit: u64) -> Result<Vec<UserGroup>> {
    let mut q = user_group::Entity::find().order_by_asc(user_group::Column::Id).limit(limit);
    if let Some(after) = after {
        q = q.filter(user_group::Column::Id.gt(after));
    }
    let mut out = Vec::new();
    for row in q.all(c).await? {
        out.push(with_members_and_grants(c, row).await?);
    }
    Ok(out)
}

async fn with_members_and_grants(c: &impl ConnectionTrait, row: user_group::Model) -> Result<UserGroup> {
    let members = group_member::Entity::find()
        .filter(group_member::Column::GroupId.eq(row.id.as_str()))
        .order_by_asc(group_member::Column::Subject)
        .all(c)
        .await?
        .into_iter()
        .map(|m| m.subject)
        .collect();
    let grants = grant::Entity::find()
        .filter(grant::Column::GroupId.eq(row.id.as_str()))
        .order_by_asc(grant::Column::Id)
        .all(c)
        .await?
        .into_iter()
        .map(grant_from_model)
        .collect::<Result<_>>()?;
    Ok(UserGroup { id: row.id, name: row.name, members, grants, created_at: row.created_at })
}

fn grant_from_model(m: grant::Model) -> Result<Grant> {
    Ok(Grant {
        permission: Permission::parse(&m.permission)
            .ok_or_else(|| corrupt(format!("permission {:?}", m.permission)))?,
        environment: match m.environment_type.as_deref() {
            None => None,
            Some(t) => Some(EnvironmentType::parse(t).ok_or_else(|| corrupt(format!("environment type {t:?}")))?),
        },
        id: m.id,
        group_id: m.group_id,
        application: m.application,
    })
}
