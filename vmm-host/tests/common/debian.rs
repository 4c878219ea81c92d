//! Kernels nobody here wrote, from Debian's archive: `apt-get download` once into
//! `target/debian/PACKAGE/` (never committed), the wanted file unpacked from the package's
//! `boot/`. A machine where apt cannot fetch skips the test and says why.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `boot/PREFIX*` from Debian's `package` (a meta-package like linux-image-cloud-amd64 is
/// followed to the image it depends on); `None` after a skip that says why.
pub fn boot_file(test: &str, package: &str, prefix: &str) -> Option<PathBuf> {
    // Tests of one file run on parallel threads: one of them downloads.
    static FETCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = FETCHING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = super::repo_root().join("target/debian").join(package);
    if let Some(found) = file_in(&dir, prefix) {
        return Some(found);
    }
    let fetched = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|()| fetch(&dir, package, prefix))
        .and_then(|()| {
            file_in(&dir, prefix).ok_or_else(|| format!("no boot/{prefix}* in the package"))
        });
    match fetched {
        Ok(path) => Some(path),
        Err(why) => {
            super::skip(test, &format!("cannot fetch Debian's {package}: {why}"));
            None
        }
    }
}

fn file_in(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let boot = std::fs::read_dir(dir.join("boot")).ok()?;
    boot.flatten().map(|e| e.path()).find(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
    })
}

/// The package apt should download: a linux-image meta-package's dependency, or itself.
fn real_package(package: &str) -> Result<String, String> {
    let depends = output(Command::new("apt-cache").args(["depends", package]))?;
    Ok(depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|name| package.starts_with("linux-image-") && name.starts_with("linux-image-"))
        .unwrap_or(package)
        .to_string())
}

fn fetch(dir: &Path, package: &str, prefix: &str) -> Result<(), String> {
    let name = real_package(package)?;
    output(
        Command::new("apt-get")
            .current_dir(dir)
            .args(["download", &name]),
    )?;
    let deb = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let unpack = format!(
        "dpkg-deb --fsys-tarfile '{}' | tar -x -C '{}' --wildcards './boot/{prefix}*'",
        deb.display(),
        dir.display()
    );
    output(Command::new("sh").args(["-c", &unpack]))?;
    std::fs::remove_file(&deb).map_err(|e| e.to_string())
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
