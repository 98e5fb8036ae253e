//! The outputs a job can ask for: the one table of names, file names and extensions.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The tensor's name inside the latents output (safetensors).
pub const LATENTS_TENSOR: &str = "latents";

/// An output a job can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// H.264 yuv420p in `.mp4`; built in, no ffmpeg needed.
    Mp4,
    /// ProRes 422 HQ yuv422p10le in `.mov`; needs ffmpeg on PATH.
    Prores,
    /// A directory of lossless RGB PNGs.
    Png,
    /// The final latents as a safetensors f32 tensor.
    Latents,
}

impl OutputKind {
    pub const ALL: [OutputKind; 4] = [
        OutputKind::Mp4,
        OutputKind::Prores,
        OutputKind::Png,
        OutputKind::Latents,
    ];

    /// The name jobs, flags and the wire use.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputKind::Mp4 => "mp4",
            OutputKind::Prores => "prores",
            OutputKind::Png => "png",
            OutputKind::Latents => "latents",
        }
    }

    /// The file extension, or `None` for a directory (PNG frames).
    pub fn extension(self) -> Option<&'static str> {
        match self {
            OutputKind::Mp4 => Some("mp4"),
            OutputKind::Prores => Some("mov"),
            OutputKind::Png => None,
            OutputKind::Latents => Some("safetensors"),
        }
    }

    /// The output's name inside a job's output directory.
    pub fn file_name(self) -> &'static str {
        match self {
            OutputKind::Mp4 => "clip.mp4",
            OutputKind::Prores => "clip.mov",
            OutputKind::Png => "frames",
            OutputKind::Latents => "latents.safetensors",
        }
    }

    /// The output a path names by its extension (none: a PNG directory); `None` if unknown.
    pub fn from_path(path: &Path) -> Option<OutputKind> {
        let ext = path.extension().map(|e| e.to_str().map(str::to_ascii_lowercase));
        match ext {
            None => Some(OutputKind::Png),
            Some(Some(ext)) => Self::ALL.into_iter().find(|k| k.extension() == Some(ext.as_str())),
            Some(None) => None,
        }
    }

    /// Where this output goes when `path` names another one: beside it, with this extension
    /// (`.frames` for PNG directories).
    pub fn beside(self, path: &Path) -> PathBuf {
        path.with_extension(self.extension().unwrap_or("frames"))
    }

    /// This output's file in job directory `dir`: the clip's, or shot `shot`'s own.
    pub fn job_path(self, dir: &Path, shot: Option<usize>) -> PathBuf {
        let whole = dir.join(self.file_name());
        match shot {
            Some(s) => self.shot_path(&whole, s),
            None => whole,
        }
    }

    /// Where shot `shot`'s own file of this output goes, given the whole clip's `path`:
    /// `clip.mp4` → `clip.shot-00.mp4`, a PNG directory `frames` → `frames.shot-00`. A job's own
    /// files are this applied to [`OutputKind::file_name`].
    pub fn shot_path(self, path: &Path, shot: usize) -> PathBuf {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let name = match (self.extension(), self) {
            (_, OutputKind::Png) => format!(
                "{}.shot-{shot:02}",
                path.file_name().map(|s| s.to_string_lossy()).unwrap_or_default()
            ),
            (Some(ext), _) => format!("{stem}.shot-{shot:02}.{ext}"),
            (None, _) => format!("{stem}.shot-{shot:02}"),
        };
        path.with_file_name(name)
    }

    /// Video formats go through a frame writer; latents are written from the denoised tensor.
    pub fn is_video(self) -> bool {
        self != OutputKind::Latents
    }

    /// Whether writing it needs the `ffmpeg` program.
    pub fn needs_ffmpeg(self) -> bool {
        self == OutputKind::Prores
    }
}

impl fmt::Display for OutputKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutputKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let name = s.trim().to_ascii_lowercase();
        Self::ALL.into_iter().find(|k| k.as_str() == name).ok_or_else(|| {
            let all: Vec<&str> = Self::ALL.iter().map(|k| k.as_str()).collect();
            format!("output format {s:?} is not one of: {}", all.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_list_the_allowed() {
        for kind in OutputKind::ALL {
            assert_eq!(kind.to_string().parse::<OutputKind>(), Ok(kind));
            assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{kind}\""));
        }
        assert_eq!(" MP4 ".parse::<OutputKind>(), Ok(OutputKind::Mp4));
        assert_eq!(
            "gif".parse::<OutputKind>().unwrap_err(),
            "output format \"gif\" is not one of: mp4, prores, png, latents"
        );
    }

    #[test]
    fn shot_files_sit_beside_the_clip_with_the_shot_number() {
        let p = |kind: OutputKind, path: &str, shot| kind.shot_path(Path::new(path), shot);
        assert_eq!(p(OutputKind::Mp4, "out/clip.mp4", 0), Path::new("out/clip.shot-00.mp4"));
        assert_eq!(p(OutputKind::Prores, "clip.mov", 12), Path::new("clip.shot-12.mov"));
        assert_eq!(p(OutputKind::Png, "out/frames", 3), Path::new("out/frames.shot-03"));
        assert_eq!(
            p(OutputKind::Png, "out/clip.frames", 3),
            Path::new("out/clip.frames.shot-03")
        );
    }

    #[test]
    fn paths_name_their_output() {
        let cases = [
            ("a/clip.mp4", Some(OutputKind::Mp4)),
            ("x.MOV", Some(OutputKind::Prores)),
            ("frames", Some(OutputKind::Png)),
        ];
        for (path, kind) in cases {
            assert_eq!(OutputKind::from_path(Path::new(path)), kind, "{path}");
        }
        assert_eq!(
            OutputKind::from_path(Path::new("z.safetensors")),
            Some(OutputKind::Latents)
        );
        assert_eq!(OutputKind::from_path(Path::new("clip.gif")), None);
        for kind in OutputKind::ALL {
            // What `beside` names, `from_path` reads back (a `.frames` directory has an extension,
            // so it is PNG only by `--format`).
            let p = kind.beside(Path::new("out/clip.mp4"));
            if kind != OutputKind::Png {
                assert_eq!(OutputKind::from_path(&p), Some(kind), "{}", p.display());
            }
        }
        assert_eq!(
            OutputKind::Png.beside(Path::new("out/clip.mp4")),
            Path::new("out/clip.frames")
        );
    }
}
