//! What the `evac` binary's tests share: running it as a user does.

#![allow(dead_code)] // each test file uses some of these

use std::process::{Command, Output};

/// The `evac` binary under test, with backtraces on should it panic.
pub fn evac_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evac"));
    command.env("RUST_BACKTRACE", "1");
    command
}

/// `evac ARGS`, run to its end.
pub fn evac(args: &[&str]) -> Output {
    evac_command().args(args).output().expect("evac runs")
}

/// A stream's bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
