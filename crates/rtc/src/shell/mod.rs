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
//!
//! - this file: [`RtcServer`], the handle the plugin and rtcd hold (commands in,
//!   notes out) and the thread it starts;
//! - `commands`: what the handle tells the loop and the loop tells its owner;
//! - `event_loop`: the loop that owns the core, its clock and the ICE-TCP
//!   connections;
//! - `sockets`: the UDP socket, batched reads (recvmmsg) and writes (sendmmsg).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use str0m::net::Protocol;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot};

use crate::tcp::{self};
use calls_sfu::observe::RtcObserver;
use calls_sfu::{Sfu, SfuConfig, SfuError};

mod commands;
mod event_loop;
mod sockets;

use commands::Live;
pub use commands::{Command, Note};
use event_loop::{run, CoreClock, Io};
use sockets::{Udp, SOCKET_BUFFER};

#[derive(Clone)]
pub struct RtcServer {
    tx: mpsc::UnboundedSender<Command>,
    pub local_addr: SocketAddr,
    pub advertised: SocketAddr,
    /// The ICE-TCP listener and the address its passive candidate advertises.
    pub tcp: Option<(SocketAddr, SocketAddr)>,
}

/// Where the RTC server listens and what it advertises.
#[derive(Debug, Clone)]
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
            match crate::stun_discovery::discover(&socket, server, limit).await {
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
    #[cfg(any(test, feature = "test-support"))]
    pub fn detached() -> (RtcServer, mpsc::UnboundedReceiver<Command>) {
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

    use super::event_loop::{CoreClock, Pacing, PACED_READ_EVERY};
    use super::sockets::{RecvBufs, BATCH, DATAGRAM_MAX};

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
        let observer = || Box::new(calls_sfu::observe::NoObserver);
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
