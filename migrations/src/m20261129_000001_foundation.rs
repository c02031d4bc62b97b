//! The foundation: audit chain, served cards, feedback, JWT replay guard, studies and results.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // Timestamps that take part in hashing are RFC 3339 text so that they round-trip
        // byte-for-byte on both backends; times that are only queried are unix seconds.
        m.create_table(
            Table::create()
                .table("audit_entries")
                .col(big_integer("seq").primary_key())
                .col(integer("format_version"))
                .col(string("recorded_at"))
                .col(string("action"))
                .col(string("outcome"))
                .col(string_null("actor_iss"))
                .col(string_null("actor_user"))
                .col(string_null("patient_ref"))
                .col(text("entities"))
                .col(text("detail"))
                .col(string_len("prev_hash", 64))
                .col(string_len("entry_hash", 64))
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("cards")
                .col(string("uuid").primary_key())
                .col(string("hook_instance"))
                .col(string("service_id"))
                .col(string("hook"))
                .col(string("client_iss"))
                .col(string_null("user_ref"))
                .col(string("patient_ref"))
                .col(string("source_kind"))
                .col(string("source_id"))
                .col(string("source_version"))
                .col(string("indicator"))
                .col(string("summary"))
                .col(text("card_json"))
                .col(big_integer("audit_seq"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("cards_patient").table("cards").col("patient_ref").to_owned()).await?;

        m.create_table(
            Table::create()
                .table("feedback")
                .col(big_pk_auto("id"))
                .col(string("card_uuid"))
                .col(string("service_id"))
                .col(string("client_iss"))
                .col(string("outcome"))
                .col(string("outcome_timestamp"))
                .col(text("accepted_suggestions"))
                .col(text_null("override_reason"))
                .col(big_integer("audit_seq"))
                .col(big_integer("received_at"))
                .foreign_key(ForeignKey::create().from("feedback", "card_uuid").to("cards", "uuid"))
                .to_owned(),
        )
        .await?;
        // Feedback is idempotent per (card, outcome, outcomeTimestamp), as the spec allows resends.
        m.create_index(
            Index::create()
                .name("feedback_idempotency")
                .table("feedback")
                .col("card_uuid")
                .col("outcome")
                .col("outcome_timestamp")
                .unique()
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table("client_jti")
                .col(string("iss"))
                .col(string("jti"))
                .col(big_integer("expires_at"))
                .primary_key(Index::create().col("iss").col("jti"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("client_jti_expiry").table("client_jti").col("expires_at").to_owned()).await?;

        m.create_table(
            Table::create()
                .table("studies")
                .col(string("study_uid").primary_key())
                .col(string("patient_ref"))
                .col(string_null("accession"))
                .col(string("modality"))
                .col(string_null("body_site"))
                .col(string_null("procedure_code"))
                .col(string_null("description"))
                .col(big_integer_null("started_at"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("studies_patient").table("studies").col("patient_ref").to_owned()).await?;

        m.create_table(
            Table::create()
                .table("analysis_results")
                .col(string("id").primary_key())
                .col(string("study_uid"))
                .col(string("status"))
                .col(string_null("model_id"))
                .col(string_null("model_version"))
                .col(string_null("weights_sha256"))
                .col(text("findings"))
                .col(text_null("error"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .foreign_key(ForeignKey::create().from("analysis_results", "study_uid").to("studies", "study_uid"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("analysis_results_study").table("analysis_results").col("study_uid").to_owned()).await?;

        let db = m.get_connection();
        match db.get_database_backend() {
            DbBackend::Sqlite => {
                db.execute_unprepared(
                    "CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries \
                     BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries \
                     BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;",
                )
                .await?;
            }
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "CREATE FUNCTION audit_entries_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ \
                     BEGIN RAISE EXCEPTION 'audit entries are append-only'; END; $$;",
                )
                .await?;
                db.execute_unprepared(
                    "CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_entries \
                     FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();",
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}
