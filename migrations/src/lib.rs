//! radsight's database schema, as sea-orm migrations that run on SQLite and PostgreSQL alike.
//!
//! Migrations only ever add; the one exception, `m20261203_000010`, rebuilds the `feedback`
//! table on SQLite to drop a foreign key, keeping every row. The audit table is append-only at
//! the database level too: triggers refuse UPDATE and DELETE, so that only someone who can alter
//! the schema can rewrite history, and the hash chain makes even that detectable (`radsight
//! audit verify`).

pub use sea_orm_migration::prelude::*;

mod m20261129_000001_foundation;
mod m20261129_000002_ingestion;
mod m20261129_000003_merkle_log;
mod m20261129_000004_auditor_sessions;
mod m20261129_000005_results;
mod m20261203_000006_hl7_content;
mod m20261203_000007_patient_namespaces;
mod m20261203_000008_outbox;
mod m20261203_000009_card_contents;
mod m20261203_000010_hook_calls;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261129_000001_foundation::Migration),
            Box::new(m20261129_000002_ingestion::Migration),
            Box::new(m20261129_000003_merkle_log::Migration),
            Box::new(m20261129_000004_auditor_sessions::Migration),
            Box::new(m20261129_000005_results::Migration),
            Box::new(m20261203_000006_hl7_content::Migration),
            Box::new(m20261203_000007_patient_namespaces::Migration),
            Box::new(m20261203_000008_outbox::Migration),
            Box::new(m20261203_000009_card_contents::Migration),
            Box::new(m20261203_000010_hook_calls::Migration),
        ]
    }
}
