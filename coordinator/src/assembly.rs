//! Puts a job's decoded frames in order and writes its outputs.
//!
//! Workers decode the frames they own concurrently, so frames arrive interleaved. Frames that are
//! next in order go straight to the encoders; the others are spilled to disk until their turn, so
//! memory stays bounded whatever the clip length. Encoding runs on its own thread, never on the
//! async runtime.
//!
//! Before any file is opened the outputs' estimated size is checked against the space available
//! (`disk_space`); a full disk met while writing is reported as such. An assembly that does not
//! complete (any error, or the job ended without it) removes its partial outputs and spill files,
//! so a failed job leaves nothing that could fill the disk for the next one.

use crate::disk_space::{available_bytes, estimated_bytes, human, is_disk_full};
use longshot_core::api::OutputInfo;
use longshot_core::job::OutputKind;
use longshot_core::output::LATENTS_TENSOR;
use longshot_media::{open_writer, FrameWriter, LatentsWriter, MediaError, VideoMeta};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use thiserror::Error;
use tokio::sync::mpsc;

#[derive(Debug, Error)]
pub enum AssemblyError {
    #[error("frame {index} is out of range: the clip has {total} frames")]
    FrameOutOfRange { index: u32, total: u32 },
    #[error("frame {index} has {got} bytes, expected {want} ({width}x{height} RGB)")]
    FrameSize {
        index: u32,
        got: usize,
        want: usize,
        width: u32,
        height: u32,
    },
    #[error("frame {0} arrived twice")]
    DuplicateFrame(u32),
    #[error("latent frames {first}..{end} are outside the clip's {total} latent frames or have the wrong size")]
    BadLatents { first: u32, end: u32, total: u32 },
    #[error("only {got} of {want} frames arrived")]
    Missing { got: u32, want: u32 },
    #[error("output {0}: {1}")]
    Media(OutputKind, MediaError),
    #[error("output i/o in {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("no space left on device for the outputs in {}: they need about {}, {} available", path.display(), human(*needed), human(*available))]
    NoSpace { path: PathBuf, needed: u64, available: u64 },
    #[error("the assembly thread stopped unexpectedly")]
    Stopped,
}

/// What to assemble.
#[derive(Clone, Debug)]
pub struct AssemblyPlan {
    pub dir: PathBuf,
    pub outputs: Vec<OutputKind>,
    pub meta: VideoMeta,
    pub total_frames: u32,
    /// `[latent frames, channels, height, width]` of the clip, for the latents output.
    pub latent_shape: [usize; 4],
    /// Stored with the latents (model, seed, prompt, ...).
    pub latent_metadata: Vec<(String, String)>,
    /// Workers in the gang: all but the first may deliver frames early, which wait on disk.
    pub workers: usize,
    /// Frames of each shot that gets its own file of every video output (empty: none).
    pub shot_files: Vec<std::ops::Range<u32>>,
}

/// A video output's writer: the whole clip's, or one shot's (its index and frames).
type Writer = (OutputKind, Option<(usize, std::ops::Range<u32>)>, Box<dyn FrameWriter>);

enum Msg {
    Frame { index: u32, rgb8: Vec<u8> },
    Latents { first: u32, frames: u32, data: Vec<f32> },
}

/// Handle to a running assembly.
pub struct Assembler {
    tx: mpsc::Sender<Msg>,
    /// Why the thread stopped, set before its receiver closes, so a sender that finds the channel
    /// closed reports the cause.
    failure: Arc<Mutex<Option<AssemblyError>>>,
    thread: std::thread::JoinHandle<Option<Vec<OutputInfo>>>,
}

impl Assembler {
    pub fn start(plan: AssemblyPlan) -> Result<Self, AssemblyError> {
        std::fs::create_dir_all(&plan.dir).map_err(io(&plan.dir))?;
        let needed = estimated_bytes(&plan);
        let checked = available_bytes(&plan.dir).map_err(io(&plan.dir)).and_then(|available| {
            if needed > available {
                return Err(AssemblyError::NoSpace {
                    path: plan.dir.clone(),
                    needed,
                    available,
                });
            }
            Ok(())
        });
        let mut writers: Vec<Writer> = Vec::new();
        let opened = checked.and_then(|()| {
            for &kind in plan.outputs.iter().filter(|k| k.is_video()) {
                let shots = plan.shot_files.iter().cloned().enumerate().map(Some);
                for shot in std::iter::once(None).chain(shots) {
                    let path = kind.job_path(&plan.dir, shot.as_ref().map(|(i, _)| *i));
                    let w = open_writer(kind, &path, plan.meta).map_err(|e| AssemblyError::Media(kind, e))?;
                    writers.push((kind, shot, w));
                }
            }
            Ok(())
        });
        if let Err(e) = opened {
            drop(writers);
            remove_outputs(&plan);
            return Err(disk_full_named(e, &plan));
        }
        // A small buffer: the encoder thread sets the pace, workers wait on gRPC flow control.
        let (tx, mut rx) = mpsc::channel(32);
        let failure = Arc::new(Mutex::new(None));
        let slot = failure.clone();
        let thread = std::thread::Builder::new()
            .name("assembly".into())
            .spawn(move || {
                let result = run(&plan, writers, &mut rx);
                let outputs = match result {
                    Ok(outputs) => Some(outputs),
                    Err(e) => {
                        remove_outputs(&plan);
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(disk_full_named(e, &plan));
                        None
                    }
                };
                drop(rx);
                outputs
            })
            .map_err(|source| AssemblyError::Io {
                path: PathBuf::from("<thread>"),
                source,
            })?;
        Ok(Self { tx, failure, thread })
    }

