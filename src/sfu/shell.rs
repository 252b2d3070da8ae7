//! The SFU's I/O shell: one UDP socket on the RTC port and one ICE-TCP listener, both
//! shared by every participant; one task owns the sans-IO core, feeds it datagrams,
//! TCP frames and the clock, and sends what it outputs. Commands come in over a
//! channel; offers, voice activity and closures go out.
//!
//! The loop runs on a thread of its own with a single-threaded runtime: every
//! datagram is handled by the same thread, without waking another one. Datagrams are
//! read in batches (one core poll per batch) and a poll's output is sent with
//! sendmmsg, up to `BATCH` datagrams per system call.
//!
//! While no media flows (`Sfu::quiet_tick`) the socket leaves the runtime's epoll set
//! and is read at the core's timer grid points only: idle participants' consent
//! checks then cost a share of one wake-up each grid step rather than a wake-up each.
//! The first media packet read puts the socket back. While media is dense (datagrams
//! closer together than `PACED_READ_EVERY`) the socket is parked as well and read
//! at that interval (`Pacing`): a batch per wake-up instead of a wake-up per packet.

use std::collections::HashMap;
use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use nix::sys::socket::{
    recvmmsg, sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage,
};
use tokio::io::Interest;

use str0m::net::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use super::observe::RtcObserver;
use super::tcp::{self, TcpEvent};
use super::{Output, Sfu, SfuConfig, SfuError};

/// Socket buffers: the default 208 KiB drops packets with many subscribers per loop.
const SOCKET_BUFFER: usize = 4 << 20;
/// How often a socket that could not be registered again is read while media flows.
const PARKED_READ_EVERY: std::time::Duration = std::time::Duration::from_millis(2);
/// While datagrams come faster than this, the socket is read at this interval
/// instead of on each arrival (see `Pacing`).
const PACED_READ_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

/// Datagrams read before the core is polled, and sent per sendmmsg call.
const BATCH: usize = 64;

pub enum Command {
    AddSession {
        /// Metrics group: the rtcd client id, `sfu::DEFAULT_GROUP` in the plugin.
        group: String,
        call_id: String,
        session_id: String,
        /// The client announced `dcSignaling`: server SDP goes over the data channel.
        dc_signaling: bool,
        /// The client announced `av1Support` and AV1 is enabled.
        av1: bool,
    },
    RemoveSession {
        session_id: String,
    },
    Offer {
        session_id: String,
        sdp: String,
        reply: oneshot::Sender<Result<String, SfuError>>,
    },
    Answer {
        session_id: String,
        sdp: String,
    },
    Candidate {
        session_id: String,
        candidate: String,
    },
    Mute {
        session_id: String,
        muted: bool,
    },
    ScreenStream {
        session_id: String,
        stream_id: Option<String>,
    },
    VideoStream {
        session_id: String,
        stream_id: Option<String>,
    },
    /// Makes the loop panic outside any session (tests of the thread's supervision).
    #[cfg(test)]
    Crash,
}

/// The sessions the loop holds, as its supervisor sees them: if the thread dies,
/// each of them is reported closed.
type Live = Arc<parking_lot::Mutex<std::collections::HashSet<String>>>;

/// What the shell tells the signaling side.
#[derive(Debug)]
pub enum Note {
    /// A server offer to deliver to the client as a `signal`.
    Offer { session_id: String, json: String },
    /// Voice activity of the session started (`on`) or stopped.
    Voice { session_id: String, on: bool },
    /// The session's peer connection is gone.
    Closed { session_id: String },
}

#[derive(Clone)]
pub struct RtcServer {
    tx: mpsc::UnboundedSender<Command>,
    pub local_addr: SocketAddr,
    pub advertised: SocketAddr,
    /// The ICE-TCP listener and the address its passive candidate advertises.
    pub tcp: Option<(SocketAddr, SocketAddr)>,
}

/// Where the RTC server listens and what it advertises.
pub struct RtcAddrs {
    pub udp: SocketAddr,
    /// The ICE-TCP listener, if any.
    pub tcp: Option<SocketAddr>,
    pub advertised_ip: IpAddr,
    /// Advertised with the UDP candidate instead of the bound port (port forwarding).
    pub advertised_udp_port: Option<u16>,
    /// Ask this STUN server (`host:port`) for the public address to advertise
    /// (no ICE host override set).
    pub stun_server: Option<String>,
}

