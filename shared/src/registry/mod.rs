//! The registry's rules for applications and devices, over the storage ports:
//! metadata semantics, optimistic locking, finalizers and the checks of a spec.
//! The HTTP layer only parses requests and maps [`RegistryError`] to responses.

mod applications;
mod devices;
mod lifecycle;

use crate::model::{LabelSelector, Resource};
use crate::store::{Conflict, Store, StoreError};
use std::sync::Arc;

/// The registry service.
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
}

/// Why a registry operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The object does not exist (or the caller may not know it does).
    #[error("{0}")]
    NotFound(String),
    /// A device was written for an application that does not exist.
    #[error("the application {0:?} does not exist")]
    ReferenceNotFound(String),
    /// A name is taken, or a precondition or concurrent write did not hold.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The store could not be reached; nothing was decided.
    #[error("the registry's store is unavailable")]
    Unavailable(#[source] StoreError),
}

pub type RegistryResult<T> = Result<T, RegistryError>;

/// How to page and filter a list.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub selector: LabelSelector,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

impl ListOptions {
    /// Keeps what matches the selector, then skips `offset` and takes `limit`.
    fn apply(&self, items: impl IntoIterator<Item = Resource>) -> Vec<Resource> {
        items
            .into_iter()
            .filter(|r| self.selector.matches(&r.metadata.labels))
            .skip(self.offset.unwrap_or(0))
            .take(self.limit.unwrap_or(usize::MAX))
            .collect()
    }
}

impl Registry {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// The store behind the registry, for the other services that share it.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// Maps a store failure; `what` names the object for conflict messages.
fn store_error(what: impl FnOnce() -> String) -> impl FnOnce(StoreError) -> RegistryError {
    move |e| match e {
        StoreError::Conflict(Conflict::AlreadyExists) => {
            RegistryError::Conflict(format!("{} already exists", what()))
        }
        StoreError::Conflict(Conflict::Changed) => RegistryError::Conflict(format!(
            "{} was modified or deleted meanwhile; read it again and retry",
            what()
        )),
        StoreError::Conflict(conflict @ Conflict::ClaimTaken(_)) => {
            RegistryError::Conflict(conflict.to_string())
        }
        StoreError::Conflict(Conflict::ApplicationGone) => RegistryError::ReferenceNotFound(what()),
        e @ StoreError::Unavailable(_) => RegistryError::Unavailable(e),
    }
}

fn unavailable(e: StoreError) -> RegistryError {
    RegistryError::Unavailable(e)
}