    /// Why the assembly thread stopped.
    fn failure(&self) -> AssemblyError {
        let taken = self.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        taken.unwrap_or(AssemblyError::Stopped)
    }

    pub async fn frame(&self, index: u32, rgb8: Vec<u8>) -> Result<(), AssemblyError> {
        match self.tx.send(Msg::Frame { index, rgb8 }).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failure()),
        }
    }

    pub async fn latents(&self, first: u32, frames: u32, data: Vec<f32>) -> Result<(), AssemblyError> {
        match self.tx.send(Msg::Latents { first, frames, data }).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failure()),
        }
    }

    /// Waits for every frame to be encoded and returns the outputs.
    pub async fn finish(self) -> Result<Vec<OutputInfo>, AssemblyError> {
        let Assembler { tx, failure, thread } = self;
        drop(tx);
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        match joined {
            Ok(Ok(Some(outputs))) => Ok(outputs),
            _ => Err(failure
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or(AssemblyError::Stopped)),
        }
    }
}

/// A full disk, whatever error it surfaced as, becomes [`AssemblyError::NoSpace`] naming the job's
/// directory, what its outputs need and what is left.
fn disk_full_named(e: AssemblyError, plan: &AssemblyPlan) -> AssemblyError {
    if matches!(e, AssemblyError::NoSpace { .. }) || !is_disk_full(&e) {
        return e;
    }
    AssemblyError::NoSpace {
        path: plan.dir.clone(),
        needed: estimated_bytes(plan),
        available: available_bytes(&plan.dir).unwrap_or(0),
    }
}

