//! The MLLP TCP listener: many connections at once, many messages per connection, one ACK per
//! message in the order received.
//!
//! Limits ([`ListenerOptions`], from `[hl7]`): a connection idle for `read_timeout` is closed;
//! a message must arrive whole within `message_deadline` of its first byte, whatever trickles
//! in meanwhile (a sender dripping one byte at a time cannot hold a slot forever); a message
//! longer than `max_message_bytes` is answered AR and skipped (the connection stays up); beyond
//! `max_connections`, or `max_connections_per_source` from one address, a new connection is
//! closed at once. Errors in one message never close the connection; only I/O errors, the idle
//! timeout and the message deadline do.
//!
//! Shutdown ([`Shutdown`]): the listener stops accepting; each connection finishes the message
//! it is receiving (within its deadline) and sends that message's ACK, then closes; [`serve`]
//! returns when the last connection has closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::ingest::{IngestContext, handle_message, handle_too_large};
use crate::configuration::Hl7Settings;
use crate::mllp::{Deframer, Frame, frame};
use crate::state::Shutdown;

/// Listener limits. Defaults (see `radsight.example.toml`): 60 s read timeout, 30 s per
/// message, 1 MiB messages, 32 connections, 8 from one address.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    pub read_timeout: Duration,
    pub message_deadline: Duration,
    pub max_message_bytes: usize,
    pub max_connections: usize,
    pub max_connections_per_source: usize,
}

impl From<&Hl7Settings> for ListenerOptions {
    fn from(s: &Hl7Settings) -> Self {
        ListenerOptions {
            read_timeout: Duration::from_millis(s.read_timeout_ms),
            message_deadline: Duration::from_millis(s.message_deadline_ms),
            max_message_bytes: s.max_message_bytes,
            max_connections: s.max_connections,
            max_connections_per_source: s.max_connections_per_source,
        }
    }
}

/// Open connections per source address; an entry leaves when its last connection closes.
#[derive(Default)]
struct PerSource(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its source; uncounted when dropped.
struct SourceSlot {
    sources: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    fn acquire(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<SourceSlot> {
        let mut open = self.0.lock().expect("per-source lock");
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(SourceSlot { sources: self.clone(), ip })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut open = self.sources.0.lock().expect("per-source lock");
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts connections until shutdown begins, then waits for the open ones to finish. With
/// `tls`, each connection must complete a TLS handshake (within `read_timeout`) first.
pub async fn serve(listener: TcpListener, options: ListenerOptions, ctx: IngestContext, shutdown: Shutdown, tls: Option<TlsAcceptor>) {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let sources = Arc::new(PerSource::default());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.begun() => break,
        };
        let (stream, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "HL7 listener could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(limit = options.max_connections, "HL7 connection refused: connection limit reached");
            drop(stream);
            continue;
        };
        let Some(source) = sources.acquire(peer.ip(), options.max_connections_per_source) else {
            tracing::warn!(limit = options.max_connections_per_source, "HL7 connection refused: per-source connection limit reached");
            drop(stream);
            continue;
        };
        let (ctx, options, shutdown, tls) = (ctx.clone(), options.clone(), shutdown.clone(), tls.clone());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let ended = match tls {
                None => serve_connection(stream, peer.ip(), &options, &ctx, &shutdown).await,
                Some(tls) => match tokio::time::timeout(options.read_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, peer.ip(), &options, &ctx, &shutdown).await,
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "HL7 TLS handshake refused");
                        Ok(())
                    }
                    Err(_) => Ok(()),
                },
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "HL7 connection ended");
            }
            drop((permit, source));
        });
    }
    drop(listener);
    // Every connection holds a permit until it ends: having them all back means all are done.
    let _ = slots.acquire_many(options.max_connections as u32).await;
}

async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: IpAddr,
    options: &ListenerOptions,
    ctx: &IngestContext,
    shutdown: &Shutdown,
) -> std::io::Result<()> {
    let mut deframer = Deframer::new(options.max_message_bytes);
    let mut buf = vec![0u8; 16 * 1024];
    // When the message now arriving must be whole; `None` between messages.
    let mut deadline: Option<Instant> = None;
    loop {
        let wait = match deadline {
            Some(d) => options.read_timeout.min(d.saturating_duration_since(Instant::now())),
            None => options.read_timeout,
        };
        // Between messages, shutdown closes the connection; a message under way is finished.
        let between = deadline.is_none();
        let read = tokio::select! {
            r = tokio::time::timeout(wait, stream.read(&mut buf)) => r,
            _ = shutdown.begun(), if between => return Ok(()),
        };
        let n = match read {
            Ok(r) => r?,
            Err(_) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    tracing::warn!("HL7 connection closed: a message did not arrive whole within the message deadline");
                }
                return Ok(()); // idle, or a message too slow: close
            }
        };
        if n == 0 {
            return Ok(());
        }
        let frames = deframer.push(&buf[..n]);
        // The clock starts at the first byte of a message and stops when no message is open.
        deadline = match (deframer.in_frame(), deadline) {
            (false, _) => None,
            (true, Some(d)) if frames.is_empty() => Some(d),
            (true, _) => Some(Instant::now() + options.message_deadline),
        };
        for f in frames {
            let ack = match f {
                Frame::Message(bytes) => handle_message(ctx, peer, &bytes).await,
                Frame::TooLarge { head } => handle_too_large(ctx, peer, &head).await,
            };
            stream.write_all(&frame(ack.as_bytes())).await?;
        }
        if shutdown.is_draining() && !deframer.in_frame() {
            return Ok(());
        }
    }
}
