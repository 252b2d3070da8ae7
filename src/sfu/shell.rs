//! The SFU's I/O shell: one UDP socket on the RTC port shared by every participant,
//! one task that owns the sans-IO core, feeds it datagrams and the clock, and sends
//! what it outputs. Commands come in over a channel; offers and closures go out.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use str0m::net::Protocol;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use super::{Output, Sfu, SfuConfig, SfuError};

/// Socket buffers: the default 208 KiB drops packets with many subscribers per loop.
const SOCKET_BUFFER: usize = 4 << 20;

pub enum Command {
    AddSession {
        call_id: String,
        session_id: String,
        /// The client announced `dcSignaling`: server SDP goes over the data channel.
        dc_signaling: bool,
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
}

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
}

impl RtcServer {
    /// Binds `bind` and advertises `advertised_ip` with the bound port (or
    /// `advertised_port` when set, for port-forwarding setups).
    pub async fn start(
        bind: SocketAddr,
        advertised_ip: IpAddr,
        advertised_port: Option<u16>,
        notes: mpsc::UnboundedSender<Note>,
    ) -> std::io::Result<RtcServer> {
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
        let advertised =
            SocketAddr::new(advertised_ip, advertised_port.unwrap_or(local_addr.port()));
        let (tx, rx) = mpsc::unbounded_channel();
        let sfu = Sfu::new(SfuConfig::new(vec![(advertised, Protocol::Udp)]));
        tokio::spawn(run(sfu, socket, advertised, rx, notes));
        tracing::info!(%local_addr, %advertised, "rtc server listening (udp)");
        Ok(RtcServer {
            tx,
            local_addr,
            advertised,
        })
    }

    pub fn send(&self, c: Command) {
        // The loop only ends when every sender is gone.
        let _ = self.tx.send(c);
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

async fn run(
    mut sfu: Sfu,
    socket: UdpSocket,
    advertised: SocketAddr,
    mut rx: mpsc::UnboundedReceiver<Command>,
    notes: mpsc::UnboundedSender<Note>,
) {
    let mut buf = vec![0u8; 2048];
    let mut out = Vec::new();
    let mut next = Instant::now();
    loop {
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                apply(&mut sfu, cmd);
            }
            r = socket.recv_from(&mut buf) => match r {
                // The destination is the advertised address: that is what clients send to.
                Ok((n, src)) => {
                    if !sfu.handle_receive(Instant::now(), Protocol::Udp, src, advertised, &buf[..n]) {
                        tracing::debug!(%src, len = n, "datagram for no session dropped");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "udp receive failed"),
            },
            _ = tokio::time::sleep_until(next.into()) => {}
        }
        next = sfu.poll(Instant::now(), &mut out);
        for o in out.drain(..) {
            match o {
                Output::Transmit {
                    destination,
                    contents,
                    ..
                } => {
                    if let Err(e) = socket.send_to(&contents, destination).await {
                        tracing::debug!(%destination, error = %e, "udp send failed");
                    }
                }
                Output::Offer { session_id, json } => {
                    let _ = notes.send(Note::Offer { session_id, json });
                }
                Output::Voice { session_id, on } => {
                    let _ = notes.send(Note::Voice { session_id, on });
                }
                Output::Closed { session_id } => {
                    let _ = notes.send(Note::Closed { session_id });
                }
            }
        }
    }
}

fn apply(sfu: &mut Sfu, cmd: Command) {
    let res = match cmd {
        Command::AddSession {
            call_id,
            session_id,
            dc_signaling,
        } => sfu
            .add_session(Instant::now(), &call_id, &session_id)
            .and_then(|()| sfu.set_dc_signaling(&session_id, dc_signaling)),
        Command::RemoveSession { session_id } => {
            sfu.remove_session(&session_id);
            Ok(())
        }
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
        tracing::warn!(error = %e, "rtc command failed");
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
