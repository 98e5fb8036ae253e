//! Uploaded inputs (reference images, input videos), kept under `<data dir>/inputs/<sha256>`.
//!
//! An upload streams to a temporary file while it is hashed, is capped at `--max-input-bytes`,
//! and is renamed to its digest only when whole (and, when the client named a digest, only when
//! the bytes hash to it): a name in the store is always a complete input. Reads check the bytes
//! against the name again. Jobs name inputs by digest; the coordinator decodes and checks them at
//! submit ([`InputStore::reference_images`]) and again, from the store, when a run encodes the
//! job's conditioning (nothing decoded is persisted). An input video is a canonical frames file
//! (`longshot_core::inputs::VideoHeader`): checked whole, hash and header, at submit and again
//! when a run starts ([`InputStore::video`]), then read a span at a time for each shard
//! ([`InputStore::video_span`]), never whole into memory. Inputs no job refers to are removed once
//! they are older than the retention period. The blocking calls are marked; call them off the
//! async runtime.

use futures::StreamExt;
use longshot_core::api::{ApiError, BoxStream};
use longshot_core::inputs::{InputDigest, InputInfo, ReferenceImages, VideoHeader, VideoSpan, VIDEO_HEADER_BYTES};
use longshot_core::job::{FieldError, JobInputs};
use longshot_media::decode_rgb8;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

#[derive(Clone, Debug)]
pub struct InputStore {
    root: PathBuf,
    max_bytes: u64,
}

impl InputStore {
    /// The store under `<data_dir>/inputs`, taking inputs of at most `max_bytes`.
    pub fn new(data_dir: &Path, max_bytes: u64) -> Self {
        Self {
            root: data_dir.join("inputs"),
            max_bytes,
        }
    }

    fn path(&self, digest: &InputDigest) -> PathBuf {
        self.root.join(digest.as_str())
    }

