//! The HTTPS API against its own OpenAPI document, by a property-based tester (schemathesis,
//! from PyPI; `scripts/test.sh` installs it): generated requests — valid, invalid, odd — to every
//! route of a real `river host`, as an admin and as a viewer. Every answer must be one the
//! document describes, with the schema it gives, and none may be a server error.
//!
//! Left out on purpose: schemathesis's check that every schema-valid request is accepted
//! (`positive_data_acceptance`): the host refuses well-formed requests the cluster cannot honour
//! (a task no node could run, an action on a task in the wrong state), with 400/409 and why.

#[path = "support/binary.rs"]
mod binary;

use binary::*;
use std::path::Path;
use std::process::Command;

/// The schemathesis command, if there is one here.
fn schemathesis() -> Option<String> {
    let st = std::env::var("RIVER_SCHEMATHESIS").unwrap_or_else(|_| "st".into());
    let here = Command::new(&st)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !here {
        assert!(
            std::env::var_os("RIVER_REQUIRE_SCHEMATHESIS").is_none(),
            "schemathesis is required here ({st})"
        );
        eprintln!("skipped: no schemathesis (pip install schemathesis)");
        return None;
    }
    Some(st)
}

/// Runs schemathesis against the host at `listen` as the user of `cfg`, `examples` per route.
fn fuzz(st: &str, listen: &str, cfg: &Path, examples: u32) {
    let file = |name: &str| cfg.join(name).to_str().unwrap().to_owned();
    let o = Command::new(st)
        .args(["run", &format!("https://{listen}/api/openapi.json")])
        .args(["--tls-verify", &file("ca.crt")])
        .args([
            "--request-cert",
            &file("cert.pem"),
            "--request-cert-key",
            &file("key.pem"),
        ])
        .args(["-n", &examples.to_string(), "--generation-deterministic"])
        .args(["--exclude-checks", "positive_data_acceptance", "--no-color"])
        .output()
        .expect("schemathesis runs");
    let (out, err) = text(&o);
    assert!(o.status.success(), "schemathesis found failures:\n{out}\n{err}");
    eprintln!("{}", out.lines().rev().take(3).collect::<Vec<_>>().join("\n"));
}

#[test]
fn the_api_answers_as_its_document_says_and_never_fails() {
    let Some(st) = schemathesis() else { return };
    let d = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (_host, admin) = host_process(d.path(), &listen);
    fuzz(&st, &listen, &admin, 30);
    // Refusals are answers too: a viewer's are all 403s that must match the document.
    let vic = person(d.path(), &admin, &listen, "vic", "viewer");
    fuzz(&st, &listen, &vic, 10);
}
