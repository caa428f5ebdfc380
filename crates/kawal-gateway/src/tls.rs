//! The sensors' TLS stream, on rustls' unbuffered API (ADR 0009).
//!
//! rustls' buffered connection keeps a 4 KiB read buffer for the whole life of a connection,
//! even an idle one: 40 MiB of nothing at 10,000 sensors. This stream owns its buffers and
//! lets them go whenever the socket has nothing more to give, so an idle sensor costs its TLS
//! state and keys and no buffer. Writes are gathered until a flush (or a full record) and go
//! out as one record and, usually, one system call.
//!
//! The TLS protocol is rustls' throughout: this module only moves bytes between the socket,
//! rustls and the caller, and never looks inside a record.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, ReadTraffic, UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Room made for one read from the socket: a whole largest record and its header.
const READ_CHUNK: usize = 16 * 1024 + 512;
/// Plaintext gathered before it is sealed into a record: the largest a record carries.
const RECORD: usize = 16 * 1024;
/// Sealed bytes the socket has not taken yet before a write waits for it (back-pressure).
const OUT_HIGH: usize = 64 * 1024;
/// Unprocessed bytes held at most: a handshake message may span records (rustls' own
/// buffered connection stops at 64 KiB too), application records are at most ~16 KiB.
const IN_MAX: usize = 64 * 1024 + READ_CHUNK;
/// TLS bytes a record adds to its plaintext at most (header, explicit nonce, type, tag).
const RECORD_OVERHEAD: usize = 64;

/// A server-side TLS stream over TCP whose handshake is done: the peer's certificate, if it
/// sent one, has been verified by the configuration's verifier.
pub struct TlsStream {
    sock: TcpStream,
    conn: UnbufferedServerConnection,
    /// TLS bytes read and not yet processed: after processing, at most a partial record.
    incoming: Vec<u8>,
    /// Decrypted application data not yet read; `plain_at` bytes of it were.
    plain: Vec<u8>,
    plain_at: usize,
    /// Application data written and not yet sealed.
    pending: Vec<u8>,
    /// Sealed TLS bytes not yet sent; `sent` bytes of it were.
    outgoing: Vec<u8>,
    sent: usize,
    /// The peer sent close_notify: no more application data will come.
    peer_closed: bool,
    /// Our close_notify is sealed: nothing more may be written.
    closing: bool,
    /// The reader parked on the socket, woken if a write finds something for it.
    reader: Option<Waker>,
}

