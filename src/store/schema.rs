//! The schema in `schema/*.surql`, applied idempotently at start.

use super::{Store, StoreError, Vars};

/// Every schema file, in order.
const FILES: &[(&str, &str)] = &[("001_tables.surql", include_str!("../../schema/001_tables.surql"))];

pub(super) async fn apply(store: &Store) -> Result<(), StoreError> {
    for (name, sql) in FILES {
        // Instances starting together on one server can conflict on catalog writes: retry.
        store
            .retrying(|| store.query(sql, Vars::new()))
            .await
            .map_err(|e| StoreError::Database(format!("schema {name}: {e}")))?;
    }
    Ok(())
}
