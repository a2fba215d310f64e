//! Reads: one execution, a page of executions, a chain's history, and the
//! revisions a watcher waits on. Each is one consistent snapshot: a single
//! statement, or one read transaction.

use std::sync::Arc;

use super::{Engine, Error, Result, authorize, views::Watch};
use crate::{
    domain::{
        access::Caller,
        execution::{Execution, ExecutionDetail},
    },
    store::executions::{self, ListFilter},
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
    /// The execution as it is now (one snapshot, shared by every reader of
    /// the same revision).
    pub async fn execution(&self, id: &str) -> Result<Arc<ExecutionDetail>> {
        Ok(self.view(id).await?.detail)
    }

    /// The execution, if `caller` may read it; NOT_FOUND otherwise, as if it
    /// did not exist.
    pub async fn execution_for(&self, caller: &Caller, id: &str) -> Result<Arc<ExecutionDetail>> {
        let d = self.execution(id).await?;
        authorize::read_execution(caller, &d.execution)?;
        Ok(d)
    }

    /// The execution as shown after the change stamped `stamp`, for a
    /// watcher woken by it (shared by every watcher of the execution).
    pub async fn execution_after(&self, id: &str, stamp: u64) -> Result<Arc<ExecutionDetail>> {
        Ok(self.view_after(id, stamp).await?.detail)
    }

    /// Starts watching an execution `caller` may read: the stamps of its
    /// changes as they are committed, and the execution now.
    pub async fn watch(&self, caller: &Caller, id: &str) -> Result<(Watch, Arc<ExecutionDetail>)> {
        let changes = self.events().watch_execution(id);
        let cached = self.view(id).await?;
        authorize::read_execution(caller, &cached.detail.execution)?;
        Ok((Watch { changes }, cached.detail))
    }

    /// A page of the deployments view, limited to what `caller` may read.
    pub async fn list_executions(
        &self,
        caller: &Caller,
        filter: &ListFilter,
        before: Option<&str>,
        size: u64,
    ) -> Result<Page<Execution>> {
        let filter = ListFilter { readable: caller.readable_applications(), ..filter.clone() };
        let mut items = executions::list(&self.store().reader(), &filter, before, size + 1).await?;
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
        let reader = self.store().reader();
        let e = executions::get(&reader, id).await?.ok_or_else(|| Error::not_found("execution", id))?;
        authorize::read_or_hide(caller, &e.application, "execution", id)?;
        let mut items = executions::chain(&reader, &e.chain_id, before_attempt, size + 1).await?;
        Ok((e.chain_id, Page::cut(&mut items, size, |e| e.attempt.to_string())))
    }
}
