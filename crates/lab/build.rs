//! Assembles the lab's dirtying guest (`guest/dirty.S`) into a 64 KiB
//! firmware image with GNU binutils (`as`, `ld`, `objcopy`).
//!
//! When they are missing or fail, an empty image is written and a warning
//! printed: the crate still builds, and `Lab::start_guest` reports
//! the reason at run time instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let source = Path::new("guest/dirty.S");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed=build.rs");
    let image = out.join("dirty-guest.bin");
    let error = out.join("dirty-guest.err");
    match assemble(source, &out, &image) {
        Ok(()) => {
            let _ = std::fs::write(&error, "");
        }
        Err(why) => {
            println!("cargo:warning=the lab's dirtying guest was not built: {why}");
            std::fs::write(&image, []).expect("write the empty guest image");
            std::fs::write(&error, why).expect("write the guest build error");
        }
    }
}

fn assemble(source: &Path, out: &Path, image: &Path) -> Result<(), String> {
    let object = out.join("dirty-guest.o");
    let elf = out.join("dirty-guest.elf");
    let steps: [(&str, Vec<&std::ffi::OsStr>); 3] = [
        (
            "as",
            vec![
                "--32".as_ref(),
                "-o".as_ref(),
                object.as_os_str(),
                source.as_os_str(),
            ],
        ),
        (
            "ld",
            vec![
                "-m".as_ref(),
                "elf_i386".as_ref(),
                "-Ttext=0".as_ref(),
                "-o".as_ref(),
                elf.as_os_str(),
                object.as_os_str(),
            ],
        ),
        (
            "objcopy",
            vec![
                "-O".as_ref(),
                "binary".as_ref(),
                "-j".as_ref(),
                ".text".as_ref(),
                elf.as_os_str(),
                image.as_os_str(),
            ],
        ),
    ];
    for (tool, args) in steps {
        let output = Command::new(tool)
            .args(&args)
            .output()
            .map_err(|e| format!("cannot run `{tool}` ({e}); apt-get install binutils"))?;
        if !output.status.success() {
            return Err(format!(
                "`{tool}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    let size = std::fs::metadata(image).map_err(|e| e.to_string())?.len();
    if size != 65536 {
        return Err(format!("the image is {size} bytes, not 65536"));
    }
    Ok(())
}
