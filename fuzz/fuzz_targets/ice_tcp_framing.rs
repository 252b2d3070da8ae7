//! ICE-TCP's RFC 4571 framing as a connection reads it: whatever the bytes, the
//! frames handed to the SFU are exactly the complete length-prefixed frames of the
//! stream (empty ones skipped), in order, and the connection then reports closed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use calls_rtc::tcp::{connection, TcpEvent};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 17);
        let (events, mut got) = mpsc::unbounded_channel();
        let (_out_tx, out) = mpsc::channel(1);
        let peer = "192.0.2.1:9".parse().unwrap();
        let task = tokio::spawn(connection(server, peer, out, events));
        client.write_all(data).await.unwrap();
        drop(client);
        task.await.unwrap();
        let mut frames = Vec::new();
        let mut closed = false;
        while let Ok(e) = got.try_recv() {
            match e {
                TcpEvent::Frame { frame, .. } => frames.push(frame),
                TcpEvent::Closed { .. } => closed = true,
                TcpEvent::Open { .. } => panic!("a connection opens no connection"),
            }
        }
        assert!(closed);
        assert_eq!(frames, expected(data));
    });
});

fn expected(mut data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while data.len() >= 2 {
        let len = u16::from_be_bytes([data[0], data[1]]) as usize;
        data = &data[2..];
        if len == 0 {
            continue;
        }
        if data.len() < len {
            break;
        }
        out.push(data[..len].to_vec());
        data = &data[len..];
    }
    out
}
