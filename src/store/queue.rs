//! Claiming the next due row of a durable queue (the analysis jobs, the outbox), safely between
//! instances: on PostgreSQL one `UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)`, on
//! SQLite a `BEGIN IMMEDIATE` transaction (one writer at a time). A queue table has the columns
//! `id`, `state`, `run_after`, `lease_owner`, `lease_until`, `attempts`, `created_at` and
//! `updated_at`.

use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, SqliteTransactionMode, Statement, TransactionOptions,
    TransactionTrait,
};

/// Takes the next row of `table` that is `idle` and due, or `busy` with an expired lease, for
/// `owner`: marks it `busy`, leases it for `lease_ms` and counts an attempt.
pub async fn claim_next<E: EntityTrait>(
    db: &DatabaseConnection,
    table: &'static str,
    idle: &'static str,
    busy: &'static str,
    owner: &str,
    lease_ms: u64,
) -> Result<Option<E::Model>, DbErr> {
    let now = super::now_ms();
    let lease_until = now + lease_ms as i64;
    let due = format!("(state = '{idle}' AND run_after <= $1) OR (state = '{busy}' AND lease_until < $1)");
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let sql = format!(
                "UPDATE {table} SET state = '{busy}', lease_owner = $2, lease_until = $3, attempts = attempts + 1, updated_at = $1 \
                 WHERE id = (SELECT id FROM {table} WHERE {due} ORDER BY run_after, created_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 RETURNING *"
            );
            let stmt = Statement::from_sql_and_values(DbBackend::Postgres, sql, [now.into(), owner.into(), lease_until.into()]);
            E::find().from_raw_sql(stmt).one(db).await
        }
        backend => {
            let txn = db
                .begin_with_options(TransactionOptions {
                    sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                    ..Default::default()
                })
                .await?;
            let select = Statement::from_sql_and_values(
                backend,
                format!("SELECT id FROM {table} WHERE {due} ORDER BY run_after, created_at LIMIT 1").replace("$1", "?1"),
                [now.into()],
            );
            let Some(row) = txn.query_one_raw(select).await? else {
                txn.commit().await?;
                return Ok(None);
            };
            let id: String = row.try_get("", "id")?;
            let update = Statement::from_sql_and_values(
                backend,
                format!(
                    "UPDATE {table} SET state = '{busy}', lease_owner = ?, lease_until = ?, attempts = attempts + 1, updated_at = ? WHERE id = ?"
                ),
                [owner.into(), lease_until.into(), now.into(), id.clone().into()],
            );
            txn.execute_raw(update).await?;
            let claimed = E::find()
                .from_raw_sql(Statement::from_sql_and_values(backend, format!("SELECT * FROM {table} WHERE id = ?"), [id.into()]))
                .one(&txn)
                .await?;
            txn.commit().await?;
            Ok(claimed)
        }
    }
}
