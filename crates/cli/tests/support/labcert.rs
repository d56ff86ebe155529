//! A lab's own certificate for `localhost`, made as a lab admin makes a test one (openssl), for
//! the dashboard at the host's own address (`[web]`); shared by the tests and `river-bench web`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The certificate and key files in `dir`, and the base64 SHA-256 of the certificate's public
/// key: what chromium is told to trust (`--ignore-certificate-errors-spki-list`), as a lab's
/// browsers trust its CA.
pub fn lab_certificate(dir: &Path) -> std::io::Result<(PathBuf, PathBuf, String)> {
    let (cert, key) = (dir.join("web.crt"), dir.join("web.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-days",
            "2",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()?;
    if !made.success() {
        return Err(std::io::Error::other("openssl could not make a certificate"));
    }
    let spki = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            cert.display()
        ))
        .output()?;
    Ok((cert, key, String::from_utf8_lossy(&spki.stdout).trim().to_owned()))
}
