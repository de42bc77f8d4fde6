//! The storage key for the command line.
//!
//! Phones keep the 32-byte key in the platform keystore. On a desktop the command keeps it in a
//! file readable only by its owner (mode 0600), `fitedge.key` beside the database unless
//! `FITEDGE_KEY_FILE` points elsewhere (a removable drive, an encrypted volume). It is created
//! on first use. Losing it makes the stored heart-rate data unreadable, by design.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use fitedge_core::crypto::StorageKey;
use ring::rand::{SecureRandom, SystemRandom};

pub fn path_for(db: &Path) -> PathBuf {
    std::env::var_os("FITEDGE_KEY_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| db.with_file_name("fitedge.key"))
}

pub fn load_or_create(db: &Path) -> Result<StorageKey> {
    let path = path_for(db);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path)?,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read the key file {}", path.display()))
        }
    };
    if bytes.len() != 32 {
        bail!(
            "the key file {} must hold exactly 32 bytes, it holds {}",
            path.display(),
            bytes.len()
        );
    }
    StorageKey::new(&bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

fn create(path: &Path) -> Result<Vec<u8>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut key = vec![0u8; 32];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| anyhow::anyhow!("no secure random source to make a storage key"))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create the key file {}", path.display()))?;
    f.write_all(&key)?;
    f.sync_all()?;
    Ok(key)
}
