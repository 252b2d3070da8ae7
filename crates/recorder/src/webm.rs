//! The recording file: WebM (Matroska) with one Opus track (1) and, when the call had
//! a screen share, one VP8 track (2). Clusters go to a scratch file as the call goes
//! on (memory stays flat however long it lasts); at the end the file is written
//! whole: the EBML header, a Segment of known size with its SeekHead, Info (with the
//! duration players show), Tracks, the clusters, then Cues for seeking.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use webm_iterable::matroska_spec::{Master, MatroskaSpec as M};
use webm_iterable::{WebmWriter, WriteOptions};

pub const AUDIO_TRACK: u64 = 1;
pub const VIDEO_TRACK: u64 = 2;
/// A cluster spans at most this long (block times are 16-bit offsets from it).
const CLUSTER_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
pub enum MuxError {
    #[error("recording file: {0}")]
    Io(#[from] std::io::Error),
    #[error("recording file: {0}")]
    Ebml(String),
}

fn ebml<E: std::fmt::Display>(e: E) -> MuxError {
    MuxError::Ebml(e.to_string())
}

struct OpenCluster {
    start_ms: u64,
    blocks: Vec<M>,
    has_keyframe: bool,
}

pub struct Muxer {
    scratch_path: PathBuf,
    scratch: BufWriter<File>,
    scratch_len: u64,
    cluster: Option<OpenCluster>,
    /// (cluster time, offset in the clusters, whether it starts on a video keyframe).
    cues: Vec<(u64, u64, bool)>,
    video: Option<(u64, u64)>,
    last_ms: [Option<u64>; 2],
    end_ms: u64,
}

/// A SimpleBlock: track number (1-byte vint), 16-bit relative time, flags, frame.
fn simple_block(track: u64, rel_ms: i16, keyframe: bool, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(data.len() + 4);
    b.push(0x80 | track as u8);
    b.extend_from_slice(&rel_ms.to_be_bytes());
    b.push(if keyframe { 0x80 } else { 0 });
    b.extend_from_slice(data);
    b
}

/// Opus' identification header (RFC 7845 §5.1), Matroska's CodecPrivate for A_OPUS.
fn opus_head(channels: u8, pre_skip: u16) -> Vec<u8> {
    let mut h = b"OpusHead".to_vec();
    h.push(1);
    h.push(channels);
    h.extend_from_slice(&pre_skip.to_le_bytes());
    h.extend_from_slice(&48_000u32.to_le_bytes());
    h.extend_from_slice(&0i16.to_le_bytes());
    h.push(0);
    h
}

/// The width and height in a VP8 keyframe's header (RFC 6386 §9.1).
pub fn vp8_dimensions(frame: &[u8]) -> Option<(u64, u64)> {
    if frame.len() < 10 || frame[0] & 1 != 0 || frame[3..6] != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([frame[6], frame[7]]) & 0x3fff;
    let h = u16::from_le_bytes([frame[8], frame[9]]) & 0x3fff;
    (w > 0 && h > 0).then_some((w.into(), h.into()))
}

fn encode(tags: &[M]) -> Result<Vec<u8>, MuxError> {
    let mut out = Vec::new();
    let mut w = WebmWriter::new(&mut out);
    for t in tags {
        w.write(t).map_err(ebml)?;
    }
    drop(w);
    Ok(out)
}

/// Elements of the Segment, encoded alone: the writer checks where an element may
/// go, so they are written inside an open (unknown-size) Segment whose 12-byte head
/// is then cut off.
fn encode_in_segment(tags: &[M]) -> Result<Vec<u8>, MuxError> {
    const HEAD: usize = 12;
    let mut out = Vec::new();
    let mut w = WebmWriter::new(&mut out);
    w.write_advanced(
        &M::Segment(Master::Start),
        WriteOptions::is_unknown_sized_element(),
    )
    .map_err(ebml)?;
    for t in tags {
        w.write(t).map_err(ebml)?;
    }
    drop(w);
    if out.len() < HEAD {
        return Err(MuxError::Ebml("segment element not written".into()));
    }
    Ok(out.split_off(HEAD))
}

/// An EBML element size as an 8-byte vint (so that it can be written before the
/// content it measures is known byte for byte).
fn size_vint8(n: u64) -> [u8; 8] {
    let mut b = n.to_be_bytes();
    b[0] = 0x01;
    b
}

impl Muxer {
    pub fn create(scratch_path: &Path) -> Result<Muxer, MuxError> {
        Ok(Muxer {
            scratch: BufWriter::new(File::create(scratch_path)?),
            scratch_path: scratch_path.to_path_buf(),
            scratch_len: 0,
            cluster: None,
            cues: Vec::new(),
            video: None,
            last_ms: [None; 2],
            end_ms: 0,
        })
    }

    /// Whether a video frame was written (the file then has a video track).
    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    pub fn audio(&mut self, ms: u64, frame: &[u8]) -> Result<(), MuxError> {
        self.block(AUDIO_TRACK, ms, true, frame)
    }

