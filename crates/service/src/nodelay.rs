//! TCP_NODELAY on every TCP connection we accept. (The Host API's tonic server gets it
//! from tonic's own `TcpIncoming::with_nodelay`.)
//!
//! Signaling is a conversation of small writes (a gRPC reply and its trailers, a
//! websocket event right after another). With Nagle's algorithm on, the kernel holds
//! the second small write until the first is acknowledged, and the peer delays that
//! acknowledgment by up to 40 ms: measured on a single join, the plugin waited 41 ms
//! for the trailers of each Host API reply. Go, which upstream Mattermost and rtcd are
//! written in, turns Nagle off on every connection; so do we.

use axum::serve::{ListenerExt, TapIo};
use tokio::net::{TcpListener, TcpStream};

/// An axum listener whose accepted connections have TCP_NODELAY set. The concrete
/// type, so that `ConnectInfo<SocketAddr>` still works with it.
pub fn listener(l: TcpListener) -> TapIo<TcpListener, fn(&mut TcpStream)> {
    l.tap_io(|s: &mut TcpStream| set(s))
}

fn set(s: &TcpStream) {
    if let Err(e) = s.set_nodelay(true) {
        // The connection still works, only slower: not worth refusing it.
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_stream::StreamExt;

    async fn bound() -> (TcpListener, std::net::SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        // The kernel default is Nagle on: the check below means something.
        let (plain, a) = bound().await;
        let _c = TcpStream::connect(a).await.unwrap();
        let (s, _) = plain.accept().await.unwrap();
        assert!(!s.nodelay().unwrap());

        let (l, a) = bound().await;
        let mut l = listener(l);
        let _c = TcpStream::connect(a).await.unwrap();
        let (s, _) = axum::serve::Listener::accept(&mut l).await;
        assert!(s.nodelay().unwrap(), "axum listener");

        let (l, a) = bound().await;
        let mut inc = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
        let _c = TcpStream::connect(a).await.unwrap();
        let s = inc.next().await.unwrap().unwrap();
        assert!(s.nodelay().unwrap(), "tonic incoming");
    }
}
