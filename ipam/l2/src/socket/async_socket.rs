//! A [`PacketSocket`] registered with tokio, for the speaker's event loop
//! (feature `tokio`).
//!
//! This is the crate's only `unsafe`: tokio registers a raw descriptor only
//! through the `unsafe fn AsyncFd::register` (its safe `AsyncFd::new` is
//! deprecated as unsound since tokio 1.54, because a safe caller could
//! close or swap the descriptor while it is registered). The wrapper keeps
//! the `AsyncFd` private and hands out only `&PacketSocket`, so nothing
//! outside this module can do either. A reader thread per socket would do
//! without `unsafe`, but the hop from that thread to the loop's thread
//! slowed the speaker's ARP answers: on a loaded two-core host the bench's
//! median request-to-reply time rose by some 20-40 µs, and its p99 went
//! past the 1 ms target more often.

#![allow(unsafe_code)]

use std::io;

use tokio::io::unix::AsyncFd;

use super::packet_socket::errno;
use super::{Error, PacketSocket};

/// A non-blocking [`PacketSocket`] whose frames are awaited.
#[derive(Debug)]
pub struct AsyncPacketSocket {
    inner: AsyncFd<PacketSocket>,
}

impl AsyncPacketSocket {
    /// Makes `sock` non-blocking (sends then fail with `EAGAIN` on a full
    /// transmit queue instead of stalling the loop) and registers it with
    /// the current tokio runtime, which must exist.
    pub fn new(sock: PacketSocket) -> Result<Self, Error> {
        sock.set_nonblocking(true)?;
        let ifname = sock.ifname().to_owned();
        // SAFETY: `register` requires the descriptor to stay open, and to
        // be what `as_raw_fd()` returns, until the AsyncFd is dropped.
        // PacketSocket owns its OwnedFd, returns it from `as_raw_fd`, has
        // no method that closes or replaces it, and closes it only in its
        // own drop, which runs after AsyncFd's drop has deregistered it.
        // `AsyncFd::get_mut`/`into_inner`, through which a caller could
        // swap the socket, stay private to this module, which uses neither.
        let inner = unsafe { AsyncFd::register(sock) }.map_err(|e| {
            let e: io::Error = e.into();
            Error::Socket {
                op: "register with tokio",
                ifname,
                source: errno(&e),
            }
        })?;
        Ok(AsyncPacketSocket { inner })
    }

    /// The socket, for sending, multicast membership and its MAC.
    pub fn get_ref(&self) -> &PacketSocket {
        self.inner.get_ref()
    }

    /// Waits for the next wanted frame (see [`PacketSocket::try_recv`])
    /// and copies it into `buf`, truncating if needed.
    pub async fn recv(&self, buf: &mut [u8]) -> Result<usize, Error> {
        loop {
            let mut guard = self.inner.readable().await.map_err(|e| Error::Socket {
                op: "wait for frames",
                ifname: self.get_ref().ifname().to_owned(),
                source: errno(&e),
            })?;
            match guard.get_inner().try_recv(buf)? {
                Some(n) => return Ok(n),
                // Drained: only now may readiness be cleared, or a frame
                // that arrived meanwhile would wait for the next one.
                None => guard.clear_ready(),
            }
        }
    }
}
