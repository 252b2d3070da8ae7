//! Server offers: tracks to add or remove are batched into one renegotiation per
//! session, held until the client has its MediaMap, and settled by its answer.

use super::*;

impl Sfu {
    /// A subscriber answered the offer that added `mids`: what was forwarded to them
    /// before could not reach it (a simulcast layer chosen then starts again, at the
    /// keyframe asked for now).
    pub(crate) fn answered(&mut self, session_id: &str, mids: &[Mid]) {
        if let Some(p) = self.peers.get_mut(session_id) {
            for m in mids {
                if let Some(o) = p.outbound_source.get_mut(m) {
                    o.layers = None;
                }
            }
        }
        self.request_keyframes(session_id, mids);
    }

    /// One server offer at a time per session, for the tracks queued for it or ended,
    /// after the data channel is up (as rtcd) and never while the client holds the
    /// signaling lock. MediaMap goes first so the client can classify the tracks.
    pub(crate) fn send_offers(&mut self, now: Instant, out: &mut Vec<Output>) {
        // Taken whole: a session still blocked (offer in flight, not connected, no
        // data channel, client lock) is put back.
        for sid in std::mem::take(&mut self.offer_wanted) {
            let Some((slot, peer)) = self.peers.slot_mut(&sid) else {
                continue;
            };
            if peer.queued.is_empty() && peer.removing.is_empty() {
                continue;
            }
            if peer.pending.is_some()
                || !peer.rtc.is_connected()
                || peer.dc.is_none()
                || peer.client_locked(now)
            {
                self.offer_wanted.insert(sid);
                continue;
            }
            let queued = std::mem::take(&mut peer.queued);
            let removed = std::mem::take(&mut peer.removing);
            let mut api = peer.rtc.sdp_api();
            let mut added = Vec::new();
            for q in queued {
                let track_id = format!("{}_{}_{}", q.track.prefix(), q.source, random_suffix());
                let mid = api.add_media(
                    q.kind,
                    Direction::SendOnly,
                    Some(q.source.to_string()),
                    Some(track_id),
                    None,
                );
                added.push((mid, q));
            }
            for mid in &removed {
                api.set_direction(*mid, Direction::Inactive);
            }
            let Some((offer, pending)) = api.apply() else {
                continue;
            };
            for (mid, q) in &added {
                self.observer.tracks(&peer.group, "out", mime(q.codec), 1);
                peer.subscribe((q.source.clone(), q.source_mid), *mid, &mut self.fan_epoch);
                peer.outbound_source.insert(
                    *mid,
                    OutTrack {
                        source: q.source.clone(),
                        source_mid: q.source_mid,
                        track: q.track,
                        codec: q.codec,
                        layers: None,
                    },
                );
            }
            let map = peer
                .outbound_source
                .iter()
                .map(|(mid, o)| {
                    (
                        mid.to_string(),
                        o.track.prefix().to_string(),
                        o.source.to_string(),
                    )
                })
                .collect();
            let map = DcMessage::MediaMap(map);
            peer.dc_send(&map);
            let needs_map = added.iter().any(|(_, q)| q.track != TrackType::Voice);
            peer.pending = Some(PendingOffer {
                offer: pending,
                since: now,
                added,
                removed,
                held: None,
            });
            // Unanswered, it is withdrawn after `offer_timeout`: housekeeping watches.
            self.watched.insert(sid.clone());
            self.dirty.insert(slot, true);
            let json = SessionDescription::offer(offer.to_sdp_string()).to_json();
            // Over the data channel, the offer follows the MediaMap in order. Over the
            // websocket it could overtake it, and the Calls client looks a track's
            // info up once, when the track arrives: a video track without it is not
            // shown (an audio track without it plays as voice). An offer that adds
            // anything but voice waits for the MediaMap's acknowledgement, which
            // costs up to a delayed SACK (~200 ms); voice goes at once.
            if !(peer.dc_signaling && peer.dc_send_sdp(&json)) {
                match peer.pending.as_mut() {
                    Some(p) if needs_map => {
                        p.held = Some(HeldOffer {
                            json,
                            repeat: Some(map),
                        })
                    }
                    _ => out.push(Output::Offer {
                        session_id: sid.to_string(),
                        json,
                    }),
                }
            }
        }
    }
}

/// Sends a held websocket offer once the client's SCTP stack has acknowledged the
/// data channel's MediaMap, or after `OFFER_HOLD` whatever happened to it (a client
/// that does not acknowledge still gets its offer; housekeeping wakes the session).
/// Called after the session's drain has sent the MediaMap: it writes the MediaMap once
/// more, which goes in a packet of its own, because an SCTP receiver acknowledges
/// every second packet at once but a single one only after its delayed-ack timer
/// (~200 ms in browsers); the client takes the same map twice. True when the session
/// needs another drain (to send that copy).
pub(crate) fn release_offer(
    sid: &Sid,
    peer: &mut Peer,
    now: Instant,
    out: &mut Vec<Output>,
) -> bool {
    let Some(since) = peer
        .pending
        .as_ref()
        .filter(|p| p.held.is_some())
        .map(|p| p.since)
    else {
        return false;
    };
    let delivered = peer.dc_delivered();
    if !delivered && now < since + OFFER_HOLD {
        let repeat = peer
            .pending
            .as_mut()
            .and_then(|p| p.held.as_mut())
            .and_then(|h| h.repeat.take());
        return repeat.is_some_and(|map| peer.dc_send(&map));
    }
    if !delivered {
        tracing::debug!(session_id = %sid, "MediaMap not acknowledged in time, sending the offer");
    }
    if let Some(held) = peer.pending.as_mut().and_then(|p| p.held.take()) {
        out.push(Output::Offer {
            session_id: sid.to_string(),
            json: held.json,
        });
    }
    false
}

/// Drops an unanswered offer and queues its changes again for the next one.
pub(crate) fn withdraw_offer(peer: &mut Peer, fan_epoch: &mut u64) {
    let Some(p) = peer.pending.take() else {
        return;
    };
    for (mid, q) in p.added {
        peer.unsubscribe(&(q.source.clone(), q.source_mid), fan_epoch);
        peer.outbound_source.remove(&mid);
        peer.queued.push(q);
    }
    peer.removing.extend(p.removed);
}
