//! Patient ids are unique only within one EHR or assigning authority: studies and orders record
//! the patient namespace their patient id belongs to, and every read matches on (namespace,
//! patient id). Rows from before this migration have none and match no reader.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for table in ["studies", "imaging_orders"] {
            m.alter_table(Table::alter().table(table).add_column(string_null("patient_namespace")).to_owned()).await?;
        }
        m.create_index(
            Index::create().name("studies_by_namespaced_patient").table("studies").col("patient_namespace").col("patient_ref").to_owned(),
        )
        .await
    }
}
