//! The one OpenH264 option the `openh264` crate cannot set safely in time: its trace level.
//!
//! The crate applies `EncoderConfig::debug` after `InitializeExt`, but initialisation itself logs
//! to stderr at OpenH264's default level (a `[OpenH264] this = 0x…, Warning: bEnableFrameSkip = 0…`
//! line on every encoder we start, since we never let it skip frames). OpenH264 accepts the trace
//! level before initialisation, through the raw API; this module is that call.

use openh264::encoder::Encoder;
use openh264_sys2::{ENCODER_OPTION_TRACE_LEVEL, WELS_LOG_QUIET};

/// Silences `encoder`'s own log for its whole life. Call before the first frame is encoded (which
/// is when the crate initialises the encoder). Failures still surface as the crate's error codes.
pub fn silence_encoder_log(encoder: &mut Encoder) -> Result<(), String> {
    let mut level = WELS_LOG_QUIET;
    // SAFETY: `raw_api` only requires that we set no parameter the crate relies on; the trace level
    // is not one (the crate sets it to QUIET itself once initialised). `SetOption` with
    // ENCODER_OPTION_TRACE_LEVEL is accepted before `InitializeExt` (welsEncoderExt.cpp lets it
    // through the "init expected" check) and reads one `int` through the pointer during the call;
    // `level` outlives the call.
    let rc = unsafe {
        encoder
            .raw_api()
            .set_option(ENCODER_OPTION_TRACE_LEVEL, std::ptr::from_mut(&mut level).cast())
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("OpenH264 refused its trace level (SetOption returned {rc})"))
    }
}
