//! Uploads in parts (Mattermost's upload sessions): a session says which file is
//! coming and how large it is; data is appended until it is whole, then the file
//! gets its `FileInfo` and waits for a post to attach it.

use calls_wire::ids::{new_id, now_ms};
use serde_json::Value;

use super::files::{self, FileError};
use super::store::{FileInfo, StoreError, UploadSession};
use super::HostCtx;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("invalid upload type")]
    BadType,
    #[error("invalid channel")]
    BadChannel,
    #[error("file size must be positive")]
    BadSize,
    #[error("unable to upload file: the file is larger than the maximum of {0} bytes")]
    TooLarge(i64),
    #[error("upload data exceeds the file size")]
    Overflow,
    #[error("upload session not found")]
    NotFound,
    #[error("another upload to this session is in progress")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    File(#[from] FileError),
}

impl HostCtx {
    /// `FileSettings.MaxFileSize` of the configuration (Mattermost's default if unset).
    pub fn max_file_size(&self) -> i64 {
        self.config
            .read()
            .pointer("/FileSettings/MaxFileSize")
            .and_then(Value::as_i64)
            .filter(|n| *n > 0)
            .unwrap_or(files::DEFAULT_MAX_FILE_SIZE)
    }
}

/// Starts an upload of `file_size` bytes named `filename` into `channel_id`, by `user_id`.
pub async fn create(
    host: &HostCtx,
    upload_type: &str,
    user_id: &str,
    channel_id: &str,
    filename: &str,
    file_size: i64,
) -> Result<UploadSession, UploadError> {
    if upload_type != "attachment" {
        return Err(UploadError::BadType);
    }
    if file_size <= 0 {
        return Err(UploadError::BadSize);
    }
    let max = host.max_file_size();
    if file_size > max {
        return Err(UploadError::TooLarge(max));
    }
    match host.store.channel(channel_id).await? {
        Some(c) if c.delete_at == 0 => {}
        _ => return Err(UploadError::BadChannel),
    }
    let id = new_id();
    let us = UploadSession {
        path: files::upload_path(&id),
        id,
        upload_type: upload_type.into(),
        create_at: now_ms(),
        user_id: user_id.into(),
        channel_id: channel_id.into(),
        filename: files::clean_name(filename),
        file_size,
        file_offset: 0,
    };
    host.store.create_upload(&us).await?;
    Ok(us)
}

pub async fn session(host: &HostCtx, id: &str) -> Result<UploadSession, UploadError> {
    host.store.upload(id).await?.ok_or(UploadError::NotFound)
}

/// The right to write to an upload session, held by one request at a time.
pub struct Writing<'a> {
    host: &'a HostCtx,
    id: String,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.host.uploading.lock().remove(&self.id);
    }
}

/// Takes the session for one request (Mattermost refuses a concurrent upload).
pub fn begin<'a>(host: &'a HostCtx, id: &str) -> Result<Writing<'a>, UploadError> {
    if !host.uploading.lock().insert(id.to_string()) {
        return Err(UploadError::Busy);
    }
    Ok(Writing {
        host,
        id: id.to_string(),
    })
}

/// Appends one part; the session's offset follows what is stored.
pub async fn append(
    host: &HostCtx,
    us: &mut UploadSession,
    data: &[u8],
) -> Result<(), UploadError> {
    if us.file_offset + data.len() as i64 > us.file_size {
        return Err(UploadError::Overflow);
    }
    if data.is_empty() {
        return Ok(());
    }
    let len = host.files.append(&us.path, data).await? as i64;
    if len != us.file_offset + data.len() as i64 {
        // The stored part and the session disagree: the session is unusable.
        return Err(UploadError::Overflow);
    }
    us.file_offset = len;
    host.store.set_upload_offset(&us.id, us.file_offset).await?;
    Ok(())
}

/// A whole upload becomes a file: moved to its place, described, the session gone.
pub async fn finish(host: &HostCtx, us: &UploadSession) -> Result<FileInfo, UploadError> {
    let id = new_id();
    let day = chrono_day(now_ms());
    let path = files::file_path(&day, &us.channel_id, &us.user_id, &id, &us.filename);
    host.files.rename(&us.path, &path).await?;
    let ext = files::extension(&us.filename);
    let now = now_ms();
    let info = FileInfo {
        id,
        creator_id: us.user_id.clone(),
        post_id: String::new(),
        channel_id: us.channel_id.clone(),
        create_at: now,
        update_at: now,
        delete_at: 0,
        path,
        name: us.filename.clone(),
        mime_type: files::mime_type(&ext).into(),
        extension: ext,
        size: us.file_offset,
    };
    host.store.create_file_info(&info).await?;
    host.store.delete_upload(&us.id).await?;
    Ok(info)
}

/// `yyyymmdd` (UTC) of a Unix ms time, as Mattermost's file paths.
fn chrono_day(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y%m%d")
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn days_are_civil_dates() {
        assert_eq!(super::chrono_day(0), "19700101");
        assert_eq!(super::chrono_day(951_782_400_000), "20000229");
        assert_eq!(super::chrono_day(1_796_255_999_999), "20261202");
    }
}
