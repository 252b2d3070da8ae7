//! ICE-TCP for clients that cannot use UDP: one listener, RFC 4571 framing (a 16-bit
//! big-endian length before every STUN/DTLS/RTP packet), passive candidates. Each
//! connection is a task; frames go to the shell's loop and back by channels, so the
//! SFU core stays single-threaded and I/O-free.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A connection that has not been claimed by a session by then is closed (pion's
/// default for ICE-TCP connections without a binding request).
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames queued for one slow connection before newer ones are dropped.
const OUT_QUEUE: usize = 1024;

/// What the connection tasks tell the shell's loop.
pub enum TcpEvent {
    Open {
        peer: SocketAddr,
        tx: mpsc::Sender<Vec<u8>>,
    },
    Frame {
        peer: SocketAddr,
        frame: Vec<u8>,
    },
    Closed {
        peer: SocketAddr,
    },
}

/// Accepts connections until the loop is gone.
pub async fn accept_loop(listener: TcpListener, events: mpsc::UnboundedSender<TcpEvent>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            // The loop is gone (its thread may have died): free the port at once,
            // for the server that replaces it.
            () = events.closed() => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let (tx, rx) = mpsc::channel(OUT_QUEUE);
                if events.send(TcpEvent::Open { peer, tx }).is_err() {
                    return;
                }
                tokio::spawn(connection(stream, peer, rx, events.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "ice-tcp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads frames in, writes queued frames out; ends when either side closes, when
/// the loop drops our sender (connection refused), or on a framing error.
pub async fn connection<S: AsyncRead + AsyncWrite>(
    stream: S,
    peer: SocketAddr,
    mut out: mpsc::Receiver<Vec<u8>>,
    events: mpsc::UnboundedSender<TcpEvent>,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let reader = async {
        let mut buf = vec![0u8; u16::MAX as usize];
        loop {
            let len = rd.read_u16().await? as usize;
            if len == 0 {
                continue;
            }
            rd.read_exact(&mut buf[..len]).await?;
            let frame = buf[..len].to_vec();
            if events.send(TcpEvent::Frame { peer, frame }).is_err() {
                return Ok::<(), std::io::Error>(());
            }
        }
    };
    let writer = async {
        while let Some(frame) = out.recv().await {
            let Ok(len) = u16::try_from(frame.len()) else {
                continue;
            };
            wr.write_u16(len).await?;
            wr.write_all(&frame).await?;
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::select! {
        r = reader => if let Err(e) = r {
            if e.kind() != std::io::ErrorKind::UnexpectedEof {
                tracing::debug!(%peer, error = %e, "ice-tcp connection failed");
            }
        },
        _ = writer => {}
    }
    let _ = events.send(TcpEvent::Closed { peer });
}

/// Frames a packet for the wire (used by tests that speak ICE-TCP).
pub fn frame(packet: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(packet.len() + 2);
    v.extend_from_slice(&(packet.len() as u16).to_be_bytes());
    v.extend_from_slice(packet);
    v
}
