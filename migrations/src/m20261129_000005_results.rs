//! Analysis results in full: what went into a result (the instance and the SHA-256 of its
//! pixels), how it was explained (saliency method, parameters, peak and box in source pixel
//! coordinates), how faithful that explanation measured, and the pictures people look at.
//! Also the clinicians' feedback on a result, given in the SMART app.
//!
//! Artefacts live in the database, not on a local disk, so that several stateless instances
//! on one PostgreSQL serve the same pictures.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // SQLite takes one ALTER option per statement.
        let columns = [
            string_null("sop_instance_uid"),
            string_null("series_uid"),
            string_len_null("input_sha256", 64),
            string_null("saliency_method"),
            text_null("explanation"),
            double_null("deletion_auc"),
            double_null("random_deletion_auc"),
            big_integer_null("runtime_ms"),
            string_null("job_id"),
            text_null("model_card"),
        ];
        for mut column in columns {
            m.alter_table(Table::alter().table("analysis_results").add_column(&mut column).to_owned()).await?;
        }

        // kind: saliency-map (little-endian f32, source grid) | saliency-png (overlay for people)
        // | heatmap-png (RGBA colour map, alpha from the map, for the app's canvas) | image-png.
        m.create_table(
            Table::create()
                .table("result_artefacts")
                .col(string("result_id"))
                .col(string("kind"))
                .col(string("media_type"))
                .col(integer("width"))
                .col(integer("height"))
                .col(string_len("sha256", 64))
                .col(blob("bytes"))
                .col(big_integer("created_at"))
                .primary_key(Index::create().col("result_id").col("kind"))
                .foreign_key(ForeignKey::create().from("result_artefacts", "result_id").to("analysis_results", "id"))
                .to_owned(),
        )
        .await?;

        // Feedback from the SMART app: the clinician (fhirUser), the verdict and a coded reason.
        m.create_table(
            Table::create()
                .table("result_feedback")
                .col(big_pk_auto("id"))
                .col(string("result_id"))
                .col(string("patient_ref"))
                .col(string("ehr_iss"))
                .col(string_null("user_ref"))
                .col(string("verdict"))
                .col(string_null("reason_code"))
                .col(text_null("comment"))
                .col(string_null("card_uuid"))
                .col(big_integer("audit_seq"))
                .col(big_integer("received_at"))
                .foreign_key(ForeignKey::create().from("result_feedback", "result_id").to("analysis_results", "id"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("result_feedback_result").table("result_feedback").col("result_id").to_owned()).await?;
        Ok(())
    }
}
