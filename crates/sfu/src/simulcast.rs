//! Per-subscriber choice of a simulcast layer (`EnableSimulcast`: the screen is sent as
//! rid `l`, low rate, and `h`, high rate). A subscriber starts on `l` (as rtcd's late
//! joiners), moves up after a few loss-free receiver reports and down when its loss
//! grows. A switch only happens on a keyframe of the new layer (anything else would
//! be undecodable), and the RTP clock is rebased so the subscriber sees one
//! continuous stream. Pure: the caller passes time, frames and loss reports.

use std::time::{Duration, Instant};

use str0m::media::{MediaTime, Rid};

/// Receiver reports in a row with loss under `GOOD_LOSS` before moving up.
const UP_AFTER: u32 = 3;
const GOOD_LOSS: f32 = 0.02;
/// Receiver reports in a row with loss over `BAD_LOSS` before moving down.
const DOWN_AFTER: u32 = 2;
const BAD_LOSS: f32 = 0.10;
/// No new decision for this long after a switch.
const HOLD: Duration = Duration::from_secs(5);
/// While waiting for a keyframe of the wanted layer, ask again this often.
const KEYFRAME_RETRY: Duration = Duration::from_millis(500);
/// The gap put between the last frame of the old layer and the first of the new one
/// (one frame at 30 fps, in 90 kHz ticks).
const SWITCH_GAP_TICKS: i64 = 3000;

#[derive(Debug, Clone)]
pub struct Layering {
    low: Rid,
    high: Rid,
    current: Option<Rid>,
    want: Rid,
    /// Added to the source's RTP time (in its clock's ticks).
    offset: i64,
    last_out: Option<MediaTime>,
    good: u32,
    bad: u32,
    hold_until: Option<Instant>,
    keyframe_asked: Option<Instant>,
}

/// What to do with one frame of a layer.
#[derive(Debug, PartialEq)]
pub struct Decision {
    /// Forward it with this RTP time, or drop it (None).
    pub forward: Option<MediaTime>,
    /// Ask the publisher for a keyframe of this layer.
    pub request_keyframe: Option<Rid>,
}

impl Layering {
    /// `rids` as announced by the publisher; `l` and `h` by convention, else the
    /// first is taken as low and the last as high.
    pub fn new(rids: &[Rid]) -> Layering {
        let find = |name: &str| rids.iter().copied().find(|r| &**r == name);
        let low = find("l")
            .or(rids.first().copied())
            .unwrap_or(Rid::from("l"));
        let high = find("h").or(rids.last().copied()).unwrap_or(low);
        Layering {
            low,
            high,
            current: None,
            want: low,
            offset: 0,
            last_out: None,
            good: 0,
            bad: 0,
            hold_until: None,
            keyframe_asked: None,
        }
    }

    pub fn current(&self) -> Option<Rid> {
        self.current
    }

    #[cfg(test)]
    pub fn want(&self) -> Rid {
        self.want
    }

    pub fn on_frame(
        &mut self,
        now: Instant,
        rid: Rid,
        keyframe: bool,
        time: MediaTime,
    ) -> Decision {
        let mut request = None;
        if self.current != Some(self.want) {
            if rid == self.want && keyframe {
                self.switch(now, time);
            } else if self
                .keyframe_asked
                .is_none_or(|t| now.saturating_duration_since(t) >= KEYFRAME_RETRY)
            {
                self.keyframe_asked = Some(now);
                request = Some(self.want);
            }
        }
        let forward = (self.current == Some(rid)).then(|| {
            let out = MediaTime::new(
                (time.numer() as i64).wrapping_add(self.offset) as u64,
                time.frequency(),
            );
            self.last_out = Some(out);
            out
        });
        Decision {
            forward,
            request_keyframe: request,
        }
    }

