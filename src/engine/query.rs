//! Reads: one execution, a page of executions, and a watch of changes.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::{Engine, Error, Result, authorize};
use crate::{
    domain::{
        access::Caller,
        execution::{Execution, ExecutionDetail},
    },
    store::executions::{self, ListFilter, Scope},
};

/// One page of a keyset-paginated list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The key to continue after; None on the last page.
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from `size + 1` fetched rows: the extra row only says
    /// that another page exists.
    pub fn cut(items: &mut Vec<T>, size: u64, key: impl Fn(&T) -> String) -> Page<T> {
        let more = items.len() as u64 > size;
        items.truncate(size as usize);
        let next = if more { items.last().map(key) } else { None };
        Page { items: std::mem::take(items), next }
    }
}

impl Engine {
    pub async fn execution(&self, id: &str) -> Result<ExecutionDetail> {
        executions::load(self.db(), id, self.definitions(), Scope::Whole)
            .await?
            .ok_or_else(|| Error::not_found("execution", id))
    }

    /// The execution, if `caller` may read it.
    pub async fn execution_for(&self, caller: &Caller, id: &str) -> Result<ExecutionDetail> {
        let d = self.execution(id).await?;
        authorize::read_execution(caller, &d)?;
        Ok(d)
    }

    /// A page of the deployments view, limited to what `caller` may read.
    pub async fn list_executions(
        &self,
        caller: &Caller,
        filter: &ListFilter,
        before: Option<&str>,
        size: u64,
    ) -> Result<Page<Execution>> {
        if let Some(app) = &filter.application {
            authorize::read(caller, app)?;
        }
        let filter = ListFilter { readable: caller.readable_applications(), ..filter.clone() };
        let mut items = executions::list(self.db(), &filter, before, size + 1).await?;
        Ok(Page::cut(&mut items, size, |e| e.id.clone()))
    }

    /// One page of the chain of execution `id`, newest attempt first, and the chain id.
    pub async fn history(
        &self,
        caller: &Caller,
        id: &str,
        before_attempt: Option<i32>,
        size: u64,
    ) -> Result<(String, Page<Execution>)> {
        let e = executions::get(self.db(), id).await?.ok_or_else(|| Error::not_found("execution", id))?;
        authorize::read_or_hide(caller, &e.application, "execution", id)?;
        let mut items = executions::chain(self.db(), &e.chain_id, before_attempt, size + 1).await?;
        Ok((e.chain_id, Page::cut(&mut items, size, |e| e.attempt.to_string())))
    }

    /// Waits until the execution may have changed: a local announcement, or
    /// the recheck interval (changes made by other replicas).
    pub async fn wait_for_change(&self, id: &str, changes: &mut tokio::sync::broadcast::Receiver<String>) {
        let recheck = self.settings().recheck;
        let wait = async {
            loop {
                match changes.recv().await {
                    Ok(changed) if changed == id => return,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let _ = tokio::time::timeout(recheck.max(Duration::from_millis(10)), wait).await;
    }
}
