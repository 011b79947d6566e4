//! The `charter` binary's command line, run as a user would. (This file
//! also makes `cargo test` build the binary that the e2e tests start.)

use std::process::Command;

fn charter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_charter"))
}

#[test]
fn help_teaches_the_subcommands() {
    let out = charter().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["node", "sandbox", "gov"] {
        assert!(
            text.contains(word),
            "--help does not mention {word}:\n{text}"
        );
    }
}

#[test]
fn missing_config_is_a_clear_error() {
    let out = charter()
        .args(["node", "start", "--config", "/nonexistent/charter.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/charter.toml"), "{err}");
}

#[test]
fn keygen_writes_a_key_and_certificate_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        charter()
            .args(["gov", "keygen", "--name", "alice", "--out"])
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let out = run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = std::fs::read_to_string(dir.path().join("alice_cert.pem")).unwrap();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
    let key = std::fs::read_to_string(dir.path().join("alice_privk.pem")).unwrap();
    assert!(key.contains("PRIVATE KEY"));
    assert!(!run().status.success(), "second keygen must not overwrite");
}
