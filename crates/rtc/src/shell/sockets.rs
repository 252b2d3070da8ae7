//! The RTC UDP socket: registered with the runtime or parked, read in batches
//! (recvmmsg) and written in batches (sendmmsg).

use std::io::{IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use tokio::io::Interest;

use tokio::net::UdpSocket;

/// Datagrams read before the core is polled, and sent per sendmmsg call.
pub(super) const BATCH: usize = 64;
/// Socket buffers: the default 208 KiB drops packets with many subscribers per loop.
pub(super) const SOCKET_BUFFER: usize = 4 << 20;

/// Back under the runtime's readiness (as a duplicate descriptor, so that a failed
/// registration keeps the socket); one that cannot be is kept parked: it is then read
/// at every wake-up of the loop (slower, not down).
pub(super) fn register(p: std::net::UdpSocket) -> Udp {
    match p.try_clone().and_then(UdpSocket::from_std) {
        Ok(u) => Udp::Live(u),
        Err(e) => {
            tracing::warn!(error = %e, "udp socket registration failed");
            Udp::Parked(p)
        }
    }
}

/// The RTC socket, non-blocking in both states: `Live` under the runtime's readiness
/// while media flows, `Parked` outside it while the core is quiet (read at the core's
/// grid points) or media is dense (read at an interval, see the module comment).
pub(super) enum Udp {
    Live(UdpSocket),
    Parked(std::net::UdpSocket),
}

impl Udp {
    /// Changes with each registration (the socket is registered as a duplicate).
    pub(super) fn fd(&self) -> RawFd {
        match self {
            Udp::Live(u) => u.as_raw_fd(),
            Udp::Parked(p) => p.as_raw_fd(),
        }
    }
}

/// Sends `chunk` once the socket has room. Waiting needs the runtime's readiness, so
/// a parked socket is registered again (and parked after the next poll if still
/// quiet). The outer error: the wait itself failed.
pub(super) async fn send_when_writable(
    udp: &mut Option<Udp>,
    chunk: &[(SocketAddr, Vec<u8>)],
) -> std::io::Result<std::io::Result<usize>> {
    if let Some(Udp::Parked(p)) = udp.take() {
        *udp = Some(register(p));
    }
    let Some(Udp::Live(u)) = udp else {
        return Err(std::io::Error::other("udp socket not registered"));
    };
    let fd = u.as_raw_fd();
    loop {
        u.writable().await?;
        // Still full: the readiness is cleared and the next wait is for a new edge.
        match u.try_io(Interest::WRITABLE, || send_batch(fd, chunk)) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            r => return Ok(r),
        }
    }
}

/// The largest datagram read whole; a longer one is cut (nothing we accept is).
pub(super) const DATAGRAM_MAX: usize = 2048;

/// Room for one `recvmmsg` of `BATCH` datagrams, and what the last one read.
pub(super) struct RecvBufs {
    data: Vec<u8>,
    /// (length, source) of each datagram of the last read, in `data`'s slots.
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl RecvBufs {
    pub(super) fn new() -> RecvBufs {
        RecvBufs {
            data: vec![0; BATCH * DATAGRAM_MAX],
            got: Vec::with_capacity(BATCH),
        }
    }

    /// One non-blocking `recvmmsg`: how many datagrams it read (at least one, or an
    /// error such as WouldBlock).
    pub(super) fn recv(&mut self, fd: RawFd) -> std::io::Result<usize> {
        self.got.clear();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .data
            .chunks_mut(DATAGRAM_MAX)
            .map(|c| [IoSliceMut::new(c)])
            .collect();
        let results = recvmmsg(
            fd,
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(std::io::Error::from)?;
        for r in results {
            // A datagram without an IP source keeps its slot (so that the others stay
            // aligned with theirs) and is skipped.
            let src = r.address.as_ref().and_then(socket_addr);
            self.got.push((r.bytes.min(DATAGRAM_MAX), src));
        }
        if self.got.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(self.got.len())
    }

    /// The datagrams of the last read, with their sources.
    pub(super) fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.got
            .iter()
            .zip(self.data.chunks(DATAGRAM_MAX))
            .filter_map(|((len, src), slot)| Some(((*src)?, &slot[..*len])))
    }
}

pub(super) fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// One sendmmsg call; returns how many datagrams went out (at least one, or an error).
pub(super) fn send_batch(fd: RawFd, chunk: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
    let slices: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
    let addrs: Vec<Option<SockaddrStorage>> = chunk
        .iter()
        .map(|(a, _)| Some(SockaddrStorage::from(*a)))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
    let no_cmsgs: [ControlMessage<'_>; 0] = [];
    let sent = sendmmsg(
        fd,
        &mut headers,
        &slices,
        &addrs,
        no_cmsgs,
        MsgFlags::empty(),
    )
    .map_err(std::io::Error::from)?
    .count();
    if sent == 0 {
        return Err(std::io::ErrorKind::WouldBlock.into());
    }
    Ok(sent)
}
