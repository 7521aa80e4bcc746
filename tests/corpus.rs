//! The 102 edge-case archives of `../shared/testdata/tar-corpus`, indexed and
//! listed by unionfs, compared with what GNU tar extracts (`tools/corpus-check`,
//! which holds the list of deliberate differences and their reasons); then each
//! archive unionfs serves is mounted, and the mount must show exactly what the
//! listing said.
//!
//! Needs root (GNU tar restores owners and devices only as root), python3, GNU
//! tar and FUSE. A clone without `../shared` skips, saying so loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

/// (checkout, corpus), or `None` (said loudly) when the corpus is missing.
fn corpus(test: &str) -> Option<(&'static Path, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = root.join("../shared/testdata/tar-corpus");
    if !corpus.is_dir() {
        eprintln!(
            "\n*** SKIPPED {test}: {} is missing (it lives beside the checkout in \
             ../shared) ***\n",
            corpus.display()
        );
        return None;
    }
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the corpus test compares owners and devices with GNU tar's extraction: run as root"
    );
    Some((root, corpus))
}

#[test]
fn corpus_matches_gnu_tar() {
    let Some((root, corpus)) = corpus("corpus_matches_gnu_tar") else {
        return;
    };
    let out = Command::new(root.join("tools/corpus-check"))
        .arg(env!("CARGO_BIN_EXE_unionfs"))
        .arg(&corpus)
        .arg("--mount")
        .output()
        .expect("run tools/corpus-check (needs python3)");
    let text = String::from_utf8_lossy(&out.stdout);
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("FAIL") || l.starts_with("     "))
        .collect();
    assert!(
        out.status.success(),
        "corpus-check failed:\n{}\n{}\n{}",
        failures.join("\n"),
        text.lines().last().unwrap_or(""),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = text.lines().last().unwrap_or("");
    assert!(
        summary.ends_with(" 0 failed"),
        "unexpected summary: {summary}"
    );
}

/// Archives where unionfs once differed from GNU tar on purpose, and now reads
/// them as GNU tar does: a malformed PAX mtime (its leading number), a NUL in a
/// PAX path (the name ends there), uid/gid 4294967295 = `(uid_t)-1` (root's 0).
/// Each must come out the same as GNU tar's extraction, not as a listed
/// difference.
#[test]
fn former_differences_now_match_gnu_tar() {
    let Some((root, corpus)) = corpus("former_differences_now_match_gnu_tar") else {
        return;
    };
    for name in [
        "go/pax-bad-mtime-file.tar",
        "go/pax-nul-path.tar",
        "python/testtar.tar",
    ] {
        let out = Command::new(root.join("tools/corpus-check"))
            .arg(env!("CARGO_BIN_EXE_unionfs"))
            .arg(&corpus)
            .args(["--only", name, "--mount"])
            .output()
            .expect("run tools/corpus-check (needs python3)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.lines().any(|l| l == format!("ok   {name}: same")),
            "{name}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
