//! A finished job's output files: which files make up an output, and streaming them to a client.

use futures::stream::{self, StreamExt};
use longshot_core::api::{ApiError, BoxStream, OutputChunk};
use longshot_core::job::OutputKind;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

/// Bytes per chunk sent to a client.
const CHUNK: usize = 1 << 20;

/// The files of output `kind` (or of one shot's, [`OutputKind::shot_path`]) in a job directory,
/// as (name sent to the client, path): one file, or for a PNG sequence every frame in order.
pub fn output_files(job_dir: &Path, kind: OutputKind, shot: Option<u32>) -> Result<Vec<(String, PathBuf)>, ApiError> {
    let path = kind.job_path(job_dir, shot.map(|s| s as usize));
    if kind != OutputKind::Png {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        return Ok(vec![(name, path)]);
    }
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .map_err(|e| ApiError::Internal(format!("reading {}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    Ok(names.into_iter().map(|n| (n.clone(), path.join(n))).collect())
}

/// Streams files in 1 MiB chunks, one file after another, reading as the client consumes.
pub fn file_chunks(files: Vec<(String, PathBuf)>) -> BoxStream<Result<OutputChunk, ApiError>> {
    let per_file = |(name, path): (String, PathBuf)| {
        stream::unfold(Some((None::<(tokio::fs::File, u64)>, 0u64)), move |st| {
            let (name, path) = (name.clone(), path.clone());
            async move {
                let (file, offset) = st?;
                let (mut f, total) = match file {
                    Some(ft) => ft,
                    None => match open(&path).await {
                        Ok(ft) => ft,
                        Err(e) => return Some((Err(e), None)),
                    },
                };
                let mut buf = vec![0u8; CHUNK];
                let n = match f.read(&mut buf).await {
                    Ok(n) => n,
                    Err(e) => {
                        return Some((
                            Err(ApiError::Internal(format!("reading {}: {e}", path.display()))),
                            None,
                        ))
                    }
                };
                if n == 0 && offset > 0 {
                    return None;
                }
                buf.truncate(n);
                let chunk = OutputChunk {
                    name,
                    offset,
                    total_size: total,
                    data: buf,
                };
                // An empty file still yields one (empty) chunk so the client creates it.
                let next = (n > 0).then_some((Some((f, total)), offset + n as u64));
                Some((Ok(chunk), next))
            }
        })
    };
    Box::pin(stream::iter(files).flat_map(per_file))
}

async fn open(path: &Path) -> Result<(tokio::fs::File, u64), ApiError> {
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| ApiError::Internal(format!("opening {}: {e}", path.display())))?;
    let total = f
        .metadata()
        .await
        .map_err(|e| ApiError::Internal(format!("reading {}: {e}", path.display())))?
        .len();
    Ok((f, total))
}
