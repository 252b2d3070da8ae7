//! The core's sessions, reachable by id and by slot. Commands and datagrams name a
//! session by id (one hash lookup); forwarding reaches each subscriber of a packet by
//! the slot its fan-out list holds, so a packet to 500 subscribers hashes no ids.

use std::borrow::Borrow;
use std::hash::Hash;

use slab::Slab;

use super::peer::Peer;
use super::Slot;
use super::{FastMap, Sid};

#[derive(Default)]
pub(super) struct Peers {
    /// Boxed: a `Peer` is about 10 KiB (its `Rtc`); the slab stays small to move
    /// when it grows, and each peer's hot fields stay on their own cache lines.
    slots: Slab<(Sid, Box<Peer>)>,
    by_id: FastMap<Sid, Slot>,
}

impl Peers {
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn contains_key<Q>(&self, id: &Q) -> bool
    where
        Sid: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.by_id.contains_key(id)
    }

    pub fn slot<Q>(&self, id: &Q) -> Option<Slot>
    where
        Sid: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.by_id.get(id).copied()
    }

    pub fn get<Q>(&self, id: &Q) -> Option<&Peer>
    where
        Sid: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.slot(id).and_then(|s| self.at(s))
    }

    pub fn get_mut<Q>(&mut self, id: &Q) -> Option<&mut Peer>
    where
        Sid: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.slot_mut(id).map(|(_, p)| p)
    }

    /// A session by id with its slot: for callers that mark it in the core's
    /// slot-keyed sets after working on it (one lookup, not two).
    pub fn slot_mut<Q>(&mut self, id: &Q) -> Option<(Slot, &mut Peer)>
    where
        Sid: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.slot(id)?;
        Some((slot, self.at_mut(slot)?))
    }

    /// The core's shared id of a session.
    pub fn sid<Q>(&self, id: &Q) -> Option<&Sid>
    where
        Sid: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.by_id.get_key_value(id).map(|(k, _)| k)
    }

    pub fn at(&self, slot: Slot) -> Option<&Peer> {
        self.slots.get(slot).map(|(_, p)| &**p)
    }

    pub fn at_mut(&mut self, slot: Slot) -> Option<&mut Peer> {
        self.slots.get_mut(slot).map(|(_, p)| &mut **p)
    }

    /// The session at a slot with its id: what a datagram routed by source address
    /// reaches without hashing the id.
    pub fn entry_at_mut(&mut self, slot: Slot) -> Option<(&Sid, &mut Peer)> {
        self.slots.get_mut(slot).map(|(sid, p)| (&*sid, &mut **p))
    }

    /// The first session `f` is true of.
    pub fn find_slot(&self, mut f: impl FnMut(&Peer) -> bool) -> Option<Slot> {
        self.slots
            .iter()
            .find(|(_, (_, p))| f(p))
            .map(|(slot, _)| slot)
    }

    /// Adds a session whose id is not taken (the caller checked).
    pub fn insert(&mut self, sid: Sid, peer: Box<Peer>) -> Slot {
        let slot = self.slots.insert((sid.clone(), peer));
        if let Some(old) = self.by_id.insert(sid, slot) {
            // Not reached: ids are checked before insertion. Keep the maps in step.
            self.slots.remove(old);
        }
        slot
    }

    /// Removes a session: its slot (free for the next session), id and peer.
    pub fn remove_entry<Q>(&mut self, id: &Q) -> Option<(Slot, Sid, Box<Peer>)>
    where
        Sid: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let slot = self.by_id.remove(id)?;
        let (sid, peer) = self.slots.try_remove(slot)?;
        Some((slot, sid, peer))
    }

    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (&Sid, &Peer)> {
        self.slots.iter().map(|(_, (sid, p))| (sid, &**p))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&Sid, &mut Peer)> {
        self.slots.iter_mut().map(|(_, (sid, p))| (&*sid, &mut **p))
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.slots.iter_mut().map(|(_, (_, p))| &mut **p)
    }
}

#[cfg(test)]
// Tests start their own clock.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn peer() -> Box<Peer> {
        let rtc = str0m::Rtc::builder().build(Instant::now());
        Box::new(Peer::new("default", "call", rtc, Instant::now()))
    }

    #[test]
    fn a_removed_sessions_slot_is_found_by_neither_id_nor_slot() {
        let mut peers = Peers::default();
        let a: Sid = "a".into();
        let b: Sid = "b".into();
        let sa = peers.insert(a.clone(), peer());
        let sb = peers.insert(b.clone(), peer());
        assert_ne!(sa, sb);
        assert_eq!(peers.slot("b"), Some(sb));
        assert_eq!(peers.find_slot(|p| p.call_id == "call"), Some(sa));
        assert_eq!(peers.entry_at_mut(sb).map(|(s, _)| &**s), Some("b"));
        assert_eq!(peers.slot_mut("b").map(|(s, _)| s), Some(sb));
        let (at, gone, _) = peers.remove_entry("a").expect("a was there");
        assert_eq!(at, sa);
        assert!(Sid::ptr_eq(&gone, &a));
        assert!(peers.get("a").is_none());
        assert!(peers.at(sa).is_none());
        assert_eq!(peers.len(), 1);
        // The slot is reused by the next session, under its own id.
        let sc = peers.insert("c".into(), peer());
        assert_eq!(sc, sa);
        assert_eq!(peers.sid("c").map(|s| &**s), Some("c"));
        let ids: Vec<&str> = peers.iter().map(|(s, _)| &**s).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&"b") && ids.contains(&"c"));
    }
}
