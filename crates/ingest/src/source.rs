//! Where events are read back from, for results: the embedded log of this
//! process, or the JetStream stream. Both give the same things: cursors
//! that read every event once in order with a position, a tip that wakes
//! readers, and how far a position is behind.

use std::{io, sync::Arc};

use exp_core::event::Event;
use tokio::sync::watch;

use crate::{
    Behind, Cursor, EventLog, LogSlot, Position, Tip,
    jetstream::{StreamCursor, StreamSource},
};

/// Where results read events.
#[derive(Debug, Clone)]
pub enum EventSource {
    /// The embedded log of this process (once it is open).
    Log(LogSlot),
    /// The JetStream stream (`--events-sink nats://`).
    Stream(StreamSource),
}

/// An [`EventSource`] ready to be read.
#[derive(Debug, Clone)]
pub enum OpenSource {
    /// The open log.
    Log(Arc<EventLog>),
    /// The stream.
    Stream(StreamSource),
}

/// A reader of an [`OpenSource`].
#[derive(Debug)]
pub enum EventCursor {
    /// Of the log.
    Log(Cursor),
    /// Of the stream.
    Stream(StreamCursor),
}

impl EventSource {
    /// The source, once it can be read (the log once it has opened).
    pub async fn opened(&self) -> OpenSource {
        match self {
            Self::Log(slot) => OpenSource::Log(slot.opened().await),
            Self::Stream(stream) => OpenSource::Stream(stream.clone()),
        }
    }

    /// The newest position written, where this process knows it without
    /// asking: the log's (zero while it opens); `None` for the stream.
    pub fn tip(&self) -> Option<Position> {
        match self {
            Self::Log(slot) => Some(slot.get().map_or(Position::ZERO, |log| log.tip())),
            Self::Stream(_) => None,
        }
    }

    /// Events after `position`, and since when.
    pub fn behind(&self, position: Position) -> Behind {
        match self {
            Self::Log(slot) => slot
                .get()
                .map(|log| log.behind(position))
                .unwrap_or_default(),
            Self::Stream(stream) => stream.behind(position),
        }
    }
}

impl OpenSource {
    /// A cursor at the start.
    pub fn cursor(&self) -> EventCursor {
        match self {
            Self::Log(log) => EventCursor::Log(log.cursor()),
            Self::Stream(stream) => EventCursor::Stream(stream.cursor()),
        }
    }

    /// Changes when events are there to read (or the log closed).
    pub fn watch_tip(&self) -> watch::Receiver<Tip> {
        match self {
            Self::Log(log) => log.watch_tip(),
            Self::Stream(stream) => stream.watch_tip(),
        }
    }
}

impl EventCursor {
    /// Read through here.
    pub fn position(&self) -> Position {
        match self {
            Self::Log(cursor) => cursor.position(),
            Self::Stream(cursor) => cursor.position(),
        }
    }

    /// The next events (empty: none for now); blocking.
    pub fn read(&mut self) -> io::Result<Vec<Event>> {
        match self {
            Self::Log(cursor) => cursor.read(),
            Self::Stream(cursor) => cursor.read(),
        }
    }
}
