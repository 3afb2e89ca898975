//! A small disk for tests that fill it: a tmpfs of a fixed size mounted
//! for one test (so ENOSPC comes from the kernel) and unmounted on drop.
//! Needs CAP_SYS_ADMIN (CI runs as root). Std only, so other crates' tests
//! can include it with `#[path]`.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

const ENOSPC: i32 = 28;

/// A tmpfs of a fixed size mounted for one test, unmounted on drop.
pub struct SmallDisk {
    pub mount: PathBuf,
    filler: PathBuf,
}

impl SmallDisk {
    pub fn new(name: &str, bytes: u64) -> SmallDisk {
        let mount =
            std::env::temp_dir().join(format!("shoal-disk-full-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&mount).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(&mount)
            .status()
            .expect("run mount");
        assert!(
            st.success(),
            "mounting a tmpfs at {} failed: these tests need CAP_SYS_ADMIN",
            mount.display()
        );
        let filler = mount.join("filler");
        SmallDisk { mount, filler }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.mount.join("store")
    }

    /// Fill the disk until the kernel says ENOSPC, then give back `room`
    /// bytes.
    pub fn fill_leaving(&self, room: u64) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.filler)
            .unwrap();
        let chunk = vec![0xa5u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(ENOSPC), "{e}");
                    break;
                }
            }
        }
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(room)).unwrap();
    }

    pub fn free(&self) {
        File::options()
            .write(true)
            .open(&self.filler)
            .unwrap()
            .set_len(0)
            .unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = std::fs::remove_dir(&self.mount);
    }
}
