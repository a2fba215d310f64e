//! User groups, their members and grants; the audit trail.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UserGroups {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum GroupMembers {
    Table,
    GroupId,
    Subject,
}

#[derive(DeriveIden)]
enum Grants {
    Table,
    Id,
    GroupId,
    Permission,
    Application,
    EnvironmentType,
    CreatedAt,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    At,
    Actor,
    Action,
    Application,
    ExecutionId,
    Details,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(UserGroups::Table)
                .col(string(UserGroups::Id).primary_key())
                .col(string_uniq(UserGroups::Name))
                .col(big_integer(UserGroups::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(GroupMembers::Table)
                .col(string(GroupMembers::GroupId))
                .col(string(GroupMembers::Subject))
                .primary_key(Index::create().col(GroupMembers::GroupId).col(GroupMembers::Subject))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_group_members_subject")
                .table(GroupMembers::Table)
                .col(GroupMembers::Subject)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Grants::Table)
                .col(string(Grants::Id).primary_key())
                .col(string(Grants::GroupId))
                .col(string(Grants::Permission))
                .col(string_null(Grants::Application))
                .col(string_null(Grants::EnvironmentType))
                .col(big_integer(Grants::CreatedAt))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("ix_grants_group").table(Grants::Table).col(Grants::GroupId).to_owned())
            .await?;
        m.create_table(
            Table::create()
                .table(AuditEvents::Table)
                .col(string(AuditEvents::Id).primary_key())
                .col(big_integer(AuditEvents::At))
                .col(string(AuditEvents::Actor))
                .col(string(AuditEvents::Action))
                .col(string_null(AuditEvents::Application))
                .col(string_null(AuditEvents::ExecutionId))
                .col(text(AuditEvents::Details))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_audit_application")
                .table(AuditEvents::Table)
                .col(AuditEvents::Application)
                .col(AuditEvents::Id)
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("ix_audit_execution")
                .table(AuditEvents::Table)
                .col(AuditEvents::ExecutionId)
                .col(AuditEvents::Id)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditEvents::Table.into_iden(),
            Grants::Table.into_iden(),
            GroupMembers::Table.into_iden(),
            UserGroups::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
