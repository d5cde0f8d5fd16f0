//! The README's main job must pass: `flatlan-lab demo` exits 0 only when
//! every check in its report passed.

#[test]
fn flatlan_lab_demo_passes() {
    flatlan_e2e::require_root();
    let out = std::process::Command::new(flatlan_e2e::bin("flatlan-lab"))
        .arg("demo")
        .output()
        .expect("run flatlan-lab demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("checks passed"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
