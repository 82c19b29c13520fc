//! Connections of both ports, bounded: at most `--max-connections` open
//! in total and `--max-connections-per-client` from one address; a
//! connection beyond either is closed as soon as it is accepted. A
//! connection must send its first 24 bytes (the HTTP/2 preface) within
//! `--read-timeout`, or it is closed. So one client cannot use up the file descriptors or the
//! connection slots the others need.
//!
//! At start the open-file limit is raised to its hard limit and the total
//! is lowered, if need be, to leave [`FILES_RESERVED`] descriptors for the
//! store, the event log and its Parquet files; `/readyz` reports the
//! headroom left.

use std::{
    collections::HashMap,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::Sleep,
};
use tokio_stream::Stream;
use tracing::{info, warn};

/// Descriptors kept for files, not connections.
pub const FILES_RESERVED: u64 = 1_024;

/// Raises the soft open-file limit to the hard limit; answers the limit
/// now in force.
pub fn raise_open_file_limit() -> io::Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
        info!(from = soft, to = hard, "raised the open-file limit");
    }
    Ok(hard)
}

/// Open descriptors of this process, and the limit (`None` where the
/// system does not tell).
pub fn open_files() -> Option<(u64, u64)> {
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    let (soft, _) = rlimit::Resource::NOFILE.get().ok()?;
    Some((open, soft))
}

/// The table of open connections, shared by both ports.
#[derive(Debug, Clone)]
pub struct Connections {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    max_total: u64,
    max_per_client: u64,
    first_bytes: Duration,
    open: Mutex<Open>,
    refused: AtomicU64,
}

#[derive(Debug, Default)]
struct Open {
    total: u64,
    by_client: HashMap<IpAddr, u64>,
}

impl Connections {
    /// A table admitting `max_total` connections, `max_per_client` from
    /// one address, each of which must send within `first_bytes`.
    pub fn new(max_total: u64, max_per_client: u64, first_bytes: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                max_total,
                max_per_client,
                first_bytes,
                open: Mutex::new(Open::default()),
                refused: AtomicU64::new(0),
            }),
        }
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.lock().total
    }

    /// Connections closed at once because a limit was reached.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    /// A slot for a connection from `client`, or `None` past a limit.
    fn admit(&self, client: IpAddr) -> Option<Slot> {
        let mut open = self.lock();
        let from_client = open.by_client.get(&client).copied().unwrap_or(0);
        if open.total >= self.shared.max_total || from_client >= self.shared.max_per_client {
            drop(open);
            let refused = self.shared.refused.fetch_add(1, Ordering::Relaxed);
            // One line per thousand refusals: a flood must not flood the log.
            if refused.is_multiple_of(1_000) {
                warn!(
                    %client,
                    max_total = self.shared.max_total,
                    max_per_client = self.shared.max_per_client,
                    refused = refused + 1,
                    "connection limit reached; closing new connections"
                );
            }
            return None;
        }
        open.total += 1;
        *open.by_client.entry(client).or_default() += 1;
        Some(Slot {
            connections: self.clone(),
            client,
        })
    }

    /// Wraps an accepted stream: `None` when it is past a limit (the
    /// stream is dropped, so closed).
    pub fn guard(&self, stream: TcpStream) -> Option<Guarded> {
        let client = stream.peer_addr().ok()?.ip();
        let slot = self.admit(client)?;
        Some(Guarded {
            stream,
            _slot: slot,
            first_bytes: Some(Box::pin(tokio::time::sleep(self.shared.first_bytes))),
            received: 0,
        })
    }

    /// The admitted connections of `listener`, with no Nagle delay (a
    /// small unary answer would otherwise wait ~40 ms for a delayed ACK)
    /// and TCP keepalive, so half-open peers are reaped.
    pub fn incoming(
        &self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<Guarded>> + use<> {
        let incoming = tonic::transport::server::TcpIncoming::from(listener)
            .with_nodelay(Some(true))
            .with_keepalive(Some(Duration::from_secs(60)));
        let connections = self.clone();
        tokio_stream::StreamExt::filter_map(incoming, move |accepted| match accepted {
            Ok(stream) => connections.guard(stream).map(Ok),
            Err(err) => Some(Err(err)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.shared
            .open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A connection's place in the table, given back when it closes.
#[derive(Debug)]
struct Slot {
    connections: Connections,
    client: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        open.total -= 1;
        if let Some(count) = open.by_client.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.by_client.remove(&self.client);
            }
        }
    }
}

/// How many bytes a connection must send before its deadline: the HTTP/2
/// connection preface (an HTTP/1 request line is longer), so one byte
/// does not buy a connection forever.
const FIRST_BYTES: usize = 24;

/// An admitted connection: its slot is held while it is open, and it
/// fails its reads with `TimedOut` if its first [`FIRST_BYTES`] have not
/// arrived by the deadline.
#[derive(Debug)]
pub struct Guarded {
    stream: TcpStream,
    _slot: Slot,
    first_bytes: Option<Pin<Box<Sleep>>>,
    received: usize,
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        match &read {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.received += buf.filled().len() - before;
                if self.received >= FIRST_BYTES {
                    self.first_bytes = None;
                }
            }
            Poll::Pending => {
                if let Some(deadline) = self.first_bytes.as_mut()
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the read timeout",
                    )));
                }
            }
            Poll::Ready(_) => {}
        }
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_past_its_share_is_refused_while_others_are_admitted() {
        let connections = Connections::new(3, 2, Duration::from_secs(1));
        let a = IpAddr::from([127, 0, 0, 2]);
        let b = IpAddr::from([127, 0, 0, 1]);
        let first = connections.admit(a).expect("first");
        let _second = connections.admit(a).expect("second");
        assert!(connections.admit(a).is_none(), "a's third");
        let _other = connections.admit(b).expect("b's first");
        assert!(connections.admit(b).is_none(), "the total is reached");
        assert_eq!((connections.open(), connections.refused()), (3, 2));
        drop(first);
        assert!(connections.admit(a).is_some(), "a slot came back");
    }
}
