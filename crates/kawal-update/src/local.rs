//! The local-folder transport for update repositories (a USB stick, an unpacked download).
//!
//! tough's own file transport hands out 4 KiB pieces with a trip to the blocking pool for each
//! few, which caps a 100 MB bundle at a fraction of the disk's speed. This one reads 1 MiB
//! chunks on one blocking thread per file and hands them over through a small bounded channel:
//! memory in flight stays at a few MiB, and the verifier and the unpacker get large pieces.
//! Every check stays above the transport, as with HTTPS.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tough::Bytes;
use tough::{Transport, TransportError, TransportErrorKind, TransportStream};
use url::Url;

/// Bytes read per chunk.
pub const CHUNK: usize = 1024 * 1024;
/// Chunks in flight per file.
const IN_FLIGHT: usize = 4;

/// Reads `file://` URLs in large chunks.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalTransport;

struct Chunks {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    url: Url,
}

impl Stream for Chunks {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let url = self.url.clone();
        self.rx.poll_recv(cx).map(|item| {
            item.map(|r| {
                r.map_err(|e| TransportError::new_with_cause(TransportErrorKind::Other, url, e))
            })
        })
    }
}

#[tough::async_trait]
impl Transport for LocalTransport {
    async fn fetch(&self, url: Url) -> Result<TransportStream, TransportError> {
        if url.scheme() != "file" {
            return Err(TransportError::new(
                TransportErrorKind::UnsupportedUrlScheme,
                url,
            ));
        }
        let path = url
            .to_file_path()
            .map_err(|()| TransportError::new(TransportErrorKind::Other, url.clone()))?;
        let mut file = std::fs::File::open(&path).map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::NotFound => TransportErrorKind::FileNotFound,
                _ => TransportErrorKind::Other,
            };
            TransportError::new_with_cause(kind, url.clone(), e)
        })?;
        let (tx, rx) = tokio::sync::mpsc::channel(IN_FLIGHT);
        tokio::task::spawn_blocking(move || {
            loop {
                let mut buf = vec![0u8; CHUNK];
                let mut filled = 0;
                // Fill the chunk (a read may return less), or stop at the end of the file.
                while filled < CHUNK {
                    match file.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.blocking_send(Err(e));
                            return;
                        }
                    }
                }
                if filled == 0 {
                    return;
                }
                buf.truncate(filled);
                // The reader went away (a refusal, a size cap reached): stop reading.
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() || filled < CHUNK {
                    return;
                }
            }
        });
        Ok(Box::pin(Chunks { rx, url }))
    }
}