    /// A VP8 frame; the first must be a keyframe (its size becomes the track's).
    pub fn video(&mut self, ms: u64, keyframe: bool, frame: &[u8]) -> Result<(), MuxError> {
        if self.video.is_none() {
            match vp8_dimensions(frame) {
                Some(d) if keyframe => self.video = Some(d),
                _ => return Ok(()),
            }
        }
        self.block(VIDEO_TRACK, ms, keyframe, frame)
    }

    fn block(&mut self, track: u64, ms: u64, keyframe: bool, data: &[u8]) -> Result<(), MuxError> {
        // Each track's times strictly go forward (a frame that came too late for its
        // place follows the last one written).
        let slot = &mut self.last_ms[(track - 1) as usize];
        let ms = match *slot {
            Some(last) => ms.max(last + 1),
            None => ms,
        };
        *slot = Some(ms);
        let video_key = track == VIDEO_TRACK && keyframe;
        let start_new = match &self.cluster {
            None => true,
            Some(c) => {
                ms < c.start_ms
                    || ms - c.start_ms >= CLUSTER_MS
                    // A keyframe opens a cluster, so that seeking lands on one.
                    || (video_key && ms - c.start_ms >= 1_000)
            }
        };
        if start_new {
            self.flush_cluster()?;
            self.cluster = Some(OpenCluster {
                start_ms: ms,
                blocks: vec![M::Timestamp(ms)],
                has_keyframe: video_key,
            });
        }
        if let Some(c) = &mut self.cluster {
            // A keyframe at the cluster's first instant makes it a seek point too.
            c.has_keyframe |= video_key && ms == c.start_ms;
            let rel = (ms - c.start_ms).min(i16::MAX as u64) as i16;
            c.blocks
                .push(M::SimpleBlock(simple_block(track, rel, keyframe, data)));
        }
        self.end_ms = self.end_ms.max(ms);
        Ok(())
    }

    fn flush_cluster(&mut self) -> Result<(), MuxError> {
        let Some(c) = self.cluster.take() else {
            return Ok(());
        };
        let bytes = encode_in_segment(&[M::Cluster(Master::Full(c.blocks))])?;
        self.cues
            .push((c.start_ms, self.scratch_len, c.has_keyframe));
        self.scratch.write_all(&bytes)?;
        self.scratch_len += bytes.len() as u64;
        Ok(())
    }

