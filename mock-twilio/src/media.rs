//! Generated recording media: real MP3 (silent MPEG-1 Layer III frames) and real WAV
//! (RIFF, 8 kHz mono 8-bit PCM), of any size, deterministic from (sid, format, size).
//!
//! Any byte can be computed on its own, so a 200 MB recording is streamed in bounded
//! chunks ([`Media::fill`]) and tests can ask for the exact bytes of any slice
//! ([`Media::slice`]).

use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The audio container a recording is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MediaFormat {
    /// `audio/mpeg`, Twilio's `.mp3`.
    Mp3,
    /// `audio/x-wav`, Twilio's `.wav`.
    Wav,
}

impl MediaFormat {
    /// The file extension Twilio uses for this format (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            MediaFormat::Mp3 => "mp3",
            MediaFormat::Wav => "wav",
        }
    }

    /// The `Content-Type` Twilio sends for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            MediaFormat::Mp3 => "audio/mpeg",
            MediaFormat::Wav => "audio/x-wav",
        }
    }

    /// Parses a file extension (`mp3`, `wav`).
    pub fn from_extension(ext: &str) -> Option<Self> {
        match ext {
            "mp3" => Some(MediaFormat::Mp3),
            "wav" => Some(MediaFormat::Wav),
            _ => None,
        }
    }
}

/// MPEG-1 Layer III, 128 kbit/s, 48 kHz, mono, no CRC: 144 x 128,000 / 48,000 = 384-byte frames
/// of 1,152 samples (24 ms) with no padding, so the bitrate is exactly 128 kbit/s and players
/// that estimate the duration from the bitrate or from the average frame agree with those that
/// count frames. (At 44.1 kHz frames are 417 or 418 bytes, and a player's estimate from the
/// frames it has seen varies with which ones it saw.)
const MP3_HEADER: [u8; 4] = [0xFF, 0xFB, 0x94, 0xC4];
const MP3_FRAME: u64 = 384;
/// Side information of a mono MPEG-1 Layer III frame; all zero means "silence".
const MP3_SIDE_INFO: u64 = 17;
/// The first frame, when more follow, is a LAME-style "Info" frame (what encoders write at the
/// start of a constant-bitrate file): after the side information, `Info`, flags (1: a frame
/// count follows) and the number of audio frames after it. Players take the duration from it
/// instead of estimating it from the bytes they have seen so far.
const INFO_TAG_AT: u64 = 4 + MP3_SIDE_INFO;
const INFO_TAG_LEN: u64 = 12;
/// An ID3v2 tag at the start absorbs the size that is not a whole number of frames.
const ID3_HEADER: u64 = 10;
const WAV_HEADER: u64 = 44;
const WAV_RATE: u64 = 8000;

/// One recording's media, generated on demand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    format: MediaFormat,
    size: u64,
    seed: u64,
    /// MP3 only: length of the leading ID3v2 tag.
    tag_len: u64,
    /// MP3 only: how many frames follow the tag (the first of them the Info frame).
    frames: u64,
}

impl Media {
    /// The media of recording `sid` in `format`, exactly `size` bytes long.
    pub fn new(sid: &str, format: MediaFormat, size: u64) -> Self {
        let seed = fnv1a(sid.as_bytes()) ^ fnv1a(format.extension().as_bytes()).rotate_left(17);
        let tag_len = match format {
            MediaFormat::Mp3 if size < ID3_HEADER + MP3_FRAME => size,
            MediaFormat::Mp3 => ID3_HEADER + (size - ID3_HEADER) % MP3_FRAME,
            MediaFormat::Wav => 0,
        };
        let frames = match format {
            MediaFormat::Mp3 => (size - tag_len) / MP3_FRAME,
            MediaFormat::Wav => 0,
        };
        Media {
            format,
            size,
            seed,
            tag_len,
            frames,
        }
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// True for a zero-byte recording.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The container format.
    pub fn format(&self) -> MediaFormat {
        self.format
    }

    /// Playing time in whole seconds, as Twilio reports `duration`.
    pub fn duration_secs(&self) -> u64 {
        match self.format {
            // The Info frame holds no audio; each other frame is 1,152 samples at 48 kHz.
            MediaFormat::Mp3 => (self.frames - u64::from(self.has_info_frame())) * 24 / 1000,
            MediaFormat::Wav => self.size.saturating_sub(WAV_HEADER) / WAV_RATE,
        }
    }

    /// The exact bytes of `range` (clamped to the media's length).
    pub fn slice(&self, range: Range<u64>) -> Vec<u8> {
        let start = range.start.min(self.size);
        let end = range.end.min(self.size).max(start);
        let mut buf = vec![0; (end - start) as usize];
        self.fill(start, &mut buf);
        buf
    }

    /// All of the media: only for small recordings.
    pub fn to_vec(&self) -> Vec<u8> {
        self.slice(0..self.size)
    }

    /// Writes the bytes starting at `offset` into `buf` (which must not reach past the end).
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        assert!(
            offset + buf.len() as u64 <= self.size,
            "fill past the end of the media"
        );
        match self.format {
            MediaFormat::Mp3 => self.fill_mp3(offset, buf),
            MediaFormat::Wav => self.fill_wav(offset, buf),
        }
    }

