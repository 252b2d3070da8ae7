//! Voice activity from the RTP `ssrc-audio-level` header extension (RFC 6464), the
//! signal upstream uses for `user_voice_on` / `user_voice_off`. Pure and clocked by
//! the caller.

use std::time::{Duration, Instant};

/// A 20 ms frame at or above this level (dBov, 0 = loudest) counts as speech.
const LOUD_DBOV: i8 = -50;
/// Speech starts when this many of the last eight frames were loud.
const ON_FRAMES: u32 = 3;
/// Speech ends after this long without a loud frame.
const OFF_AFTER: Duration = Duration::from_millis(1000);

#[derive(Debug, Default)]
pub struct Vad {
    /// One bit per recent frame, newest in bit 0.
    history: u8,
    last_loud: Option<Instant>,
    speaking: bool,
}

impl Vad {
    /// Accounts for one audio frame; `Some(on)` when the speaking state changes.
    pub fn frame(&mut self, now: Instant, level_dbov: Option<i8>) -> Option<bool> {
        let loud = level_dbov.is_some_and(|l| l >= LOUD_DBOV);
        self.history = (self.history << 1) | u8::from(loud);
        if loud {
            self.last_loud = Some(now);
        }
        if !self.speaking && self.history.count_ones() >= ON_FRAMES {
            self.speaking = true;
            return Some(true);
        }
        self.tick(now)
    }

    /// Ends speech after a silence, even when no frame arrives (DTX, lost stream).
    pub fn tick(&mut self, now: Instant) -> Option<bool> {
        let quiet = self
            .last_loud
            .is_none_or(|t| now.saturating_duration_since(t) >= OFF_AFTER);
        if self.speaking && quiet {
            self.speaking = false;
            self.history = 0;
            return Some(false);
        }
        None
    }

    /// Muting resets the detector; `Some(false)` if it was speaking.
    pub fn reset(&mut self) -> Option<bool> {
        let was = self.speaking;
        *self = Vad::default();
        was.then_some(false)
    }

    pub fn speaking(&self) -> bool {
        self.speaking
    }
}

#[cfg(test)]
// Tests start their own clock.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn speech_starts_on_loud_frames_and_ends_after_silence() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut v = Vad::default();
        assert_eq!(v.frame(ms(0), Some(-127)), None);
        assert_eq!(v.frame(ms(20), Some(-30)), None);
        assert_eq!(v.frame(ms(40), Some(-20)), None);
        assert_eq!(v.frame(ms(60), Some(-10)), Some(true));
        assert_eq!(
            v.frame(ms(80), Some(-127)),
            None,
            "one quiet frame keeps it on"
        );
        assert_eq!(v.tick(ms(900)), None);
        assert_eq!(v.tick(ms(1060)), Some(false));
        assert_eq!(v.tick(ms(2000)), None, "reported once");
    }

    #[test]
    fn missing_levels_are_silence_and_reset_reports_the_end() {
        let t0 = Instant::now();
        let mut v = Vad::default();
        for i in 0..10 {
            assert_eq!(v.frame(t0 + Duration::from_millis(i * 20), None), None);
        }
        for i in 0..3 {
            v.frame(t0 + Duration::from_millis(200 + i * 20), Some(0));
        }
        assert!(v.speaking());
        assert_eq!(v.reset(), Some(false));
        assert_eq!(v.reset(), None);
    }
}
