//! WireGuard key pairs, from `wg genkey`/`wg pubkey` or `peerd keygen`/`peerd pubkey`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::proc::{run, run_with_stdin};

/// A base64 private key and its public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keypair {
    /// Base64 private key (as `wg genkey` prints it, without the newline).
    pub private: String,
    /// Base64 public key.
    pub public: String,
}

impl Keypair {
    /// A key pair from `wg genkey` and `wg pubkey`.
    pub fn wg() -> Result<Keypair> {
        let private = run(Command::new("wg").arg("genkey"))?.trim().to_owned();
        let public = wg_pubkey(&private)?;
        Ok(Keypair { private, public })
    }

    /// A key pair from `peerd keygen` and `peerd pubkey` (`bin` is the peerd binary).
    pub fn peerd(bin: &Path) -> Result<Keypair> {
        let private = run(Command::new(bin).arg("keygen"))?.trim().to_owned();
        let public = peerd_pubkey(bin, &private)?;
        Ok(Keypair { private, public })
    }
}

/// The public key `wg pubkey` derives from `private`.
pub fn wg_pubkey(private: &str) -> Result<String> {
    let public = run_with_stdin(Command::new("wg").arg("pubkey"), &format!("{private}\n"))
        .context("wg pubkey")?;
    checked(public)
}

/// The public key `peerd pubkey` derives from `private`.
pub fn peerd_pubkey(bin: &Path, private: &str) -> Result<String> {
    let public = run_with_stdin(Command::new(bin).arg("pubkey"), &format!("{private}\n"))
        .context("peerd pubkey")?;
    checked(public)
}

/// A WireGuard key is 32 bytes: 44 base64 characters ending in `=`.
fn checked(key: String) -> Result<String> {
    let key = key.trim().to_owned();
    if key.len() != 44 || !key.ends_with('=') {
        bail!("{key:?} does not look like a base64 WireGuard key");
    }
    Ok(key)
}
