//! Forwarding: what a session publishes, who receives it (fan-out lists kept per
//! published track), and the per-packet path from one session's inbound RTP to
//! every subscriber's outbound.

use super::*;

impl Sfu {
    /// Video that arrived before its stream was announced starts being forwarded.
    pub(crate) fn reclassify(&mut self, session_id: &Sid) {
        let Some(peer) = self.peers.get_mut(session_id) else {
            return;
        };
        let mut newly = Vec::new();
        let pending: Vec<(Mid, MediaKind)> = peer
            .inbound
            .iter()
            .filter(|(_, i)| i.track.is_none())
            .map(|(m, i)| (*m, i.kind))
            .collect();
        for (mid, kind) in pending {
            if let (Some(track), _) = peer.classify(mid, kind) {
                if let Some(i) = peer.inbound.get_mut(&mid) {
                    i.track = Some(track);
                }
                newly.push(mid);
            }
        }
        for mid in newly {
            self.publish(session_id, mid);
        }
    }

    /// Offers a publisher's track (once classified and its codec known) to the other
    /// participants of its call that should receive it.
    pub(crate) fn publish(&mut self, src: &Sid, mid: Mid) {
        let Some(sender) = self.peers.get(src) else {
            return;
        };
        let Some(inb) = sender.inbound.get(&mid) else {
            return;
        };
        let Some((track, codec)) = inb.published() else {
            return;
        };
        let (kind, sender_av1, call) = (inb.kind, sender.av1, sender.call_id.clone());
        self.observer.tracks(&sender.group, "in", mime(codec), 1);
        for other in self.calls.get(&call).into_iter().flatten() {
            if other == src {
                continue;
            }
            if let Some(p) = self.peers.get_mut(other) {
                if receives(codec, sender_av1, p.av1) {
                    p.queued.push(QueuedTrack {
                        source: src.clone(),
                        source_mid: mid,
                        kind,
                        track,
                        codec,
                    });
                    self.offer_wanted.insert(other.clone());
                }
            }
        }
    }

    /// A publisher's track is gone (screen off, m-line stopped).
    pub(crate) fn drop_inbound(&mut self, src: &Sid, mid: Mid) {
        self.unpublish(src, mid);
        if let Some(p) = self.peers.get_mut(src) {
            if let Some((_, codec)) = p.inbound.remove(&mid).and_then(|i| i.published()) {
                self.observer.tracks(&p.group, "in", mime(codec), -1);
            }
        }
    }

    /// Ends a publisher's track for every receiver (made inactive in their next offer).
    pub(crate) fn unpublish(&mut self, src: &Sid, mid: Mid) {
        let key = (src.clone(), mid);
        for (sid, p) in self.peers.iter_mut() {
            p.queued
                .retain(|q| !(q.source == *src && q.source_mid == mid));
            if let Some(local) = p.unsubscribe(&key, &mut self.fan_epoch) {
                if let Some(o) = p.outbound_source.remove(&local) {
                    self.observer.tracks(&p.group, "out", mime(o.codec), -1);
                }
                p.removing.push(local);
                self.offer_wanted.insert(sid.clone());
            }
        }
    }

    /// New subscribers of video need a keyframe to start decoding.
    pub(crate) fn request_keyframes(&mut self, session_id: &str, mids: &[Mid]) {
        let Some(p) = self.peers.get(session_id) else {
            return;
        };
        let sources: Vec<(Sid, Mid)> = mids
            .iter()
            .filter_map(|m| p.outbound_source.get(m))
            .filter(|o| matches!(o.track, TrackType::Screen | TrackType::Video))
            .map(|o| (o.source.clone(), o.source_mid))
            .collect();
        for (src, src_mid) in sources {
            if let Some((slot, s)) = self.peers.slot_mut(&src) {
                if let Some(mut w) = s.rtc.writer(src_mid) {
                    let _ = w.request_keyframe(None, KeyframeRequestKind::Pli);
                }
                self.dirty.insert(slot, true);
            }
        }
    }

