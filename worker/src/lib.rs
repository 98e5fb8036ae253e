//! The worker: registers with the coordinator, runs assigned window ranges through the co-denoising loop with a network overlap exchange, and decodes the frames it owns.
#![forbid(unsafe_code)]
