//! The host's routing of plugin events: a hub of connections (some dropped, some
//! resumed), one broadcast from the plugin and its `data_json` bytes. The hub must
//! select exactly the connections Mattermost's rules name (written out again here,
//! independently), and each selected, attached socket must get one frame carrying the
//! plugin's data unchanged; nobody else gets anything.
#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use calls_host::hub::{broadcast_field, needs_channel_members, Hub, OUTBOUND_QUEUE};
use calls_wire::proto::WebSocketBroadcast;
use serde_json::Value;
use tokio::sync::mpsc;

const USERS: [&str; 4] = ["u0", "u1", "u2", "u3"];

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
}

fn subset(mask: u8) -> Vec<String> {
    (0..4)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| USERS[i].to_string())
        .collect()
}

struct Socket {
    conn_id: String,
    generation: u64,
    rx: mpsc::Receiver<String>,
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let hub = Hub::default();
    let mut sockets: Vec<Socket> = Vec::new();
    for _ in 0..input.byte() % 9 {
        let user = USERS[usize::from(input.byte() % 4)];
        let flags = input.byte();
        let (tx, rx) = mpsc::channel(OUTBOUND_QUEUE);
        // A resume of an earlier connection, with the next sequence number it expects.
        let earlier = (flags & 2 != 0)
            .then(|| sockets.get(usize::from(flags >> 4) % sockets.len().max(1)))
            .flatten()
            .map(|s| s.conn_id.clone());
        let resume = earlier.as_deref().map(|id| (id, i64::from(flags >> 2 & 3)));
        let attached = hub.attach(user, "session", resume, tx, "v");
        if flags & 1 != 0 {
            hub.detach(&attached.conn, attached.generation);
        }
        sockets.push(Socket {
            conn_id: attached.conn.id.clone(),
            generation: attached.generation,
            rx,
        });
    }
    let members: HashSet<String> = subset(input.byte()).into_iter().collect();
    let pick = input.byte();
    let conn_pick = input.byte();
    let b = WebSocketBroadcast {
        connection_id: match pick & 3 {
            1 => sockets
                .get(usize::from(conn_pick) % sockets.len().max(1))
                .map(|s| s.conn_id.clone())
                .unwrap_or_default(),
            2 => "no-such-connection".into(),
            _ => String::new(),
        },
        user_id: match pick >> 2 & 7 {
            0..=3 => String::new(),
            n => USERS[usize::from(n - 4)].to_string(),
        },
        channel_id: if pick & 0x20 != 0 { "channel".into() } else { String::new() },
        omit_users: subset(input.byte()),
        reliable_cluster_send: false,
    };
    let Ok(value) = serde_json::from_slice::<Value>(input.0) else {
        return;
    };

    // Mattermost's rules, in its order.
    let expected = |conn_id: &str, user: &str| {
        if !b.connection_id.is_empty() {
            conn_id == b.connection_id
        } else if !b.user_id.is_empty() {
            user == b.user_id
        } else {
            !b.omit_users.iter().any(|u| u == user)
                && (b.channel_id.is_empty() || members.contains(user))
        }
    };
    let known = needs_channel_members(&b).then_some(&members);
    let selected = hub.select(&b, known);
    let chosen: HashSet<String> = selected.iter().map(|c| c.id.clone()).collect();
    assert_eq!(chosen.len(), selected.len(), "a connection selected twice");
    for c in hub.all() {
        assert_eq!(chosen.contains(&c.id), expected(&c.id, &c.user_id), "{b:?}");
    }

    // Hellos and replays out of the way, then the event.
    for s in &mut sockets {
        while s.rx.try_recv().is_ok() {}
    }
    let broadcast = broadcast_field(&b);
    for c in &selected {
        c.send_event("custom_com.mattermost.calls_test", &value, &broadcast);
    }
    for s in &mut sockets {
        let attached = hub
            .get(&s.conn_id)
            .is_some_and(|c| c.is_active() && c.generation() == s.generation);
        let mut frames = Vec::new();
        while let Ok(f) = s.rx.try_recv() {
            frames.push(f);
        }
        if attached && chosen.contains(&s.conn_id) {
            assert_eq!(frames.len(), 1, "{frames:?}");
            let frame: Value = serde_json::from_str(&frames[0]).expect("frames are JSON");
            assert_eq!(frame["event"], "custom_com.mattermost.calls_test");
            assert_eq!(frame["data"], value, "the plugin's data changed on the way");
            assert_eq!(frame["broadcast"], broadcast);
            assert!(frame["seq"].is_i64());
        } else {
            assert!(frames.is_empty(), "an unselected or stale socket got {frames:?}");
        }
    }
});

