//! One row per hook call, not per card: a call for a patient seen before repeats the same cards,
//! so what a call stored per card (its uuid, the call's service, client, user and patient, its
//! origin, indicator and summary) was almost all repetition.
//!
//! - `hook_calls`: the call, once, keyed by its audit entry, which holds the call's facts
//!   (service, client, user, patient, hook instance, number of cards). Its cards' uuids derive
//!   from the entry (its sequence number and hash) and their place on the call
//!   (`store::served_cards`), so they need no row of their own.
//! - `card_sets`: the list of content hashes a call served, in order, stored once per distinct
//!   list and keyed by the digest the call's audit entry records (`cards_content`).
//! - `card_contents` gains the card's origin (kind, id, version), which its hash already covers:
//!   the content now says where it came from without a `cards` row.
//! - `feedback.card_uuid` loses its foreign key to `cards.uuid`, since cards served from now on
//!   have no `cards` row; the feedback endpoint checks the card exists itself.
//!
//! Rows in `cards` stay as they were and are still read: what was served is a record.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// One transaction on SQLite too (sea-orm's default there is none): the `feedback` rebuild
    /// must not be left half done, and its statements must run on one connection.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // The entry's sequence number is the key: on SQLite an `integer` primary key is the
        // rowid itself, so the table needs no second index for it.
        let seq = match m.get_database_backend() {
            DbBackend::Sqlite => integer("audit_seq").primary_key().to_owned(),
            _ => big_integer("audit_seq").primary_key().to_owned(),
        };
        m.create_table(
            Table::create()
                .table("hook_calls")
                .col(seq)
                .col(string("patient_ref"))
                .col(string("card_set"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(Index::create().name("hook_calls_patient").table("hook_calls").col("patient_ref").to_owned()).await?;
        m.create_table(
            Table::create()
                .table("card_sets")
                .col(string("digest").primary_key())
                .col(text("content_hashes"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;

        // One column per statement: SQLite's ALTER TABLE adds one at a time.
        for column in ["source_kind", "source_id", "source_version"] {
            m.alter_table(Table::alter().table("card_contents").add_column(string_null(column)).to_owned()).await?;
        }
        let db = m.get_connection();
        db.execute_unprepared(
            "UPDATE card_contents SET \
               source_kind = (SELECT c.source_kind FROM cards c WHERE c.content_hash = card_contents.hash LIMIT 1), \
               source_id = (SELECT c.source_id FROM cards c WHERE c.content_hash = card_contents.hash LIMIT 1), \
               source_version = (SELECT c.source_version FROM cards c WHERE c.content_hash = card_contents.hash LIMIT 1)",
        )
        .await?;

        match m.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "DO $$ DECLARE c text; BEGIN \
                       FOR c IN SELECT conname FROM pg_constraint WHERE conrelid = 'feedback'::regclass AND contype = 'f' LOOP \
                         EXECUTE format('ALTER TABLE feedback DROP CONSTRAINT %I', c); \
                       END LOOP; \
                     END $$",
                )
                .await?;
            }
            // SQLite cannot drop a constraint in place: the table is rebuilt, as its manual says
            // (create, copy, drop, rename, then the indexes again).
            _ => {
                m.create_table(
                    Table::create()
                        .table("feedback_rebuilt")
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
                        .to_owned(),
                )
                .await?;
                db.execute_unprepared(
                    "INSERT INTO feedback_rebuilt (id, card_uuid, service_id, client_iss, outcome, outcome_timestamp, \
                       accepted_suggestions, override_reason, audit_seq, received_at) \
                     SELECT id, card_uuid, service_id, client_iss, outcome, outcome_timestamp, \
                       accepted_suggestions, override_reason, audit_seq, received_at FROM feedback",
                )
                .await?;
                db.execute_unprepared("DROP TABLE feedback").await?;
                db.execute_unprepared("ALTER TABLE feedback_rebuilt RENAME TO feedback").await?;
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
            }
        }
        Ok(())
    }
}
