//! Publishing events to the stream: a batch is sent whole (pipelined, not
//! one round trip per event), its acknowledgements taken as they come. Only
//! when all have come back is the batch acknowledged to its caller; if
//! any fails, none is, and a retry with the same ids is safe (JetStream
//! answers the ones it has as duplicates).

use std::{future::IntoFuture, sync::Arc};

use async_nats::{HeaderMap, header::NATS_MESSAGE_ID, jetstream::context::PublishAckFuture};
use exp_assign::feed::ExposureSink;
use exp_core::event::{Event, Exposure};
use futures_util::{StreamExt, stream::FuturesUnordered};

use super::{Nats, encode, message_id, subject};
use crate::Position;

/// What a published batch comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Per event: new (`true`), or a duplicate JetStream already had.
    pub fresh: Vec<bool>,
    /// The stream sequence of the batch's last event (a duplicate's
    /// first copy included): a reader that has read through it has read
    /// the whole batch.
    pub position: Position,
}

/// Why a batch was not acknowledged. Nothing of it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// No connection to NATS.
    #[error("NATS is unreachable ({servers}); nothing in this batch was acknowledged, retry it")]
    Unreachable {
        /// The servers tried.
        servers: String,
    },
    /// A publish or its acknowledgement failed (no stream leader, a
    /// timeout, the stream missing).
    #[error(
        "JetStream did not acknowledge the batch ({reason}); nothing in it was acknowledged, retry it"
    )]
    NotAcknowledged {
        /// What failed.
        reason: String,
    },
}

/// Publishes batches of events to the stream.
#[derive(Debug, Clone)]
pub struct StreamPublisher {
    nats: Arc<Nats>,
}

impl StreamPublisher {
    /// Publishes through `nats`.
    pub fn new(nats: Arc<Nats>) -> Self {
        Self { nats }
    }

    /// The connection.
    pub fn nats(&self) -> &Arc<Nats> {
        &self.nats
    }

    /// Publishes `events` and waits for every acknowledgement.
    pub async fn publish(&self, events: &[Event]) -> Result<Published, PublishError> {
        if events.is_empty() {
            return Ok(Published {
                fresh: Vec::new(),
                position: Position::ZERO,
            });
        }
        // A client that is not connected buffers what it is given until it
        // reconnects: refuse at once instead, so the caller hears now.
        if !self.nats.is_connected() {
            return Err(PublishError::Unreachable {
                servers: self.nats.servers().to_owned(),
            });
        }
        let failed = |reason: String| PublishError::NotAcknowledged { reason };
        // Every publish holds one of the client's in-flight permits until
        // its acknowledgement is taken. The acknowledgements already sent
        // are taken while the next publish waits for a permit: a batch
        // never waits on permits it holds itself, whatever the number of
        // batches in flight.
        let mut pending: FuturesUnordered<<PublishAckFuture as IntoFuture>::IntoFuture> =
            FuturesUnordered::new();
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let mut headers = HeaderMap::new();
            headers.insert(NATS_MESSAGE_ID, message_id(event).as_str());
            let publish =
                self.nats
                    .jetstream()
                    .publish_with_headers(subject(event), headers, encode(event));
            tokio::pin!(publish);
            let ack = loop {
                tokio::select! {
                    biased;
                    sent = &mut publish => break sent.map_err(|err| failed(err.to_string()))?,
                    Some(done) = pending.next() => acks.push(done.map_err(|err| failed(err.to_string()))?),
                }
            };
            pending.push(ack.into_future());
        }
        while let Some(done) = pending.next().await {
            acks.push(done.map_err(|err| failed(err.to_string()))?);
        }
        let stream = self.nats.stream_name();
        if let Some(other) = acks.iter().find(|ack| ack.stream != stream) {
            return Err(failed(format!(
                "stream {} holds the subjects, not {stream}",
                other.stream
            )));
        }
        Ok(Published {
            fresh: acks.iter().map(|ack| !ack.duplicate).collect(),
            position: Position::from_u64(acks.iter().map(|ack| ack.sequence).max().unwrap_or(0)),
        })
    }
}

/// Attempts at a batch of exposures before it is handed back.
const ATTEMPTS: u32 = 4;
/// The first wait between attempts; it doubles each time.
const FIRST_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// Assign's exposures published to the stream (any process that assigns,
/// replicas and sidecars included). A batch JetStream did not acknowledge
/// while NATS is reachable (a leader changing, a server leaving in a
/// rolling restart) is tried again, with the same ids, a few times; a
/// batch NATS cannot be reached for is handed back at once, and the feed
/// counts it as dropped. Assignment never waits for it (its queue is
/// bounded, and drops what overflows, counted).
#[derive(Debug, Clone)]
pub struct StreamSink {
    publisher: StreamPublisher,
}

impl StreamSink {
    /// Publishes with `publisher`.
    pub fn new(publisher: StreamPublisher) -> Self {
        Self { publisher }
    }
}

impl ExposureSink for StreamSink {
    async fn log(&mut self, exposures: Vec<Exposure>) -> Vec<Exposure> {
        let events: Vec<Event> = exposures.into_iter().map(Event::Exposure).collect();
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            match self.publisher.publish(&events).await {
                Ok(_) => return Vec::new(),
                Err(PublishError::NotAcknowledged { reason }) if attempt < ATTEMPTS => {
                    tracing::debug!(%reason, attempt, "exposures not acknowledged; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(error) => {
                    tracing::debug!(%error, "exposures not published");
                    return events
                        .into_iter()
                        .filter_map(|event| match event {
                            Event::Exposure(exposure) => Some(exposure),
                            Event::Outcome(_) => None,
                        })
                        .collect();
                }
            }
        }
    }

    async fn close(self) {}
}
