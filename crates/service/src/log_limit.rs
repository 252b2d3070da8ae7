//! Warnings a remote peer can trigger at will (a refused frame, a dropped message, a
//! rate-limited action) are written once per window and kind, with the number of
//! like ones left out since the last line: a flood of bad frames must not become a
//! flood of log lines (one client wrote 5 MB of warnings in seconds).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How long a kind of warning stays quiet after it was written.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Repeats {
    kinds: Mutex<HashMap<&'static str, Quiet>>,
}

struct Quiet {
    until: Instant,
    left_out: u64,
}

impl Repeats {
    /// `Some(n)` when this occurrence of `kind` is to be logged, `n` being how many
    /// occurrences were left out since the last logged one; `None` to stay quiet.
    pub fn admit(&self, kind: &'static str) -> Option<u64> {
        self.admit_at(kind, Instant::now())
    }

    pub fn admit_at(&self, kind: &'static str, now: Instant) -> Option<u64> {
        let mut kinds = self.kinds.lock();
        match kinds.get_mut(kind) {
            Some(q) if now < q.until => {
                q.left_out += 1;
                None
            }
            Some(q) => {
                let left_out = std::mem::take(&mut q.left_out);
                q.until = now + WINDOW;
                Some(left_out)
            }
            None => {
                kinds.insert(
                    kind,
                    Quiet {
                        until: now + WINDOW,
                        left_out: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_logged_once_per_window_with_the_count_left_out() {
        let r = Repeats::default();
        let t0 = Instant::now();
        assert_eq!(r.admit_at("refused", t0), Some(0));
        for i in 1..=1000 {
            assert_eq!(r.admit_at("refused", t0 + Duration::from_millis(i)), None);
        }
        // Another kind has its own window.
        assert_eq!(r.admit_at("dropped", t0 + Duration::from_secs(1)), Some(0));
        assert_eq!(r.admit_at("refused", t0 + WINDOW), Some(1000));
        assert_eq!(r.admit_at("refused", t0 + WINDOW), None);
        assert_eq!(r.admit_at("refused", t0 + 2 * WINDOW), Some(1));
    }
}
