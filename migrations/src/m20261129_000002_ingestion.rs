//! Ingestion: HL7 v2 messages seen (for duplicate detection), imaging orders, and the durable
//! analysis job queue.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // One row per accepted message: a resend with the same (sender, control id) is answered
        // again from here instead of being processed twice.
        m.create_table(
            Table::create()
                .table("hl7_messages")
                .col(string("sender"))
                .col(string("control_id"))
                .col(string("message_type"))
                .col(string("ack_code"))
                .col(string_null("job_id"))
                .col(big_integer("received_at"))
                .primary_key(Index::create().col("sender").col("control_id"))
                .to_owned(),
        )
        .await?;

        // Imaging orders from ORM^O01 / OMI^O23 (and the results that complete them), so hooks
        // can see pending imaging. Codes and identifiers only; no names or free text.
        m.create_table(
            Table::create()
                .table("imaging_orders")
                .col(big_pk_auto("id"))
                .col(string("patient_ref"))
                .col(string_null("placer_order"))
                .col(string_null("filler_order"))
                .col(string_null("accession"))
                .col(string_null("procedure_code"))
                .col(string_null("procedure_display"))
                .col(string("order_control"))
                .col(string_null("result_status"))
                .col(string_null("study_uid"))
                .col(string_null("modality"))
                .col(string("last_control_id"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("imaging_orders_patient").table("imaging_orders").col("patient_ref").to_owned()).await?;

        // The durable job queue. Times are unix milliseconds so that backoff and leases can be
        // short in tests. state: queued | running | succeeded | dead.
        m.create_table(
            Table::create()
                .table("jobs")
                .col(string("id").primary_key())
                .col(string("kind"))
                .col(string("study_uid"))
                .col(string_null("patient_ref"))
                .col(string_null("endpoint"))
                .col(string("source"))
                .col(string("state"))
                .col(string_null("stage"))
                .col(integer("attempts"))
                .col(integer("max_attempts"))
                .col(big_integer("run_after"))
                .col(string_null("lease_owner"))
                .col(big_integer_null("lease_until"))
                .col(string_null("last_error"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("jobs_claim").table("jobs").col("state").col("run_after").to_owned()).await?;
        m.create_index(Index::create().name("jobs_study").table("jobs").col("study_uid").to_owned()).await?;
        Ok(())
    }
}