    pub(crate) fn route(&mut self, now: Instant, cross: Vec<Cross>, out: &mut Vec<Output>) {
        for c in cross {
            match c {
                Cross::Added(src, mid, kind) => {
                    let Some(peer) = self.peers.get_mut(&src) else {
                        continue;
                    };
                    let (track, stream_id) = peer.classify(mid, kind);
                    let rids: std::sync::Arc<[str0m::media::Rid]> =
                        match peer.rtc.media(mid).map(|m| m.rids_rx()) {
                            Some(str0m::media::Rids::Specific(v)) => v.clone().into(),
                            _ => Vec::new().into(),
                        };
                    if track.is_none() {
                        tracing::debug!(session_id = %src, %mid, stream_id, "video of an unannounced stream held back");
                    }
                    peer.inbound.insert(
                        mid,
                        Inbound {
                            kind,
                            track,
                            vad: Default::default(),
                            rids,
                            // Audio is Opus, the only audio codec; video waits for its
                            // first frame to tell VP8 from AV1.
                            codec: (kind == MediaKind::Audio).then_some(Codec::Opus),
                            fans: Default::default(),
                        },
                    );
                    self.publish(&src, mid);
                }
                Cross::Stopped(src, mid) => self.drop_inbound(&src, mid),
                Cross::Answered(sid, mids) => self.answered(&sid, &mids),
                Cross::Loss(sid, mid, loss) => {
                    let layers = self
                        .peers
                        .get_mut(&sid)
                        .and_then(|p| p.outbound_source.get_mut(&mid))
                        .and_then(|o| o.layers.as_mut());
                    if let Some(l) = layers {
                        l.on_loss(now, loss);
                    }
                }
                Cross::Media(src, data) => self.forward(now, &src, data, out),
                Cross::Keyframe(dst, local, kind) => {
                    let Some(p) = self.peers.get(&dst) else {
                        continue;
                    };
                    let Some(o) = p.outbound_source.get(&local) else {
                        continue;
                    };
                    // A layered source is asked for the layer this subscriber gets.
                    let rid = o.layers.as_ref().and_then(|l| l.current());
                    let (src, src_mid) = (o.source.clone(), o.source_mid);
                    if let Some((slot, s)) = self.peers.slot_mut(&src) {
                        if let Some(mut w) = s.rtc.writer(src_mid) {
                            let _ = w.request_keyframe(rid, kind);
                        }
                        self.dirty.insert(slot, true);
                    }
                }
            }
        }
    }

    /// The subscribers of a publisher's track: the call's other members that have a
    /// mid carrying it. Built when the publisher's list is older than the last change
    /// of any subscription (`fan_epoch`), so a packet's fan-out hashes no ids.
    pub(crate) fn fan_out(&self, src: &Sid, mid: Mid) -> Vec<Fan> {
        let Some(sender) = self.peers.get(src) else {
            return Vec::new();
        };
        let key = (src.clone(), mid);
        let members = self.calls.get(&sender.call_id).into_iter().flatten();
        members
            .filter(|other| *other != src)
            .filter_map(|other| {
                let slot = self.peers.slot(other)?;
                let local = self.peers.at(slot)?.subscribed(&key)?;
                Some(Fan {
                    slot,
                    local,
                    sid: other.clone(),
                })
            })
            .collect()
    }

