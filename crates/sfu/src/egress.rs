//! Forwarded voice leaves the SFU through here, not through str0m.
//!
//! Each str0m `Rtc` turns a written frame into a packet through its packetizer,
//! pacer, transport-wide sequence numbering and SRTP, and every step is a poll over
//! all of its subsystems: about 23k instructions per subscriber per packet, where the
//! packet itself needs a 12-byte header and one AES-GCM seal. So for voice, once a
//! subscriber's DTLS handshake has exported its keys (`crypto::KeySlot`) and an
//! AEAD profile was chosen, the core builds the RTP packet and seals it (RFC 7714)
//! itself, on the SSRC str0m announced for that m-line in the SDP.
//!
//! Invariant: str0m never sends RTP on such an SSRC. A track is either always sealed
//! here or always written to str0m, decided at its first packet, and packet indexes
//! only go up: the (SSRC, index) pair is the AES-GCM nonce, and a nonce used twice
//! under one key would give the keystream and the authentication key away.

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm, KeyInit, Nonce};
use str0m::crypto::dtls::SrtpProfile;
use str0m::media::MediaData;

use super::crypto::KeySlot;
use super::Sid;

/// RFC 3711 §4.3.1 key derivation labels (RFC 7714 §11 keeps them for AES-GCM).
const LABEL_RTP_KEY: u8 = 0x00;
const LABEL_RTP_SALT: u8 = 0x02;
const SALT_LEN: usize = 12;
const TAG_LEN: usize = 16;
const RTP_HEADER_LEN: usize = 12;

/// The index before a new SSRC's first packet. RFC 3550 §5.1: the first sequence
/// number is random; under 2^15 so that a receiver's first guess of the rollover
/// counter (0) holds for a while.
fn first_index() -> u64 {
    u64::from((rand::random::<u16>() & 0x7fff) | 1) - 1
}

/// A jump in the source's sequence numbers past this is not carried over as a gap
/// (the publisher restarted its stream): the next index follows on.
const MAX_GAP: u64 = 1000;

/// Emptied datagram buffers, handed back by the shell once sent, so that a sealed
/// packet reuses one instead of costing an allocation and a free per subscriber.
/// Bounded: past `MAX` the rest are freed (a burst does not pin its peak).
#[derive(Debug, Default)]
pub(super) struct DatagramPool {
    spare: Vec<Vec<u8>>,
}

impl DatagramPool {
    /// Kept at most: two voice packets to a thousand subscribers.
    const MAX: usize = 2048;
    /// A new buffer fits any voice packet (header, extensions, a 20 ms Opus frame
    /// at the highest rate, tag), so that a reused one rarely grows.
    const NEW_CAPACITY: usize = 512;
    /// Larger buffers (video, DTLS) are not kept: the pool is for sealed voice.
    const KEEP_UP_TO: usize = 4096;

    /// An empty buffer with room for `len` bytes.
    pub fn take(&mut self, len: usize) -> Vec<u8> {
        let mut b = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(Self::NEW_CAPACITY));
        b.reserve(len);
        b
    }

    /// A datagram that went out (or was never sent): its buffer may be reused.
    pub fn give(&mut self, mut b: Vec<u8>) {
        if self.spare.len() < Self::MAX && b.capacity() <= Self::KEEP_UP_TO {
            b.clear();
            self.spare.push(b);
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.spare.len()
    }
}

/// Why a subscriber's voice cannot be sealed here (it then goes through str0m).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(super) enum EgressError {
    #[error("the DTLS handshake has not exported SRTP keys yet")]
    NoKeys,
    #[error("SRTP profile {0:?} is not an AEAD one")]
    NotAead(SrtpProfile),
    #[error("keying material of {0} bytes does not fit its profile")]
    Material(usize),
}

enum Aead {
    A128(Box<Aes128Gcm>),
    A256(Box<Aes256Gcm>),
}

/// One subscriber's outbound SRTP session key and salt (RFC 7714).
pub(super) struct Sealer {
    aead: Aead,
    salt: [u8; SALT_LEN],
}

