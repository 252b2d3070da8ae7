//! Forwarding micro-benchmark: 1 publisher → N subscribers in one process, the SFU
//! core in simulated time with real str0m peers as subscribers. Reports the SFU's own
//! CPU time (receive + poll, single thread) per forwarded packet; the simulated
//! clients' decryption is not counted.
//!
//!     cargo bench --bench forward            # N = 50, 200, 1000
//!     cargo bench --bench forward -- 200     # one size
//!     cargo bench --bench forward -- idle 500  # N muted participants, cost per second
//!
//! FORWARD_SECONDS sets the measured talk time (default 5 s of simulated time). Wall
//! time is noisy on shared machines; for exact comparisons count instructions with
//! callgrind at two talk times and divide the difference by the packets forwarded in
//! between (`scripts/forward-instructions.sh`).

use std::time::Duration;

use calls_sfu::sim::Net;

/// The measured time: FORWARD_SECONDS, else `default`.
fn talk_seconds(default: u64) -> u64 {
    std::env::var("FORWARD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(n: usize) {
    let mut net = Net::new();
    net.keep_payloads = false;
    let publisher = net.join("call", "publisher", "10.1.0.1:1000", true);
    for i in 0..n {
        let addr = format!("10.2.{}.{}:2000", i / 250, i % 250 + 1);
        net.join("call", &format!("sub{i}"), &addr, false);
    }
    net.run(Duration::from_secs(3));
    let connected = net.clients.iter().filter(|c| c.rtc.is_connected()).count();
    assert_eq!(connected, n + 1, "not everyone connected");
    net.sfu
        .set_muted("publisher", false)
        .expect("publisher exists");
    let mut counter = 0;
    // Warm-up: server offers, answers, first packets.
    net.talk(publisher, Duration::from_secs(1), &mut counter);
    let before: usize = net.clients.iter().map(|c| c.received_count).sum();
    let sent_before = counter;
    net.sfu_busy = Duration::ZERO;
    let secs = talk_seconds(5);
    net.talk(publisher, Duration::from_secs(secs), &mut counter);
    let forwarded = net.clients.iter().map(|c| c.received_count).sum::<usize>() - before;
    let sent = counter - sent_before;
    let per_packet_us = net.sfu_busy.as_secs_f64() * 1e6 / forwarded.max(1) as f64;
    println!(
        "subscribers={n:5} published={sent} forwarded={forwarded} delivered={:.1}% sfu_cpu={:.3}s per_forwarded_packet={per_packet_us:.2}us",
        100.0 * forwarded as f64 / (sent as f64 * n as f64),
        net.sfu_busy.as_secs_f64(),
    );
}

/// N connected participants, all muted: the SFU's cost of keeping them (timers,
/// RTCP, STUN consent checks, data channel), per participant and second.
fn idle(n: usize) {
    let mut net = Net::new();
    net.keep_payloads = false;
    for i in 0..n {
        let addr = format!("10.2.{}.{}:2000", i / 250, i % 250 + 1);
        // As the Calls client: no audio track before the first unmute.
        net.join("call", &format!("p{i}"), &addr, false);
    }
    net.run(Duration::from_secs(5));
    let connected = net.clients.iter().filter(|c| c.rtc.is_connected()).count();
    assert_eq!(connected, n, "not everyone connected");
    net.sfu_busy = Duration::ZERO;
    let secs = talk_seconds(10);
    net.run(Duration::from_secs(secs));
    println!(
        "idle participants={n:5} seconds={secs} sfu_cpu={:.3}s per_participant_second={:.2}us",
        net.sfu_busy.as_secs_f64(),
        net.sfu_busy.as_secs_f64() * 1e6 / (n as f64 * secs as f64),
    );
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let idle_mode = args.first().is_some_and(|a| a == "idle");
    if idle_mode {
        args.remove(0);
    }
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if idle_mode {
        for n in if sizes.is_empty() { vec![500] } else { sizes } {
            idle(n);
        }
        return;
    }
    let sizes = if sizes.is_empty() {
        vec![50, 200, 1000]
    } else {
        sizes
    };
    for n in sizes {
        run(n);
    }
}
