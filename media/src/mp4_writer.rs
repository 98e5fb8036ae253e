//! `Mp4FrameWriter`: H.264 (OpenH264, built from bundled source) in an MP4 (`mp4` crate).
//!
//! No ffmpeg anywhere on this path, so a worker without ffmpeg can still deliver MP4.
//! Frames are converted to BT.709 limited-range I420 (tagged in the SPS VUI), encoded one at a
//! time, and their NAL units are muxed as length-prefixed `avc1` samples; the muxer flushes a
//! chunk about once a second, so memory stays flat however long the clip is.

use longshot_core::output::OutputKind;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use openh264::encoder::{
    BitRate, Encoder, EncoderConfig, FrameRate, IntraFramePeriod, RateControlMode, UsageType, VuiConfig,
};
use openh264::{OpenH264API, Timestamp};

use crate::avcc::{bitstream_to_avcc, ParameterSets};
use crate::staging::StagedOutput;
use crate::yuv::Yuv420Frame;
use crate::{FrameWriter, MediaError, OutputSummary, VideoMeta};

/// Media timescale ticks per frame; the timescale is `fps * TICKS_PER_FRAME`, so every
/// integer fps is exact.
const TICKS_PER_FRAME: u32 = 1000;
/// Bits per pixel per frame for the default bitrate: ~1.6 Mbit/s at 832x480@16, ~5.5 Mbit/s
/// at 1280x720@24. OpenH264 is a baseline-class encoder, so this is on the generous side.
const DEFAULT_BITS_PER_PIXEL: f64 = 0.25;
const MIN_DEFAULT_BITRATE: u32 = 256_000;
const MAX_DEFAULT_BITRATE: u32 = 50_000_000;
/// OpenH264 refuses anything larger (level 5.2).
const MAX_LONG_SIDE: u32 = 3840;
const MAX_SHORT_SIDE: u32 = 2160;

/// Tuning for the MP4 writer; `Default` suits 480p–720p renders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mp4Options {
    /// Target bitrate in bits per second; `None` uses [`default_bitrate_bps`].
    pub bitrate_bps: Option<u32>,
    /// Seconds between IDR frames (seek points); `None` means 2.
    pub keyframe_interval_secs: Option<u32>,
}

/// The bitrate used when `Mp4Options::bitrate_bps` is `None`: 0.25 bits per pixel per frame,
/// clamped to 256 kbit/s ..= 50 Mbit/s.
pub fn default_bitrate_bps(meta: &VideoMeta) -> u32 {
    let pixels_per_sec = f64::from(meta.width) * f64::from(meta.height) * f64::from(meta.fps);
    let bps = (pixels_per_sec * DEFAULT_BITS_PER_PIXEL) as u64;
    bps.clamp(u64::from(MIN_DEFAULT_BITRATE), u64::from(MAX_DEFAULT_BITRATE)) as u32
}

/// Streams RGB frames into an H.264 MP4; see the module doc.
pub struct Mp4FrameWriter {
    meta: VideoMeta,
    staged: StagedOutput,
    encoder: Encoder,
    muxer: mp4::Mp4Writer<BufWriter<File>>,
    yuv: Yuv420Frame,
    params: ParameterSets,
    track_added: bool,
    /// Held back one frame so a frame the encoder skips can lengthen its predecessor.
    pending: Option<mp4::Mp4Sample>,
    frames_in: u64,
    next_start: u64,
}

impl Mp4FrameWriter {
    /// Creates `path` (via `path.partial`, renamed on `finish`).
    pub fn create(path: &Path, meta: VideoMeta, options: Mp4Options) -> Result<Self, MediaError> {
        meta.frame_len()?;
        meta.require_even()?;
        let (long, short) = (meta.width.max(meta.height), meta.width.min(meta.height));
        if long > MAX_LONG_SIDE || short > MAX_SHORT_SIDE {
            return Err(meta.invalid("openh264 encodes at most 3840x2160 (or 2160x3840)"));
        }
        if meta.fps > 1000 {
            return Err(meta.invalid("mp4 output supports at most 1000 fps"));
        }
        let bitrate = options.bitrate_bps.unwrap_or_else(|| default_bitrate_bps(&meta));
        if bitrate < 10_000 {
            return Err(meta.invalid(format!("bitrate {bitrate} bps is below the 10000 bps minimum")));
        }
        let keyframe_secs = options.keyframe_interval_secs.unwrap_or(2).max(1);

        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(bitrate))
            .max_frame_rate(FrameRate::from_hz(meta.fps as f32))
            .rate_control_mode(RateControlMode::Bitrate)
            // A skipped frame would be missing from the MP4. Without skipping, the rate control
            // overshoots on hard frames instead (OpenH264 warns about this when it starts).
            .skip_frames(false)
            // The only camera usage this OpenH264 build accepts (non-real-time is rejected).
            .usage_type(UsageType::CameraVideoRealTime)
            .intra_frame_period(IntraFramePeriod::from_num_frames(
                meta.fps.saturating_mul(keyframe_secs),
            ))
            .vui(VuiConfig::bt709());
        let mut encoder =
            Encoder::with_api_config(OpenH264API::from_source(), config).map_err(|e| encoder_error(path, e))?;
        // Before the first frame initialises it: OpenH264 otherwise prints its start-up warnings
        // (one about frame skipping, which we turn off on purpose) to the user's terminal.
        longshot_kernels::h264::silence_encoder_log(&mut encoder).map_err(|e| encoder_error(path, e))?;

