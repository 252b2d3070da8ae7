//! Timers: the heap of sessions' next deadlines on a shared grid, the housekeeping
//! that closes dead sessions, and when the shell may read at grid points only.

use super::*;

impl Sfu {
    /// While no media comes in, the next point of the timer grid: the shell may then
    /// read the socket at grid points only instead of waking for every datagram, so
    /// that the consent checks of hundreds of idle participants (one each every 2.5
    /// to 5 s) share wake-ups with each other and with the grid's timers. None while
    /// media flows (every datagram is handled as it comes) and before the grid
    /// exists.
    pub fn quiet_tick(&self, now: Instant) -> Option<Instant> {
        let epoch = self.epoch?;
        if self.last_media.is_some_and(|t| now < t + QUIET_AFTER) {
            return None;
        }
        Some(on_grid(now + Duration::from_nanos(1), epoch))
    }

    /// Hands the clock to the sessions whose str0m timeout is due (timer heap, so the
    /// cost follows the due timers, not the number of sessions).
    pub(crate) fn fire_timers(&mut self, now: Instant) {
        while let Some((t, sid)) = self.timers.pop_due(now) {
            let Some((slot, peer)) = self.peers.slot_mut(&sid) else {
                continue;
            };
            if peer.scheduled != Some(t) {
                continue;
            }
            peer.scheduled = None;
            match peer.timeout {
                Some(due) if due <= now => {
                    peer.handle_timeout(&sid, now);
                    peer.timeout = None;
                    self.dirty.insert(slot, true);
                }
                Some(_) => schedule(&mut self.timers, peer, &sid, self.epoch),
                None => {}
            }
        }
    }

    /// What is checked on the watched sessions, but not on every packet: connect and
    /// offer timeouts, silence after speech. A session leaves the watch once connected,
    /// without an offer out and quiet (a connection lost later ends with str0m's
    /// `Disconnected` event, an offer or speech puts it back).
    pub(crate) fn housekeeping(&mut self, now: Instant, closed: &mut Vec<Sid>) {
        let peers = &mut self.peers;
        self.watched.retain(|sid| {
            let Some((slot, peer)) = peers.slot_mut(sid) else {
                return false;
            };
            let connected = peer.rtc.is_connected();
            if !connected && now >= peer.created + self.config.connect_timeout {
                tracing::warn!(
                    session_id = %sid,
                    "peer connection not established in time (ICE/DTLS), closing it"
                );
                self.observer.conn_state("failed");
                closed.push(sid.clone());
            }
            if peer
                .pending
                .as_ref()
                .is_some_and(|p| now >= p.since + self.config.offer_timeout)
            {
                tracing::warn!(session_id = %sid, "server offer not answered, retrying");
                withdraw_offer(peer, &mut self.fan_epoch);
                self.offer_wanted.insert(sid.clone());
                self.dirty.insert(slot, true);
            }
            // A held offer whose wait is over is released by the drain.
            if peer
                .pending
                .as_ref()
                .is_some_and(|p| p.held.is_some() && now >= p.since + OFFER_HOLD)
            {
                self.dirty.insert(slot, true);
            }
            let mut talking = false;
            for inb in peer.inbound.values_mut() {
                if let Some(on) = inb.vad.tick(now) {
                    self.voice.push((sid.clone(), on));
                }
                talking |= inb.vad.speaking();
            }
            !connected || peer.pending.is_some() || talking
        });
    }
}

/// Sessions by time, earliest first. Each entry carries a unique number after its
/// time, so that entries due at the same time never compare session ids.
#[derive(Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<(Instant, u64, Sid)>>,
    pushed: u64,
}

impl TimerHeap {
    pub(crate) fn push(&mut self, at: Instant, sid: Sid) {
        self.pushed += 1;
        self.heap.push(Reverse((at, self.pushed, sid)));
    }

    pub(crate) fn first(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// The earliest entry, if it is due at `now`.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Sid)> {
        if self.first()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((t, _, sid))| (t, sid))
    }
}

/// Puts the peer's str0m timeout in the timer heap, lazy ones on the timer grid. One
/// entry per peer at a time: a later timeout is found when the earlier entry fires.
pub(crate) fn schedule(timers: &mut TimerHeap, peer: &mut Peer, sid: &Sid, epoch: Option<Instant>) {
    if let Some(t) = peer.timeout {
        let at = match epoch {
            Some(e) if peer.lazy => on_grid(t, e),
            _ => t,
        };
        if peer.scheduled.is_none_or(|s| at < s) {
            peer.scheduled = Some(at);
            timers.push(at, sid.clone());
        }
    }
}

/// The first point of the timer grid at or after `t`.
pub(crate) fn on_grid(t: Instant, epoch: Instant) -> Instant {
    let Some(since) = t.checked_duration_since(epoch) else {
        return t;
    };
    let grid = TIMER_GRID.as_nanos();
    let steps = since.as_nanos().div_ceil(grid);
    u64::try_from(steps * grid)
        .map(|n| epoch + Duration::from_nanos(n))
        .unwrap_or(t)
}
