//! The chart cache: remote chart archives kept between renders, so a Release reconciled every
//! few minutes does not download its chart every time. An entry is keyed by repository URL (or
//! OCI reference), chart name and exact version, and stores the archive with its SHA-256; a hit
//! is re-hashed and must match what was stored and, for HTTP repositories, the digest the
//! repository's `index.yaml` lists for that version now (a re-published version is pulled
//! again). The directory is bounded: the least recently used archives are removed once the
//! total passes the limit.
//!
//! Files are written to a temporary name and renamed into place, so concurrent renders never
//! see half an archive; a hit is copied into the render's private helm home before helm reads
//! it, so eviction by another render cannot pull it away mid-render. Everything is 0600 in a
//! 0700 directory (private charts stay private).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::{Error, Result};

/// Default bound of the cache directory.
pub const DEFAULT_MAX_BYTES: u64 = 512 * 1024 * 1024;

/// A bounded directory of chart archives.
#[derive(Debug)]
pub struct ChartCache {
    dir: PathBuf,
    max_bytes: u64,
    /// Serialises eviction (lookups and stores are safe without it).
    evicting: std::sync::Mutex<()>,
}

/// What identifies one cached chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// The repository URL, or the OCI reference without tag.
    pub source: String,
    pub chart: String,
    /// An exact version (never a range).
    pub version: String,
}

impl CacheKey {
    /// The entry's file stem: a hash, so no part of the key (repository-controlled text) ever
    /// becomes a path.
    fn stem(&self) -> String {
        let text = format!("{}\0{}\0{}", self.source, self.chart, self.version);
        hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()).as_ref())
    }
}

/// The hex SHA-256 of `bytes` (the form `index.yaml` digests have).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

impl ChartCache {
    /// A cache in `dir` (created 0700 if missing) holding at most `max_bytes` of archives.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|err| io_err(&dir, err))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|err| io_err(&dir, err))?;
        }
        Ok(Self {
            dir,
            max_bytes,
            evicting: std::sync::Mutex::new(()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn archive(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.tgz", key.stem()))
    }

    fn digest_file(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.sha256", key.stem()))
    }

    /// The cached archive for `key`, copied to `dest/NAME-VERSION.tgz`, if there is one whose
    /// bytes still hash to the stored digest and, when `expected` is given, to that digest too.
    /// A corrupt or outdated entry is removed.
    pub fn fetch_into(
        &self,
        key: &CacheKey,
        expected: Option<&str>,
        dest: &Path,
    ) -> Option<PathBuf> {
        let archive = self.archive(key);
        let bytes = std::fs::read(&archive).ok()?;
        let stored = std::fs::read_to_string(self.digest_file(key)).ok()?;
        let actual = sha256_hex(&bytes);
        let fits = actual == stored.trim()
            && expected.is_none_or(|e| {
                e.trim_start_matches("sha256:")
                    .eq_ignore_ascii_case(&actual)
            });
        if !fits {
            tracing::debug!(chart = %key.chart, version = %key.version, "cached chart outdated or corrupt; pulling again");
            let _ = std::fs::remove_file(&archive);
            let _ = std::fs::remove_file(self.digest_file(key));
            return None;
        }
        let target = dest.join(format!("{}-{}.tgz", key.chart, key.version));
        write_private(&target, &bytes).ok()?;
        // Recently used: evicted last.
        if let Ok(file) = std::fs::File::options().append(true).open(&archive) {
            let _ = file.set_modified(SystemTime::now());
        }
        Some(target)
    }

    /// Store `archive` (already checked) under `key`; returns its digest. Older entries are
    /// evicted beyond the size bound.
    pub fn store(&self, key: &CacheKey, archive: &Path) -> Result<String> {
        let bytes = std::fs::read(archive).map_err(|err| io_err(archive, err))?;
        let digest = sha256_hex(&bytes);
        if bytes.len() as u64 > self.max_bytes {
            return Ok(digest);
        }
        let unique = format!(".tmp-{}-{}", std::process::id(), rand::random::<u64>());
        let tmp_archive = self.dir.join(format!("{}{unique}", key.stem()));
        let tmp_digest = self.dir.join(format!("{}{unique}.sha256", key.stem()));
        write_private(&tmp_archive, &bytes).map_err(|err| io_err(&tmp_archive, err))?;
        write_private(&tmp_digest, digest.as_bytes()).map_err(|err| io_err(&tmp_digest, err))?;
        // The digest first: a reader that finds the new archive with the old digest only misses.
        std::fs::rename(&tmp_digest, self.digest_file(key))
            .and_then(|()| std::fs::rename(&tmp_archive, self.archive(key)))
            .map_err(|err| io_err(&self.dir, err))?;
        self.evict();
        Ok(digest)
    }

    /// Remove the least recently used archives until the total fits the bound.
    fn evict(&self) {
        let _guard = self.evicting.lock().unwrap_or_else(|p| p.into_inner());
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut archives: Vec<(SystemTime, u64, PathBuf)> = entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "tgz"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = archives.iter().map(|(_, len, _)| len).sum();
        archives.sort();
        for (_, len, path) in archives {
            if total <= self.max_bytes {
                break;
            }
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(path.with_extension("sha256"));
            total = total.saturating_sub(len);
        }
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::File::options();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)
}

fn io_err(path: &Path, err: std::io::Error) -> Error {
    Error::Render {
        path: path.to_path_buf(),
        message: format!("chart cache: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(version: &str) -> CacheKey {
        CacheKey {
            source: "https://charts.example".into(),
            chart: "web".into(),
            version: version.into(),
        }
    }

    #[test]
    fn hits_are_verified_and_the_directory_is_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        let cache = ChartCache::new(dir.path().join("charts"), 25).expect("cache");
        let archive = dir.path().join("web-1.0.0.tgz");
        std::fs::write(&archive, b"ten bytes!").expect("write");
        let digest = cache.store(&key("1.0.0"), &archive).expect("store");
        assert_eq!(digest, sha256_hex(b"ten bytes!"));

        let hit = cache
            .fetch_into(&key("1.0.0"), Some(&digest), out.path())
            .expect("hit");
        assert_eq!(std::fs::read(&hit).expect("read"), b"ten bytes!");
        assert!(cache.fetch_into(&key("1.0.1"), None, out.path()).is_none());
        // The repository now lists another digest for this version: a miss, entry dropped.
        assert!(
            cache
                .fetch_into(&key("1.0.0"), Some(&sha256_hex(b"other")), out.path())
                .is_none()
        );
        assert!(cache.fetch_into(&key("1.0.0"), None, out.path()).is_none());

        // A tampered entry is not served.
        cache.store(&key("1.0.0"), &archive).expect("store");
        std::fs::write(cache.archive(&key("1.0.0")), b"ten bytes?").expect("tamper");
        assert!(cache.fetch_into(&key("1.0.0"), None, out.path()).is_none());

        // Three 10-byte archives in a 25-byte cache: the least recently used goes.
        for version in ["1.0.0", "2.0.0", "3.0.0"] {
            cache.store(&key(version), &archive).expect("store");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(cache.fetch_into(&key("1.0.0"), None, out.path()).is_none());
        assert!(cache.fetch_into(&key("3.0.0"), None, out.path()).is_some());
    }
}
