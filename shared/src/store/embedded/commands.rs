//! Commands in the embedded store: each device's inbox ordered by arrival, commands and
//! responses by request id, and an expiry index that drops old ones as new ones come.

use super::{EmbeddedStore, unavailable};
use crate::model::command::{Command, CommandResponse};
use crate::store::{CommandStore, StoreError, StoreResult};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

/// (application, device, `{created µs:020}#{id}`) -> command.
const INBOX: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("command_inbox");
/// request id -> command.
const COMMANDS: TableDefinition<&str, &[u8]> = TableDefinition::new("commands");
/// request id -> response.
const RESPONSES: TableDefinition<&str, &[u8]> = TableDefinition::new("command_responses");
/// (seconds since the epoch, request id): when a command and its response go.
const EXPIRY: TableDefinition<(u64, &str), ()> = TableDefinition::new("command_expiry");

/// At most this many expired commands are dropped per enqueue.
const CLEANUP: usize = 64;

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<(), redb::Error> {
    txn.open_table(INBOX)?;
    txn.open_table(COMMANDS)?;
    txn.open_table(RESPONSES)?;
    txn.open_table(EXPIRY)?;
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct StoredResponse {
    response: CommandResponse,
    expires: DateTime<Utc>,
}

fn order_key(command: &Command) -> String {
    format!(
        "{:020}#{}",
        command.created.timestamp_micros().max(0),
        command.id
    )
}

fn epoch_seconds(time: DateTime<Utc>) -> u64 {
    time.timestamp().max(0) as u64
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(StoreError::unavailable)
}

#[async_trait]
impl CommandStore for EmbeddedStore {
    async fn enqueue(&self, command: &Command) -> StoreResult<()> {
        let command = command.clone();
        self.write(move |txn| {
            let value = serde_json::to_vec(&command).expect("commands serialize");
            let key = order_key(&command);
            txn.open_table(INBOX)?.insert(
                (
                    command.application.as_str(),
                    command.device.as_str(),
                    key.as_str(),
                ),
                value.as_slice(),
            )?;
            txn.open_table(COMMANDS)?
                .insert(command.id.as_str(), value.as_slice())?;
            let until = epoch_seconds(command.responses_until());
            txn.open_table(EXPIRY)?
                .insert((until, command.id.as_str()), ())?;
            drop_expired(txn, epoch_seconds(Utc::now()))?;
            Ok(Ok(()))
        })
        .await
    }

    async fn take_command(
        &self,
        application: &str,
        device: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<Command>> {
        let (application, device) = (application.to_owned(), device.to_owned());
        self.write(move |txn| {
            let mut inbox = txn.open_table(INBOX)?;
            let mut expired = Vec::new();
            let mut taken = None;
            for entry in inbox.range((application.as_str(), device.as_str(), "")..)? {
                let (key, value) = entry?;
                let (a, d, order) = key.value();
                if a != application || d != device {
                    break;
                }
                let Ok(command) = serde_json::from_slice::<Command>(value.value()) else {
                    expired.push(order.to_owned());
                    continue;
                };
                if command.is_expired(now) {
                    expired.push(order.to_owned());
                } else {
                    taken = Some((order.to_owned(), command));
                    break;
                }
            }
            for order in &expired {
                inbox.remove((application.as_str(), device.as_str(), order.as_str()))?;
            }
            if let Some((order, _)) = &taken {
                inbox.remove((application.as_str(), device.as_str(), order.as_str()))?;
            }
            Ok(Ok(taken.map(|(_, command)| command)))
        })
        .await
    }

    async fn get_command(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Option<Command>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(COMMANDS).map_err(unavailable)?;
        let Some(value) = table.get(id).map_err(unavailable)? else {
            return Ok(None);
        };
        let command: Command = parse(value.value())?;
        Ok((command.responses_until() > now).then_some(command))
    }

    async fn record_response(
        &self,
        response: &CommandResponse,
        expires: DateTime<Utc>,
    ) -> StoreResult<bool> {
        let stored = serde_json::to_vec(&StoredResponse {
            response: response.clone(),
            expires,
        })
        .expect("responses serialize");
        let id = response.id.clone();
        self.write(move |txn| {
            let mut responses = txn.open_table(RESPONSES)?;
            if responses.get(id.as_str())?.is_some() {
                return Ok(Ok(false));
            }
            responses.insert(id.as_str(), stored.as_slice())?;
            Ok(Ok(true))
        })
        .await
    }

    async fn get_response(
        &self,
        id: &str,
        now: DateTime<Utc>,
    ) -> StoreResult<Option<CommandResponse>> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let table = txn.open_table(RESPONSES).map_err(unavailable)?;
        let Some(value) = table.get(id).map_err(unavailable)? else {
            return Ok(None);
        };
        let stored: StoredResponse = parse(value.value())?;
        Ok((stored.expires > now).then_some(stored.response))
    }
}

/// Drops commands (and their responses) that take no more responses.
fn drop_expired(txn: &WriteTransaction, now: u64) -> Result<(), redb::Error> {
    let mut expiry = txn.open_table(EXPIRY)?;
    let due: Vec<(u64, String)> = expiry
        .range(..(now, ""))?
        .take(CLEANUP)
        .map(|entry| entry.map(|(k, _)| (k.value().0, k.value().1.to_owned())))
        .collect::<Result<_, _>>()?;
    let mut commands = txn.open_table(COMMANDS)?;
    let mut responses = txn.open_table(RESPONSES)?;
    for (at, id) in due {
        commands.remove(id.as_str())?;
        responses.remove(id.as_str())?;
        expiry.remove((at, id.as_str()))?;
    }
    Ok(())
}