    fn fill_mp3(&self, offset: u64, buf: &mut [u8]) {
        let info = self.info_tag();
        let mut pos = offset;
        let mut out = 0usize;
        while out < buf.len() {
            let n;
            if pos < self.tag_len {
                // ID3v2.3 header with a synch-safe size, then zero padding.
                let body = self.tag_len.saturating_sub(ID3_HEADER);
                let header = [
                    b'I',
                    b'D',
                    b'3',
                    3,
                    0,
                    0,
                    ((body >> 21) & 0x7F) as u8,
                    ((body >> 14) & 0x7F) as u8,
                    ((body >> 7) & 0x7F) as u8,
                    (body & 0x7F) as u8,
                ];
                n = ((self.tag_len - pos) as usize).min(buf.len() - out);
                for i in 0..n {
                    let p = pos + i as u64;
                    buf[out + i] = if p < ID3_HEADER {
                        header[p as usize]
                    } else {
                        0
                    };
                }
            } else {
                let audio = pos - self.tag_len;
                let frame = audio / MP3_FRAME;
                let within = audio % MP3_FRAME;
                n = ((MP3_FRAME - within) as usize).min(buf.len() - out);
                let in_info_frame = frame == 0 && self.has_info_frame();
                let mut noise = Noise::new(self.seed);
                for i in 0..n {
                    let w = within + i as u64;
                    buf[out + i] = match w {
                        0..=3 => MP3_HEADER[w as usize],
                        w if w < INFO_TAG_AT => 0,
                        w if in_info_frame => {
                            info.get((w - INFO_TAG_AT) as usize).copied().unwrap_or(0)
                        }
                        // Ancillary data: ignored by decoders, but unique per recording, and
                        // never 0xFF so it cannot look like a frame sync.
                        _ => noise.at(audio - within + w) & 0x7F,
                    };
                }
            }
            pos += n as u64;
            out += n;
        }
    }

    /// Whether the first frame is an Info frame: only when other frames follow it to count.
    fn has_info_frame(&self) -> bool {
        self.frames >= 2
    }

    /// The Info tag of the first frame ([`Self::has_info_frame`]): `Info`, flags, and the count
    /// of the audio frames.
    fn info_tag(&self) -> [u8; INFO_TAG_LEN as usize] {
        let mut tag = [0; INFO_TAG_LEN as usize];
        tag[..4].copy_from_slice(b"Info");
        tag[4..8].copy_from_slice(&1u32.to_be_bytes());
        let counted = self.frames.saturating_sub(1) as u32;
        tag[8..].copy_from_slice(&counted.to_be_bytes());
        tag
    }

    fn fill_wav(&self, offset: u64, buf: &mut [u8]) {
        let data_len = self.size.saturating_sub(WAV_HEADER) as u32;
        let mut header = [0u8; WAV_HEADER as usize];
        header[0..4].copy_from_slice(b"RIFF");
        header[4..8].copy_from_slice(&(data_len.wrapping_add(36)).to_le_bytes());
        header[8..16].copy_from_slice(b"WAVEfmt ");
        header[16..20].copy_from_slice(&16u32.to_le_bytes());
        header[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
        header[22..24].copy_from_slice(&1u16.to_le_bytes()); // mono
        header[24..28].copy_from_slice(&(WAV_RATE as u32).to_le_bytes());
        header[28..32].copy_from_slice(&(WAV_RATE as u32).to_le_bytes()); // byte rate
        header[32..34].copy_from_slice(&1u16.to_le_bytes()); // block align
        header[34..36].copy_from_slice(&8u16.to_le_bytes()); // bits per sample
        header[36..40].copy_from_slice(b"data");
        header[40..44].copy_from_slice(&data_len.to_le_bytes());
        let mut noise = Noise::new(self.seed);
        for (i, b) in buf.iter_mut().enumerate() {
            let p = offset + i as u64;
            *b = if p < WAV_HEADER {
                header[p as usize]
            } else {
                // Quiet noise around the 8-bit midpoint.
                120 + (noise.at(p) & 0x0F)
            };
        }
    }
}

/// Deterministic noise: byte `pos` is byte `pos % 8` of splitmix64(seed ^ pos / 8), with the
/// last 8-byte block kept, so sequential bytes cost one hash per eight.
struct Noise {
    seed: u64,
    block_index: u64,
    block: u64,
}

impl Noise {
    fn new(seed: u64) -> Self {
        Noise {
            seed,
            block_index: u64::MAX,
            block: 0,
        }
    }

