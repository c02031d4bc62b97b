//! The MLLP TCP listener: many connections at once, many messages per connection, one ACK per
//! message in the order received.
//!
//! Limits ([`ListenerOptions`], from `[hl7]`): a connection idle for `read_timeout` is closed;
//! a message longer than `max_message_bytes` is answered AR and skipped (the connection stays
//! up); beyond `max_connections` a new connection is closed at once. Errors in one message
//! never close the connection; only I/O errors and the idle timeout do.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::ingest::{IngestContext, handle_message, handle_too_large};
use super::mllp::{Deframer, Frame, frame};
use crate::configuration::Hl7Settings;

/// Listener limits. Defaults (see `radsight.example.toml`): 60 s read timeout, 1 MiB messages,
/// 32 connections.
#[derive(Debug, Clone)]
pub struct ListenerOptions {
    pub read_timeout: Duration,
    pub max_message_bytes: usize,
    pub max_connections: usize,
}

impl From<&Hl7Settings> for ListenerOptions {
    fn from(s: &Hl7Settings) -> Self {
        ListenerOptions {
            read_timeout: Duration::from_millis(s.read_timeout_ms),
            max_message_bytes: s.max_message_bytes,
            max_connections: s.max_connections,
        }
    }
}

/// Accepts connections until the task is dropped.
pub async fn serve(listener: TcpListener, options: ListenerOptions, ctx: IngestContext) {
    let slots = Arc::new(Semaphore::new(options.max_connections));
    loop {
        let (stream, _peer) = match listener.accept().await {
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
        let (ctx, options) = (ctx.clone(), options.clone());
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, &options, &ctx).await {
                tracing::debug!(error = %e, "HL7 connection ended");
            }
            drop(permit);
        });
    }
}

async fn serve_connection(mut stream: TcpStream, options: &ListenerOptions, ctx: &IngestContext) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut deframer = Deframer::new(options.max_message_bytes);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout(options.read_timeout, stream.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()), // idle: close
        };
        if n == 0 {
            return Ok(());
        }
        for f in deframer.push(&buf[..n]) {
            let ack = match f {
                Frame::Message(bytes) => handle_message(ctx, &bytes).await,
                Frame::TooLarge { head } => handle_too_large(ctx, &head).await,
            };
            stream.write_all(&frame(ack.as_bytes())).await?;
        }
    }
}
