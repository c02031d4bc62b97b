//! Cards stored once: a hook call served for the same patient again and again repeats the same
//! cards, so a card's content (everything but its per-call uuids and its link credentials) is
//! stored once in `card_contents`, keyed by its SHA-256, and each served card keeps only its
//! uuid, the call it belongs to and that hash (`cards.content_hash`).
//!
//! Rows stored before this migration keep their whole JSON in `cards.card_json` and have no
//! hash: what was served is a record, and a migration does not rewrite it. Rows stored since
//! leave `card_json` empty (SQLite cannot drop a NOT NULL constraint in place).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("card_contents")
                .col(string("hash").primary_key())
                .col(text("content_json"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.alter_table(Table::alter().table("cards").add_column(string_null("content_hash")).to_owned()).await
    }
}