impl std::fmt::Debug for Sealer {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

impl Sealer {
    pub fn from_slot(slot: &KeySlot) -> Result<Sealer, EgressError> {
        let (profile, material, active) = slot.get().ok_or(EgressError::NoKeys)?;
        Sealer::from_material(profile, material, active)
    }

    /// `material` is laid out as RFC 5764 §4.2 says: client key, server key, client
    /// salt, server salt. We send with the client's half when we are the DTLS client.
    fn from_material(
        profile: SrtpProfile,
        material: &[u8],
        client: bool,
    ) -> Result<Sealer, EgressError> {
        let key_len = match profile {
            SrtpProfile::AEAD_AES_128_GCM => 16,
            SrtpProfile::AEAD_AES_256_GCM => 32,
            other => return Err(EgressError::NotAead(other)),
        };
        if material.len() != 2 * (key_len + SALT_LEN) {
            return Err(EgressError::Material(material.len()));
        }
        let (k, s) = if client {
            (0, 2 * key_len)
        } else {
            (key_len, 2 * key_len + SALT_LEN)
        };
        let master = &material[k..k + key_len];
        let master_salt = &material[s..s + SALT_LEN];
        let mut salt = [0u8; SALT_LEN];
        derive(master, master_salt, LABEL_RTP_SALT, &mut salt);
        let aead = if key_len == 16 {
            let mut key = [0u8; 16];
            derive(master, master_salt, LABEL_RTP_KEY, &mut key);
            Aead::A128(Box::new(Aes128Gcm::new(&key.into())))
        } else {
            let mut key = [0u8; 32];
            derive(master, master_salt, LABEL_RTP_KEY, &mut key);
            Aead::A256(Box::new(Aes256Gcm::new(&key.into())))
        };
        Ok(Sealer { aead, salt })
    }