impl RtcServer {
    /// Binds the UDP socket (and the TCP listener) and starts the loop.
    pub async fn start(
        addrs: RtcAddrs,
        observer: Box<dyn RtcObserver>,
        notes: mpsc::UnboundedSender<Note>,
    ) -> std::io::Result<RtcServer> {
        let bind = addrs.udp;
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(bind),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        sock.set_nonblocking(true)?;
        sock.bind(&bind.into())?;
        let socket = UdpSocket::from_std(sock.into())?;
        let local_addr = socket.local_addr()?;
        let mut advertised_ip = addrs.advertised_ip;
        if let Some(server) = &addrs.stun_server {
            let limit = std::time::Duration::from_secs(3);
            match super::stun_discovery::discover(&socket, server, limit).await {
                Ok(ip) => {
                    tracing::info!(%ip, server, "public address discovered by STUN");
                    advertised_ip = ip;
                }
                Err(e) => {
                    tracing::warn!(error = %e, fallback = %advertised_ip, "STUN discovery failed, advertising the local address")
                }
            }
        }
        let addrs = RtcAddrs {
            advertised_ip,
            ..addrs
        };
        let advertised = SocketAddr::new(
            addrs.advertised_ip,
            addrs.advertised_udp_port.unwrap_or(local_addr.port()),
        );
        let mut candidates = vec![(advertised, Protocol::Udp)];
        let (tcp_tx, tcp_rx) = mpsc::unbounded_channel();
        let mut tcp = None;
        if let Some(tcp_bind) = addrs.tcp {
            let listener = TcpListener::bind(tcp_bind).await?;
            let tcp_local = listener.local_addr()?;
            let tcp_advertised = SocketAddr::new(addrs.advertised_ip, tcp_local.port());
            candidates.push((tcp_advertised, Protocol::Tcp));
            tokio::spawn(tcp::accept_loop(listener, tcp_tx));
            tracing::info!(local_addr = %tcp_local, advertised = %tcp_advertised, "rtc server listening (ice-tcp)");
            tcp = Some((tcp_local, tcp_advertised));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let sfu = Sfu::with_observer(SfuConfig::new(candidates), observer);
        let udp = socket.into_std()?;
        let tcp_advertised = tcp.map(|(_, a)| a);
        // Sockets and timers only: the process and signal drivers would check for
        // orphaned children on every wake-up.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let live = Live::default();
        let supervisor_notes = notes.clone();
        let held = live.clone();
        let thread = move || {
            let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(async move {
                    let udp = match UdpSocket::from_std(udp) {
                        Ok(u) => u,
                        Err(e) => {
                            tracing::error!(error = %e, "rtc socket unusable, media is down");
                            return;
                        }
                    };
                    let io = Io {
                        udp: Some(Udp::Live(udp)),
                        udp_advertised: advertised,
                        tcp_advertised,
                        tcp_events: tcp_rx,
                        conns: HashMap::new(),
                        udp_queue: Vec::new(),
                        clock: CoreClock::default(),
                    };
                    run(sfu, io, rx, notes, live).await;
                })
            }));
            // The runtime goes first, with the UDP socket, so that its port is free
            // before anyone hears that the sessions are closed (and starts a new
            // server on it); the ICE-TCP listener's task, on the caller's runtime,
            // lets go of its port as soon as it sees the loop gone.
            drop(runtime);
            if died.is_err() {
                let sessions: Vec<String> = held.lock().drain().collect();
                tracing::error!(
                    sessions = sessions.len(),
                    "the rtc thread panicked: its sessions are closed, the next call starts a new one"
                );
                for session_id in sessions {
                    let _ = supervisor_notes.send(Note::Closed { session_id });
                }
            }
        };
        std::thread::Builder::new()
            .name("rtc".into())
            .spawn(thread)?;
        tracing::info!(%local_addr, %advertised, "rtc server listening (udp)");
        Ok(RtcServer {
            tx,
            local_addr,
            advertised,
            tcp,
        })
    }

    /// A server with no loop behind it: what is sent to it arrives on the receiver
    /// (tests of the signaling around the SFU).
    #[cfg(test)]
    pub(crate) fn detached() -> (RtcServer, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let any = SocketAddr::from(([0, 0, 0, 0], 0));
        (
            RtcServer {
                tx,
                local_addr: any,
                advertised: any,
                tcp: None,
            },
            rx,
        )
    }

    pub fn send(&self, c: Command) {
        // The loop only ends when every sender is gone, or when its thread died
        // (then `is_alive` says so and the plugin starts a new server).
        let _ = self.tx.send(c);
    }

    /// False once the loop's thread is gone (it panicked).
    pub fn is_alive(&self) -> bool {
        !self.tx.is_closed()
    }

    pub async fn offer(&self, session_id: &str, sdp: String) -> Result<String, SfuError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Offer {
            session_id: session_id.to_string(),
            sdp,
            reply,
        });
        rx.await
            .unwrap_or_else(|_| Err(SfuError::UnknownSession(session_id.to_string())))
    }
}

