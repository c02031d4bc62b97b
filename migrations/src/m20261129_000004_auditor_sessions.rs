//! Sessions of the auditors' console: an auditor signs in once with a signed JWT and gets a
//! short-lived cookie. Only the SHA-256 of the cookie value is stored.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("auditor_sessions")
                .col(string_len("token_hash", 64).primary_key())
                .col(string("iss"))
                .col(big_integer("expires_at"))
                .to_owned(),
        )
        .await
    }
}