/// Removes what an incomplete assembly wrote: the outputs (the writers remove their `.partial`
/// files when dropped), the spill directory, and the job directory when that leaves it empty.
fn remove_outputs(plan: &AssemblyPlan) {
    for &kind in &plan.outputs {
        let shots = (0..plan.shot_files.len()).map(Some);
        for shot in std::iter::once(None).chain(shots) {
            let p = kind.job_path(&plan.dir, shot);
            // Best effort: the job is failing already, and a missing file is the goal.
            let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
        }
    }
    let _ = std::fs::remove_dir_all(plan.dir.join(".spill"));
    let _ = std::fs::remove_dir(&plan.dir);
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AssemblyError + '_ {
    move |source| AssemblyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn run(
    plan: &AssemblyPlan,
    mut writers: Vec<Writer>,
    rx: &mut mpsc::Receiver<Msg>,
) -> Result<Vec<OutputInfo>, AssemblyError> {
    let spill = plan.dir.join(".spill");
    std::fs::create_dir_all(&spill).map_err(io(&spill))?;
    let frame_len = plan.meta.width as usize * plan.meta.height as usize * 3;
    let [lf, lc, lh, lw] = plan.latent_shape;
    let latent_frame_len = lc * lh * lw;
    // Written piece by piece as workers deliver them: the clip's latents are never in memory.
    let mut latents = if plan.outputs.contains(&OutputKind::Latents) {
        let p = plan.dir.join(OutputKind::Latents.file_name());
        let metadata = plan.latent_metadata.iter().cloned().collect();
        let w = LatentsWriter::create(&p, LATENTS_TENSOR, &plan.latent_shape, &metadata)
            .map_err(|e| AssemblyError::Media(OutputKind::Latents, e))?;
        Some(w)
    } else {
        None
    };
    let mut next = 0u32;
    let mut spilled = BTreeSet::new();
    let mut seen = BTreeMap::new();
    // Frame `index` goes to every whole-clip writer and to its shot's.
    let write_all = |index: u32, rgb: &[u8], writers: &mut Vec<Writer>| -> Result<(), AssemblyError> {
        for (kind, shot, w) in writers.iter_mut() {
            if shot.as_ref().is_none_or(|(_, frames)| frames.contains(&index)) {
                w.write_frame(rgb).map_err(|e| AssemblyError::Media(*kind, e))?;
            }
        }
        Ok(())
    };
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Frame { index, rgb8 } => {
                if index >= plan.total_frames {
                    return Err(AssemblyError::FrameOutOfRange {
                        index,
                        total: plan.total_frames,
                    });
                }
                if rgb8.len() != frame_len {
                    let (width, height) = (plan.meta.width, plan.meta.height);
                    return Err(AssemblyError::FrameSize {
                        index,
                        got: rgb8.len(),
                        want: frame_len,
                        width,
                        height,
                    });
                }
                if index < next || seen.insert(index, ()).is_some() {
                    return Err(AssemblyError::DuplicateFrame(index));
                }
                if index != next {
                    if writers.is_empty() {
                        // No video output: frames are only counted, so their order does not matter.
                        continue;
                    }
                    let p = spill.join(format!("{index}.rgb"));
                    std::fs::write(&p, &rgb8).map_err(io(&p))?;
                    spilled.insert(index);
                    continue;
                }
                write_all(index, &rgb8, &mut writers)?;
                next += 1;
                while spilled.remove(&next) {
                    let p = spill.join(format!("{next}.rgb"));
                    let data = std::fs::read(&p).map_err(io(&p))?;
                    write_all(next, &data, &mut writers)?;
                    std::fs::remove_file(&p).map_err(io(&p))?;
                    next += 1;
                }
            }
            Msg::Latents { first, frames, data } => {
                let end = first.saturating_add(frames);
                if end as usize > lf || data.len() != frames as usize * latent_frame_len {
                    return Err(AssemblyError::BadLatents {
                        first,
                        end,
                        total: lf as u32,
                    });
                }
                if let Some(w) = latents.as_mut() {
                    w.write_frames(first as usize, &data)
                        .map_err(|e| AssemblyError::Media(OutputKind::Latents, e))?;
                }
            }
        }
    }
    // Every index in 0..total arrived exactly once (duplicates and out-of-range ones were refused),
    // so with a video output every frame has also been written, in order.
    let arrived = seen.len() as u32;
    if arrived != plan.total_frames {
        return Err(AssemblyError::Missing {
            got: arrived,
            want: plan.total_frames,
        });
    }
    let _ = std::fs::remove_dir_all(&spill);
    let mut outputs = Vec::new();
    for (kind, shot, w) in writers {
        let summary = w.finish().map_err(|e| AssemblyError::Media(kind, e))?;
        let path = kind.job_path(&plan.dir, shot.map(|(i, _)| i));
        outputs.push(OutputInfo {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            format: kind,
            size_bytes: summary.bytes,
        });
    }
    if let Some(w) = latents {
        let size = w.finish().map_err(|e| AssemblyError::Media(OutputKind::Latents, e))?;
        outputs.push(OutputInfo {
            name: OutputKind::Latents.file_name().into(),
            format: OutputKind::Latents,
            size_bytes: size,
        });
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(dir: &Path, outputs: Vec<OutputKind>) -> AssemblyPlan {
        AssemblyPlan {
            dir: dir.to_path_buf(),
            outputs,
            meta: VideoMeta {
                width: 16,
                height: 16,
                fps: 16,
            },
            total_frames: 5,
            latent_shape: [2, 1, 2, 2],
            latent_metadata: Vec::new(),
            workers: 2,
            shot_files: Vec::new(),
        }
    }

    #[tokio::test]
    async fn without_a_video_output_frames_are_counted_not_spilled() {
        let dir = tempfile::tempdir().unwrap();
        let a = Assembler::start(plan(dir.path(), vec![OutputKind::Latents])).unwrap();
        a.latents(0, 2, vec![0.5; 8]).await.unwrap();
        for index in [4, 3, 2, 1, 0] {
            a.frame(index, vec![7; 16 * 16 * 3]).await.unwrap();
        }
        let outputs = a.finish().await.unwrap();
        assert_eq!(
            outputs.iter().map(|o| o.format).collect::<Vec<_>>(),
            [OutputKind::Latents]
        );
        assert!(!dir.path().join(".spill").exists());

        let a = Assembler::start(plan(dir.path(), vec![OutputKind::Latents])).unwrap();
        for index in [4, 2, 0] {
            a.frame(index, vec![7; 16 * 16 * 3]).await.unwrap();
        }
        let err = a.finish().await.unwrap_err().to_string();
        assert_eq!(err, "only 3 of 5 frames arrived");
    }

    #[tokio::test]
    async fn out_of_order_frames_wait_on_disk_for_a_video_output() {
        let dir = tempfile::tempdir().unwrap();
        let a = Assembler::start(plan(dir.path(), vec![OutputKind::Png])).unwrap();
        for index in [1, 2, 0, 4, 3] {
            a.frame(index, vec![index as u8; 16 * 16 * 3]).await.unwrap();
        }
        a.finish().await.unwrap();
        let pngs = std::fs::read_dir(dir.path().join(OutputKind::Png.file_name()))
            .unwrap()
            .count();
        assert_eq!(pngs, 5);
    }
}
