//! The Merkle log over the audit entries (RFC 9162): stored perfect-subtree hashes and signed
//! checkpoints. Both are append-only. Existing entries are hashed into the tree by radsight at
//! start-up (`audit::tree::catch_up`), so the hash chain migrates with no entry lost.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;
use sea_orm_migration::sea_orm::{ConnectionTrait, DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        // (level, idx) names 2^level leaves starting at leaf idx << level.
        m.create_table(
            Table::create()
                .table("audit_nodes")
                .col(integer("level"))
                .col(big_integer("idx"))
                .col(string_len("hash", 64))
                .primary_key(Index::create().col("level").col("idx"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("audit_checkpoints")
                .col(big_integer("tree_size").primary_key())
                .col(string_len("root_hash", 64))
                .col(text("note"))
                .col(string("created_at"))
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        for table in ["audit_nodes", "audit_checkpoints"] {
            match db.get_database_backend() {
                DbBackend::Sqlite => {
                    for op in ["UPDATE", "DELETE"] {
                        db.execute_unprepared(&format!(
                            "CREATE TRIGGER {table}_no_{op} BEFORE {op} ON {table} \
                             BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END;"
                        ))
                        .await?;
                    }
                }
                DbBackend::Postgres => {
                    db.execute_unprepared(&format!(
                        "CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {table} \
                         FOR EACH STATEMENT EXECUTE FUNCTION audit_entries_append_only();"
                    ))
                    .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