/// An ICE-TCP connection as the loop sees it.
struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    opened: Instant,
    /// A session accepted one of its frames.
    claimed: bool,
}

struct Io {
    /// Always Some but while moving between the two states.
    udp: Option<Udp>,
    udp_advertised: SocketAddr,
    tcp_advertised: Option<SocketAddr>,
    tcp_events: mpsc::UnboundedReceiver<TcpEvent>,
    conns: HashMap<SocketAddr, Conn>,
    /// UDP datagrams of the last poll, sent together.
    udp_queue: Vec<(SocketAddr, Vec<u8>)>,
    clock: CoreClock,
}

/// What woke the shell's loop.
enum Woke {
    Command(Command),
    Readable(std::io::Result<()>),
    Tcp(TcpEvent),
    Timer,
}

/// The loop ran this much later than it meant to: the process was stopped (SIGSTOP,
/// a debugger, a VM pause) or starved, not the clients silent.
const NOT_RUNNING_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The time the core is given: the monotonic clock minus the time this loop did not
/// run. A process that was stopped must not judge its clients by a silence it did
/// not hear: str0m drops an ICE-lite pair that had no binding request for 15 s, and
/// with the real clock a plugin stopped for 15 s then resumed closed every session
/// at once, although every client was still there (their requests waited in the
/// socket). Counted this way, the pause is no time at all for the core; what the
/// clients sent meanwhile is then read as just arrived.
#[derive(Default)]
struct CoreClock {
    lost: std::time::Duration,
}

impl CoreClock {
    fn now(&self) -> Instant {
        self.to_core(Instant::now())
    }

    fn to_core(&self, real: Instant) -> Instant {
        real.checked_sub(self.lost).unwrap_or(real)
    }

    fn to_real(&self, core: Instant) -> Instant {
        core + self.lost
    }

    /// The loop woke at `real`, having meant to by `deadline` (real time) at the
    /// latest: lateness beyond `NOT_RUNNING_AFTER` is time it did not run.
    fn woke(&mut self, real: Instant, deadline: Instant) -> Option<std::time::Duration> {
        let late = real.checked_duration_since(deadline)?;
        (late > NOT_RUNNING_AFTER).then(|| {
            self.lost += late;
            late
        })
    }
}

impl Io {
    fn on_tcp(&mut self, sfu: &mut Sfu, ev: TcpEvent) {
        match ev {
            TcpEvent::Open { peer, tx } => {
                tracing::debug!(%peer, "ice-tcp connection");
                self.conns.insert(
                    peer,
                    Conn {
                        tx,
                        opened: self.clock.now(),
                        claimed: false,
                    },
                );
            }
            TcpEvent::Closed { peer } => {
                self.conns.remove(&peer);
            }
            TcpEvent::Frame { peer, frame } => {
                let Some(dest) = self.tcp_advertised else {
                    return;
                };
                if sfu.handle_receive(self.clock.now(), Protocol::Tcp, peer, dest, &frame) {
                    if let Some(c) = self.conns.get_mut(&peer) {
                        c.claimed = true;
                    }
                } else {
                    // Not ICE for any session (garbage, or a session that is gone):
                    // dropping the sender closes the connection.
                    tracing::warn!(%peer, len = frame.len(), "ice-tcp frame for no session, closing the connection");
                    self.conns.remove(&peer);
                }
            }
        }
    }

