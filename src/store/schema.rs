//! The schema in `schema/*.surql`, applied idempotently at start.

use super::{Store, StoreError, Vars};

/// Every schema file, in order.
const FILES: &[(&str, &str)] = &[("001_tables.surql", include_str!("../../schema/001_tables.surql"))];

pub(super) async fn apply(store: &Store) -> Result<(), StoreError> {
    for (name, sql) in FILES {
        store.query(sql, Vars::new()).await.map_err(|e| StoreError::Database(format!("schema {name}: {e}")))?;
    }
    Ok(())
}
