//! Schema history. One file per change, never edited once released; no
//! imports from entity code, so old migrations keep compiling as it evolves.

use sea_orm_migration::prelude::*;

mod m20261126_000001_initial;
mod m20261126_000002_access;
mod m20261203_000003_units_of_work;
mod m20261203_000004_outputs_and_retention;
mod m20261204_000005_output_received;
mod m20261206_000006_expect;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_initial::Migration),
            Box::new(m20261126_000002_access::Migration),
            Box::new(m20261203_000003_units_of_work::Migration),
            Box::new(m20261203_000004_outputs_and_retention::Migration),
            Box::new(m20261204_000005_output_received::Migration),
            Box::new(m20261206_000006_expect::Migration),
        ]
    }
}
