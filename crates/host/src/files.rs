//! Where uploaded files live (Mattermost's `FileSettings`, local driver): a directory,
//! by default the data dir's `files/`. Everything goes through [`FileBackend`] so that
//! an S3-compatible store can take its place. In a cluster every node must see the
//! same directory (as Mattermost's local driver needs a shared file system).
//!
//! Layout, as Mattermost's: `data/<yyyymmdd>/teams/noteam/channels/<channel>/users/
//! <user>/<file id>/<name>` for files, `uploads/<upload id>` while an upload runs.

use std::path::{Component, Path, PathBuf};

use tokio::io::AsyncWriteExt;

/// Mattermost's `FileSettings.MaxFileSize` default: 100 MiB.
pub const DEFAULT_MAX_FILE_SIZE: i64 = 100 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("invalid file path")]
    BadPath,
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// A file store: relative paths in, bytes out.
#[async_trait::async_trait]
pub trait FileBackend: Send + Sync {
    /// Appends to `path` (created if missing); returns its new size.
    async fn append(&self, path: &str, data: &[u8]) -> Result<u64, FileError>;
    /// Moves a finished upload to its final path.
    async fn rename(&self, from: &str, to: &str) -> Result<(), FileError>;
    /// Opens a file for reading, with its size.
    async fn open(&self, path: &str) -> Result<(tokio::fs::File, u64), FileError>;
    async fn remove(&self, path: &str) -> Result<(), FileError>;
}

/// Files in a local directory.
pub struct LocalFiles {
    root: PathBuf,
}

impl LocalFiles {
    pub fn new(root: PathBuf) -> LocalFiles {
        LocalFiles { root }
    }

    /// `path` under the root; anything that could leave it is refused.
    fn resolve(&self, path: &str) -> Result<PathBuf, FileError> {
        let p = Path::new(path);
        if path.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(FileError::BadPath);
        }
        Ok(self.root.join(p))
    }

    async fn parent_dir(p: &Path) -> Result<(), FileError> {
        if let Some(dir) = p.parent() {
            tokio::fs::create_dir_all(dir).await?;
            // Users' files are the host's alone.
            let _ = super::make_private(dir, 0o700);
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl FileBackend for LocalFiles {
    async fn append(&self, path: &str, data: &[u8]) -> Result<u64, FileError> {
        let p = self.resolve(path)?;
        Self::parent_dir(&p).await?;
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&p)
            .await?;
        f.write_all(data).await?;
        f.flush().await?;
        Ok(f.metadata().await?.len())
    }

    async fn rename(&self, from: &str, to: &str) -> Result<(), FileError> {
        let (a, b) = (self.resolve(from)?, self.resolve(to)?);
        Self::parent_dir(&b).await?;
        Ok(tokio::fs::rename(a, b).await?)
    }

    async fn open(&self, path: &str) -> Result<(tokio::fs::File, u64), FileError> {
        let f = tokio::fs::File::open(self.resolve(path)?).await?;
        let len = f.metadata().await?.len();
        Ok((f, len))
    }

    async fn remove(&self, path: &str) -> Result<(), FileError> {
        match tokio::fs::remove_file(self.resolve(path)?).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// A file name as stored: the last path part, no control characters, at most 255
/// bytes (Mattermost keeps the name the client gave, minus any directory).
pub fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut s: String = base.chars().filter(|c| !c.is_control()).collect();
    while s.len() > 255 {
        s.pop();
    }
    if s.is_empty() || s == "." || s == ".." {
        "file".into()
    } else {
        s
    }
}

/// The extension Mattermost records (lower case, no dot).
pub fn extension(name: &str) -> String {
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => ext.to_ascii_lowercase(),
        _ => String::new(),
    }
}

/// The MIME type clients get for a file, by extension (what Mattermost's
/// `mime.TypeByExtension` gives for the types calls produce and common ones).
pub fn mime_type(ext: &str) -> &'static str {
    match ext {
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mp4" => "video/mp4",
        "ogg" | "opus" => "audio/ogg",
        "vtt" => "text/vtt",
        "txt" => "text/plain",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

/// Where a file of `channel_id` by `user_id` is kept.
pub fn file_path(day: &str, channel_id: &str, user_id: &str, file_id: &str, name: &str) -> String {
    format!("data/{day}/teams/noteam/channels/{channel_id}/users/{user_id}/{file_id}/{name}")
}

pub fn upload_path(upload_id: &str) -> String {
    format!("uploads/{upload_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_store() {
        let f = LocalFiles::new(PathBuf::from("/tmp/x"));
        assert!(f.resolve("../etc/passwd").is_err());
        assert!(f.resolve("/etc/passwd").is_err());
        assert!(f.resolve("a/./b").is_ok());
        assert!(f.resolve("a/../b").is_err());
        assert_eq!(clean_name("../../x/y.webm"), "y.webm");
        assert_eq!(clean_name(".."), "file");
        assert_eq!(clean_name("a\nb.txt"), "ab.txt");
        assert_eq!(extension("Call_x.WebM"), "webm");
        assert_eq!(extension(".hidden"), "");
    }

    #[tokio::test]
    async fn appends_renames_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let f = LocalFiles::new(dir.path().to_path_buf());
        assert_eq!(f.append("uploads/u1", b"abc").await.unwrap(), 3);
        assert_eq!(f.append("uploads/u1", b"de").await.unwrap(), 5);
        f.rename("uploads/u1", "data/d/f1/x.bin").await.unwrap();
        let (_, len) = f.open("data/d/f1/x.bin").await.unwrap();
        assert_eq!(len, 5);
        assert!(f.open("uploads/u1").await.is_err());
        f.remove("data/d/f1/x.bin").await.unwrap();
        f.remove("data/d/f1/x.bin").await.unwrap();
    }
}
