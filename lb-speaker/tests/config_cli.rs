//! The binary refuses a bad config before doing anything (no root needed).

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_flatlan-speaker");

fn run(yaml: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(&p, yaml).unwrap();
    let out = Command::new(BIN)
        .args(["static", "--config", p.to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_vip_names_the_field_and_exits_2() {
    let (code, err) = run(
        "node: {name: a}\nsecret: 0123456789abcdef\nvips: [{address: 10.0.0.1}, {address: 10.0.0.300}]\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("vips[1].address"), "{err}");
}

#[test]
fn unknown_field_and_missing_secret() {
    let (code, err) =
        run("node: {name: a}\nsecret: 0123456789abcdef\nvips: [{address: 10.0.0.1, iface: x}]\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("vips[0]") && err.contains("iface"), "{err}");
    let (code, err) = run("node: {name: a}\nvips: [{address: 10.0.0.1}]\n");
    assert_eq!(code, Some(2));
    assert!(err.contains("secret"), "{err}");
}

#[test]
fn check_mode_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.yaml");
    std::fs::write(
        &p,
        "node: {name: a}\nsecret: 0123456789abcdef\nvips: [{address: 10.0.0.1}]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["static", "--check", "--config", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
}