/// Runs the server side of a TLS handshake on `sock`. On failure the error carries rustls'
/// [`rustls::Error`] (as `io::ErrorKind::InvalidData`) where TLS failed, after the alert has
/// been sent where the socket takes it.
pub async fn accept(sock: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut s = TlsStream {
        sock,
        conn,
        incoming: Vec::new(),
        plain: Vec::new(),
        plain_at: 0,
        pending: Vec::new(),
        outgoing: Vec::new(),
        sent: 0,
        peer_closed: false,
        closing: false,
        reader: None,
    };
    loop {
        if let Err(e) = s.advance() {
            s.send_alert();
            return Err(tls_error(e));
        }
        std::future::poll_fn(|cx| s.poll_send(cx)).await?;
        if !s.conn.is_handshaking() {
            break;
        }
        if s.peer_closed {
            return Err(handshake_eof());
        }
        if s.incoming.len() >= IN_MAX {
            return Err(tls_error(rustls::Error::General(
                "handshake message too large".into(),
            )));
        }
        s.sock.readable().await?;
        s.incoming.reserve(READ_CHUNK);
        match s.sock.try_read_buf(&mut s.incoming) {
            Ok(0) => return Err(handshake_eof()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    s.shed();
    Ok(s)
}

fn handshake_eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof")
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// What processing the received bytes came to.
enum Step {
    /// Something was done; process again.
    Again,
    /// Nothing more without new bytes from the peer (or the peer is done).
    Stop,
}

impl TlsStream {
    /// The peer's certificate chain, leaf first, as verified in the handshake.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.protocol_version()
    }

    /// Bytes of buffer capacity held (what an idle connection should hold none of).
    pub fn buffered_capacity(&self) -> usize {
        self.incoming.capacity()
            + self.plain.capacity()
            + self.pending.capacity()
            + self.outgoing.capacity()
    }

    /// Processes every complete record received: application data into `plain`, what
    /// rustls wants sent into `outgoing`.
    fn advance(&mut self) -> Result<(), rustls::Error> {
        loop {
            // In a block: the state borrows `incoming` until it is dropped.
            let (discard, step) = {
                let UnbufferedStatus { discard, state } =
                    self.conn.process_tls_records(&mut self.incoming);
                let step = match state {
                    Err(e) => Err(e),
                    Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                        take_records(&mut traffic, &mut self.plain).map(|()| Step::Again)
                    }
                    Ok(ConnectionState::EncodeTlsData(mut data)) => {
                        append(&mut self.outgoing, RECORD_OVERHEAD, |b| data.encode(b))
                            .map(|()| Step::Again)
                            .map_err(|e| rustls::Error::General(e.to_string()))
                    }
                    // Queued in `outgoing` is as good as sent: everything leaves in order.
                    Ok(ConnectionState::TransmitTlsData(t)) => {
                        t.done();
                        Ok(Step::Again)
                    }
                    Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                        self.peer_closed = true;
                        Ok(Step::Stop)
                    }
                    Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
                        Ok(Step::Stop)
                    }
                    // Early data is never enabled; any other state is not one this stream knows.
                    Ok(_) => Err(rustls::Error::General("unexpected TLS state".into())),
                };
                (discard, step)
            };
            self.incoming.drain(..discard.min(self.incoming.len()));
            if let Step::Stop = step? {
                return Ok(());
            }
        }
    }

    /// Seals `data` (or a close_notify, if `None`) into `outgoing`.
    fn seal(&mut self, data: Option<&[u8]>) -> io::Result<()> {
        loop {
            let (discard, done) = {
                let UnbufferedStatus { discard, state } =
                    self.conn.process_tls_records(&mut self.incoming);
                let done = match state {
                    Ok(ConnectionState::WriteTraffic(mut w)) => {
                        let r = match data {
                            Some(data) => {
                                let guess =
                                    data.len() + RECORD_OVERHEAD * (1 + data.len() / RECORD);
                                append(&mut self.outgoing, guess, |b| w.encrypt(data, b))
                            }
                            None => append(&mut self.outgoing, RECORD_OVERHEAD, |b| {
                                w.queue_close_notify(b)
                            }),
                        };
                        Some(r.map_err(|e| io::Error::other(e.to_string())))
                    }
                    // Records the reader has not processed (it processes all it has, so this is
                    // rare): kept for it, and it is woken.
                    Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                        let r = take_records(&mut traffic, &mut self.plain).err();
                        if let Some(w) = self.reader.take() {
                            w.wake();
                        }
                        r.map(|e| Err(tls_error(e)))
                    }
                    Ok(ConnectionState::EncodeTlsData(mut d)) => {
                        append(&mut self.outgoing, RECORD_OVERHEAD, |b| d.encode(b))
                            .err()
                            .map(|e| Err(io::Error::other(e.to_string())))
                    }
                    Ok(ConnectionState::TransmitTlsData(t)) => {
                        t.done();
                        None
                    }
                    Ok(ConnectionState::PeerClosed) => {
                        self.peer_closed = true;
                        if let Some(w) = self.reader.take() {
                            w.wake();
                        }
                        None
                    }
                    Ok(ConnectionState::Closed) => Some(Err(io::ErrorKind::BrokenPipe.into())),
                    Ok(_) => Some(Err(io::Error::other("TLS connection cannot send"))),
                    Err(e) => Some(Err(tls_error(e))),
                };
                (discard, done)
            };
            self.incoming.drain(..discard.min(self.incoming.len()));
            if let Some(r) = done {
                return r;
            }
        }
    }

    /// Seals what was written and not yet sealed.
    fn seal_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        let r = self.seal(Some(&pending));
        self.pending = pending;
        self.pending.clear();
        r
    }

    /// Sends `outgoing` until it is all gone (then lets its buffer go) or the socket is full.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.sock).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Sends what `outgoing` holds as far as the socket takes it now, without waiting and
    /// without taking the writer's place in the socket's wake-ups (the reader's case).
    fn send_now(&mut self) -> io::Result<()> {
        while self.sent < self.outgoing.len() {
            match self.sock.try_write(&self.outgoing[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.outgoing = Vec::new();
        self.sent = 0;
        Ok(())
    }

    /// After a TLS error: seals the alert rustls queued and sends it if the socket takes it.
    /// rustls is asked only while it has something queued: asked again, it would process
    /// the offending bytes a second time. (It keeps positions in `incoming`, which is
    /// therefore handed back as it is.)
    fn send_alert(&mut self) {
        while self.conn.wants_write() {
            let (discard, sealed) = {
                let UnbufferedStatus { discard, state } =
                    self.conn.process_tls_records(&mut self.incoming);
                let sealed = match state {
                    Ok(ConnectionState::EncodeTlsData(mut d)) => {
                        append(&mut self.outgoing, RECORD_OVERHEAD, |b| d.encode(b)).is_ok()
                    }
                    _ => false,
                };
                (discard, sealed)
            };
            self.incoming.drain(..discard.min(self.incoming.len()));
            if !sealed {
                break;
            }
        }
        let _ = self.send_now();
    }

    /// Lets go of every buffer that holds nothing (an idle connection holds none).
    fn shed(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        } else {
            self.incoming.shrink_to_fit();
        }
        if self.plain_at >= self.plain.len() {
            self.plain = Vec::new();
            self.plain_at = 0;
        }
        if self.pending.is_empty() {
            self.pending = Vec::new();
        }
        if self.sent >= self.outgoing.len() {
            self.outgoing = Vec::new();
            self.sent = 0;
        }
    }
}

/// Appends the decrypted application data of every record `traffic` has to `plain`.
fn take_records(
    traffic: &mut ReadTraffic<'_, '_, ServerConnectionData>,
    plain: &mut Vec<u8>,
) -> Result<(), rustls::Error> {
    while let Some(record) = traffic.next_record() {
        plain.extend_from_slice(record?.payload);
    }
    Ok(())
}

/// Lets `fill` write at the end of `out`, with `guess` bytes of room or, if rustls says so,
/// as many as it needs.
fn append<E: Short>(
    out: &mut Vec<u8>,
    guess: usize,
    mut fill: impl FnMut(&mut [u8]) -> Result<usize, E>,
) -> Result<(), E> {
    let start = out.len();
    out.resize(start + guess, 0);
    let r = match fill(&mut out[start..]) {
        Err(e) => match e.required() {
            Some(n) => {
                out.resize(start + n, 0);
                fill(&mut out[start..])
            }
            None => Err(e),
        },
        ok => ok,
    };
    match r {
        Ok(n) => {
            out.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// rustls' "the buffer is too small; it needs this much".
trait Short {
    fn required(&self) -> Option<usize>;
}

impl Short for EncodeError {
    fn required(&self) -> Option<usize> {
        match self {
            Self::InsufficientSize(s) => Some(s.required_size),
            _ => None,
        }
    }
}

impl Short for EncryptError {
    fn required(&self) -> Option<usize> {
        match self {
            Self::InsufficientSize(s) => Some(s.required_size),
            _ => None,
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_at);
                buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                if this.plain_at == this.plain.len() {
                    this.plain.clear();
                    this.plain_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = this.advance() {
                this.send_alert();
                return Poll::Ready(Err(tls_error(e)));
            }
            if this.sent < this.outgoing.len() {
                this.send_now()?;
            }
            if this.plain_at < this.plain.len() || this.peer_closed {
                continue;
            }
            if this.incoming.len() >= IN_MAX {
                return Poll::Ready(Err(tls_error(rustls::Error::General(
                    "record too large".into(),
                ))));
            }
            if this.sock.poll_read_ready(cx)?.is_pending() {
                this.reader = Some(cx.waker().clone());
                this.shed();
                return Poll::Pending;
            }
            this.incoming.reserve(READ_CHUNK);
            match this.sock.try_read_buf(&mut this.incoming) {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the connection without a TLS close_notify",
                    )));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if this.outgoing.len() - this.sent >= OUT_HIGH {
            ready!(this.poll_send(cx))?;
        }
        if this.pending.len() + data.len() > RECORD {
            this.seal_pending()?;
        }
        if data.len() >= RECORD {
            this.seal(Some(data))?;
        } else {
            this.pending.extend_from_slice(data);
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.seal_pending()?;
        ready!(this.poll_send(cx))?;
        this.pending = Vec::new();
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing {
            this.seal_pending()?;
            this.closing = true;
            // Both sides closed already: there is no close_notify left to send.
            match this.seal(None) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.sock).poll_shutdown(cx)
    }
}