    #[inline]
    fn at(&mut self, pos: u64) -> u8 {
        let index = pos >> 3;
        if index != self.block_index {
            self.block_index = index;
            self.block = splitmix64(self.seed ^ index);
        }
        (self.block >> ((pos & 7) * 8)) as u8
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_slice_equals_the_slice_of_the_whole() {
        for format in [MediaFormat::Mp3, MediaFormat::Wav] {
            // Around the edges: the ID3 header, the first frame (394), the first Info frame
            // (778), whole frames, and the WAV header.
            for size in [
                0, 1, 9, 43, 44, 45, 393, 394, 395, 777, 778, 779, 1000, 3850, 3851, 10_000,
            ] {
                let m = Media::new("RE0123", format, size);
                let whole = m.to_vec();
                assert_eq!(whole.len() as u64, size);
                // The last pair starts inside a first Info tag (after a 10-byte ID3 tag).
                let info = (size.min(33), size.min(40));
                for (a, b) in [(0, size), (size / 3, size / 2), (size / 2, size), info] {
                    assert_eq!(
                        m.slice(a..b),
                        whole[a as usize..b as usize],
                        "{format:?} {size}"
                    );
                }
            }
        }
    }

    /// Walks the frames as a decoder does, each one 144 x bitrate / sample rate bytes long as
    /// its header says (128 kbit/s at 48 kHz, no padding: 384), and returns how many there are;
    /// panics if one is not such a frame or the last one is cut.
    fn count_frames(bytes: &[u8]) -> u64 {
        let mut at = 0;
        let mut frames = 0;
        while at < bytes.len() {
            // Sync, MPEG-1 Layer III without CRC; bitrate index 9 (128 kbit/s), sample rate
            // index 1 (48 kHz), no padding; mono.
            assert_eq!(bytes[at..at + 4], [0xFF, 0xFB, 0x94, 0xC4], "at {at}");
            at += 144 * 128_000 / 48_000;
            frames += 1;
        }
        assert_eq!(at, bytes.len(), "the last frame is cut");
        frames
    }

    #[test]
    fn mp3_is_an_id3_tag_then_whole_frames() {
        for size in [394, 395, 777, 778, 1000, 3850, 3851, 10_000, 100_003] {
            let m = Media::new("REabc", MediaFormat::Mp3, size);
            let bytes = m.to_vec();
            assert_eq!(&bytes[..3], b"ID3");
            let tag = m.tag_len as usize;
            assert!((10..394).contains(&tag), "{size}: tag of {tag}");
            count_frames(&bytes[tag..]);
        }
    }

    #[test]
    fn mp3_starts_with_an_info_frame_that_counts_the_frames_after_it() {
        let m = Media::new("REabc", MediaFormat::Mp3, 100_003);
        let bytes = m.to_vec();
        let audio = &bytes[m.tag_len as usize..];
        let frames = count_frames(audio);
        // After the 4-byte header and 17 bytes of mono side information.
        assert_eq!(&audio[21..25], b"Info");
        assert_eq!(audio[25..29], [0, 0, 0, 1], "flags: a frame count follows");
        let count = u32::from_be_bytes(audio[29..33].try_into().unwrap());
        assert_eq!(u64::from(count), frames - 1);
        // A recording of one frame has no frame to count: no Info tag.
        let one = Media::new("REabc", MediaFormat::Mp3, 400).to_vec();
        assert!(!one.windows(4).any(|w| w == b"Info"));
    }

    #[test]
    fn mp3_frames_last_as_long_as_its_bitrate_says() {
        // 1 MB at 128 kbit/s is 62.5 s; 1,152 samples at 48 kHz make a frame of 24 ms.
        let m = Media::new("REabc", MediaFormat::Mp3, 1_000_000);
        let bytes = m.to_vec();
        let frames = count_frames(&bytes[m.tag_len as usize..]);
        let by_frames_ms = frames as f64 * 1152.0 / 48.0;
        let by_bitrate_ms = (1_000_000 - m.tag_len) as f64 * 8.0 / 128.0;
        assert!((by_bitrate_ms - 62_500.0).abs() < 30.0, "{by_bitrate_ms}");
        // Twilio's whole seconds: 62.5 s less the Info frame (24 ms) and the tag.
        assert_eq!(m.duration_secs(), 62);
        assert!(
            (by_frames_ms - by_bitrate_ms).abs() < 1.0,
            "{frames} frames last {by_frames_ms} ms, the bitrate says {by_bitrate_ms} ms"
        );
    }

    #[test]
    fn wav_header_announces_the_data_length() {
        let bytes = Media::new("REabc", MediaFormat::Wav, 8044).to_vec();
        assert_eq!(&bytes[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(bytes[40..44].try_into().unwrap()), 8000);
        assert_eq!(
            Media::new("REabc", MediaFormat::Wav, 8044).duration_secs(),
            1
        );
    }

    #[test]
    fn different_recordings_differ() {
        let a = Media::new("REa", MediaFormat::Mp3, 5000).to_vec();
        let b = Media::new("REb", MediaFormat::Mp3, 5000).to_vec();
        assert_ne!(a, b);
    }
}
