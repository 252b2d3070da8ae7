//! What a user or a connection may ask of the plugin per second, checked before any
//! work: the REST API per user, websocket actions per connection.

use std::collections::HashMap;

use calls_service::rate::{Buckets, TokenBucket};
use parking_lot::Mutex;

/// The API limit: 1 request/s with a burst of 10 per user.
const API_RATE: f64 = 1.0;
const API_BURST: f64 = 10.0;

/// Per user, on the shared keyed buckets (bounded in the number of users they keep).
pub struct ApiLimits(Buckets<String>);

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits(Buckets::new(API_RATE, API_BURST))
    }
}

impl ApiLimits {
    pub fn allow(&self, user_id: &str) -> bool {
        self.0.allow(&user_id.to_string())
    }
}

/// What one websocket connection may send: every action draws on `any` (10/s, burst
/// 100, as a session's queue), and the ones that make the plugin load a call, take
/// its lock or ask the host for permissions (join, reconnect, leave, call_state) also
/// draw on `control` (2/s, burst 20: a client sends a few per call). Beyond that,
/// actions are dropped before any work: a flood of `call_state` once held the call
/// lock long enough to delay others' joins by seconds and fail a host's end-call.
struct WsBudget {
    any: TokenBucket,
    control: TokenBucket,
}

const ANY_RATE: f64 = 10.0;
const ANY_BURST: f64 = 100.0;
const CONTROL_RATE: f64 = 2.0;
const CONTROL_BURST: f64 = 20.0;

impl Default for WsBudget {
    fn default() -> Self {
        WsBudget {
            any: TokenBucket::new(ANY_BURST),
            control: TokenBucket::new(CONTROL_BURST),
        }
    }
}

/// The budgets of the websocket connections that sent something.
#[derive(Default)]
pub struct WsBudgets {
    conns: Mutex<HashMap<String, WsBudget>>,
}

impl WsBudgets {
    /// Whether the connection may send one more action (`control`: one of those that
    /// also draw on the control budget).
    pub fn allow(&self, conn_id: &str, control: bool) -> bool {
        let mut conns = self.conns.lock();
        let b = conns.entry(conn_id.to_string()).or_default();
        b.any.allow(ANY_RATE, ANY_BURST)
            && (!control || b.control.allow(CONTROL_RATE, CONTROL_BURST))
    }

    /// The connection closed.
    pub fn forget(&self, conn_id: &str) {
        self.conns.lock().remove(conn_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_actions_run_out_before_the_others() {
        let b = WsBudgets::default();
        let control = (0..30).filter(|_| b.allow("c", true)).count();
        assert_eq!(control, CONTROL_BURST as usize);
        // What is left of the `any` burst (every attempt drew on it) is there for
        // other actions; a fraction of a token may have come back meanwhile.
        let others = (0..200).filter(|_| b.allow("c", false)).count();
        assert!((70..=71).contains(&others), "{others}");
        // Another connection has its own budget.
        assert!(b.allow("d", true));
        b.forget("c");
        assert!(b.allow("c", true));
    }

    #[test]
    fn the_api_allows_a_burst_per_user() {
        let l = ApiLimits::default();
        assert_eq!((0..50).filter(|_| l.allow("u")).count(), API_BURST as usize);
        assert!(l.allow("v"));
    }
}
