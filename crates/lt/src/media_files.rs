//! Media the load tool sends: Opus packets from an Ogg file and VP8 frames from an
//! IVF file, read once and replayed in a loop.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum MediaFileError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: not an Ogg Opus file ({1})")]
    Ogg(String, String),
    #[error("{0}: not a VP8 IVF file ({1})")]
    Ivf(String, String),
}

/// Opus packets (20 ms each, as Opus encoders make for VoIP) from an Ogg file.
pub fn opus_packets(path: &Path) -> Result<Vec<Vec<u8>>, MediaFileError> {
    let name = path.display().to_string();
    let f = std::fs::File::open(path).map_err(|e| MediaFileError::Read(name.clone(), e))?;
    let mut r = ogg::PacketReader::new(std::io::BufReader::new(f));
    let mut out = Vec::new();
    let mut n = 0;
    loop {
        match r.read_packet() {
            Ok(Some(p)) => {
                n += 1;
                if n == 1 && !p.data.starts_with(b"OpusHead") {
                    return Err(MediaFileError::Ogg(name, "no OpusHead".into()));
                }
                // The first two packets are the Opus headers (OpusHead, OpusTags).
                if n > 2 {
                    out.push(p.data);
                }
            }
            Ok(None) => break,
            Err(e) => return Err(MediaFileError::Ogg(name, e.to_string())),
        }
    }
    if out.is_empty() {
        return Err(MediaFileError::Ogg(name, "no audio packets".into()));
    }
    Ok(out)
}

/// VP8 frames of an IVF file.
pub struct Video {
    /// (keyframe?, frame) in order.
    pub frames: Vec<(bool, Vec<u8>)>,
    pub fps: u32,
}

/// VP8 frames of an IVF file, with whether each is a keyframe, and the frame rate.
pub fn ivf_frames(path: &Path) -> Result<Video, MediaFileError> {
    let name = path.display().to_string();
    let b = std::fs::read(path).map_err(|e| MediaFileError::Read(name.clone(), e))?;
    let bad = |m: &str| MediaFileError::Ivf(name.clone(), m.to_string());
    if b.len() < 32 || &b[..4] != b"DKIF" {
        return Err(bad("no DKIF header"));
    }
    if &b[8..12] != b"VP80" {
        return Err(bad("codec is not VP80"));
    }
    let header_len = u16::from_le_bytes([b[6], b[7]]) as usize;
    let rate = u32::from_le_bytes([b[16], b[17], b[18], b[19]]);
    let scale = u32::from_le_bytes([b[20], b[21], b[22], b[23]]).max(1);
    let fps = (rate / scale).clamp(1, 60);
    let mut i = header_len;
    let mut frames = Vec::new();
    while i + 12 <= b.len() {
        let size = u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]) as usize;
        i += 12;
        let f = b.get(i..i + size).ok_or_else(|| bad("truncated frame"))?;
        // VP8 payload header: bit 0 of the first byte is 0 on keyframes.
        let key = f.first().is_some_and(|x| x & 1 == 0);
        frames.push((key, f.to_vec()));
        i += size;
    }
    if frames.is_empty() {
        return Err(bad("no frames"));
    }
    Ok(Video { frames, fps })
}
