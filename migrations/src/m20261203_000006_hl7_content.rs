//! What an HL7 message said, not only its control id: a sender that reuses a control id for
//! different content is answered AE naming the conflict, where a true resend (the same content)
//! is answered AA again. Rows from before this migration have no hash and are taken as resends.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table("hl7_messages").add_column(string_len_null("content_sha256", 64)).to_owned()).await
    }
}