    fn on_datagram(&mut self, sfu: &mut Sfu, now: Instant, src: SocketAddr, data: &[u8]) {
        // The destination is the advertised address: that is what clients send to.
        if !sfu.handle_receive(now, Protocol::Udp, src, self.udp_advertised, data) {
            tracing::debug!(%src, len = data.len(), "datagram for no session dropped");
        }
    }

    /// Closes connections that no session claimed in time.
    fn reap(&mut self, now: Instant) {
        self.conns.retain(|peer, c| {
            let keep = c.claimed || now.duration_since(c.opened) < tcp::CLAIM_TIMEOUT;
            if !keep {
                tracing::warn!(%peer, "ice-tcp connection without a binding request, closing it");
            }
            keep
        });
    }

    fn transmit(&mut self, proto: Protocol, destination: SocketAddr, contents: Vec<u8>) {
        match proto {
            Protocol::Udp => self.udp_queue.push((destination, contents)),
            _ => match self.conns.get(&destination) {
                // A full queue means a stalled connection: drop rather than block
                // every other participant.
                Some(c) => {
                    let _ = c.tx.try_send(contents);
                }
                None => tracing::debug!(%destination, "no ice-tcp connection for frame"),
            },
        }
    }

    /// Sends the queued datagrams, `BATCH` per system call; waits while the socket
    /// buffer is full. The queue is left for the caller to hand the buffers back to
    /// the core (`Sfu::recycle`).
    async fn flush_udp(&mut self) {
        let mut sent = 0;
        while sent < self.udp_queue.len() {
            let Some(fd) = self.udp.as_ref().map(Udp::fd) else {
                break;
            };
            let chunk = &self.udp_queue[sent..(sent + BATCH).min(self.udp_queue.len())];
            let r = match send_batch(fd, chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    match send_when_writable(&mut self.udp, chunk).await {
                        Ok(r) => r,
                        Err(e) => {
                            tracing::warn!(error = %e, "udp socket failed");
                            break;
                        }
                    }
                }
                r => r,
            };
            match r {
                Ok(n) => sent += n,
                Err(e) => {
                    // The first datagram of the chunk was refused (e.g. unreachable
                    // destination): skip it, send the rest.
                    tracing::debug!(destination = %chunk[0].0, error = %e, "udp send failed");
                    sent += 1;
                }
            }
        }
    }

    /// Reads what is queued on the socket into the core, one `recvmmsg` per up to
    /// `BATCH` datagrams (a paced read finds tens: one system call, not one each):
    /// how many were read, and whether the socket was emptied (else more is waiting).
    fn read_udp(&mut self, sfu: &mut Sfu, bufs: &mut RecvBufs) -> (usize, bool) {
        // Only failed calls (an ICMP error of an earlier send, an interruption) are
        // retried, a bounded number of times before waiting for the next wake-up.
        for _ in 0..BATCH {
            let r = match &self.udp {
                // Clears the runtime's readiness on WouldBlock: the next wait is for
                // a datagram that comes after this read.
                Some(Udp::Live(u)) => u.try_io(Interest::READABLE, || bufs.recv(u.as_raw_fd())),
                Some(Udp::Parked(u)) => bufs.recv(u.as_raw_fd()),
                None => return (0, true),
            };
            match r {
                Ok(n) => {
                    // One clock reading for the batch: it was all queued by now.
                    let now = self.clock.now();
                    for (src, data) in bufs.datagrams() {
                        self.on_datagram(sfu, now, src, data);
                    }
                    // A short batch emptied the socket (what came after waits for
                    // the next read; a live socket's readiness is still set).
                    return (n, n < BATCH);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return (0, true),
                Err(e) => {
                    // ICMP errors of earlier sends surface here (ECONNREFUSED): not fatal.
                    if e.kind() != std::io::ErrorKind::Interrupted {
                        tracing::debug!(error = %e, "udp receive failed");
                    }
                }
            }
        }
        (0, false)
    }

    /// Registers the socket with the runtime, or parks it outside (quiet, or read
    /// at a paced interval).
    fn set_parked(&mut self, parked: bool) {
        self.udp = match (self.udp.take(), parked) {
            (Some(Udp::Live(u)), true) => match u.into_std() {
                Ok(p) => Some(Udp::Parked(p)),
                // into_std only fails on a socket tokio can no longer deregister.
                Err(e) => {
                    tracing::error!(error = %e, "udp socket lost, media is down");
                    None
                }
            },
            (Some(Udp::Parked(p)), false) => Some(register(p)),
            (u, _) => u,
        };
    }
}

