//! Integration tests for every output format, checked with real tools (ffprobe, ffmpeg) and
//! real decoders; one binary so the OpenH264 static library is linked once.

mod common;
mod latents;
mod mp4;
mod png_sequence;
mod prores;