    /// One publisher's frame to every subscriber of it in the same call.
    pub(crate) fn forward(
        &mut self,
        now: Instant,
        src: &Sid,
        data: str0m::media::MediaData,
        out: &mut Vec<Output>,
    ) {
        let Some(src_slot) = self.peers.slot(src) else {
            return;
        };
        let Some(sender) = self.peers.at_mut(src_slot) else {
            return;
        };
        let muted = sender.muted;
        let Some(inb) = sender.inbound.get_mut(&data.mid) else {
            return;
        };
        let Some(track) = inb.track else {
            return;
        };
        if inb.codec.is_none() {
            // The first frame of a video track tells its codec: offer it now.
            inb.codec = Some(data.params.spec().codec);
            self.publish(src, data.mid);
            return;
        }
        sender.rtp.add(DIR_IN, track.index(), data.data.len());
        if track == TrackType::Voice {
            if muted {
                return;
            }
            if let Some(on) = inb.vad.frame(now, data.ext_vals.audio_level) {
                self.voice.push((src.clone(), on));
                if on {
                    // Silence ends speech without a frame to tell: housekeeping does.
                    self.watched.insert(src.clone());
                }
            }
        }
        let rids = data.rid.map(|_| inb.rids.clone());
        let fresh = inb.fans.built_at == Some(self.fan_epoch);
        // Taken for the loop (which borrows the subscribers) and put back after it.
        let fans = std::mem::take(&mut inb.fans.list);
        let fans = if fresh {
            fans
        } else {
            self.fan_out(src, data.mid)
        };
        let keyframe = data.is_keyframe();
        let mut keyframe_requests: Vec<str0m::media::Rid> = Vec::new();
        for fan in &fans {
            let (local, other) = (fan.local, &fan.sid);
            let Some(p) = self.peers.at_mut(fan.slot) else {
                continue;
            };
            // Simulcast: only the subscriber's layer goes through, rebased.
            let mut time = data.time;
            if let (Some(rid), Some(rids)) = (data.rid, &rids) {
                let Some(o) = p.outbound_source.get_mut(&local) else {
                    continue;
                };
                let layers = o.layers.get_or_insert_with(|| Layering::new(rids));
                let d = layers.on_frame(now, rid, keyframe, data.time);
                if let Some(r) = d.request_keyframe {
                    if !keyframe_requests.contains(&r) {
                        keyframe_requests.push(r);
                    }
                }
                match d.forward {
                    Some(t) => time = t,
                    None => continue,
                }
            }
            self.writes = self.writes.wrapping_add(1);
            let t0 = self
                .writes
                .is_multiple_of(WRITE_SAMPLE)
                .then(|| self.observer.clock())
                .flatten();
            let audio = track.is_audio();
            // Voice (and whatever a mid once sealed carries) is sealed here, with no
            // str0m work for this subscriber at all. Screen audio on a mid of its own
            // stays with str0m, whose sender reports keep it in sync with the screen.
            let sealed = if audio {
                p.seal_audio(
                    local,
                    src,
                    &data,
                    track == TrackType::Voice,
                    &mut self.datagrams,
                )
            } else {
                peer::Sealed::Str0m
            };
            let written = match sealed {
                peer::Sealed::Datagram(d) => {
                    out.push(d);
                    true
                }
                peer::Sealed::Nothing => false,
                peer::Sealed::Str0m => {
                    let Some(w) = p.rtc.writer(local) else {
                        continue;
                    };
                    let Some(pt) = w.match_params(data.params) else {
                        continue;
                    };
                    let w = match data.ext_vals.audio_level {
                        Some(level) => {
                            w.audio_level(level, data.ext_vals.voice_activity.unwrap_or(false))
                        }
                        None => w,
                    };
                    if let Err(e) = w.write(pt, data.network_time, time, data.data.clone()) {
                        tracing::debug!(session_id = %other, error = %e, "forward write failed");
                        p.reports.push(PeerReport::Error("rtp"));
                    }
                    p.written = true;
                    // One RTP packet per audio frame; a video frame may make several,
                    // so it stirs the session like any other input.
                    p.audio_writes += u32::from(audio);
                    *self.dirty.entry(fan.slot).or_default() |= !audio;
                    true
                }
            };
            if let (Some(t0), Some(t1)) = (t0, self.observer.clock()) {
                let secs = t1.saturating_duration_since(t0).as_secs_f64();
                self.observer
                    .track_write_time(&p.group, track.write_kind(), secs);
            }
            if written {
                p.rtp.add(DIR_OUT, track.index(), data.data.len());
            }
        }
        if let Some(inb) = self
            .peers
            .at_mut(src_slot)
            .and_then(|s| s.inbound.get_mut(&data.mid))
        {
            inb.fans = FanOut {
                built_at: Some(self.fan_epoch),
                list: fans,
            };
        }
        if !keyframe_requests.is_empty() {
            if let Some(s) = self.peers.at_mut(src_slot) {
                for rid in keyframe_requests {
                    if let Some(mut w) = s.rtc.writer(data.mid) {
                        let _ = w.request_keyframe(Some(rid), KeyframeRequestKind::Pli);
                    }
                }
                self.dirty.insert(src_slot, true);
            }
        }
    }
}