/// Whether the socket is read as datagrams arrive or at `PACED_READ_EVERY`. Each
/// arrival on a registered socket wakes the loop's thread (edge-triggered epoll),
/// and a wake-up costs more than handling a datagram; once datagrams come closer
/// together than the interval (hundreds of talking calls), reading at the interval
/// handles them in batches and puts the core's timers on the same wake-ups. Sparse
/// traffic is still read on arrival, with no added delay.
#[derive(Default)]
struct Pacing {
    /// The last read that found datagrams.
    last_read: Option<Instant>,
    /// While paced: the next read.
    next_read: Option<Instant>,
}

impl Pacing {
    /// After a read of `read` datagrams at `now`: when to read next, None for "as
    /// they arrive".
    fn after_read(&mut self, now: Instant, read: usize) -> Option<Instant> {
        let previous = if read > 0 {
            self.last_read.replace(now)
        } else {
            self.last_read
        };
        let next = now + PACED_READ_EVERY;
        self.next_read = match self.next_read {
            // Woken before the paced read (a command): nothing to judge by.
            Some(at) if now < at => Some(at),
            // The paced read: traffic thinned out if it found nothing.
            Some(_) => (read > 0).then_some(next),
            None => {
                (read > 0 && previous.is_some_and(|t| now < t + PACED_READ_EVERY)).then_some(next)
            }
        };
        self.next_read
    }
}