    /// Writes the whole file to `out`; `duration_ms` as players show it.
    pub fn finish(mut self, out: &Path, duration_ms: u64) -> Result<u64, MuxError> {
        self.flush_cluster()?;
        self.scratch.flush()?;
        let header = encode(&[M::Ebml(Master::Full(vec![
            M::EbmlVersion(1),
            M::EbmlReadVersion(1),
            M::EbmlMaxIdLength(4),
            M::EbmlMaxSizeLength(8),
            M::DocType("webm".into()),
            M::DocTypeVersion(4),
            M::DocTypeReadVersion(2),
        ]))])?;
        let app = format!("calls-recorder {}", env!("CARGO_PKG_VERSION"));
        let info = encode_in_segment(&[M::Info(Master::Full(vec![
            M::TimestampScale(1_000_000),
            M::Duration(duration_ms.max(self.end_ms) as f64),
            M::MuxingApp(app.clone()),
            M::WritingApp(app),
        ]))])?;
        let mut tracks = vec![M::TrackEntry(Master::Full(vec![
            M::TrackNumber(AUDIO_TRACK),
            M::TrackUID(AUDIO_TRACK),
            M::TrackType(2),
            M::FlagLacing(0),
            M::CodecID("A_OPUS".into()),
            M::CodecPrivate(opus_head(1, 312)),
            // Opus' pre-skip and the 80 ms pre-roll the Matroska Opus mapping asks for.
            M::CodecDelay(6_500_000),
            M::SeekPreRoll(80_000_000),
            M::Audio(Master::Full(vec![
                M::SamplingFrequency(48_000.0),
                M::Channels(1),
            ])),
        ]))];
        if let Some((w, h)) = self.video {
            tracks.push(M::TrackEntry(Master::Full(vec![
                M::TrackNumber(VIDEO_TRACK),
                M::TrackUID(VIDEO_TRACK),
                M::TrackType(1),
                M::FlagLacing(0),
                M::CodecID("V_VP8".into()),
                M::Video(Master::Full(vec![M::PixelWidth(w), M::PixelHeight(h)])),
            ])));
        }
        let tracks = encode_in_segment(&[M::Tracks(Master::Full(tracks))])?;
        // The SeekHead names the Cues after the clusters; its own size depends on the
        // position it holds, so it is settled in a couple of rounds.
        let mut seek_len = 0u64;
        let (seek, cues) = loop {
            let before_clusters = seek_len + (info.len() + tracks.len()) as u64;
            let cues_pos = before_clusters + self.scratch_len;
            let seek = encode_in_segment(&[M::SeekHead(Master::Full(vec![
                M::Seek(Master::Full(vec![
                    M::SeekID(vec![0x15, 0x49, 0xA9, 0x66]),
                    M::SeekPosition(seek_len),
                ])),
                M::Seek(Master::Full(vec![
                    M::SeekID(vec![0x16, 0x54, 0xAE, 0x6B]),
                    M::SeekPosition(seek_len + info.len() as u64),
                ])),
                M::Seek(Master::Full(vec![
                    M::SeekID(vec![0x1C, 0x53, 0xBB, 0x6B]),
                    M::SeekPosition(cues_pos),
                ])),
            ]))])?;
            if seek.len() as u64 == seek_len {
                let cue_track = if self.video.is_some() {
                    VIDEO_TRACK
                } else {
                    AUDIO_TRACK
                };
                let points: Vec<M> = self
                    .cues
                    .iter()
                    .filter(|(_, _, key)| cue_track == AUDIO_TRACK || *key)
                    .map(|(t, off, _)| {
                        M::CuePoint(Master::Full(vec![
                            M::CueTime(*t),
                            M::CueTrackPositions(Master::Full(vec![
                                M::CueTrack(cue_track),
                                M::CueClusterPosition(before_clusters + off),
                            ])),
                        ]))
                    })
                    .collect();
                let cues = if points.is_empty() {
                    Vec::new()
                } else {
                    encode_in_segment(&[M::Cues(Master::Full(points))])?
                };
                break (seek, cues);
            }
            seek_len = seek.len() as u64;
        };
        let segment_len =
            (seek.len() + info.len() + tracks.len() + cues.len()) as u64 + self.scratch_len;
        let mut f = BufWriter::new(File::create(out)?);
        f.write_all(&header)?;
        f.write_all(&[0x18, 0x53, 0x80, 0x67])?;
        f.write_all(&size_vint8(segment_len))?;
        f.write_all(&seek)?;
        f.write_all(&info)?;
        f.write_all(&tracks)?;
        drop(self.scratch);
        let mut clusters = File::open(&self.scratch_path)?;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = clusters.read(&mut buf)?;
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n])?;
        }
        f.write_all(&cues)?;
        f.flush()?;
        let _ = std::fs::remove_file(&self.scratch_path);
        Ok(header.len() as u64 + 12 + segment_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use webm_iterable::WebmIterator;

    #[test]
    fn a_file_reads_back_with_its_tracks_blocks_and_cues() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Muxer::create(&dir.path().join("scratch")).unwrap();
        // A VP8 keyframe header of 640x360 (the rest of the frame is not parsed here).
        let mut key = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        key.extend_from_slice(&640u16.to_le_bytes());
        key.extend_from_slice(&360u16.to_le_bytes());
        key.extend_from_slice(&[0u8; 20]);
        // A delta frame before any keyframe is dropped.
        m.video(0, false, &[0x01, 0, 0]).unwrap();
        for i in 0..600u64 {
            m.audio(i * 20, &[0xf8, 0xff, 0xfe]).unwrap();
            if i % 5 == 0 {
                m.video(i * 20, i % 100 == 0, &key).unwrap();
            }
        }
        assert!(m.has_video());
        let out = dir.path().join("out.webm");
        let len = m.finish(&out, 12_000).unwrap();
        assert_eq!(std::fs::metadata(&out).unwrap().len(), len);
        let mut f = File::open(&out).unwrap();
        let (mut blocks, mut cues, mut tracks, mut duration) = (0, 0, 0, 0.0);
        for tag in WebmIterator::new(&mut f, &[]) {
            match tag.unwrap() {
                M::SimpleBlock(_) => blocks += 1,
                M::CuePoint(Master::Start) => cues += 1,
                M::TrackEntry(Master::Start) => tracks += 1,
                M::Duration(d) => duration = d,
                _ => {}
            }
        }
        assert_eq!(blocks, 600 + 120);
        assert_eq!(tracks, 2);
        assert_eq!(duration, 12_000.0);
        assert!(cues >= 6, "{cues} cues");
        assert_eq!(vp8_dimensions(&key), Some((640, 360)));
    }

    /// A frame placed before one already written (late, or its track re-placed by a
    /// sender report) follows it: ffmpeg refuses equal or falling times in a track.
    #[test]
    fn late_frames_keep_times_strictly_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Muxer::create(&dir.path().join("scratch")).unwrap();
        let mut key = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        key.extend_from_slice(&64u16.to_le_bytes());
        key.extend_from_slice(&64u16.to_le_bytes());
        for ms in [100, 100, 90, 166] {
            m.video(ms, true, &key).unwrap();
        }
        let out = dir.path().join("out.webm");
        m.finish(&out, 200).unwrap();
        let mut f = File::open(&out).unwrap();
        let (mut cluster, mut times) = (0u64, Vec::new());
        for tag in WebmIterator::new(&mut f, &[]) {
            match tag.unwrap() {
                M::Timestamp(t) => cluster = t,
                M::SimpleBlock(b) => times.push(cluster + i16::from_be_bytes([b[1], b[2]]) as u64),
                _ => {}
            }
        }
        assert_eq!(times, vec![100, 101, 102, 166]);
    }
}
