//! One TLS connection to the collector, with bounded waits everywhere: connect, handshake,
//! each write, and the confirming close.
//!
//! The confirming close ([`Conn::close_confirm`]) is what makes entries known-delivered (see
//! the parent module): TLS `close_notify`, then TCP shutdown of our write side, then read
//! until the collector's EOF. The collector reads its stream in order, so its EOF after our
//! FIN means it has read every frame before it. A reset or a time-out instead means it may
//! not have, and the caller resends.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind};

use super::ForwardError;

/// An established connection.
pub(crate) struct Conn {
    tls: ClientConnection,
    sock: TcpStream,
    io_timeout: Duration,
}

/// How long to wait for what.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// TCP connect, per address.
    pub connect: Duration,
    /// The whole handshake; each write; the confirming close.
    pub io: Duration,
}

impl Conn {
    /// Resolves `collector` (`host:port`), connects to its first address that answers, and
    /// completes the TLS handshake, verifying the collector as `server_name`.
    pub fn open(
        collector: &str,
        server_name: &ServerName<'static>,
        config: &Arc<ClientConfig>,
        t: Timeouts,
    ) -> Result<Self, ForwardError> {
        let addrs: Vec<SocketAddr> = collector
            .to_socket_addrs()
            .map_err(|e| connect_err(collector, &e))?
            .collect();
        let mut last = None;
        let mut sock = None;
        for addr in &addrs {
            match TcpStream::connect_timeout(addr, t.connect) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(sock) = sock else {
            let e = last.unwrap_or_else(|| io::Error::other("no address"));
            return Err(connect_err(collector, &e));
        };
        let _ = sock.set_nodelay(true);
        let tls = ClientConnection::new(Arc::clone(config), server_name.clone()).map_err(|e| {
            ForwardError::Handshake {
                reason: e.to_string(),
                refused: false,
            }
        })?;
        let mut conn = Self {
            tls,
            sock,
            io_timeout: t.io,
        };
        conn.handshake(Instant::now() + t.io)?;
        Ok(conn)
    }

    fn handshake(&mut self, deadline: Instant) -> Result<(), ForwardError> {
        let hs_io = |e: io::Error| ForwardError::Handshake {
            reason: e.to_string(),
            refused: false,
        };
        while self.tls.is_handshaking() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| hs_io(io::ErrorKind::TimedOut.into()))?;
            self.sock.set_read_timeout(Some(left)).map_err(hs_io)?;
            self.sock.set_write_timeout(Some(left)).map_err(hs_io)?;
            while self.tls.wants_write() {
                self.tls.write_tls(&mut self.sock).map_err(hs_io)?;
            }
            if self.tls.is_handshaking() && self.tls.wants_read() {
                if self.tls.read_tls(&mut self.sock).map_err(hs_io)? == 0 {
                    return Err(hs_io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "collector closed the connection during the handshake",
                    )));
                }
                if let Err(e) = self.tls.process_new_packets() {
                    // Tell the collector why (best effort), then report.
                    let _ = self.tls.write_tls(&mut self.sock);
                    return Err(handshake_err(&e));
                }
            }
        }
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.sock).map_err(hs_io)?;
        }
        self.sock
            .set_write_timeout(Some(self.io_timeout))
            .map_err(hs_io)?;
        Ok(())
    }

    /// Whether the handshake resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.tls.handshake_kind() == Some(HandshakeKind::Resumed)
    }

    /// Sends `bytes`; each write to the socket waits at most the I/O time-out.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), ForwardError> {
        let mut pos = 0;
        while pos < bytes.len() {
            let n = self
                .tls
                .writer()
                .write(&bytes[pos..])
                .map_err(|e| transport("send", &e))?;
            pos += n;
            while self.tls.wants_write() {
                self.tls
                    .write_tls(&mut self.sock)
                    .map_err(|e| transport("send", &e))?;
            }
        }
        Ok(())
    }

    /// Whether the collector has closed or reset the connection (checked without waiting).
    /// The collector never sends data; whatever it sends (session tickets) is processed.
    pub fn peer_gone(&mut self) -> bool {
        if self.sock.set_nonblocking(true).is_err() {
            return true;
        }
        let gone = loop {
            match self.tls.read_tls(&mut self.sock) {
                Ok(0) => break true,
                Ok(_) => match self.tls.process_new_packets() {
                    Ok(state) if state.peer_has_closed() => break true,
                    Ok(state) => {
                        if state.plaintext_bytes_to_read() > 0 {
                            let mut sink = Vec::new();
                            let _ = self.tls.reader().read_to_end(&mut sink);
                        }
                    }
                    Err(_) => break true,
                },
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        gone || self.sock.set_nonblocking(false).is_err()
    }

    /// Closes gracefully and waits for the collector's EOF; `Ok` means the collector read
    /// everything sent on this connection (see the module docs).
    pub fn close_confirm(mut self) -> Result<(), ForwardError> {
        let deadline = Instant::now() + self.io_timeout;
        let fail = |e: &io::Error| transport("confirming close", e);
        self.tls.send_close_notify();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.sock).map_err(|e| fail(&e))?;
        }
        self.sock.shutdown(Shutdown::Write).map_err(|e| fail(&e))?;
        loop {
            let left = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| fail(&io::ErrorKind::TimedOut.into()))?;
            self.sock
                .set_read_timeout(Some(left))
                .map_err(|e| fail(&e))?;
            match self.tls.read_tls(&mut self.sock) {
                // The collector's EOF after our FIN: it has read everything.
                Ok(0) => return Ok(()),
                Ok(_) => {
                    // Session tickets and the collector's close_notify; data is discarded.
                    if self.tls.process_new_packets().is_err() {
                        return Err(fail(&io::Error::other("TLS error from the collector")));
                    }
                    let mut sink = Vec::new();
                    let _ = self.tls.reader().read_to_end(&mut sink);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(&e)),
            }
        }
    }
}

fn connect_err(collector: &str, e: &io::Error) -> ForwardError {
    ForwardError::Connect {
        collector: collector.to_owned(),
        reason: e.to_string(),
    }
}

fn transport(op: &'static str, e: &io::Error) -> ForwardError {
    ForwardError::Transport {
        op,
        reason: e.to_string(),
    }
}

/// A failed handshake; a refused collector certificate is flagged (a possible impostor).
fn handshake_err(e: &rustls::Error) -> ForwardError {
    let refused = matches!(
        e,
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
    );
    ForwardError::Handshake {
        reason: e.to_string(),
        refused,
    }
}
