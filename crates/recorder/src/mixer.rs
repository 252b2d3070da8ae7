//! The recording's sound: every speaker's Opus decoded to 48 kHz mono, added into
//! one timeline at the place its timestamp says, and encoded again into 20 ms Opus
//! frames once the playout delay has passed (late packets still land; what comes
//! later than that is dropped). Where nobody talks the timeline holds silence.

use std::collections::{HashMap, VecDeque};

use opus::{Application, Bitrate, Channels, Decoder, Encoder};

pub const RATE: u64 = 48_000;
/// One output frame: 20 ms.
pub const FRAME: usize = 960;
/// The largest Opus packet decodes to 120 ms.
const MAX_DECODED: usize = 5_760;
/// Sample positions before the start of the recording, or absurdly far ahead, are
/// dropped (a broken timestamp must not allocate gigabytes).
const MAX_AHEAD: u64 = 10 * RATE;

#[derive(Debug, thiserror::Error)]
pub enum MixError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

pub struct Mixer {
    decoders: HashMap<u64, Decoder>,
    encoder: Encoder,
    /// Sums of the samples from `out_pos` on.
    pending: VecDeque<i32>,
    /// The sample position of the next output frame (and of `pending[0]`).
    out_pos: u64,
    pcm: Vec<i16>,
    packet: Vec<u8>,
}

impl Mixer {
    pub fn new(bitrate: i32) -> Result<Mixer, MixError> {
        let mut encoder = Encoder::new(RATE as u32, Channels::Mono, Application::Audio)?;
        encoder.set_bitrate(Bitrate::Bits(bitrate))?;
        Ok(Mixer {
            decoders: HashMap::new(),
            encoder,
            pending: VecDeque::new(),
            out_pos: 0,
            pcm: vec![0; MAX_DECODED],
            packet: vec![0; 4000],
        })
    }

    /// Adds one received Opus packet of `track` starting at sample `at` of the
    /// recording (negative: before it started). Returns the samples it held.
    pub fn add(&mut self, track: u64, at: i64, packet: &[u8]) -> Result<usize, MixError> {
        let dec = match self.decoders.entry(track) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Decoder::new(RATE as u32, Channels::Mono)?)
            }
        };
        let n = dec.decode(packet, &mut self.pcm, false)?;
        let end = at + n as i64;
        if end <= self.out_pos as i64 || at > (self.out_pos + MAX_AHEAD) as i64 {
            return Ok(n);
        }
        for (i, s) in self.pcm[..n].iter().enumerate() {
            let pos = at + i as i64;
            if pos < self.out_pos as i64 {
                continue;
            }
            let idx = (pos as u64 - self.out_pos) as usize;
            if idx >= self.pending.len() {
                self.pending.resize(idx + 1, 0);
            }
            // Saturating: a sender repeating its timestamps must not overflow a sum.
            self.pending[idx] = self.pending[idx].saturating_add(i32::from(*s));
        }
        Ok(n)
    }

    /// Encodes every whole frame before sample `upto`: (start sample, Opus packet).
    pub fn take_until(&mut self, upto: u64) -> Result<Vec<(u64, Vec<u8>)>, MixError> {
        let mut out = Vec::new();
        let mut frame = [0i16; FRAME];
        while self.out_pos + FRAME as u64 <= upto {
            for s in frame.iter_mut() {
                let v = self.pending.pop_front().unwrap_or(0);
                *s = v.clamp(i16::MIN as i32, i16::MAX as i32) as i16;
            }
            let len = self.encoder.encode(&frame, &mut self.packet)?;
            out.push((self.out_pos, self.packet[..len].to_vec()));
            self.out_pos += FRAME as u64;
        }
        Ok(out)
    }

    /// Where the next frame starts.
    pub fn position(&self) -> u64 {
        self.out_pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 20 ms of a sine at `hz`, encoded.
    fn tone(enc: &mut Encoder, hz: f64, frame_i: u64) -> Vec<u8> {
        let pcm: Vec<i16> = (0..FRAME as u64)
            .map(|i| {
                let t = (frame_i * FRAME as u64 + i) as f64 / RATE as f64;
                ((t * hz * std::f64::consts::TAU).sin() * 8000.0) as i16
            })
            .collect();
        let mut out = vec![0u8; 4000];
        let n = enc.encode(&pcm, &mut out).unwrap();
        out.truncate(n);
        out
    }

    /// Energy of `hz` in `pcm` (Goertzel).
    fn power(pcm: &[i16], hz: f64) -> f64 {
        let w = std::f64::consts::TAU * hz / RATE as f64;
        let (mut s1, mut s2) = (0.0, 0.0);
        for x in pcm {
            let s = f64::from(*x) + 2.0 * w.cos() * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        (s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2) / pcm.len() as f64
    }

    #[test]
    fn two_speakers_are_mixed_and_silence_fills_the_rest() {
        let mut a = Encoder::new(48_000, Channels::Mono, Application::Audio).unwrap();
        let mut b = Encoder::new(48_000, Channels::Mono, Application::Audio).unwrap();
        let mut m = Mixer::new(64_000).unwrap();
        // One second of each speaker, the second starting 100 ms later; then 1 s of
        // nobody.
        for i in 0..50u64 {
            m.add(1, (i * 960) as i64, &tone(&mut a, 440.0, i)).unwrap();
            m.add(2, (4_800 + i * 960) as i64, &tone(&mut b, 1000.0, i))
                .unwrap();
        }
        // Before the start and after the playout point: dropped / kept.
        m.add(1, -100_000, &tone(&mut a, 440.0, 0)).unwrap();
        let frames = m.take_until(2 * RATE).unwrap();
        assert_eq!(frames.len(), 100);
        assert_eq!(m.position(), 2 * RATE);
        let mut dec = Decoder::new(48_000, Channels::Mono).unwrap();
        let mut pcm = Vec::new();
        for (_, p) in &frames {
            let mut out = [0i16; FRAME];
            let n = dec.decode(p, &mut out, false).unwrap();
            pcm.extend_from_slice(&out[..n]);
        }
        let talk = &pcm[9_600..40_000];
        let quiet = &pcm[60_000..];
        assert!(power(talk, 440.0) > 100.0 * power(talk, 700.0));
        assert!(power(talk, 1000.0) > 100.0 * power(talk, 700.0));
        let peak = quiet.iter().map(|s| s.unsigned_abs()).max().unwrap();
        assert!(peak < 200, "silence peaks at {peak}");
        // A frame that comes after its time has passed is dropped.
        m.add(1, 0, &tone(&mut a, 440.0, 0)).unwrap();
        assert!(m.take_until(2 * RATE).unwrap().is_empty());
    }
}
