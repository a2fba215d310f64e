//! Pipelines with immutable versions; executions with their stages and the
//! tasks that carry workflows to workers. Times are Unix milliseconds.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Pipelines {
    Table,
    Id,
    Application,
    Name,
    LatestVersion,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum PipelineVersions {
    Table,
    PipelineId,
    Version,
    Definition,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Executions {
    Table,
    Id,
    PipelineId,
    PipelineVersion,
    Application,
    Status,
    StatusMessage,
    Variables,
    Artifacts,
    RequestId,
    RequestFingerprint,
    TriggeredBy,
    ChainId,
    Attempt,
    Revision,
    CreatedAt,
    StartedAt,
    EndedAt,
    ResumedFromExecutionId,
    ResumeStageIndex,
    ResumeStageName,
    ResumedByExecutionId,
}

#[derive(DeriveIden)]
enum Stages {
    Table,
    ExecutionId,
    StageIndex,
    Name,
    Status,
    StatusMessage,
    StartedAt,
    EndedAt,
    DeadlineAt,
    DecidedBy,
    DecisionComment,
    CarriedFromExecutionId,
}

#[derive(DeriveIden)]
enum Tasks {
    Table,
    Id,
    ExecutionId,
    StageIndex,
    WorkflowIndex,
    Name,
    TaskQueue,
    Command,
    TimeoutMs,
    Status,
    Attempt,
    MaxAttempts,
    ExitCode,
    Output,
    StatusMessage,
    CreatedAt,
    StartedAt,
    EndedAt,
    LeaseToken,
    LeaseOwner,
    LeaseExpiresAt,
    DeadlineAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Pipelines::Table)
                .col(string(Pipelines::Id).primary_key())
                .col(string(Pipelines::Application))
                .col(string(Pipelines::Name))
                .col(big_integer(Pipelines::LatestVersion))
                .col(big_integer(Pipelines::CreatedAt))
                .col(big_integer(Pipelines::UpdatedAt))
                .to_owned(),
        )
        .await?;
        index(m, "ux_pipelines_application_name", Pipelines::Table, [Pipelines::Application, Pipelines::Name], true)
            .await?;
        index(m, "ix_pipelines_application_id", Pipelines::Table, [Pipelines::Application, Pipelines::Id], false)
            .await?;

        m.create_table(
            Table::create()
                .table(PipelineVersions::Table)
                .col(string(PipelineVersions::PipelineId))
                .col(big_integer(PipelineVersions::Version))
                .col(text(PipelineVersions::Definition))
                .col(big_integer(PipelineVersions::CreatedAt))
                .primary_key(Index::create().col(PipelineVersions::PipelineId).col(PipelineVersions::Version))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Executions::Table)
                .col(string(Executions::Id).primary_key())
                .col(string(Executions::PipelineId))
                .col(big_integer(Executions::PipelineVersion))
                .col(string(Executions::Application))
                .col(string(Executions::Status))
                .col(text(Executions::StatusMessage))
                .col(text(Executions::Variables))
                .col(text(Executions::Artifacts))
                .col(string_uniq(Executions::RequestId))
                .col(string(Executions::RequestFingerprint))
                .col(string(Executions::TriggeredBy))
                .col(string(Executions::ChainId))
                .col(integer(Executions::Attempt))
                .col(big_integer(Executions::Revision))
                .col(big_integer(Executions::CreatedAt))
                .col(big_integer_null(Executions::StartedAt))
                .col(big_integer_null(Executions::EndedAt))
                .col(string_null(Executions::ResumedFromExecutionId))
                .col(integer_null(Executions::ResumeStageIndex))
                .col(string_null(Executions::ResumeStageName))
                .col(string_null(Executions::ResumedByExecutionId))
                .to_owned(),
        )
        .await?;
        index(m, "ix_executions_application_id", Executions::Table, [Executions::Application, Executions::Id], false)
            .await?;
        index(m, "ix_executions_pipeline_id", Executions::Table, [Executions::PipelineId, Executions::Id], false)
            .await?;
        index(m, "ix_executions_status_id", Executions::Table, [Executions::Status, Executions::Id], false).await?;
        // One execution per attempt of a chain: a second resume of the same
        // attempt cannot be inserted, whatever the race.
        index(m, "ux_executions_chain_attempt", Executions::Table, [Executions::ChainId, Executions::Attempt], true)
            .await?;
        // The deployments view lists the latest of each chain: not yet resumed.
        index(m, "ix_executions_latest", Executions::Table, [Executions::ResumedByExecutionId, Executions::Id], false)
            .await?;

        m.create_table(
            Table::create()
                .table(Stages::Table)
                .col(string(Stages::ExecutionId))
                .col(integer(Stages::StageIndex))
                .col(string(Stages::Name))
                .col(string(Stages::Status))
                .col(text(Stages::StatusMessage))
                .col(big_integer_null(Stages::StartedAt))
                .col(big_integer_null(Stages::EndedAt))
                .col(big_integer_null(Stages::DeadlineAt))
                .col(string(Stages::DecidedBy))
                .col(text(Stages::DecisionComment))
                .col(string_null(Stages::CarriedFromExecutionId))
                .primary_key(Index::create().col(Stages::ExecutionId).col(Stages::StageIndex))
                .to_owned(),
        )
        .await?;
        index(m, "ix_stages_status_deadline", Stages::Table, [Stages::Status, Stages::DeadlineAt], false).await?;

        m.create_table(
            Table::create()
                .table(Tasks::Table)
                .col(string(Tasks::Id).primary_key())
                .col(string(Tasks::ExecutionId))
                .col(integer(Tasks::StageIndex))
                .col(integer(Tasks::WorkflowIndex))
                .col(string(Tasks::Name))
                .col(string(Tasks::TaskQueue))
                .col(text(Tasks::Command))
                .col(big_integer(Tasks::TimeoutMs))
                .col(string(Tasks::Status))
                .col(integer(Tasks::Attempt))
                .col(integer(Tasks::MaxAttempts))
                .col(integer_null(Tasks::ExitCode))
                .col(text(Tasks::Output))
                .col(text(Tasks::StatusMessage))
                .col(big_integer(Tasks::CreatedAt))
                .col(big_integer_null(Tasks::StartedAt))
                .col(big_integer_null(Tasks::EndedAt))
                .col(string_null(Tasks::LeaseToken))
                .col(string_null(Tasks::LeaseOwner))
                .col(big_integer_null(Tasks::LeaseExpiresAt))
                .col(big_integer_null(Tasks::DeadlineAt))
                .to_owned(),
        )
        .await?;
        index(m, "ix_tasks_queue_status_id", Tasks::Table, [Tasks::TaskQueue, Tasks::Status, Tasks::Id], false).await?;
        index(m, "ix_tasks_status_lease", Tasks::Table, [Tasks::Status, Tasks::LeaseExpiresAt], false).await?;
        index(m, "ix_tasks_status_deadline", Tasks::Table, [Tasks::Status, Tasks::DeadlineAt], false).await?;
        index(m, "ix_tasks_execution", Tasks::Table, [Tasks::ExecutionId, Tasks::StageIndex], false).await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Tasks::Table.into_iden(),
            Stages::Table.into_iden(),
            Executions::Table.into_iden(),
            PipelineVersions::Table.into_iden(),
            Pipelines::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

async fn index<T: IntoIden + 'static, C: IntoIden + 'static>(
    m: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: impl IntoIterator<Item = C>,
    unique: bool,
) -> Result<(), DbErr> {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for col in cols {
        stmt.col(col);
    }
    if unique {
        stmt.unique();
    }
    m.create_index(stmt.to_owned()).await
}
