//! What the review service's tests share: accounts, films from `../shared`, multipart bodies,
//! and a real server process on a free port.
#![allow(dead_code)]

pub mod client;
pub mod webdriver;
#[allow(unused_imports)]
pub use client::{csrf_in, multipart};

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "correct horse battery";

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The committed scratch CNN bundle: small, so inference in tests is quick.
pub fn bundle() -> PathBuf {
    workspace().join("models/scratch_cnn")
}

/// The real training films.
pub fn kermany() -> PathBuf {
    workspace().join("../shared/data/kermany224/train")
}

/// The first `n` films of a class folder, sorted.
pub fn films(class: &str, n: usize) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(kermany().join(class))
        .expect("../shared/data/kermany224 is beside the checkout")
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.truncate(n);
    files
}

/// The real DICOM film.
pub fn dicom_film() -> PathBuf {
    workspace().join("../shared/data/dicom/cxr_pa_monochrome2.dcm")
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Creates an account with the review_server binary, as an administrator would.
pub fn add_user(db: &Path, name: &str, role: &str) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_review_server"))
        .args(["add-user", "--db"])
        .arg(db)
        .args(["--name", name, "--role", role])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    assert!(child.wait().unwrap().success(), "add-user {name}");
}

/// A review_server process serving `db` with the scratch bundle.
pub struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    /// Starts it and waits until `/health` answers.
    pub fn start(db: &Path, port: u16) -> Server {
        let log = std::fs::File::create(db.with_extension("log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_review_server"))
            .args(["serve", "--model"])
            .arg(bundle())
            .arg("--db")
            .arg(db)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let server = Server { child, url };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if ureq::get(format!("{}/health", server.url)).call().is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the server did not start; see {}",
            db.with_extension("log").display()
        );
    }

    /// `kill -9`.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