    /// Stores an upload (see the module doc).
    pub async fn put(
        &self,
        mut chunks: BoxStream<Result<Vec<u8>, ApiError>>,
        expected: Option<InputDigest>,
    ) -> Result<InputInfo, ApiError> {
        let io = |what: &str, e: std::io::Error| ApiError::Internal(format!("storing an input: {what}: {e}"));
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| io(&self.root.display().to_string(), e))?;
        // An upload may take up to the cap: refuse it up front when the disk cannot hold that,
        // rather than fill the disk the outputs of running jobs need.
        if let Ok(free) = crate::disk_space::available_bytes(&self.root) {
            if free < self.max_bytes {
                return Err(ApiError::FailedPrecondition(format!(
                    "the coordinator's data dir {} has {} free, less than one input may take ({}, \
                     --max-input-bytes); free some space and upload again",
                    self.root.display(),
                    longshot_core::admission::human_bytes(free),
                    longshot_core::admission::human_bytes(self.max_bytes)
                )));
            }
        }
        let tmp = self.root.join(format!(".upload-{:016x}", rand::random::<u64>()));
        let result = async {
            let mut file = tokio::fs::File::create(&tmp)
                .await
                .map_err(|e| io(&tmp.display().to_string(), e))?;
            let (mut hash, mut size) = (Sha256::new(), 0u64);
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                size += chunk.len() as u64;
                if size > self.max_bytes {
                    return Err(ApiError::invalid(
                        "data",
                        format!(
                            "the input is larger than {} bytes, the coordinator's --max-input-bytes",
                            self.max_bytes
                        ),
                    ));
                }
                hash.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| io(&tmp.display().to_string(), e))?;
            }
            if size == 0 {
                return Err(ApiError::invalid("data", "the input is empty"));
            }
            file.sync_all().await.map_err(|e| io(&tmp.display().to_string(), e))?;
            let digest = InputDigest::from_hasher(hash);
            if let Some(want) = expected.filter(|w| *w != digest) {
                return Err(ApiError::DataLoss(format!(
                    "the {size} bytes received hash to {digest}, not to the {want} the client sent: the upload \
                     was damaged on the way; send it again"
                )));
            }
            let path = self.path(&digest);
            tokio::fs::rename(&tmp, &path)
                .await
                .map_err(|e| io(&path.display().to_string(), e))?;
            Ok(InputInfo {
                digest,
                size_bytes: size,
            })
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// The bytes stored as `digest`, checked against it. Blocking. The error names `field`.
    pub fn get(&self, digest: &InputDigest, field: &str) -> Result<Vec<u8>, FieldError> {
        let path = self.path(digest);
        let bytes = std::fs::read(&path).map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "no such input on this coordinator: upload it first (UploadInput; `longshot submit --image` does)"
                    .to_string()
            } else {
                format!("cannot read {}: {e}", path.display())
            };
            FieldError::new(field, format!("{}…: {why}", digest.short()))
        })?;
        if InputDigest::of(&bytes) != *digest {
            return Err(FieldError::new(
                field,
                format!(
                    "{}…: the stored input is damaged (its bytes no longer hash to its name); upload it again",
                    digest.short()
                ),
            ));
        }
        Ok(bytes)
    }

    /// The job's reference images, decoded and checked against the clip's `width × height`;
    /// `None` for a job without any. Blocking (reads and decodes). Every bad input is reported.
    pub fn reference_images(
        &self,
        inputs: &JobInputs,
        width: u32,
        height: u32,
    ) -> Result<Option<ReferenceImages>, Vec<FieldError>> {
        let image = |digest: &InputDigest, field: &str| -> Result<Vec<u8>, FieldError> {
            let bytes = self.get(digest, field)?;
            let img = decode_rgb8(&bytes)
                .map_err(|e| FieldError::new(field, format!("{}…: the input {e}", digest.short())))?;
            if (img.width, img.height) != (width, height) {
                return Err(FieldError::new(
                    field,
                    format!(
                        "is {}x{}, but the clip is {width}x{height}: give the image's size as --width and --height \
                         (multiples of 16), or resize the image to the clip's",
                        img.width, img.height
                    ),
                ));
            }
            Ok(img.data)
        };
        let Some(first) = &inputs.image else { return Ok(None) };
        let first = image(first, "image");
        let last = inputs.last_image.as_ref().map(|d| image(d, "last_image")).transpose();
        match (first, last) {
            (Ok(first), Ok(last)) => Ok(Some(ReferenceImages {
                width,
                height,
                first,
                last,
            })),
            (first, last) => Err(first.err().into_iter().chain(last.err()).collect()),
        }
    }

    /// The job's input video, checked: stored whole (its bytes, streamed, hash to its name), a
    /// frames file, `width × height` with `frames` frames; `None` for a job without one. Blocking
    /// (reads the whole file once).
    pub fn video(
        &self,
        inputs: &JobInputs,
        width: u32,
        height: u32,
        frames: u32,
    ) -> Result<Option<VideoHeader>, FieldError> {
        let Some(digest) = &inputs.video else { return Ok(None) };
        let field = "video";
        let fail = |why: String| FieldError::new(field, format!("{}…: {why}", digest.short()));
        let path = self.path(digest);
        let mut file = std::fs::File::open(&path).map_err(|e| {
            fail(if e.kind() == std::io::ErrorKind::NotFound {
                "no such input on this coordinator: upload it first (UploadInput; `longshot submit --video` does)"
                    .into()
            } else {
                format!("cannot read {}: {e}", path.display())
            })
        })?;
        let mut hasher = Sha256::new();
        let (mut head, mut total, mut buf) = (Vec::new(), 0u64, vec![0u8; 1 << 20]);
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            if head.len() < VIDEO_HEADER_BYTES {
                let take = (VIDEO_HEADER_BYTES - head.len()).min(n);
                head.extend_from_slice(&buf[..take]);
            }
            hasher.update(&buf[..n]);
            total += n as u64;
        }
        if InputDigest::from_hasher(hasher) != *digest {
            return Err(fail(
                "the stored input is damaged (its bytes no longer hash to its name); upload it again".into(),
            ));
        }
        let h = VideoHeader::parse(&head, total).map_err(|m| fail(format!("the input is {m}")))?;
        if (h.width, h.height) != (width, height) {
            return Err(fail(format!(
                "is {}x{}, but the clip is {width}x{height}: video-to-video keeps the video's size (give it as \
                 --width and --height, or leave them out)",
                h.width, h.height
            )));
        }
        if h.frames != frames {
            return Err(fail(format!(
                "has {} frames, but the clip asks for {frames}: video-to-video renders as many frames as the video has",
                h.frames
            )));
        }
        Ok(Some(h))
    }

    /// Frames `frames` of the stored video `digest` (checked by [`Self::video`]), with
    /// `video_frames` set from `header`. Blocking (reads just those frames).
    pub fn video_span(
        &self,
        digest: &InputDigest,
        header: &VideoHeader,
        frames: Range<usize>,
    ) -> Result<VideoSpan, FieldError> {
        let fail = |e: std::io::Error| {
            FieldError::new(
                "video",
                format!("{}…: cannot read frames {frames:?}: {e}", digest.short()),
            )
        };
        let mut file = std::fs::File::open(self.path(digest)).map_err(fail)?;
        file.seek(SeekFrom::Start(header.frame_offset(frames.start)))
            .map_err(fail)?;
        let mut rgb = vec![0u8; frames.len() * header.frame_bytes()];
        file.read_exact(&mut rgb).map_err(fail)?;
        Ok(VideoSpan {
            first_frame: frames.start,
            width: header.width,
            height: header.height,
            video_frames: header.frames as usize,
            rgb,
        })
    }

    /// Removes inputs older than `older_than` that are not in `keep`, and upload leftovers
    /// (temporary files) as old. Blocking. Returns how many files it removed.
    pub fn sweep(&self, keep: &HashSet<InputDigest>, older_than: Duration) -> usize {
        let Ok(dir) = std::fs::read_dir(&self.root) else {
            return 0;
        };
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if InputDigest::try_from(name.clone()).is_ok_and(|d| keep.contains(&d)) {
                continue;
            }
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok());
            if age.is_some_and(|a| a >= older_than) {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!("cannot remove the unused input {}: {e}", entry.path().display()),
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(parts: Vec<Result<Vec<u8>, ApiError>>) -> BoxStream<Result<Vec<u8>, ApiError>> {
        Box::pin(futures::stream::iter(parts))
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = png::Encoder::new(&mut out, width, height);
        e.set_color(png::ColorType::Rgb);
        let data: Vec<u8> = (0..width * height * 3).map(|i| i as u8).collect();
        e.write_header().unwrap().write_image_data(&data).unwrap();
        out
    }

    #[tokio::test]
    async fn uploads_are_content_addressed_capped_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let store = InputStore::new(dir.path(), 10);
        let info = store
            .put(chunks(vec![Ok(b"hello ".to_vec()), Ok(b"you".to_vec())]), None)
            .await
            .unwrap();
        assert_eq!(
            (info.digest.clone(), info.size_bytes),
            (InputDigest::of(b"hello you"), 9)
        );
        assert_eq!(store.get(&info.digest, "image").unwrap(), b"hello you");
        // Too large, a wrong digest, an empty upload, a failing stream: nothing is stored.
        let big = store.put(chunks(vec![Ok(vec![0; 6]), Ok(vec![0; 6])]), None).await;
        assert!(format!("{:?}", big.unwrap_err()).contains("larger than 10 bytes"));
        let wrong = store
            .put(chunks(vec![Ok(b"abc".to_vec())]), Some(InputDigest::of(b"abd")))
            .await;
        assert!(matches!(wrong, Err(ApiError::DataLoss(_))));
        let empty = store.put(chunks(vec![]), None).await;
        assert!(format!("{:?}", empty.unwrap_err()).contains("empty"));
        let broken = store
            .put(
                chunks(vec![Ok(b"ab".to_vec()), Err(ApiError::Unavailable("gone".into()))]),
                None,
            )
            .await;
        assert!(matches!(broken, Err(ApiError::Unavailable(_))));
        let names: Vec<_> = std::fs::read_dir(dir.path().join("inputs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![info.digest.to_string()]);
        // A damaged blob is refused by name.
        std::fs::write(dir.path().join("inputs").join(info.digest.as_str()), b"hello yoU").unwrap();
        assert!(store
            .get(&info.digest, "image")
            .unwrap_err()
            .message
            .contains("damaged"));
        let missing = store.get(&InputDigest::of(b"x"), "last_image").unwrap_err();
        assert!(missing.field == "last_image" && missing.message.contains("upload it first"));
        // A cap no disk holds: every upload is refused up front, naming the free space.
        let huge = InputStore::new(dir.path(), u64::MAX / 2);
        match huge.put(chunks(vec![Ok(b"a".to_vec())]), None).await {
            Err(ApiError::FailedPrecondition(m)) => assert!(m.contains("free, less than one input may take"), "{m}"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_video_is_checked_whole_and_read_a_span_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = InputStore::new(dir.path(), 1 << 20);
        let header = VideoHeader {
            width: 2,
            height: 1,
            frames: 5,
        };
        let mut file = header.encode().to_vec();
        file.extend((0..30u8).collect::<Vec<_>>());
        let digest = store.put(chunks(vec![Ok(file.clone())]), None).await.unwrap().digest;
        let inputs = JobInputs {
            video: Some(digest.clone()),
            ..Default::default()
        };
        assert_eq!(store.video(&JobInputs::default(), 2, 1, 5), Ok(None));
        assert_eq!(store.video(&inputs, 2, 1, 5), Ok(Some(header)));
        let span = store.video_span(&digest, &header, 1..3).unwrap();
        assert_eq!((span.first_frame, span.video_frames, span.frames()), (1, 5, 2));
        assert_eq!(span.frame(2), Some(&[12u8, 13, 14, 15, 16, 17][..]));
        let refusal = |w, h, n| store.video(&inputs, w, h, n).unwrap_err().to_string();
        assert!(
            refusal(4, 1, 5).contains("is 2x1, but the clip is 4x1"),
            "{}",
            refusal(4, 1, 5)
        );
        assert!(refusal(2, 1, 9).contains("has 5 frames, but the clip asks for 9"));
        // Not a frames file, a truncated one, a damaged one, a missing one.
        for (bytes, want) in [
            (b"\x89PNG....".to_vec(), "not a Longshot frames file"),
            (file[..40].to_vec(), "40 bytes, but 5 frames of 2x1 RGB take 50"),
        ] {
            let d = store.put(chunks(vec![Ok(bytes)]), None).await.unwrap().digest;
            let e = store
                .video(
                    &JobInputs {
                        video: Some(d),
                        ..Default::default()
                    },
                    2,
                    1,
                    5,
                )
                .unwrap_err();
            assert!(e.field == "video" && e.message.contains(want), "{e}");
        }
        file[25] ^= 1;
        std::fs::write(dir.path().join("inputs").join(digest.as_str()), &file).unwrap();
        assert!(refusal(2, 1, 5).contains("damaged"));
        std::fs::remove_file(dir.path().join("inputs").join(digest.as_str())).unwrap();
        assert!(refusal(2, 1, 5).contains("no such input"));
    }

    #[tokio::test]
    async fn reference_images_decode_and_must_have_the_clip_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = InputStore::new(dir.path(), 1 << 20);
        let put = |b: Vec<u8>| {
            let store = store.clone();
            async move { store.put(chunks(vec![Ok(b)]), None).await.unwrap().digest }
        };
        let (small, big, text) = (
            put(png(32, 16)).await,
            put(png(48, 16)).await,
            put(b"not an image".to_vec()).await,
        );
        let inputs = JobInputs {
            video: None,
            image: Some(small.clone()),
            last_image: None,
        };
        let r = store.reference_images(&inputs, 32, 16).unwrap().unwrap();
        assert_eq!((r.width, r.height, r.first.len(), r.last), (32, 16, 32 * 16 * 3, None));
        assert_eq!(r.first[..6], [0, 1, 2, 3, 4, 5]);
        assert_eq!(store.reference_images(&JobInputs::default(), 32, 16).unwrap(), None);
        let both_bad = JobInputs {
            video: None,
            image: Some(big),
            last_image: Some(text),
        };
        let e = store.reference_images(&both_bad, 32, 16).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].field == "image" && e[0].message.contains("is 48x16, but the clip is 32x16"));
        assert!(e[1].field == "last_image" && e[1].message.contains("is not a PNG or JPEG image"));
    }

    #[tokio::test]
    async fn the_sweep_keeps_referenced_and_recent_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let store = InputStore::new(dir.path(), 100);
        let a = store.put(chunks(vec![Ok(b"a".to_vec())]), None).await.unwrap().digest;
        let b = store.put(chunks(vec![Ok(b"b".to_vec())]), None).await.unwrap().digest;
        assert_eq!(store.sweep(&HashSet::new(), Duration::from_secs(3600)), 0);
        assert_eq!(store.sweep(&HashSet::from([a.clone()]), Duration::ZERO), 1);
        assert!(store.get(&a, "image").is_ok() && store.get(&b, "image").is_err());
    }
}
