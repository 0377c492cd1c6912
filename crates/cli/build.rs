//! Puts the git commit evac is built from into `evac --version` (and the
//! results' `evac_version`): `EVAC_VERSION` is `0.1.0 (abc1234)` in a git
//! checkout, `0.1.0` outside one (a source tarball, a crates.io build), where
//! a packager may give the commit in `EVAC_GIT_COMMIT`. Reruns when HEAD
//! moves (a commit, a checkout), not on every build.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn main() {
    println!("cargo:rerun-if-env-changed=EVAC_GIT_COMMIT");
    // Git's own pointer to the repository changes its answer.
    println!("cargo:rerun-if-env-changed=GIT_DIR");
    let commit = std::env::var("EVAC_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short", "HEAD"]));
    if commit.is_some() {
        // What moves when HEAD does: HEAD itself (a checkout), the branch's
        // ref (a commit), packed-refs (a ref that is only packed). Paths come
        // from git, so worktrees (whose HEAD is not in .git/) work too. Only
        // existing files: cargo reruns every time for a missing one.
        let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
        if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(git(&["rev-parse", "--git-path", &branch]));
        }
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
        for path in watched.into_iter().flatten().map(PathBuf::from) {
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    } else {
        // Not a git checkout: nothing to watch but this script.
        println!("cargo:rerun-if-changed=build.rs");
    }
    let version = env!("CARGO_PKG_VERSION");
    let full = match commit {
        Some(commit) => format!("{version} ({commit})"),
        None => version.to_owned(),
    };
    println!("cargo:rustc-env=EVAC_VERSION={full}");
}
