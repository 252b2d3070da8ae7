//! The loop that owns the sans-IO core: it feeds it datagrams, ICE-TCP frames,
//! commands and the clock, and sends what it outputs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use tokio::io::Interest;

use str0m::net::Protocol;
use tokio::sync::mpsc;

use super::commands::{Command, Live, Note};
use super::sockets::{register, send_batch, send_when_writable, RecvBufs, Udp, BATCH};
use crate::tcp::{self, TcpEvent};
use calls_sfu::{Output, Sfu};

/// How often a socket that could not be registered again is read while media flows.
pub(super) const PARKED_READ_EVERY: std::time::Duration = std::time::Duration::from_millis(2);
/// While datagrams come faster than this, the socket is read at this interval
/// instead of on each arrival (see `Pacing`).
pub(super) const PACED_READ_EVERY: std::time::Duration = std::time::Duration::from_millis(1);

/// An ICE-TCP connection as the loop sees it.
pub(super) struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    opened: Instant,
    /// A session accepted one of its frames.
    claimed: bool,
}

pub(super) struct Io {
    /// Always Some but while moving between the two states.
    pub(super) udp: Option<Udp>,
    pub(super) udp_advertised: SocketAddr,
    pub(super) tcp_advertised: Option<SocketAddr>,
    pub(super) tcp_events: mpsc::UnboundedReceiver<TcpEvent>,
    pub(super) conns: HashMap<SocketAddr, Conn>,
    /// UDP datagrams of the last poll, sent together.
    pub(super) udp_queue: Vec<(SocketAddr, Vec<u8>)>,
    pub(super) clock: CoreClock,
}

/// What woke the shell's loop.
pub(super) enum Woke {
    Command(Command),
    Readable(std::io::Result<()>),
    Tcp(TcpEvent),
    Timer,
}

/// The loop ran this much later than it meant to: the process was stopped (SIGSTOP,
/// a debugger, a VM pause) or starved, not the clients silent.
pub(super) const NOT_RUNNING_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The time the core is given: the monotonic clock minus the time this loop did not
/// run. A process that was stopped must not judge its clients by a silence it did
/// not hear: str0m drops an ICE-lite pair that had no binding request for 15 s, and
/// with the real clock a plugin stopped for 15 s then resumed closed every session
/// at once, although every client was still there (their requests waited in the
/// socket). Counted this way, the pause is no time at all for the core; what the
/// clients sent meanwhile is then read as just arrived.
#[derive(Default)]
pub(super) struct CoreClock {
    lost: std::time::Duration,
}

impl CoreClock {
    pub(super) fn now(&self) -> Instant {
        self.to_core(Instant::now())
    }

    pub(super) fn to_core(&self, real: Instant) -> Instant {
        real.checked_sub(self.lost).unwrap_or(real)
    }

    pub(super) fn to_real(&self, core: Instant) -> Instant {
        core + self.lost
    }

    /// The loop woke at `real`, having meant to by `deadline` (real time) at the
    /// latest: lateness beyond `NOT_RUNNING_AFTER` is time it did not run.
    pub(super) fn woke(&mut self, real: Instant, deadline: Instant) -> Option<std::time::Duration> {
        let late = real.checked_duration_since(deadline)?;
        (late > NOT_RUNNING_AFTER).then(|| {
            self.lost += late;
            late
        })
    }
}

impl Io {
    pub(super) fn on_tcp(&mut self, sfu: &mut Sfu, ev: TcpEvent) {
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

    pub(super) fn on_datagram(
        &mut self,
        sfu: &mut Sfu,
        now: Instant,
        src: SocketAddr,
        data: &[u8],
    ) {
        // The destination is the advertised address: that is what clients send to.
        if !sfu.handle_receive(now, Protocol::Udp, src, self.udp_advertised, data) {
            tracing::debug!(%src, len = data.len(), "datagram for no session dropped");
        }
    }

    /// Closes connections that no session claimed in time.
    pub(super) fn reap(&mut self, now: Instant) {
        self.conns.retain(|peer, c| {
            let keep = c.claimed || now.duration_since(c.opened) < tcp::CLAIM_TIMEOUT;
            if !keep {
                tracing::warn!(%peer, "ice-tcp connection without a binding request, closing it");
            }
            keep
        });
    }

    pub(super) fn transmit(&mut self, proto: Protocol, destination: SocketAddr, contents: Vec<u8>) {
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
    pub(super) async fn flush_udp(&mut self) {
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
    pub(super) fn read_udp(&mut self, sfu: &mut Sfu, bufs: &mut RecvBufs) -> (usize, bool) {
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
    pub(super) fn set_parked(&mut self, parked: bool) {
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
pub(super) struct Pacing {
    /// The last read that found datagrams.
    last_read: Option<Instant>,
    /// While paced: the next read.
    next_read: Option<Instant>,
}

impl Pacing {
    /// After a read of `read` datagrams at `now`: when to read next, None for "as
    /// they arrive".
    pub(super) fn after_read(&mut self, now: Instant, read: usize) -> Option<Instant> {
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

pub(super) async fn run(
    mut sfu: Sfu,
    mut io: Io,
    mut rx: mpsc::UnboundedReceiver<Command>,
    notes: mpsc::UnboundedSender<Note>,
    live: Live,
) {
    let repeats = calls_service::log_limit::Repeats::default();
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

pub(super) fn apply(
    sfu: &mut Sfu,
    now: Instant,
    cmd: Command,
    live: &Live,
    repeats: &calls_service::log_limit::Repeats,
) {
    let res = match cmd {
        Command::AddSession {
            group,
            call_id,
            session_id,
            dc_signaling,
            av1,
        } => {
            let opts = calls_sfu::SessionOptions {
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
