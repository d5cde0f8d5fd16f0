//! The heartbeat key: `secret` or `secretFile`, and its rules (issue 12,
//! finding 7).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The shortest secret accepted: HMAC-SHA256 keys shorter than 128 bits are
/// guessable.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest `secretFile` read: a key is a few dozen bytes, and a path
/// such as `/dev/zero` must not exhaust memory.
pub const MAX_SECRET_FILE: u64 = 4096;
/// Below this estimated entropy (bits) a secret is warned about.
pub const LOW_ENTROPY_BITS: f64 = 64.0;

/// Reads `secretFile`: a regular file that neither group nor others can
/// write (anyone who can write it can join the cluster or split it), of at
/// most [`MAX_SECRET_FILE`] bytes.
pub fn read_secret_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let bad = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(bad(format!(
            "mode {:o}: group or others can write it; chmod go-w",
            mode & 0o7777
        )));
    }
    let mut bytes = Vec::new();
    f.take(MAX_SECRET_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(bad(format!("larger than {MAX_SECRET_FILE} bytes")));
    }
    Ok(bytes)
}

/// A rough estimate of a secret's entropy in bits: its length times the
/// Shannon entropy of its byte distribution. It catches what people type
/// ("aaaaaaaaaaaaaaaa", "1212121212121212"), not every weak key.
pub fn entropy_bits(secret: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for b in secret {
        counts[usize::from(*b)] += 1;
    }
    let n = secret.len() as f64;
    let per_byte: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / n;
            -p * p.log2()
        })
        .sum();
    per_byte * n
}

/// The key from `secret` or `secretFile` (exactly one), checked for
/// length, and warned about if it looks guessable.
pub(super) fn resolve(
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    read_file: &dyn Fn(&Path) -> std::io::Result<Vec<u8>>,
) -> Result<Vec<u8>> {
    let secret = match (secret, secret_file) {
        (Some(_), Some(_)) => {
            return Err(Error::config(
                "secret",
                "set secret or secretFile, not both",
            ))
        }
        (None, None) => {
            return Err(Error::config(
                "secret",
                "missing: heartbeats must be authenticated (secret or secretFile)",
            ))
        }
        (Some(s), None) => s.into_bytes(),
        (None, Some(p)) => {
            let mut bytes = read_file(&p)
                .map_err(|e| Error::config("secretFile", format!("{}: {e}", p.display())))?;
            while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
                bytes.pop();
            }
            bytes
        }
    };
    let bits = entropy_bits(&secret);
    if bits < LOW_ENTROPY_BITS {
        tracing::warn!(
            estimated_bits = bits as u64,
            "the heartbeat secret looks guessable (repeated or few distinct characters); \
             use e.g. `head -c 32 /dev/urandom | base64`"
        );
    }
    if secret.len() < MIN_SECRET_LEN {
        return Err(Error::config(
            "secret",
            format!(
                "too short ({} bytes, need at least {MIN_SECRET_LEN})",
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `secretFile` must not be writable by group or others, must be a
    /// regular file, and is read only up to a bound (`/dev/zero`).
    #[test]
    fn secret_file_rules() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, "0123456789abcdef0123\n").unwrap();
        for (mode, ok) in [(0o600, true), (0o644, true), (0o620, false), (0o606, false)] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = read_secret_file(&p);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if !ok {
                assert!(r.unwrap_err().to_string().contains("chmod go-w"));
            }
        }
        let e = read_secret_file(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, vec![b'k'; 5000]).unwrap();
        let e = read_secret_file(&p).unwrap_err();
        assert!(e.to_string().contains("larger than 4096"), "{e}");
        // Through the resolution: the path and the reason.
        let e = resolve(None, Some(p), &read_secret_file).unwrap_err();
        assert!(e.to_string().starts_with("secretFile:"), "{e}");
    }

    #[test]
    fn low_entropy_secrets_are_estimated_low() {
        assert!(entropy_bits(b"aaaaaaaaaaaaaaaaaaaa") < LOW_ENTROPY_BITS);
        assert!(entropy_bits(b"1212121212121212") < LOW_ENTROPY_BITS);
        assert!(entropy_bits(b"flatlan-lab-fleet-secret-0123456789") >= LOW_ENTROPY_BITS);
        assert!(entropy_bits(b"q8Zp2LxV0rT7mWc4YbN1sKd9") >= LOW_ENTROPY_BITS);
    }
}