        let staged = StagedOutput::new(path)?;
        let file = File::create(staged.partial())
            .map_err(|e| MediaError::io(format!("cannot create {}", staged.partial().display()), e))?;
        let mp4_config = mp4::Mp4Config {
            major_brand: mp4::FourCC::from(*b"isom"),
            minor_version: 512,
            compatible_brands: [b"isom", b"iso2", b"avc1", b"mp41"]
                .into_iter()
                .map(|b| mp4::FourCC::from(*b))
                .collect(),
            timescale: meta.fps * TICKS_PER_FRAME,
        };
        let muxer = mp4::Mp4Writer::write_start(BufWriter::new(file), &mp4_config).map_err(|e| mux_error(path, e))?;

        Ok(Mp4FrameWriter {
            meta,
            staged,
            encoder,
            muxer,
            yuv: Yuv420Frame::new(meta.width as usize, meta.height as usize),
            params: ParameterSets::default(),
            track_added: false,
            pending: None,
            frames_in: 0,
            next_start: 0,
        })
    }

    fn add_track_if_needed(&mut self) -> Result<(), MediaError> {
        if self.track_added {
            return Ok(());
        }
        let (Some(sps), Some(pps)) = (&self.params.sps, &self.params.pps) else {
            return Err(encoder_error(self.staged.target(), "first frame carried no sps/pps"));
        };
        // `mp4`'s avcC builder reads profile and level from bytes 1..=3 of the SPS.
        if sps.len() < 4 {
            return Err(encoder_error(self.staged.target(), "sps shorter than 4 bytes"));
        }
        let track = mp4::TrackConfig {
            track_type: mp4::TrackType::Video,
            timescale: self.meta.fps * TICKS_PER_FRAME,
            language: "und".to_string(),
            media_conf: mp4::MediaConfig::AvcConfig(mp4::AvcConfig {
                width: self.meta.width as u16,
                height: self.meta.height as u16,
                seq_param_set: sps.clone(),
                pic_param_set: pps.clone(),
            }),
        };
        let path = self.staged.target().to_path_buf();
        self.muxer.add_track(&track).map_err(|e| mux_error(&path, e))?;
        self.track_added = true;
        Ok(())
    }

    fn mux(&mut self, sample: &mp4::Mp4Sample) -> Result<(), MediaError> {
        let path = self.staged.target().to_path_buf();
        self.muxer.write_sample(1, sample).map_err(|e| mux_error(&path, e))?;
        Ok(())
    }
}

impl FrameWriter for Mp4FrameWriter {
    fn write_frame(&mut self, rgb: &[u8]) -> Result<(), MediaError> {
        self.meta.check_frame(self.frames_in, rgb)?;
        self.yuv.fill_from_rgb(rgb);
        let millis = self.frames_in * 1000 / u64::from(self.meta.fps);
        let target = self.staged.target();
        let bitstream = self
            .encoder
            .encode_at(&self.yuv, Timestamp::from_millis(millis))
            .map_err(|e| encoder_error(target, e))?;
        let (avcc, is_sync) = bitstream_to_avcc(&bitstream, &mut self.params);
        self.frames_in += 1;
        let ticks = u64::from(TICKS_PER_FRAME);
        if avcc.is_empty() {
            // A skipped frame (should not happen with skipping off): keep the clip's duration.
            if let Some(prev) = self.pending.as_mut() {
                prev.duration += TICKS_PER_FRAME;
                self.next_start += ticks;
            }
            return Ok(());
        }
        self.add_track_if_needed()?;
        if let Some(prev) = self.pending.take() {
            self.mux(&prev)?;
        }
        self.pending = Some(mp4::Mp4Sample {
            start_time: self.next_start,
            duration: TICKS_PER_FRAME,
            rendering_offset: 0,
            is_sync,
            bytes: Bytes::from(avcc),
        });
        self.next_start += ticks;
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<OutputSummary, MediaError> {
        let target = self.staged.target().to_path_buf();
        let Some(last) = self.pending.take() else {
            return Err(MediaError::NoFrames { path: target });
        };
        self.mux(&last)?;
        self.muxer.write_end().map_err(|e| mux_error(&target, e))?;
        let this = *self;
        let mut staged = this.staged;
        let flush_err = |e| MediaError::io(format!("cannot write {}", staged.partial().display()), e);
        let mut buffered = this.muxer.into_writer();
        buffered.flush().map_err(flush_err)?;
        let file = buffered.into_inner().map_err(|e| flush_err(e.into_error()))?;
        // The rename publishes the clip; make sure its bytes are on disk first.
        file.sync_all().map_err(flush_err)?;
        drop(file);
        let bytes = staged.commit()?;
        Ok(OutputSummary {
            format: OutputKind::Mp4,
            path: target,
            frames: this.frames_in,
            duration_secs: this.meta.duration_secs(this.frames_in),
            bytes,
        })
    }
}

fn encoder_error(path: &Path, e: impl std::fmt::Display) -> MediaError {
    MediaError::Encoder {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn mux_error(path: &Path, e: mp4::Error) -> MediaError {
    MediaError::Mux {
        path: PathBuf::from(path),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_bitrate_scales_with_pixels_and_is_clamped() {
        let sd = VideoMeta {
            width: 832,
            height: 480,
            fps: 16,
        };
        assert_eq!(default_bitrate_bps(&sd), 1_597_440);
        let tiny = VideoMeta {
            width: 64,
            height: 48,
            fps: 16,
        };
        assert_eq!(default_bitrate_bps(&tiny), MIN_DEFAULT_BITRATE);
    }
}
