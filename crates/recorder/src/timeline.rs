//! Where a received frame goes in the recording: milliseconds from its start. Within
//! a track the RTP timestamps say (they are immune to network jitter); a track is
//! placed by the arrival of its first frame, then re-placed once by its first RTCP
//! sender report, which ties its RTP clock to the sender's wall clock, so that every
//! track (each speaker, the screen) lines up with the others. The sender's clock is
//! related to ours once, by the first report seen on any track.

use std::time::{Instant, SystemTime};

/// A report that moves a track by less than this leaves it where it is.
const RESYNC_MS: f64 = 40.0;

/// One call's clocks: the recording's start and the sender's clock offset.
pub struct Clock {
    start: Instant,
    start_sys: SystemTime,
    /// Our wall clock minus the sender's, in ms (includes one network delay).
    offset_ms: Option<f64>,
}

/// One received track's placement.
#[derive(Default)]
pub struct TrackClock {
    /// (RTP time in seconds, its place in ms).
    anchor: Option<(f64, f64)>,
    reported: bool,
}

fn sys_ms(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64() * 1000.0,
        Err(e) => -e.duration().as_secs_f64() * 1000.0,
    }
}

impl Clock {
    pub fn new(start: Instant, start_sys: SystemTime) -> Clock {
        Clock {
            start,
            start_sys,
            offset_ms: None,
        }
    }

    /// Milliseconds since the recording started.
    pub fn now_ms(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.start).as_secs_f64() * 1000.0
    }

    /// An instant as ms of the recording (negative before it started).
    fn instant_ms(&self, t: Instant) -> f64 {
        if t >= self.start {
            (t - self.start).as_secs_f64() * 1000.0
        } else {
            -((self.start - t).as_secs_f64() * 1000.0)
        }
    }
}

/// A sender report: the sender's wall clock at an RTP time (seconds).
#[derive(Clone, Copy)]
pub struct Report {
    pub ntp: SystemTime,
    pub rtp_s: f64,
}

impl TrackClock {
    /// The place of a frame with RTP time `rtp_s` that arrived at `arrival`.
    pub fn place(
        &mut self,
        clock: &mut Clock,
        rtp_s: f64,
        arrival: Instant,
        report: Option<Report>,
    ) -> f64 {
        if let (Some(r), false) = (report, self.reported) {
            self.reported = true;
            let sender_ms = sys_ms(r.ntp) + (rtp_s - r.rtp_s) * 1000.0;
            let arrival_sys = sys_ms(self_sys(clock, arrival));
            let offset = *clock.offset_ms.get_or_insert(arrival_sys - sender_ms);
            let by_report = sender_ms + offset - sys_ms(clock.start_sys);
            let by_anchor = self
                .anchor
                .map(|(a_rtp, a_ms)| a_ms + (rtp_s - a_rtp) * 1000.0);
            if by_anchor.is_none_or(|p| (p - by_report).abs() > RESYNC_MS) {
                self.anchor = Some((rtp_s, by_report));
            }
        }
        let (a_rtp, a_ms) = *self
            .anchor
            .get_or_insert((rtp_s, clock.instant_ms(arrival)));
        a_ms + (rtp_s - a_rtp) * 1000.0
    }
}

/// Our wall clock at `t`.
fn self_sys(clock: &Clock, t: Instant) -> SystemTime {
    if t >= clock.start {
        clock.start_sys + (t - clock.start)
    } else {
        clock.start_sys - (clock.start - t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tracks_follow_rtp_and_line_up_by_their_reports() {
        let t0 = Instant::now();
        let sys0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut clock = Clock::new(t0, sys0);
        // Track a: first frame 100 ms in, then 20 ms frames; jitter does not move it.
        let mut a = TrackClock::default();
        assert_eq!(
            a.place(&mut clock, 50.0, t0 + Duration::from_millis(100), None),
            100.0
        );
        let p = a.place(&mut clock, 50.02, t0 + Duration::from_millis(190), None);
        assert!((p - 120.0).abs() < 1e-6);
        // Its first report says RTP 50.0 was sender time sys0+90ms; the frame of
        // 50.04 (sender time +130) arriving at +150 sets the offset to 20 ms, and the
        // report agrees with the track's place within 40 ms: it stays.
        let r = Report {
            ntp: sys0 + Duration::from_millis(90),
            rtp_s: 50.0,
        };
        let p = a.place(&mut clock, 50.04, t0 + Duration::from_millis(150), Some(r));
        assert!((p - 140.0).abs() < 1e-6, "{p}");
        // Track b's first frame was delayed 300 ms in the network; its report puts it
        // where the sender meant it: sender time +490, plus the 20 ms offset.
        let mut b = TrackClock::default();
        let r = Report {
            ntp: sys0 + Duration::from_millis(490),
            rtp_s: 7.0,
        };
        let p = b.place(&mut clock, 7.0, t0 + Duration::from_millis(800), Some(r));
        assert!((p - 510.0).abs() < 1e-6, "{p}");
        let p = b.place(&mut clock, 7.5, t0 + Duration::from_millis(1000), None);
        assert!((p - 1010.0).abs() < 1e-6, "{p}");
    }
}