/// Back under the runtime's readiness (as a duplicate descriptor, so that a failed
/// registration keeps the socket); one that cannot be is kept parked: it is then read
/// at every wake-up of the loop (slower, not down).
fn register(p: std::net::UdpSocket) -> Udp {
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
enum Udp {
    Live(UdpSocket),
    Parked(std::net::UdpSocket),
}

impl Udp {
    /// Changes with each registration (the socket is registered as a duplicate).
    fn fd(&self) -> RawFd {
        match self {
            Udp::Live(u) => u.as_raw_fd(),
            Udp::Parked(p) => p.as_raw_fd(),
        }
    }
}

/// Sends `chunk` once the socket has room. Waiting needs the runtime's readiness, so
/// a parked socket is registered again (and parked after the next poll if still
/// quiet). The outer error: the wait itself failed.
async fn send_when_writable(
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
const DATAGRAM_MAX: usize = 2048;

/// Room for one `recvmmsg` of `BATCH` datagrams, and what the last one read.
struct RecvBufs {
    data: Vec<u8>,
    /// (length, source) of each datagram of the last read, in `data`'s slots.
    got: Vec<(usize, Option<SocketAddr>)>,
}

impl RecvBufs {
    fn new() -> RecvBufs {
        RecvBufs {
            data: vec![0; BATCH * DATAGRAM_MAX],
            got: Vec::with_capacity(BATCH),
        }
    }

    /// One non-blocking `recvmmsg`: how many datagrams it read (at least one, or an
    /// error such as WouldBlock).
    fn recv(&mut self, fd: RawFd) -> std::io::Result<usize> {
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
    fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.got
            .iter()
            .zip(self.data.chunks(DATAGRAM_MAX))
            .filter_map(|((len, src), slot)| Some(((*src)?, &slot[..*len])))
    }
}

fn socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    s.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// One sendmmsg call; returns how many datagrams went out (at least one, or an error).
fn send_batch(fd: RawFd, chunk: &[(SocketAddr, Vec<u8>)]) -> std::io::Result<usize> {
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

async fn run(
    mut sfu: Sfu,
    mut io: Io,
    mut rx: mpsc::UnboundedReceiver<Command>,
    notes: mpsc::UnboundedSender<Note>,
    live: Live,
) {
    let repeats = crate::log_limit::Repeats::default();
    let mut bufs = RecvBufs::new();
    let mut out = Vec::new();
    let mut next_reap = io.clock.now() + std::time::Duration::from_secs(1);
    // One timer, moved when the core's deadline moves, rather than a new one per turn.
    let wake = tokio::time::sleep_until(Instant::now().into());
    tokio::pin!(wake);
    // Datagrams were left on the socket by the last read (it stops at `BATCH`).
    let mut more = false;
    let mut pacing = Pacing::default();
    loop {
        let readable = async {
            match &io.udp {
                Some(Udp::Live(u)) if !more => u.readable().await,
                // Quiet (read at the core's grid points, when `wake` fires) or more
                // to read (`wake` is due now).
                _ => std::future::pending().await,
            }
        };
        let woke = tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => Woke::Command(cmd),
                None => break,
            },
            r = readable => Woke::Readable(r),
            Some(ev) = io.tcp_events.recv() => Woke::Tcp(ev),
            () = &mut wake => Woke::Timer,
        };
        // Before anything is handed to the core, so that it all gets the same clock.
        if let Some(late) = io.clock.woke(Instant::now(), wake.deadline().into_std()) {
            tracing::warn!(
                late_ms = late.as_millis() as u64,
                "the rtc loop did not run for a while (process stopped or starved): its clients are not blamed for it"
            );
        }
        match woke {
            Woke::Command(cmd) => apply(&mut sfu, io.clock.now(), cmd, &live, &repeats),
            Woke::Readable(Err(e)) => tracing::warn!(error = %e, "udp receive failed"),
            Woke::Tcp(ev) => io.on_tcp(&mut sfu, ev),
            Woke::Readable(Ok(())) | Woke::Timer => {}
        }
        // Whatever woke the loop, what waits on the socket goes into this poll (one
        // failed read when nothing does).
        let (read, emptied) = io.read_udp(&mut sfu, &mut bufs);
        more = !emptied;
        // Core time from here on (see `CoreClock`); only the timer below is real.
        let now = io.clock.now();
        if now >= next_reap {
            io.reap(now);
            next_reap = now + std::time::Duration::from_secs(1);
        }
        let mut next = sfu.poll(now, &mut out).min(next_reap);
        let quiet = sfu.quiet_tick(now);
        let paced = match quiet {
            Some(_) => {
                pacing = Pacing::default();
                None
            }
            None => pacing.after_read(now, read),
        };
        io.set_parked(quiet.is_some() || paced.is_some());
        match paced {
            // Due timers wait for the read (at most PACED_READ_EVERY late): one
            // wake-up for both.
            Some(read_at) if next > now => next = read_at,
            Some(_) => {}
            None => {
                if let Some(Udp::Parked(_)) = io.udp {
                    next = next.min(quiet.unwrap_or(now + PARKED_READ_EVERY));
                }
            }
        }
        if more {
            next = now;
        }
        let next = tokio::time::Instant::from_std(io.clock.to_real(next));
        if wake.is_elapsed() || wake.deadline() != next {
            wake.as_mut().reset(next);
        }
        for o in out.drain(..) {
            match o {
                Output::Transmit {
                    proto,
                    destination,
                    contents,
                    ..
                } => io.transmit(proto, destination, contents),
                Output::Offer { session_id, json } => {
                    let _ = notes.send(Note::Offer { session_id, json });
                }
                Output::Voice { session_id, on } => {
                    let _ = notes.send(Note::Voice { session_id, on });
                }
                Output::Closed { session_id } => {
                    live.lock().remove(&session_id);
                    let _ = notes.send(Note::Closed { session_id });
                }
            }
        }
        io.flush_udp().await;
        for (_, datagram) in io.udp_queue.drain(..) {
            sfu.recycle(datagram);
        }
    }
}

fn apply(
    sfu: &mut Sfu,
    now: Instant,
    cmd: Command,
    live: &Live,
    repeats: &crate::log_limit::Repeats,
) {
    let res = match cmd {
        Command::AddSession {
            group,
            call_id,
            session_id,
            dc_signaling,
            av1,
        } => {
            let opts = super::SessionOptions {
                group,
                dc_signaling,
                av1,
            };
            let added = sfu.add_session_with(now, &call_id, &session_id, opts);
            if added.is_ok() {
                live.lock().insert(session_id);
            }
            added
        }
        Command::RemoveSession { session_id } => {
            sfu.remove_session(&session_id);
            live.lock().remove(&session_id);
            Ok(())
        }
        #[cfg(test)]
        Command::Crash => panic!("injected rtc thread panic"),
        Command::Offer {
            session_id,
            sdp,
            reply,
        } => {
            let _ = reply.send(sfu.handle_offer(&session_id, &sdp));
            Ok(())
        }
        Command::Answer { session_id, sdp } => sfu.handle_answer(&session_id, &sdp),
        Command::Candidate {
            session_id,
            candidate,
        } => sfu.handle_candidate(&session_id, &candidate),
        Command::Mute { session_id, muted } => sfu.set_muted(&session_id, muted),
        Command::ScreenStream {
            session_id,
            stream_id,
        } => sfu.set_screen_stream(&session_id, stream_id),
        Command::VideoStream {
            session_id,
            stream_id,
        } => sfu.set_video_stream(&session_id, stream_id),
    };
    if let Err(e) = res {
        // Clients can make commands fail at will (bad candidates, offers): once per
        // window, with a count.
        if let Some(left_out) = repeats.admit("rtc command failed") {
            tracing::warn!(error = %e, left_out, "rtc command failed");
        }
    }
}

/// The address to advertise when no override is configured: the address of the
/// default route's interface, else loopback.
pub fn default_host_ip() -> IpAddr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        // connect() on UDP sends nothing; it only selects the route.
        s.connect("192.0.2.1:9")?;
        s.local_addr()
    });
    match probe {
        Ok(a) if !a.ip().is_unspecified() => a.ip(),
        _ => IpAddr::from([127, 0, 0, 1]),
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use super::{CoreClock, Pacing, RecvBufs, BATCH, DATAGRAM_MAX, PACED_READ_EVERY};

    /// A loop that wakes 15 s after its deadline (the process was stopped) gives the
    /// core a clock that skipped those 15 s; a wake-up on time or a little late
    /// changes nothing; deadlines map back to real time.
    #[test]
    fn time_the_loop_did_not_run_is_not_core_time() {
        let mut c = CoreClock::default();
        let t0 = Instant::now();
        assert_eq!(c.woke(t0 + Duration::from_millis(300), t0), None);
        assert_eq!(c.woke(t0, t0 + Duration::from_secs(1)), None);
        let resumed = t0 + Duration::from_secs(16);
        assert_eq!(
            c.woke(resumed, t0 + Duration::from_secs(1)),
            Some(Duration::from_secs(15))
        );
        assert_eq!(c.to_core(resumed), t0 + Duration::from_secs(1));
        let due = c.to_core(resumed) + Duration::from_millis(50);
        assert_eq!(c.to_real(due), resumed + Duration::from_millis(50));
    }

    /// The loop's thread dies outside any session: its sessions are reported closed,
    /// the server says it is gone, and its ports (UDP and ICE-TCP) are free at once
    /// for the server that replaces it.
    #[tokio::test]
    async fn a_dead_rtc_thread_closes_its_sessions_and_frees_its_ports() {
        use super::{Command, Note, RtcAddrs, RtcServer};
        let addrs = |udp: u16, tcp: u16| RtcAddrs {
            udp: ([127, 0, 0, 1], udp).into(),
            tcp: Some(([127, 0, 0, 1], tcp).into()),
            advertised_ip: [127, 0, 0, 1].into(),
            advertised_udp_port: None,
            stun_server: None,
        };
        let (notes, mut noted) = tokio::sync::mpsc::unbounded_channel();
        let observer = || Box::new(crate::sfu::observe::NoObserver);
        let rtc = RtcServer::start(addrs(0, 0), observer(), notes.clone())
            .await
            .unwrap();
        for s in ["s1", "s2"] {
            rtc.send(Command::AddSession {
                group: "g".into(),
                call_id: "c".into(),
                session_id: s.into(),
                dc_signaling: false,
                av1: false,
            });
        }
        rtc.send(Command::RemoveSession {
            session_id: "s2".into(),
        });
        assert!(rtc.is_alive());
        rtc.send(Command::Crash);
        let closed = tokio::time::timeout(Duration::from_secs(5), noted.recv())
            .await
            .expect("no note after the crash");
        assert!(matches!(closed, Some(Note::Closed { session_id }) if session_id == "s1"));
        assert!(
            noted.try_recv().is_err(),
            "a removed session was closed again"
        );
        assert!(!rtc.is_alive());
        let (udp, tcp) = (rtc.local_addr.port(), rtc.tcp.unwrap().0.port());
        let mut again = None;
        for _ in 0..50 {
            match RtcServer::start(addrs(udp, tcp), observer(), notes.clone()).await {
                Ok(r) => {
                    again = Some(r);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        assert!(again.expect("ports still taken").is_alive());
    }

    /// One `recvmmsg` hands each datagram over whole with its own source, a datagram
    /// longer than a slot is cut to the slot, more than a batch waits for the next
    /// call, and an empty socket says WouldBlock.
    #[test]
    fn a_batch_read_keeps_each_datagram_with_its_source() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        rx.set_nonblocking(true).expect("nonblocking");
        let to = rx.local_addr().expect("addr");
        let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut bufs = RecvBufs::new();
        let e = bufs.recv(rx.as_raw_fd()).expect_err("nothing was sent");
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);

        let long = vec![9u8; DATAGRAM_MAX + 100];
        a.send_to(b"first", to).expect("send");
        b.send_to(&[2; 300], to).expect("send");
        a.send_to(&long, to).expect("send");
        // Loopback delivers synchronously: all three are queued now.
        assert_eq!(bufs.recv(rx.as_raw_fd()).expect("read"), 3);
        let got: Vec<_> = bufs.datagrams().map(|(s, d)| (s, d.to_vec())).collect();
        let (sa, sb) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        assert_eq!(got[0], (sa, b"first".to_vec()));
        assert_eq!(got[1], (sb, vec![2; 300]));
        assert_eq!(got[2], (sa, vec![9; DATAGRAM_MAX]));

        for i in 0..BATCH + 5 {
            b.send_to(&[i as u8; 10], to).expect("send");
        }
        assert_eq!(bufs.recv(rx.as_raw_fd()).expect("read"), BATCH);
        assert!(bufs
            .datagrams()
            .enumerate()
            .all(|(i, (s, d))| s == sb && d == [i as u8; 10]));
        assert_eq!(bufs.recv(rx.as_raw_fd()).expect("read"), 5);
        let last: Vec<u8> = bufs.datagrams().map(|(_, d)| d[0]).collect();
        assert_eq!(last, (BATCH as u8..BATCH as u8 + 5).collect::<Vec<_>>());
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sparse_datagrams_are_read_as_they_arrive() {
        let t0 = Instant::now();
        let mut p = Pacing::default();
        // Two talkers' packets, 10 ms apart: no read is put off.
        for i in 0..10 {
            assert_eq!(p.after_read(t0 + ms(10 * i), 1), None);
        }
        // Wake-ups without datagrams (timers, commands) change nothing.
        assert_eq!(p.after_read(t0 + ms(100) + ms(1) / 4, 0), None);
    }

    #[test]
    fn dense_datagrams_are_read_at_the_interval_until_they_thin_out() {
        let t0 = Instant::now();
        let mut p = Pacing::default();
        assert_eq!(p.after_read(t0, 1), None);
        // The next datagram within the interval: from now on, read at the interval.
        let at = t0 + ms(1) / 4;
        let first = p.after_read(at, 1);
        assert_eq!(first, Some(at + PACED_READ_EVERY));
        // A wake-up before it (a command) keeps the read where it was.
        assert_eq!(p.after_read(at + ms(1) / 2, 0), first);
        // The paced read found a batch: the next one an interval on.
        let first = first.unwrap();
        assert_eq!(p.after_read(first, 25), Some(first + PACED_READ_EVERY));
        // A paced read that finds nothing: back to reading on arrival.
        assert_eq!(p.after_read(first + PACED_READ_EVERY, 0), None);
        assert_eq!(p.after_read(first + ms(30), 1), None);
    }
}
