//! One writer per partition: a claim in a JetStream key-value bucket
//! (`<stream>_WRITERS`, one key per partition, the name of the writer
//! that owns it). A writer creates its partition's key with its own name
//! (a create succeeds only when the key is absent), or finds its own name
//! there after a restart (the name is the host and the data directory, so
//! the same StatefulSet pod with its volume is the same writer). A claim
//! does not expire: a partition's dedup state is its writer's disk, so
//! another writer taking it over while the first is merely down would let
//! the messages the first had written but not yet acknowledged reach
//! Parquet twice. A second writer named for a claimed partition waits,
//! saying who owns it, woken when the key changes; moving a partition is
//! an operator's step (`nats kv del <stream>_WRITERS partition-<p>` once
//! its writer is stopped, see docs/events-at-scale.md). A writer whose
//! claim is deleted or taken while it runs stops writing the partition.

use async_nats::jetstream::{
    kv::{self, CreateErrorKind},
    stream,
};
use futures_util::StreamExt;
use prost::bytes::Bytes;

use super::Nats;

/// The bucket of the stream's partition claims, created if absent with
/// the stream's replicas (a claim survives what the stream survives).
///
/// The bucket's stream is created here as a key-value bucket's is laid
/// out (`KV_<bucket>`, subjects `$KV.<bucket>.>`, one message per key,
/// rollups allowed, deletes denied, new messages discarded at a limit):
/// the client's own bucket creation first asks for the account's
/// JetStream info in a form Debian's nats-server 2.9 does not answer.
pub async fn bucket(nats: &Nats) -> Result<kv::Store, String> {
    let name = bucket_name(nats);
    if let Ok(store) = nats.jetstream().get_key_value(&name).await {
        return Ok(store);
    }
    let mut stream = nats.stream().await.map_err(|err| err.to_string())?;
    let replicas = stream
        .info()
        .await
        .map_err(|err| format!("stream {}: {err}", nats.stream_name()))?
        .config
        .num_replicas;
    nats.jetstream()
        .get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            description: Some(
                "expd writers: the writer that owns each partition of the event stream".into(),
            ),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            num_replicas: replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|err| format!("key-value bucket {name}: {err}"))?;
    nats.jetstream()
        .get_key_value(&name)
        .await
        .map_err(|err| format!("key-value bucket {name}: {err}"))
}

/// The claims' bucket of `nats`'s stream.
pub fn bucket_name(nats: &Nats) -> String {
    format!("{}_WRITERS", nats.stream_name())
}

/// The key of a partition's claim.
pub fn key(partition: u32) -> String {
    format!("partition-{partition}")
}

/// What trying to claim a partition came to.
#[derive(Debug)]
pub enum Claimed {
    /// This writer owns it.
    Owned,
    /// Another writer owns it, named.
    OwnedBy(String),
}

/// Claims `partition` for `owner`: creates the key, or finds `owner`
/// already there (a restart).
pub async fn claim(store: &kv::Store, partition: u32, owner: &str) -> Result<Claimed, String> {
    let key = key(partition);
    match store.create(&key, Bytes::from(owner.to_owned())).await {
        Ok(_) => return Ok(Claimed::Owned),
        Err(err) if err.kind() == CreateErrorKind::AlreadyExists => {}
        Err(err) => return Err(format!("claim {key}: {err}")),
    }
    match owner_of(store, &key).await? {
        Some(holder) if holder == owner => Ok(Claimed::Owned),
        Some(holder) => Ok(Claimed::OwnedBy(holder)),
        // Deleted between the two calls: the next attempt creates it.
        None => Ok(Claimed::OwnedBy(String::new())),
    }
}

async fn owner_of(store: &kv::Store, key: &str) -> Result<Option<String>, String> {
    let entry = store
        .entry(key)
        .await
        .map_err(|err| format!("claim {key}: {err}"))?;
    Ok(entry
        .filter(|entry| entry.operation == kv::Operation::Put)
        .map(|entry| String::from_utf8_lossy(&entry.value).into_owned()))
}

/// Resolves once `partition`'s claim is no longer `owner`'s, or (with
/// `owner` empty) once it changes from what it was: the key's updates are
/// pushed, nothing is polled. An error (the watch could not start, or
/// ended) resolves it too: the caller checks the claim again.
pub async fn changed(store: &kv::Store, partition: u32, owner: &str) -> Result<(), String> {
    let key = key(partition);
    let mut updates = store
        .watch_with_history(&key)
        .await
        .map_err(|err| format!("watching claim {key}: {err}"))?;
    let mut first = true;
    while let Some(update) = updates.next().await {
        let entry = update.map_err(|err| format!("watching claim {key}: {err}"))?;
        let holder = (entry.operation == kv::Operation::Put)
            .then(|| String::from_utf8_lossy(&entry.value).into_owned());
        let settled = if owner.is_empty() {
            // Waiting: the key free now, or any update after the value
            // the watch started from.
            holder.is_none() || !first
        } else {
            holder.as_deref() != Some(owner)
        };
        if settled {
            return Ok(());
        }
        first = false;
    }
    Err(format!("watching claim {key}: the watch ended"))
}