    /// Encrypts `packet[header_len..]` in place and appends the tag (RFC 7714 §8):
    /// the header is the additional data, the nonce the salt XOR (SSRC, ROC, SEQ).
    fn seal(&self, packet: &mut Vec<u8>, header_len: usize, ssrc: u32, index: u64) -> bool {
        let mut iv = [0u8; SALT_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
        for (b, s) in iv.iter_mut().zip(self.salt) {
            *b ^= s;
        }
        let (aad, text) = packet.split_at_mut(header_len);
        let nonce = Nonce::from_slice(&iv);
        let tag = match &self.aead {
            Aead::A128(a) => a.encrypt_in_place_detached(nonce, aad, text),
            Aead::A256(a) => a.encrypt_in_place_detached(nonce, aad, text),
        };
        match tag {
            Ok(tag) => {
                packet.extend_from_slice(&tag);
                true
            }
            Err(_) => false,
        }
    }
}

/// The AES-CM pseudo-random function of RFC 3711 §4.3.1-4.3.3 with a zero key
/// derivation rate: AES_master(x || counter) blocks, x = the master salt (left
/// aligned, as RFC 7714 §11 has it for 96-bit salts) with the label at byte 7.
fn derive(master: &[u8], master_salt: &[u8], label: u8, out: &mut [u8]) {
    use aes_gcm::aes::cipher::{BlockEncrypt, KeyInit as _};
    use aes_gcm::aes::{Aes128, Aes256, Block};
    fn prf(encrypt: impl Fn(&mut Block), mut x: [u8; 16], out: &mut [u8]) {
        for (i, chunk) in out.chunks_mut(16).enumerate() {
            x[14..].copy_from_slice(&(i as u16).to_be_bytes());
            let mut block = Block::from(x);
            encrypt(&mut block);
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
    let mut x = [0u8; 16];
    let n = master_salt.len().min(14);
    x[..n].copy_from_slice(&master_salt[..n]);
    x[7] ^= label;
    // Key lengths are the profile's (checked by the caller).
    if let Ok(a) = Aes128::new_from_slice(master) {
        prf(|b| a.encrypt_block(b), x, out);
    } else if let Ok(a) = Aes256::new_from_slice(master) {
        prf(|b| a.encrypt_block(b), x, out);
    }
}

/// An id the RFC 8285 one-byte header form can carry (15 is reserved).
fn one_byte_id(id: u8) -> bool {
    (1..=14).contains(&id)
}

/// The `mid` header extension: id and value (at most 16 bytes, RFC 8285 one-byte form).
#[derive(Debug)]
struct MidExt {
    id: u8,
    len: u8,
    value: [u8; 16],
}

impl MidExt {
    fn new(id: u8, mid: &str) -> Option<MidExt> {
        let b = mid.as_bytes();
        if !one_byte_id(id) || !(1..=16).contains(&b.len()) {
            return None;
        }
        let mut value = [0u8; 16];
        value[..b.len()].copy_from_slice(b);
        Some(MidExt {
            id,
            len: b.len() as u8,
            value,
        })
    }

    fn value(&self) -> &[u8] {
        &self.value[..usize::from(self.len)]
    }
}

/// The voice one of our mids carries to one subscriber, sealed here.
#[derive(Debug)]
pub(super) struct AudioEgress {
    ssrc: u32,
    /// The publisher (session, payload type) carried, and the subscriber's payload
    /// type for it.
    source: Sid,
    src_pt: u8,
    pt: u8,
    /// RFC 8285 one-byte header extensions the subscriber negotiated: the mid's
    /// (inline, not on the heap: every packet to every subscriber reads it).
    mid: Option<MidExt>,
    audio_level: Option<u8>,
    /// The last packet index (ROC << 16 | SEQ) sent, and the publisher's it came from.
    last_out: u64,
    last_in: Option<u64>,
}

impl AudioEgress {
    pub fn new(
        ssrc: u32,
        mid: Option<(u8, &str)>,
        audio_level: Option<u8>,
        source: &Sid,
        src_pt: u8,
        pt: u8,
    ) -> AudioEgress {
        AudioEgress {
            ssrc,
            source: source.clone(),
            src_pt,
            pt,
            mid: mid.and_then(|(id, m)| MidExt::new(id, m)),
            audio_level: audio_level.filter(|id| one_byte_id(*id)),
            last_out: first_index(),
            last_in: None,
        }
    }

    /// Whether this is what the egress was set up for.
    pub fn carries(&self, source: &Sid, src_pt: u8) -> bool {
        self.src_pt == src_pt && self.source == *source
    }

    /// Carries another publisher (the mid was recycled) or payload type from now on.
    /// On the same SSRC, indexes go on from the last one sent.
    pub fn carry(&mut self, source: &Sid, src_pt: u8, pt: u8, ssrc: u32) {
        if ssrc != self.ssrc {
            self.ssrc = ssrc;
            self.last_out = first_index();
        }
        self.source = source.clone();
        self.src_pt = src_pt;
        self.pt = pt;
        self.last_in = None;
    }

    /// The sealed datagram for one publisher packet (an Opus frame is one packet), or
    /// None for a packet older than one already sent (reordered or repeated: sending
    /// it would need an index already used).
    pub fn packet(
        &mut self,
        data: &MediaData,
        sealer: &Sealer,
        pool: &mut DatagramPool,
    ) -> Option<Vec<u8>> {
        let src = **data.seq_range.start();
        let index = match self.last_in {
            Some(last) if src <= last => return None,
            Some(last) if src - last <= MAX_GAP => self.last_out.wrapping_add(src - last),
            _ => self.last_out.wrapping_add(1),
        };
        // (-dBov, extension id), when the publisher sent a level and the subscriber
        // negotiated the extension.
        let level = data.ext_vals.audio_level.zip(self.audio_level);
        let ext_len = match (&self.mid, level) {
            (None, None) => 0,
            (mid, level) => {
                let body =
                    mid.as_ref().map_or(0, |m| 1 + usize::from(m.len)) + level.map_or(0, |_| 2);
                4 + body.div_ceil(4) * 4
            }
        };
        let header_len = RTP_HEADER_LEN + ext_len;
        let mut p = pool.take(header_len + data.data.len() + TAG_LEN);
        let x = if ext_len > 0 { 0x10 } else { 0 };
        p.push(0x80 | x);
        let marker = if data.audio_start_of_talk_spurt {
            0x80
        } else {
            0
        };
        p.push(marker | self.pt);
        p.extend_from_slice(&(index as u16).to_be_bytes());
        p.extend_from_slice(&(data.time.numer() as u32).to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        if ext_len > 0 {
            p.extend_from_slice(&[0xbe, 0xde]);
            p.extend_from_slice(&(((ext_len - 4) / 4) as u16).to_be_bytes());
            if let Some(mid) = &self.mid {
                p.push(mid.id << 4 | (mid.len - 1));
                p.extend_from_slice(mid.value());
            }
            if let Some((dbov, id)) = level {
                // RFC 6464: the V bit, then the level in -dBov (0..=127).
                let v = if data.ext_vals.voice_activity.unwrap_or(false) {
                    0x80
                } else {
                    0
                };
                p.push(id << 4);
                p.push(v | dbov.unsigned_abs().min(127));
            }
            p.resize(header_len, 0);
        }
        p.extend_from_slice(&data.data);
        if !sealer.seal(&mut p, header_len, self.ssrc, index & 0xffff_ffff_ffff) {
            pool.give(p);
            return None;
        }
        self.last_in = Some(src);
        self.last_out = index;
        Some(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn key_derivation_matches_rfc_3711_appendix_b3() {
        let master = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
        let salt = hex("0EC675AD498AFEEBB6960B3AABE6");
        let mut key = [0u8; 16];
        derive(&master, &salt, LABEL_RTP_KEY, &mut key);
        assert_eq!(key.to_vec(), hex("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut s = [0u8; 14];
        derive(&master, &salt, LABEL_RTP_SALT, &mut s);
        assert_eq!(s.to_vec(), hex("30CBBC08863D8C85D49DB34A9AE1"));
        // Longer than a block (the authentication key, label 1): the counter runs on.
        let mut auth = [0u8; 20];
        derive(&master, &salt, 0x01, &mut auth);
        assert_eq!(
            auth.to_vec(),
            hex("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
        );
    }

    /// RFC 7714 §16.1.1's packet, sealed with its session key and salt.
    #[test]
    fn sealing_matches_rfc_7714_example() {
        let sealer = Sealer {
            aead: Aead::A128(Box::new(Aes128Gcm::new(
                &<[u8; 16]>::try_from(hex("000102030405060708090a0b0c0d0e0f"))
                    .expect("16")
                    .into(),
            ))),
            salt: <[u8; 12]>::try_from(hex("517569642070726f2071756f")).expect("12"),
        };
        let mut p = hex(
            "8040f17b 8041f8d3 5501a0b2 47616c6c 69612065 7374206f 6d6e6973 20646976
             69736120 696e2070 61727465 73207472 6573",
        );
        assert!(sealer.seal(&mut p, 12, 0x5501a0b2, 0xf17b));
        let want = hex(
            "8040f17b 8041f8d3 5501a0b2 f24de3a3 fb34de6c acba861c 9d7e4bca be633bd5
             0d294e6f 42a5f47a 51c7d19b 36de3adf 8833899d 7f27beb1 6a9152cf 765ee439
             0cce",
        );
        assert_eq!(p, want);
    }

    /// The packet a subscriber gets: header, the two one-byte extensions padded to
    /// a word, the sealed payload; indexes that follow the publisher's with its gaps,
    /// and nothing for a packet older than one sent.
    #[test]
    fn packets_carry_the_negotiated_extensions_and_indexes_only_go_up() {
        let material: Vec<u8> = (0..56u8).collect();
        let sealer =
            Sealer::from_material(SrtpProfile::AEAD_AES_128_GCM, &material, false).expect("sealer");
        let src: Sid = std::sync::Arc::from("sess-a");
        let mid = str0m::media::Mid::from("3");
        let mut e = AudioEgress::new(0x0102_0304, Some((4, "3")), Some(1), &src, 111, 109);
        let frame = |seq| crate::sim::opus_frame(mid, seq, Some(-30));
        // The buffer comes back from an earlier send still holding its bytes.
        let mut pool = DatagramPool::default();
        pool.give(vec![0xaa; 300]);
        let p = e
            .packet(&frame(7), &sealer, &mut pool)
            .expect("first packet");
        assert_eq!(pool.len(), 0, "the spare buffer was used");
        let first = u16::from_be_bytes([p[2], p[3]]);
        assert_eq!(p[0], 0x90, "version 2 with extensions");
        assert_eq!(p[1], 109, "the subscriber's payload type, no marker");
        assert_eq!(
            &p[4..8],
            &(7u32 * 960).to_be_bytes(),
            "the publisher's RTP time"
        );
        assert_eq!(&p[8..12], &[1, 2, 3, 4]);
        // 0xBEDE, one word: mid (id 4, one byte "3"), level (id 1, voice, 30 dBov).
        assert_eq!(&p[12..20], &[0xbe, 0xde, 0, 1, 0x40, b'3', 0x10, 0x80 | 30]);
        assert_eq!(p.len(), 20 + 4 + TAG_LEN, "payload sealed with its tag");
        assert_ne!(&p[20..24], b"opus");

        // A gap of two is kept; a repeat or an older packet is not sent.
        let p = e
            .packet(&frame(10), &sealer, &mut pool)
            .expect("after a gap");
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), first.wrapping_add(3));
        assert!(e.packet(&frame(10), &sealer, &mut pool).is_none());
        assert!(e.packet(&frame(9), &sealer, &mut pool).is_none());
        // A publisher that restarts (a jump back, or far ahead) continues by one.
        e.carry(&src, 111, 109, 0x0102_0304);
        let p = e
            .packet(&frame(2), &sealer, &mut pool)
            .expect("after carry");
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), first.wrapping_add(4));
        let p = e
            .packet(&frame(50_000), &sealer, &mut pool)
            .expect("far ahead");
        assert_eq!(u16::from_be_bytes([p[2], p[3]]), first.wrapping_add(5));
    }

    /// The pool keeps buffers up to its bound, and not the big ones.
    #[test]
    fn the_pool_keeps_voice_sized_buffers_up_to_its_bound() {
        let mut pool = DatagramPool::default();
        pool.give(Vec::with_capacity(DatagramPool::KEEP_UP_TO + 1));
        assert_eq!(pool.len(), 0, "a large buffer is freed");
        for _ in 0..DatagramPool::MAX + 10 {
            pool.give(Vec::with_capacity(200));
        }
        assert_eq!(pool.len(), DatagramPool::MAX);
        let b = pool.take(1000);
        assert!(b.is_empty() && b.capacity() >= 1000, "grown to fit");
        assert_eq!(pool.len(), DatagramPool::MAX - 1);
    }

    #[test]
    fn keying_material_halves_follow_the_dtls_role() {
        let material: Vec<u8> = (0..56u8).collect();
        let a =
            Sealer::from_material(SrtpProfile::AEAD_AES_128_GCM, &material, true).expect("client");
        let b =
            Sealer::from_material(SrtpProfile::AEAD_AES_128_GCM, &material, false).expect("server");
        assert_ne!(
            a.salt, b.salt,
            "client and server write with different keys"
        );
        assert_eq!(
            Sealer::from_material(SrtpProfile::AEAD_AES_256_GCM, &material, true).err(),
            Some(EgressError::Material(56))
        );
        assert_eq!(
            Sealer::from_material(SrtpProfile::AES128_CM_SHA1_80, &material, true).err(),
            Some(EgressError::NotAead(SrtpProfile::AES128_CM_SHA1_80))
        );
    }
}