    /// Rebases the clock so the new layer continues where the old one stopped.
    fn switch(&mut self, now: Instant, time: MediaTime) {
        self.offset = match self.last_out {
            Some(last) => {
                let gap = SWITCH_GAP_TICKS * time.frequency().get() as i64 / 90_000;
                last.numer() as i64 + gap.max(1) - time.numer() as i64
            }
            None => 0,
        };
        self.current = Some(self.want);
        self.keyframe_asked = None;
        self.hold_until = Some(now + HOLD);
        self.good = 0;
        self.bad = 0;
    }

    /// One receiver report's loss fraction for this subscriber's stream.
    pub fn on_loss(&mut self, now: Instant, loss: f32) {
        if loss < GOOD_LOSS {
            self.good += 1;
            self.bad = 0;
        } else if loss > BAD_LOSS {
            self.bad += 1;
            self.good = 0;
        } else {
            self.good = 0;
            self.bad = 0;
        }
        if self.hold_until.is_some_and(|t| now < t) || self.current != Some(self.want) {
            return;
        }
        if self.want == self.low && self.good >= UP_AFTER {
            self.want = self.high;
        } else if self.want == self.high && self.bad >= DOWN_AFTER {
            self.want = self.low;
        }
    }
}

#[cfg(test)]
// Tests start their own clock.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use str0m::media::Frequency;

    fn t(n: u64) -> MediaTime {
        MediaTime::new(n, Frequency::NINETY_KHZ)
    }

    #[test]
    fn starts_low_switches_on_keyframes_and_keeps_one_clock() {
        let (l, h) = (Rid::from("l"), Rid::from("h"));
        let now = Instant::now();
        let s = |n: u64| now + Duration::from_secs(n);
        let mut x = Layering::new(&[h, l]);
        // Nothing until a keyframe of the low layer; a keyframe is asked for.
        let d = x.on_frame(s(0), l, false, t(1000));
        assert_eq!(d.forward, None);
        assert_eq!(d.request_keyframe, Some(l));
        assert_eq!(
            x.on_frame(s(0), h, true, t(5000)).forward,
            None,
            "high is not wanted"
        );
        assert_eq!(x.on_frame(s(0), l, true, t(2000)).forward, Some(t(2000)));
        assert_eq!(x.current(), Some(l));
        // Good reports: after the hold, the subscriber is moved up at a high keyframe.
        for i in 1..=7 {
            x.on_loss(s(i), 0.0);
        }
        let d = x.on_frame(s(8), h, false, t(900_000));
        assert_eq!((d.forward, d.request_keyframe), (None, Some(h)));
        assert_eq!(
            x.on_frame(s(8), l, false, t(5000)).forward,
            Some(t(5000)),
            "low until then"
        );
        let d = x.on_frame(s(8), h, true, t(900_000));
        assert_eq!(
            d.forward,
            Some(t(8000)),
            "high rebased after the last low frame"
        );
        assert_eq!(x.on_frame(s(8), l, true, t(6000)).forward, None);
        assert_eq!(
            x.on_frame(s(8), h, false, t(903_000)).forward,
            Some(t(11000))
        );
        // Heavy loss moves it back down, again on a keyframe.
        for i in 14..=15 {
            x.on_loss(s(i), 0.3);
        }
        assert_eq!(x.on_frame(s(15), l, false, t(7000)).forward, None);
        assert_eq!(
            x.on_frame(s(15), h, false, t(906_000)).forward,
            Some(t(14000))
        );
        assert_eq!(x.on_frame(s(15), l, true, t(8000)).forward, Some(t(17000)));
        assert_eq!(x.current(), Some(l));
    }

    #[test]
    fn no_flapping_during_the_hold() {
        let (l, h) = (Rid::from("l"), Rid::from("h"));
        let now = Instant::now();
        let mut x = Layering::new(&[l, h]);
        x.on_frame(now, l, true, t(0));
        for _ in 0..10 {
            x.on_loss(now + Duration::from_secs(1), 0.0);
        }
        assert!(
            x.on_frame(now, h, true, t(0)).forward.is_none(),
            "moved up during hold"
        );
    }
}
