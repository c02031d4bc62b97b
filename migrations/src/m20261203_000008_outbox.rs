//! The transactional outbox: every delivery of a result to another system (the PACS by
//! STOW-RS today; the RIS and the EHR record next) is queued in the same transaction as the
//! result, retried with backoff and ends `delivered` or `dead`. The object sent is kept with
//! its row once built, so a retry sends the very same bytes (and the same SOP Instance UID).
//!
//! Results also record the SOP Class of the image the model looked at, which the DICOM outputs
//! reference.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("outbox")
                .col(string("id").primary_key())
                .col(string("result_id"))
                .col(string("study_uid"))
                // stow-sr | stow-sc
                .col(string("kind"))
                .col(string("destination"))
                // pending | delivering | delivered | dead
                .col(string("state"))
                .col(integer("attempts"))
                .col(integer("max_attempts"))
                .col(big_integer("run_after"))
                .col(string_null("lease_owner"))
                .col(big_integer_null("lease_until"))
                .col(string_null("last_error"))
                .col(string_null("sop_instance_uid"))
                .col(blob_null("payload"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .col(big_integer_null("delivered_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("outbox_due").table("outbox").col("state").col("run_after").to_owned()).await?;
        m.create_index(
            Index::create().name("outbox_once").table("outbox").col("result_id").col("kind").col("destination").unique().to_owned(),
        )
        .await?;
        m.alter_table(Table::alter().table("analysis_results").add_column(string_null("sop_class_uid")).to_owned()).await
    }
}
